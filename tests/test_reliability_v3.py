"""Reliability v3 (issue 24), driving the real commands: no path escapes its folder, no command-line string runs as
code, no silent reuse of earlier work, nothing half done on a refusal, a word where a silent exit 0 misled, refusals
that are one clean `<prog>: error:` line (stdout free of BasicSR's chatter), and files a shared group can read."""
import json
import os
import os.path as osp
import signal
import stat
import subprocess
import sys
import time
import pytest
import torch
import yaml

from conftest import shared_dataset, shared_pair, snapshot_tree, tiny_options, write_options
from test_reliability import _assert_user_error, _cli, _dupru_opt


def _refused(result, prog, *phrases):
    """A user error: one error line, nothing else on stderr, and BasicSR's prints kept back from stdout."""
    line = _assert_user_error(result, prog, *phrases)
    assert result.stderr.strip() == line, result.stderr[-2000:]
    assert 'Disable distributed.' not in result.stdout and 'Set pretrain_network_g' not in result.stdout
    return line


# ---------------------------------------------------------------------------------- 1. names stay in their folder
@pytest.mark.parametrize('name', ['../victim', '/tmp/dupru_abs_victim', '..', 'a/b'])
def test_force_yml_name_cannot_leave_the_experiments_folder(tmp_path, name):
    (tmp_path / 'victim').mkdir()
    (tmp_path / 'victim' / 'precious.txt').write_text('keep')
    yml = write_options(_dupru_opt('ok', val_set=None), tmp_path)
    before = snapshot_tree(tmp_path)
    for module in ('train', 'test'):
        result = _cli(module, ['-opt', yml, '--force_yml', f'name={name}'], tmp_path)
        _refused(result, f'dupru-{module}', '--force_yml: name is', 'would leave its folder')
    assert snapshot_tree(tmp_path) == before and not osp.exists('/tmp/dupru_abs_victim_archived')


def test_a_dataset_name_cannot_leave_the_visualization_folder(tmp_path):
    opt = _dupru_opt('dsname')
    opt['datasets']['val']['name'] = '../../outside'
    yml = write_options(opt, tmp_path)
    _refused(_cli('train', ['-opt', yml], tmp_path), 'dupru-train', 'datasets.val.name is', 'would leave its folder')
    yml = write_options(_dupru_opt('dsname2'), tmp_path)
    _refused(_cli('test', ['-opt', yml, '--force_yml', 'datasets:val:name=../x'], tmp_path), 'dupru-test',
             'datasets.val.name')
    assert sorted(os.listdir(tmp_path)) == ['dsname.yml', 'dsname2.yml']


# ---------------------------------------------------------------------------------- 2. no string runs as code
def test_force_yml_values_are_yaml_never_code(tmp_path):
    yml = write_options(_dupru_opt('code', val_set=None), tmp_path)
    crafted = ["name=[__import__('os').system('touch pwned')]",  # BasicSR's eval() ran this
               'name"];__import__("os").system("touch pwned");opt["name=x',  # BasicSR's exec() of the keys
               'pruning:targets=[body.*.weight',  # a typo: SyntaxError traceback before
               'train:ema_decay=!!floatx']
    phrases = ['name is [', "the key 'name\"]", "the value '[body.*.weight' does not parse", "'x' after !!float"]
    for entry, phrase in zip(crafted, phrases):
        _refused(_cli('train', ['-opt', yml, '--force_yml', entry], tmp_path), 'dupru-train', phrase)
        _refused(_cli('test', ['-opt', yml, '--force_yml', entry], tmp_path), 'dupru-test', phrase)
    assert not (tmp_path / 'pwned').exists() and sorted(os.listdir(tmp_path)) == ['code.yml']


