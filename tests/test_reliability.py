"""Reliability of the commands against realistic misuse (issue 17):

- one process per experiment folder: a second start beside a running one is refused naming it, the running run's
  folder stays intact, and the stale lock of a SIGKILLed run does not block its resume (real processes);
- log files never overwrite each other;
- a refused start (a resume whose pruning options changed, unusable pretrained weights) leaves the experiment folder
  byte-identical, and `dupru-compare` takes a run's method and rate from its own saved pruning state or ticket;
- `dupru-test` refuses to score random weights unless told so;
- `dupru-export` never writes over its input and writes only the file it was given;
- user errors are one `<prog>: error:` line with exit status 2 and no traceback.
"""
import glob
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import time
import pytest
import torch
import yaml

from conftest import run_cli, run_in, shared_dataset, snapshot_tree as _snapshot, tiny_options, write_options

LAUNCH = osp.join(osp.dirname(osp.abspath(__file__)), 'helpers', 'launch.py')


def _env(**extra):
    env = dict(os.environ, **extra)
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        if key not in extra:
            env.pop(key, None)
    return env


def _cli(module, args, cwd, timeout=300, process=False, **env):
    """`python -m dupru_basicsr.<module> args` in `cwd`: in this process (conftest.run_cli), or with `process` in a
    child process (for what only a process shows: its exit, a lock held by another process, signals); returns the
    CompletedProcess (or conftest.CliResult)."""
    if not process:
        return run_cli(module, args, cwd, **env)
    return subprocess.run([sys.executable, '-m', f'dupru_basicsr.{module}', *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _assert_user_error(result, prog, *phrases):
    """Exit status 2, and stderr ends with one `<prog>: error: ...` line holding `phrases`, without a traceback."""
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-3000:])
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f'{prog}: error: ')]
    assert len(errors) == 1, result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def _dupru_opt(name, rate=30, **kw):
    return tiny_options(name, 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 4, 'rate': rate}, total_iter=8,
                        save_freq=2, **kw)


# ------------------------------------------------------------------------------------------ the lock itself
def test_lock_refuses_a_second_holder_naming_it_and_release_removes_the_file(tmp_path):
    from dupru_basicsr.plugin.lock import FolderLock, LockError, lock_path
    exp = tmp_path / 'experiments' / 'run'
    first = FolderLock(exp).acquire()
    assert lock_path(exp) == str(tmp_path / 'experiments' / '.run.lock')  # beside the folder, not in it
    assert not exp.exists()
    with pytest.raises(LockError, match=rf'{exp} is in use by process {os.getpid()} on host '
                       rf'{socket.gethostname()} \(started 20'):
        FolderLock(exp).acquire()  # a second open file description conflicts even within one process
    first.release()
    assert not osp.exists(lock_path(exp))
    with FolderLock(exp) as again:
        assert again.held and osp.isfile(lock_path(exp))
    assert not osp.exists(lock_path(exp))


@pytest.mark.slow
def test_stale_lock_of_a_killed_holder_with_a_living_forked_child_does_not_block(tmp_path):
    """The holder forks a child (as DataLoader workers are forked) and is SIGKILLed; the child lives on, the lock
    file stays, and yet the lock is free: the child does not hold it."""
    from dupru_basicsr.plugin.lock import FolderLock, lock_path
    exp = tmp_path / 'experiments' / 'run'
    code = ('import os, signal, sys, time\n'
            'from dupru_basicsr.plugin.lock import FolderLock\n'
            f'FolderLock({str(exp)!r}).acquire()\n'
            'child = os.fork()\n'
            'if child == 0:\n'
            '    null = os.open(os.devnull, os.O_RDWR)\n'
            '    os.dup2(null, 1)\n'  # let the test read the holder's output to its end
            '    os.dup2(null, 2)\n'
            '    time.sleep(120)\n'
            '    os._exit(0)\n'
            'print(child, os.getpid(), flush=True)\n'
            'os.kill(os.getpid(), signal.SIGKILL)\n')
    holder = subprocess.run([sys.executable, '-c', code], env=_env(), capture_output=True, text=True, timeout=120)
    assert holder.returncode == -signal.SIGKILL, holder.stderr
    child, dead = (int(v) for v in holder.stdout.split())
    try:
        os.kill(child, 0)  # the forked child is still alive
        assert f'"pid": {dead}, ' in open(lock_path(exp)).read()  # the stale file of the killed holder
        with FolderLock(exp):
            assert f'"pid": {os.getpid()}' in open(lock_path(exp)).read()
    finally:
        os.kill(child, signal.SIGKILL)