def test_force_yml_list_values_train_and_typo_keys_are_refused(tmp_path):
    yml = write_options(_dupru_opt('lists', val_set=None), tmp_path)
    result = _cli('train', ['-opt', yml, '--force_yml', 'pruning:targets=[body.0.conv1.weight, body.1.conv2.weight]',
                            'pruning:rate=50'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    masks = torch.load(tmp_path / 'experiments' / 'lists' / 'models' / 'masks_round2.pth', weights_only=True)
    assert list(masks['keep_masks']) == ['body.0.conv1.weight', 'body.1.conv2.weight']
    typo = _cli('train', ['-opt', yml, '--force_yml', 'path:pretrain_network_gg=x.pth'], tmp_path)
    _refused(typo, 'dupru-train', 'path:pretrain_network_gg is not in the option file', 'Did you mean '
             '"pretrain_network_g"?')


# ---------------------------------------------------------------------------------- 3. no silent reuse
def _study_args(tmp_path, out, train_hr):
    data_root = tmp_path / 'sets'
    if not data_root.exists():
        gt, lr = shared_pair('val')
        (data_root / 'Held').mkdir(parents=True)
        os.symlink(gt, data_root / 'Held' / 'GTmod12')
        os.symlink(lr, data_root / 'Held' / 'LRbicx4')
    return ['--preset', 'smoke', '--train-hr', str(train_hr), '--data-root', str(data_root), '--datasets', 'Held',
            '--out', str(out), '--no-progress', '--device', 'cpu']


def test_study_rerun_with_other_data_or_an_unrecorded_folder_is_refused(tmp_path, capsys):
    from dupru_basicsr.study import DEFINITION, main
    out = tmp_path / 'study'
    out.mkdir()
    train_a, train_b = tmp_path / 'A', osp.join(shared_dataset('train'), 'GTmod4')
    train_a.mkdir()
    args = _study_args(tmp_path, out, train_b)
    definition = {'preset': 'smoke', 'train_hr': str(train_a), 'data_root': str(tmp_path / 'sets'),
                  'datasets': ['Held'], 'device': 'cpu'}
    (out / DEFINITION).write_text(json.dumps(definition))
    (out / 'experiments').mkdir()
    before = snapshot_tree(out)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'dupru-study: error: --out {out} holds a study made from other settings') and \
        f"train_hr: '{train_a}' then, '{train_b}' now" in err and 'settings:' in err and err.count('\n') == 1
    (out / DEFINITION).unlink()
    assert main(args) == 2
    assert 'holds runs or data but no record of what they were made from' in capsys.readouterr().err
    assert snapshot_tree(out) == dict((k, v) for k, v in before.items() if k != DEFINITION)


def test_demo_rerun_with_other_settings_is_refused_unless_forced(tmp_path, capsys):
    from dupru_basicsr.demo import MARKER, main
    out = tmp_path / 'demo'
    out.mkdir()
    earlier = {'preset': {'num_feat': 16, 'iters': 7}, 'cuda': False}
    (out / MARKER).write_text(yaml.safe_dump(earlier))
    (out / 'experiments').mkdir()
    (out / 'experiments' / 'earlier.txt').write_text('an earlier run')
    before = snapshot_tree(out)
    assert main(['--out', str(out), '--budget', 'tiny', '--device', 'cpu', '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'dupru-demo: error: --out {out} holds a demo with other settings (') and \
        'iters 7 -> 5' in err and '--force' in err and err.count('\n') == 1
    assert snapshot_tree(out) == before


# ---------------------------------------------------------------------------------- 4. nothing half done
def test_study_checks_the_evaluation_sets_before_preparing_anything(tmp_path, capsys):
    from dupru_basicsr.study import main
    (tmp_path / 'sets' / 'Held' / 'LRbicx4').mkdir(parents=True)  # GTmod12 missing
    out = tmp_path / 'study'
    args = ['--preset', 'smoke', '--train-hr', osp.join(shared_dataset('train'), 'GTmod4'), '--data-root',
            str(tmp_path / 'sets'), '--datasets', 'Held', '--out', str(out), '--no-progress']
    assert main(args) == 2
    assert 'Held/GTmod12 does not exist' in capsys.readouterr().err
    assert not out.exists()


def _fake_checkout(root):
    for rel in ('basicsr/models', 'basicsr/archs', 'basicsr/data', 'options/train'):
        (root / rel).mkdir(parents=True)
    (root / 'basicsr' / 'models' / '__init__.py').write_text('# BasicSR\n')
    (root / 'basicsr' / 'train.py').write_text('# BasicSR\n')
    (root / 'basicsr' / 'data' / 'degradations.py').write_text(
        'from torchvision.transforms.functional_tensor import rgb_to_grayscale\n')
    (root / 'setup.py').write_text('# BasicSR\n')


def test_register_writes_every_file_or_none(tmp_path):
    from dupru_basicsr.register import check_checkout
    checkout = tmp_path / 'BasicSR'
    _fake_checkout(checkout)
    try:
        check_checkout(str(checkout))
    except Exception as e:  # noqa: BLE001 - the fake must pass the checkout check
        pytest.fail(f'the fake checkout is not accepted: {e}')
    (checkout / 'options' / 'train' / 'DUPru').write_text('a file where the option folder goes')
    before = snapshot_tree(checkout)
    result = _cli('register', [str(checkout), '--fix-torchvision'], tmp_path)
    _refused(result, 'dupru-register', 'cannot write', 'nothing was changed')
    assert snapshot_tree(checkout) == before


def test_register_names_what_a_failed_rollback_left_changed(tmp_path, monkeypatch):
    import builtins
    import shutil

    from dupru_basicsr import register
    checkout = tmp_path / 'BasicSR'
    _fake_checkout(checkout)
    (checkout / 'options' / 'train' / 'DUPru').write_text('a file where the option folder goes')
    model_file = str(checkout / register.MODEL_FILE)
    remove = os.remove

    def remove_fails_for_the_model_file(path, *args, **kwargs):
        if str(path) == model_file:
            raise PermissionError(13, 'Permission denied', path)
        return remove(path, *args, **kwargs)

    monkeypatch.setattr(os, 'remove', remove_fails_for_the_model_file)
    result = _cli('register', [str(checkout), '--fix-torchvision'], tmp_path)
    line = _refused(result, 'dupru-register', 'cannot write', 'putting the checkout back as it was failed too',
                    f'left changed: {model_file} (written by dupru-register, not removed: Permission denied)')
    assert 'nothing was changed' not in line
    assert osp.isfile(model_file)
    monkeypatch.setattr(os, 'remove', remove)

    # in-process: an existing file whose earlier content cannot be written back, a made folder rmtree leaves
    root = tmp_path / 'tree'
    root.mkdir()
    (root / 'old.txt').write_bytes(b'before')
    (root / 'blocked').write_text('a file where a folder goes')
    made, old, new = root / 'made' / 'deep', str(root / 'old.txt'), str(root / 'new.txt')
    planned = {str(made / 'a.txt'): b'1', old: b'after', new: b'2', str(root / 'blocked' / 'x'): b'3'}
    real_open, writes = builtins.open, []

    def open_fails_to_restore(path, mode='r', *args, **kwargs):
        if str(path) == old and 'w' in mode:
            writes.append(path)
            if len(writes) > 1:  # the write of the plan succeeds, the one that puts it back fails
                raise OSError(28, 'No space left on device', path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(register, 'open', open_fails_to_restore, raising=False)
    monkeypatch.setattr(shutil, 'rmtree', lambda *args, **kwargs: None)
    with pytest.raises(register.RegisterError) as raised:
        register.write_all_or_nothing(planned)
    message = str(raised.value)
    assert message.startswith(f'cannot write {root / "blocked"} (') and 'nothing was changed' not in message
    assert (f'left changed: {old} (earlier content not restored: No space left on device); {root / "made"} (a '
            'folder made by dupru-register, not removed). Restore or remove these by hand') in message
    assert not osp.exists(new) and not osp.exists(made / 'a.txt')  # what could be put back was, and is not named
    assert (root / 'old.txt').read_bytes() == b'after'


def test_register_rollback_removes_every_folder_it_made(tmp_path):
    from dupru_basicsr.register import RegisterError, write_all_or_nothing
    (tmp_path / 'blocked').write_text('a file where a folder goes')
    (tmp_path / 'kept.txt').write_bytes(b'before')
    before = snapshot_tree(tmp_path)
    planned = {str(tmp_path / 'a' / 'b' / 'c' / 'new.txt'): b'1', str(tmp_path / 'kept.txt'): b'after',
               str(tmp_path / 'blocked' / 'x'): b'2'}
    with pytest.raises(RegisterError, match=r'cannot write .*blocked \(.*\); nothing was changed\.'):
        write_all_or_nothing(planned)
    assert snapshot_tree(tmp_path) == before  # a/ and a/b/ too, not only a/b/c/


# ---------------------------------------------------------------------------------- 5. a word instead of silence
def test_dupru_model_without_a_pruning_section_is_refused_and_one_round_warns(tmp_path):
    opt = _dupru_opt('nosection', val_set=None)
    opt.pop('pruning')
    yml = write_options(opt, tmp_path)
    _refused(_cli('train', ['-opt', yml], tmp_path), 'dupru-train', 'model_type is DUPruModel, which prunes, but the '
             'option file has no pruning: section')
    assert sorted(os.listdir(tmp_path)) == ['nosection.yml']
    opt = tiny_options('oneround', 'DUPruModel', pruning={'rounds': 1, 'iters_per_round': 2}, total_iter=2,
                       val_set=None)
    from dupru_basicsr.plugin.option_base import OptionWarning
    from dupru_basicsr.plugin.pruning_options import check_pruning_options
    with pytest.warns(OptionWarning, match='pruning.rounds is 1: round 1 is dense and no prune ever happens'):
        check_pruning_options(opt)


def test_export_of_empty_params_and_a_mismatching_arch_opt_are_errors(tmp_path):
    torch.save({'params': {}}, tmp_path / 'empty.pth')
    result = _cli('export', ['empty.pth', '--out', 'small.pth'], tmp_path)
    _refused(result, 'dupru-export', 'has no usable "params" / "params_ema" state dict (params: an empty dict)')
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.save({'params': MSRResNet(num_feat=8, num_block=1).state_dict()}, tmp_path / 'net.pth')
    (tmp_path / 'arch.yml').write_text(yaml.safe_dump({'network_g': {'type': 'MSRResNet', 'num_feat': 16,
                                                                     'num_block': 1}}))
    result = _cli('export', ['net.pth', '--onnx', 'm.onnx', '--arch-opt', 'arch.yml'], tmp_path)
    _refused(result, 'dupru-export', 'net.pth does not fit the network of arch.yml', '--arch-opt')
    assert sorted(os.listdir(tmp_path)) == ['arch.yml', 'empty.pth', 'net.pth']


def test_compare_names_an_unfinished_run_and_refuses_a_crop_box_outside_the_image(tmp_path, capsys):
    from dupru_basicsr.compare import main
    opt = _dupru_opt('cut', val_set=None)
    yml = write_options(opt, tmp_path)
    result = _cli('train', ['-opt', yml], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    exp = tmp_path / 'experiments' / 'cut'
    for name in ('net_g_latest.pth', 'net_g_8.pth', 'net_g_6.pth'):
        (exp / 'models' / name).unlink()  # as after a kill at iteration 7 of 8
    gt, lr = shared_pair('val')
    result = _cli('compare', [str(exp), '--dataset-dirs', f'val={gt}:{lr}', '--out', 'report', '--repeats', '0'],
                  tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'unfinished run' in result.stderr and 'iteration 4 of 8' in result.stderr
    with open(tmp_path / 'report' / 'results.json') as f:
        assert 'unfinished: iteration 4 of 8' in json.dumps(json.load(f))
    before = snapshot_tree(tmp_path)
    result = _cli('compare', [str(exp), '--dataset-dirs', f'val={gt}:{lr}', '--out', 'report2', '--crop-box',
                              '5000', '10', '32', '32'], tmp_path)
    _refused(result, 'dupru-compare', '--crop-box 5000 10 32 32: the corner (5000, 10) is outside val/')
    assert snapshot_tree(tmp_path) == before
    # main(argv), as other Python code calls it: a crop box of no width is refused with status 2 and writes nothing
    capsys.readouterr()
    assert main([str(exp), '--dataset-dirs', f'val={gt}:{lr}', '--out', str(tmp_path / 'report3'), '--crop-box', '0',
                 '0', '0', '32']) == 2
    err = capsys.readouterr().err
    assert err == 'dupru-compare: error: --crop-box [0, 0, 0, 32]: expected X Y W H with W, H >= 1 (HR pixels).\n', err
    assert snapshot_tree(tmp_path) == before


def test_prepare_notes_an_exif_orientation_it_does_not_apply(tmp_path):
    from PIL import Image
    (tmp_path / 'in').mkdir()
    img = Image.new('RGB', (96, 64), (120, 30, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees for display
    img.save(tmp_path / 'in' / 'turned.jpg', exif=exif.tobytes())
    img.save(tmp_path / 'in' / 'upright.jpg')
    result = _cli('prepare', ['--input', 'in', '--out', 'out', '--scales', '4', '--workers', '1'], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [line for line in result.stderr.splitlines() if 'EXIF orientation' in line]
    assert len(notes) == 1 and 'turned.jpg' in notes[0] and 'upright.jpg' not in notes[0]


# ---------------------------------------------------------------------------------- 6. clean refusals
class Payload:
    """An object a weights-only load refuses."""


def test_lock_path_that_is_a_folder_is_one_line(tmp_path):
    yml = write_options(_dupru_opt('locked', val_set=None), tmp_path)
    (tmp_path / 'experiments' / '.locked.lock').mkdir(parents=True)
    before = snapshot_tree(tmp_path)
    _refused(_cli('train', ['-opt', yml], tmp_path), 'dupru-train', 'cannot lock', '.locked.lock cannot be opened')
    assert snapshot_tree(tmp_path) == before


def test_test_command_help_launcher_hint_and_unsafe_checkpoint_message(tmp_path):
    help_text = _cli('test', ['--help'], tmp_path)
    assert help_text.returncode == 0 and '--allow-random-weights' in help_text.stdout
    yml = write_options(_dupru_opt('hint'), tmp_path)
    _refused(_cli('test', ['-opt', yml, '--launcher', 'pytorch'], tmp_path), 'dupru-test',
             '-m dupru_basicsr.test -opt')

    torch.save({'params': {'x': Payload()}}, tmp_path / 'odd.pth')
    line = _refused(_cli('test', ['-opt', yml, '--force_yml', 'path:pretrain_network_g=odd.pth'], tmp_path),
                    'dupru-test', 'odd.pth')
    assert 'weights_only' not in line and 'weights-only load refuses' in line


@pytest.mark.slow
def test_ctrl_c_stops_training_with_one_line_and_exit_130(tmp_path):
    opt = _dupru_opt('interrupt', val_set=None)
    opt['train']['total_iter'] = opt['pruning']['iters_per_round'] = 100000
    opt['pruning']['rounds'] = 1
    opt['pruning']['schedule'] = None
    yml = write_options(opt, tmp_path)
    # SIGINT as a terminal delivers it: a test run started in the background (`cmd &` in a script) hands its children
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all
    proc = subprocess.Popen([sys.executable, '-m', 'dupru_basicsr.train', '-opt', yml], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / 'experiments' / 'interrupt'
    deadline = time.time() + 120
    while time.time() < deadline and not list(log.glob('train_*.log')):
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert 'Traceback' not in err and err.strip().endswith('dupru-train: interrupted; checkpoints already saved are '
                                                           'complete; continue with --auto_resume.')


# ---------------------------------------------------------------------------------- 7. files a group can read
@pytest.mark.parametrize('umask', [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_a_plain_write_would(tmp_path, umask):
    from dupru_basicsr.weights.io import atomic_save
    old = os.umask(umask)
    try:
        atomic_save({'a': torch.zeros(2)}, tmp_path / 'atomic.pth')
        torch.save({'a': torch.zeros(2)}, tmp_path / 'plain.pth')
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / 'atomic.pth').st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / 'plain.pth').st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------------------------- twenty more hostile cases
# (command, arguments, phrase of the one error line); every one must be refused with exit 2, one clean error line,
# and leave the working folder as it was
HOSTILE = [
    ('train', ['--force_yml', 'name='], 'name is None'),
    ('train', ['--force_yml', 'name=~'], 'name is None'),
    ('train', ['--force_yml', 'name=a\\b'], 'would leave its folder'),
    ('test', ['--force_yml', 'name=.'], 'would leave its folder'),
    ('train', ['--force_yml', 'datasets:train:name=..'], 'datasets.train.name'),
    ('train', ['--force_yml', 'num_gpu=[0]'], 'num_gpu is [0]'),
    ('train', ['--force_yml', 'train:total_iter=1e3'], 'train.total_iter'),
    ('train', ['--force_yml', 'train:total_iter=-5'], 'train.total_iter'),
    ('train', ['--force_yml', 'pruning:rate=abc'], 'pruning.rate'),
    ('train', ['--force_yml', 'pruning=5'], 'pruning is 5'),
    ('train', ['--force_yml', 'network_g:type=NoSuchNet'], 'network_g.type is "NoSuchNet"'),
    ('train', ['--force_yml', 'deterministic="yes"'], "deterministic is 'yes'"),
    ('train', ['--force_yml', 'path:resume_state=../../nowhere.state'], 'nowhere.state'),
    ('train', ['--force_yml', 'nosuch:key:deeper=1'], '--force_yml nosuch:key:deeper=1'),
    ('train', ['--force_yml', 'train:ema_decay=0.9=1'], 'give key:subkey=value'),
    ('train', ['--force_yml', 'pruning:targets=[nothing.matches]'], 'pruning.targets'),
    ('test', ['--force_yml', 'path:pretrain_network_g=../missing.pth'], 'missing.pth" does not exist'),
    ('test', ['--force_yml', 'datasets:val:dataroot_gt=/nonexistent/gt'], '/nonexistent/gt'),
    ('compare', ['experiments/none', '--datasets', '../Set5'], 'experiments/none'),
    ('compare', ['run.pth', '--datasets', '../Set5'], '--datasets ../Set5: a dataset name is a folder'),
    ('compare', ['run.pth', '--dataset-dirs', 'v=gt:lr', '--crop-box', '-5', '-5', '8', '8'],
     'the corner (-5, -5) is outside'),
    ('demo', ['--iters', '0', '--out', 'd'], '--iters 0: must be >= 1'),
    ('demo', ['--budget', 'gpu', '--rounds', '-1', '--out', 'd'], '--rounds -1: must be >= 1'),
    ('study', ['--datasets', '/abs', '--data-root', '.', '--train-hr', '.', '--out', 's'], '--datasets /abs'),
    ('export', ['run.pth', '--out', '.'], '--out . is a folder'),
    ('export', ['intkeys.pth', '--out', 'small.pth'], 'intkeys.pth has no usable "params"'),
    ('compare', ['intkeys.pth', '--dataset-dirs', 'v=gt:lr'], 'intkeys.pth: its "params" has the entry 1'),
    ('test', ['--force_yml', 'path:pretrain_network_g=intkeys.pth'], 'holds no network weights under "params"'),
]


@pytest.mark.parametrize('module, args, phrase', HOSTILE, ids=[' '.join([m, *a])[:60] for m, a, _ in HOSTILE])
def test_hostile_case_is_one_clean_refusal(tmp_path, module, args, phrase):
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.save({'params': MSRResNet(num_feat=8, num_block=1).state_dict()}, tmp_path / 'run.pth')
    torch.save({'params': {1: torch.zeros(2)}}, tmp_path / 'intkeys.pth')  # an odd checkpoint dict
    gt, lr = shared_pair('val')
    os.symlink(gt, tmp_path / 'gt')
    os.symlink(lr, tmp_path / 'lr')
    opt = _dupru_opt('hostile')
    yml = write_options(opt, tmp_path)
    before = snapshot_tree(tmp_path)
    argv = (['-opt', yml] if module in ('train', 'test') else []) + args
    _refused(_cli(module, argv, tmp_path), f'dupru-{module}', phrase)
    assert snapshot_tree(tmp_path) == before


# ---------------------------------------------------------------------------------- loose ends of the last build
def _children(pid):
    kids = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@pytest.mark.slow
def test_study_workers_stop_when_their_parent_is_killed(tmp_path):
    args = _study_args(tmp_path, tmp_path / 'study', osp.join(shared_dataset('train'), 'GTmod4'))
    proc = subprocess.Popen([sys.executable, '-m', 'dupru_basicsr.study', *args, '--jobs', '2', '--iters', '400'],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.time() + 180, []
        while time.time() < deadline and len(workers) < 2:
            time.sleep(1)
            workers = [p for p in _children(proc.pid) if 'spawn_main' in open(f'/proc/{p}/cmdline').read()]
        assert len(workers) == 2, 'the study did not start its two workers'
        time.sleep(3)  # training
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        assert not any(_alive(p) for p in workers), 'a worker kept training after its parent died'
    finally:
        proc.kill()
        for p in _children(proc.pid):
            os.kill(p, signal.SIGKILL)


def test_dupru_test_takes_the_results_folder_lock(tmp_path):
    from dupru_basicsr.plugin.lock import FolderLock
    yml = write_options(_dupru_opt('scored'), tmp_path)
    with FolderLock(tmp_path / 'results' / 'scored'):
        before = snapshot_tree(tmp_path)
        result = _cli('test', ['-opt', yml, '--allow-random-weights'], tmp_path)
        _refused(result, 'dupru-test', 'results/scored is in use by process')
        assert snapshot_tree(tmp_path) == before