def test_log_files_of_two_starts_in_the_same_second_do_not_overwrite(tmp_path, monkeypatch):
    import basicsr.utils

    from dupru_basicsr.plugin.loop import open_log_file
    monkeypatch.setattr(basicsr.utils, 'get_time_str', lambda: '20260101_000000')
    handlers = []
    for text in ('first', 'second', 'third'):
        handler, path = open_log_file(str(tmp_path), 'run')
        handler.stream.write(text)
        handler.close()
        handlers.append(path)
    assert [osp.basename(p) for p in handlers] == ['train_run_20260101_000000.log', 'train_run_20260101_000000_2.log',
                                                   'train_run_20260101_000000_3.log']
    assert [open(p).read() for p in handlers] == ['first', 'second', 'third']


# ------------------------------------------------------------------------------------------ two real processes
def _wait_for(path, text, proc, timeout=240):
    end = time.time() + timeout
    while time.time() < end:
        if osp.isfile(path) and text in open(path).read():
            return
        assert proc.poll() is None, open(path).read()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f'{text!r} not in {path} after {timeout} s')


@pytest.mark.slow
def test_second_start_beside_a_running_one_is_refused_and_resume_after_sigkill_works(tmp_path):
    opt = _dupru_opt('busy', val_set=None)
    yml = write_options(opt, tmp_path)
    exp = tmp_path / 'experiments' / 'busy'
    out = tmp_path / 'first.out'
    with open(out, 'w') as f:  # the first run stops (sleeping, lock held) after iteration 5, with 2.state, 4.state
        first = subprocess.Popen([sys.executable, LAUNCH, '--pause-at', 'after_step:5', '--', '-opt', yml],
                                 cwd=tmp_path, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_for(out, 'paused at after_step:5', first)
        before = _snapshot(tmp_path / 'experiments')
        assert {'busy/training_states/4.state', 'busy/models/net_g_4.pth', '.busy.lock'} <= set(before)
        for extra in ([], ['--auto_resume']):  # a fresh start would archive the live folder; a resume train twice
            second = _cli('train', ['-opt', yml, *extra], tmp_path)
            _assert_user_error(second, 'dupru-train', f'{exp} is in use by process {first.pid} on host '
                               f'{socket.gethostname()}', '-opt')
            assert _snapshot(tmp_path / 'experiments') == before  # nothing archived, written or removed
        assert first.poll() is None
    finally:
        first.kill()
        first.wait(timeout=60)
    assert osp.isfile(tmp_path / 'experiments' / '.busy.lock')  # a SIGKILL leaves the stale lock file
    (first_log, ) = glob.glob(str(exp / 'train_*.log'))
    resumed = _cli('train', ['-opt', yml, '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = sorted(glob.glob(str(exp / 'train_*.log')), key=osp.getmtime)
    assert len(logs) == 2 and logs[0] == first_log
    assert _snapshot(exp)[osp.basename(first_log)] == before[f'busy/{osp.basename(first_log)}']  # log kept as is
    assert 'Resuming training from epoch: ' in open(logs[1]).read() and ', iter: 4.' in open(logs[1]).read()
    assert (exp / 'models' / 'net_g_latest.pth').is_file() and (exp / 'training_states' / '8.state').is_file()
    assert sorted(os.listdir(tmp_path / 'experiments')) == ['busy']  # lock released and removed, nothing archived


# ------------------------------------------------------------------------------------------ refused starts
@pytest.fixture(scope='module')
def previous_run(tmp_path_factory):
    """A finished tiny DUPru run (rate 30, validated: it has tickets)."""
    root = tmp_path_factory.mktemp('previous')
    opt = _dupru_opt('prev', val_freq=4)
    run_in(root, opt)
    exp = root / 'experiments' / 'prev'
    assert (exp / 'models' / 'net_g_round2_best.pth').is_file() and (exp / 'training_states' / '8.state').is_file()
    return root, opt


@pytest.fixture
def workdir(tmp_path, previous_run):
    root, opt = previous_run
    shutil.copytree(root / 'experiments', tmp_path / 'experiments')
    return tmp_path, opt, _snapshot(tmp_path / 'experiments')


def test_refused_resume_with_a_changed_rate_leaves_the_folder_byte_identical(workdir):
    tmp_path, opt, before = workdir
    changed = _dupru_opt('prev', rate=50, val_freq=4)
    result = _cli('train', ['-opt', write_options(changed, tmp_path), '--auto_resume'], tmp_path)
    _assert_user_error(result, 'dupru-train', 'rate')
    assert _snapshot(tmp_path / 'experiments') == before  # no option copy, no log, no lock file, nothing archived


def test_unusable_pretrained_weights_are_refused_before_anything_is_written(workdir):
    from dupru_basicsr.plugin.option_base import OptionError
    tmp_path, opt, before = workdir
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    other = tmp_path / 'other.pth'  # loads, but is another architecture
    torch.save({'params': {'conv_first.weight': torch.zeros(8, 3, 3, 3)}}, other)
    for name in ('prev', 'fresh'):  # an existing experiment (would be archived) and a new one (would be created)
        for path, pattern in ((tmp_path / 'missing.pth', 'does not exist'), (corrupt, 'cannot be loaded'),
                              (other, 'does not fit network_g')):
            bad = _dupru_opt(name, val_set=None)
            bad['path']['pretrain_network_g'] = str(path)
            with pytest.raises(OptionError, match=rf'path\.pretrain_network_g: .*{pattern}'):
                run_in(tmp_path, bad)
            assert _snapshot(tmp_path / 'experiments') == before
    result = _cli('train', ['-opt', write_options(bad, tmp_path)], tmp_path)
    _assert_user_error(result, 'dupru-train', 'path.pretrain_network_g', 'does not fit network_g')
    assert _snapshot(tmp_path / 'experiments') == before


def test_compare_reads_method_and_rate_from_the_saved_state_then_the_ticket(workdir):
    from dupru_basicsr.report.runs import find_option_file, load_model_entry
    tmp_path, opt, _ = workdir
    exp = str(tmp_path / 'experiments' / 'prev')
    copy = find_option_file(exp)
    with open(copy) as f:
        written = yaml.safe_load(f)
    written['pruning'].update(method='upru', rate=50)  # what a later (refused or other) start may have left there
    with open(copy, 'w') as f:
        yaml.safe_dump(written, f)
    entry = load_model_entry(exp, 4)
    assert (entry.method, entry.rate, entry.label) == ('dupru', 30.0, 'dupru (prev)')
    assert entry.settings_from == osp.join(exp, 'training_states', '8.state')
    shutil.rmtree(osp.join(exp, 'training_states'))
    entry = load_model_entry(exp, 4)  # the ticket says dupru; the option copy's rate belongs to another method
    assert (entry.method, entry.rate) == ('dupru', None)
    assert entry.settings_from == osp.join(exp, 'models', 'net_g_round2_best.pth')
    written['pruning'].update(method='dupru', rate=30)
    with open(copy, 'w') as f:
        yaml.safe_dump(written, f)
    assert (load_model_entry(exp, 4).method, load_model_entry(exp, 4).rate) == ('dupru', 30.0)


# ------------------------------------------------------------------------------------------ dupru-test
def _test_options(name, weights):
    val = tiny_options('x')['datasets']['val']
    opt = {'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'test_1': dict(val)}, 'network_g': tiny_options('x')['network_g'],
           'path': {'param_key_g': 'params', 'strict_load_g': True},
           'val': {'save_img': False, 'suffix': None, 'metrics': {'psnr': {'type': 'calculate_psnr',
                                                                           'crop_border': 4, 'test_y_channel': False}}}}
    if weights:
        opt['path']['pretrain_network_g'] = str(weights)
    return opt


def test_dupru_test_refuses_random_weights_unless_allowed(tmp_path):
    shared_dataset('val')
    yml = write_options(_test_options('scored', None), tmp_path)
    refused = _cli('test', ['-opt', yml], tmp_path)
    _assert_user_error(refused, 'dupru-test', 'path.pretrain_network_g is not set', '--allow-random-weights')
    assert not (tmp_path / 'results').exists()
    allowed = _cli('test', ['-opt', yml, '--allow-random-weights'], tmp_path)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert '# psnr:' in open(glob.glob(str(tmp_path / 'results' / 'scored' / 'test_*.log'))[0]).read()


def test_dupru_test_option_and_weight_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from dupru_basicsr.test import main
    shared_dataset('val')
    monkeypatch.chdir(tmp_path)
    compressed = tmp_path / 'small.pth'
    torch.save({'format': 'dupru-sparse-v1', 'payloads': {}}, compressed)
    cases = [(_test_options('t', tmp_path / 'nothing.pth'), 'path.pretrain_network_g: "'),
             (_test_options('t', compressed), 'is a compressed file made by dupru-export'),
             (dict(_test_options('t', compressed), scale=2), 'scale is 2 but network_g upscales by 4')]
    for opt, phrase in cases:
        monkeypatch.setattr(sys, 'argv', ['dupru-test', '-opt', write_options(opt, tmp_path)])
        assert main() == 2
        err = capsys.readouterr().err
        assert err.startswith('dupru-test: error: ') and phrase in err and err.count('\n') == 1, err
    assert not (tmp_path / 'results').exists()


# ------------------------------------------------------------------------------------------ dupru-export
def test_export_never_overwrites_its_input_and_writes_only_the_given_file(tmp_path, monkeypatch, capsys):
    from basicsr.archs.srresnet_arch import MSRResNet

    from dupru_basicsr.export import main
    monkeypatch.chdir(tmp_path)
    torch.save({'params': MSRResNet(num_feat=8, num_block=1).state_dict()}, 'net.pth')
    os.symlink('net.pth', 'link.pth')
    os.mkdir('folder')
    before = _snapshot(tmp_path)
    cases = [(['net.pth', '--out', 'net.pth'], '--out net.pth is the input file net.pth'),
             (['net.pth', '--out', './folder/../net.pth'], 'is the input file net.pth'),
             (['link.pth', '--out', 'net.pth'], 'is the input file link.pth'),
             (['net.pth', '--onnx', 'net.pth'], '--onnx net.pth is the input file'),
             (['net.pth', '--out', 'a.pth', '--onnx', 'a.pth'], '--onnx a.pth is the input file a.pth'),
             (['net.pth', '--out', 'folder'], '--out folder is a folder'),
             (['net.pth', '--out', 'nodir/../x.pth'], 'the folder nodir/.. does not exist'),
             (['net.pth', '--out', 'nodir/x.pth'], 'the folder nodir does not exist')]
    for argv, phrase in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith('dupru-export: error: ') and phrase in err and err.count('\n') == 1, (argv, err)
        assert _snapshot(tmp_path) == before, argv  # nothing written, no folder made
    assert main(['net.pth', '--out', 'folder/../small.pth']) == 0
    assert set(_snapshot(tmp_path)) == set(before) | {'small.pth'}


# ------------------------------------------------------------------------------------------ user errors: exit 2
def test_malformed_missing_and_unsafe_option_files_are_one_line_errors(tmp_path):
    (tmp_path / 'broken.yml').write_text('name: x\ndatasets: [unclosed\n')
    (tmp_path / 'list.yml').write_text('- a\n- b\n')
    (tmp_path / 'unsafe.yml').write_text('name: !!python/object/apply:os.system ["touch pwned"]\nnum_gpu: 0\n')
    opt = _dupru_opt('noname', val_set=None)
    del opt['path']
    write_options(opt, tmp_path)
    cases = [('train', 'missing.yml', '-opt missing.yml does not exist'),
             ('train', 'broken.yml', '-opt broken.yml is not valid YAML'),
             ('test', 'broken.yml', '-opt broken.yml is not valid YAML'),
             ('train', 'list.yml', 'holds list, not a mapping'),
             ('test', 'unsafe.yml', 'uses the YAML tag tag:yaml.org,2002:python/object/apply:os.system'),
             ('train', 'noname.yml', 'path is missing; it must be a mapping')]
    for module, yml, phrase in cases:
        _assert_user_error(_cli(module, ['-opt', yml], tmp_path), f'dupru-{module}', phrase)
    assert not (tmp_path / 'pwned').exists()  # BasicSR's full YAML loader never saw the file
    assert sorted(os.listdir(tmp_path)) == ['broken.yml', 'list.yml', 'noname.yml', 'unsafe.yml']


def test_launcher_force_yml_and_prefetch_errors_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from dupru_basicsr.train import main
    yml = write_options(_dupru_opt('ddp', val_set=None), tmp_path)
    result = _cli('train', ['-opt', yml, '--launcher', 'pytorch'], tmp_path)
    _assert_user_error(result, 'dupru-train', '--launcher pytorch needs', 'RANK is not set', 'torchrun')
    monkeypatch.chdir(tmp_path)
    for argv, phrase in ((['--force_yml', 'train:total_iter'], '--force_yml train:total_iter: give key:subkey=value'),
                         (['--force_yml', 'nosection:x=1'], '--force_yml nosection:x=1'),
                         (['--launcher', 'slurm'], 'SLURM_PROCID is not set'),
                         (['--force_yml', 'datasets:train:prefetch_mode=gpu'], 'prefetch_mode is \'gpu\'; use cpu or')):
        monkeypatch.setattr(sys, 'argv', ['dupru-train', '-opt', yml, *argv])
        assert main() == 2
        err = capsys.readouterr().err
        assert err.startswith('dupru-train: error: ') and phrase in err and err.count('\n') == 1, err
    assert sorted(os.listdir(tmp_path)) == ['ddp.yml']


def test_compare_demo_study_out_pointing_at_a_file(tmp_path, monkeypatch, capsys):
    from dupru_basicsr.compare import main as compare_main
    from dupru_basicsr.demo import main as demo_main
    from dupru_basicsr.study import main as study_main
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'taken').write_text('keep')
    os.makedirs('exp')
    for prog, call in (('dupru-compare', lambda: compare_main(['exp', '--out', 'taken'])),
                       ('dupru-demo', lambda: demo_main(['--out', 'taken'])),
                       ('dupru-study', lambda: study_main(['--train-hr', '.', '--data-root', '.', '--datasets', '.',
                                                           '--out', 'taken']))):
        assert call() == 2, prog
        err = capsys.readouterr().err
        assert err.startswith(f'{prog}: error: ') and 'taken' in err and 'is a file' in err, err
        assert err.count('\n') == 1, err
    assert (tmp_path / 'taken').read_text() == 'keep' and sorted(os.listdir(tmp_path)) == ['exp', 'taken']


@pytest.mark.slow
def test_ddp_start_on_a_locked_folder_stops_every_rank_with_the_message(tmp_path):
    """Only rank 0 takes the lock; it tells rank 1, so both ranks stop with the message instead of rank 1 waiting."""
    from dupru_basicsr.plugin.lock import FolderLock
    yml = write_options(_dupru_opt('ddpbusy', val_set=None), tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with FolderLock(tmp_path / 'experiments' / 'ddpbusy'):
        result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                                 '--master_addr', '127.0.0.1', '--master_port', str(port), '-m', 'dupru_basicsr.train',
                                 '-opt', yml, '--launcher', 'pytorch'], cwd=tmp_path, env=_env(), capture_output=True,
                                text=True, timeout=300)
    assert result.returncode != 0
    refusals = [line for line in result.stderr.splitlines() if line.startswith('dupru-train: error: ')]
    assert len(refusals) == 2 and all(f'is in use by process {os.getpid()}' in line for line in refusals), \
        result.stderr[-3000:]
    assert 'dupru_basicsr' not in result.stderr.replace('dupru_basicsr.train', '')  # no traceback from a rank
    assert not (tmp_path / 'experiments').exists()  # the test's lock made it and took it back; nothing else made
