"""Crash safety: SIGKILLed training processes resumed with --auto_resume end with exactly the weights of an
uninterrupted run; every checkpoint on disk loads at every moment; corrupt newest files are skipped; a non-finite
loss or non-finite weights stop the run with the last good checkpoint intact.

The kills at exact places go through the test launcher's `--kill-at <where>:<what>` (tests/helpers/launch.py);
the random kills are plain SIGKILLs sent by this test at a random moment of the training."""
import glob
import os
import os.path as osp
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
import pytest
import torch

from conftest import run_in, tiny_options, write_options

NAME = 'crash'
LAUNCH = osp.join(osp.dirname(osp.abspath(__file__)), 'helpers', 'launch.py')
ROUNDS, E = 3, 4


def _opt(name=NAME):
    """3 rounds x 4 iterations, checkpoints every 2 iterations and at round ends, EMA on; the 5 training
    images with batch 2 give 2 iterations per epoch, so resumes also cross an epoch boundary."""
    return tiny_options(name, 'DUPruModel', pruning={'rounds': ROUNDS, 'iters_per_round': E, 'rate': 30},
                        total_iter=ROUNDS * E, val_freq=E, save_freq=2, ema_decay=0.9)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """An uninterrupted in-process run: (experiment folder, final weights)."""
    root = tmp_path_factory.mktemp('reference')
    run_in(root, _opt())
    exp = osp.join(root, 'experiments', NAME)
    return exp, _final(exp)


def _final(exp):
    ckpt = torch.load(osp.join(exp, 'models', 'net_g_latest.pth'), map_location='cpu', weights_only=True)
    return {key: ckpt[key] for key in ('params', 'params_ema')}


def _assert_same_weights(a, b):
    for key in ('params', 'params_ema'):
        assert list(a[key]) == list(b[key])
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


def _assert_everything_loads(root):
    """Every .pth/.state under root/experiments passes its zip CRC check and loads with weights_only=True."""
    files = glob.glob(osp.join(root, 'experiments', '**', '*.pth'), recursive=True) + glob.glob(
        osp.join(root, 'experiments', '**', '*.state'), recursive=True)
    for path in files:
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None, path
        torch.load(path, map_location='cpu', weights_only=True)
    return files


def _temp_files(root):
    return glob.glob(osp.join(root, 'experiments', '**', '.*.tmp'), recursive=True)


def _state_iters(exp):
    return sorted(int(osp.basename(p)[:-len('.state')]) for p in glob.glob(osp.join(exp, 'training_states', '*.state')))


def _launch(folder, yml, kill_at=None):
    """`python -m dupru_basicsr.train -opt yml --auto_resume` in `folder` (through the test launcher when it is to be
    killed at `kill_at`); output to a file. Returns (proc, path)."""
    cmd = [sys.executable, '-m', 'dupru_basicsr.train']
    if kill_at:
        cmd = [sys.executable, LAUNCH, '--kill-at', kill_at, '--']
    out = osp.join(folder, f'run_{len(glob.glob(osp.join(folder, "run_*.out")))}.out')
    with open(out, 'w') as f:
        proc = subprocess.Popen(cmd + ['-opt', yml, '--auto_resume'], cwd=folder, stdout=f, stderr=subprocess.STDOUT)
    return proc, out


def _run(folder, yml, kill_at=None):
    proc, out = _launch(folder, yml, kill_at)
    rc = proc.wait(timeout=300)
    return rc, open(out).read()


def _resumed_from(output):
    m = re.search(r'Resuming training from epoch: \d+, iter: (\d+)\.', output)
    return int(m.group(1)) if m else None


@pytest.mark.slow
def test_kills_at_a_round_boundary_and_inside_saves_then_auto_resume(tmp_path, reference):
    exp_ref, ref_weights = reference
    yml = write_options(_opt(), tmp_path)
    exp = osp.join(tmp_path, 'experiments', NAME)
    # (kill point, iteration the killed run resumed from, newest training state left by the kill)
    chain = [
        ('after_lr:5', None, 4),  # round 2 starts: pruned, rewound, masks_round2.pth written; no state yet
        ('save:8.state', 4, 6),  # inside the save of 8.state: net_g_8.pth and the round-2 ticket are written
        ('save:masks_round3.pth', 6, 8),  # round 3's prune, inside the save of its masks file
    ]
    for kill_at, resumed_from, newest in chain:
        rc, out = _run(tmp_path, yml, kill_at)
        assert rc == -signal.SIGKILL, out[-3000:]
        assert _resumed_from(out) == resumed_from, out[-3000:]
        _assert_everything_loads(tmp_path)
        assert _state_iters(exp)[-1] == newest
        if kill_at.startswith('save:'):  # the kill hit inside atomic_save: only its temporary file is there
            name = kill_at.split(':')[1]
            assert [re.match(r'\.(.+)\.[^.]+\.tmp$', osp.basename(p)).group(1) for p in _temp_files(tmp_path)] == [name]
            assert not glob.glob(osp.join(exp, '*', name))
    rc, out = _run(tmp_path, yml)
    assert rc == 0, out[-3000:]
    assert _resumed_from(out) == 8
    assert 'left by an interrupted save' in open(sorted(glob.glob(osp.join(exp, 'train_*.log')))[-1]).read()
    assert not _temp_files(tmp_path)
    files = _assert_everything_loads(tmp_path)
    assert sorted(osp.relpath(p, exp) for p in files) == sorted(
        osp.relpath(p, exp_ref) for p in _assert_everything_loads(osp.dirname(osp.dirname(exp_ref))))
    _assert_same_weights(_final(exp), ref_weights)
    for r in (2, 3):  # the masks written by the killed runs are the uninterrupted run's masks
        ours = torch.load(osp.join(exp, 'models', f'masks_round{r}.pth'), weights_only=True)['keep_masks']
        ref = torch.load(osp.join(exp_ref, 'models', f'masks_round{r}.pth'), weights_only=True)['keep_masks']
        assert all(torch.equal(ours[k], ref[k]) for k in ref)


def _wait_for_iteration(proc, out_path, it, deadline):
    """Poll the run's output until it logged iteration `it`; returns the time it saw it."""
    while True:
        logged = [int(n) for n in re.findall(r'iter:\s*(\d+), lr:', open(out_path).read())]
        if logged and logged[-1] >= it:
            return time.time()
        assert proc.poll() is None and time.time() < deadline, open(out_path).read()[-3000:]
        time.sleep(0.002)


@pytest.mark.slow
@pytest.mark.parametrize('seed', [1, 2, 3])
def test_sigkill_at_a_random_moment_then_auto_resume(tmp_path, reference, seed):
    """SIGKILL at a random iteration k (1..10) plus a random fraction of one iteration's time: the kill may land in
    the optimizer step, a validation, a save or a round boundary, and always before the run ends (k <= 10 of 12)."""
    _, ref_weights = reference
    rng = random.Random(seed)
    k, fraction = rng.randint(1, 10), rng.random()
    yml = write_options(_opt(), tmp_path)
    proc, out_path = _launch(tmp_path, yml)
    deadline = time.time() + 240
    t1 = _wait_for_iteration(proc, out_path, 1, deadline)
    iteration_time = _wait_for_iteration(proc, out_path, 2, deadline) - t1
    _wait_for_iteration(proc, out_path, k, deadline)
    time.sleep(fraction * iteration_time)
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=60)
    output = open(out_path).read()
    reached = re.findall(r'iter:\s*(\d+), lr:', output)
    print(f'seed {seed}: killed {fraction:.2f} x {iteration_time:.3f}s after iteration {k} was logged; last logged '
          f'iteration {reached[-1] if reached else 0}; states on disk: '
          f'{_state_iters(osp.join(tmp_path, "experiments", NAME))}')
    assert rc == -signal.SIGKILL, output[-3000:]  # the kill landed before the end of the run
    _assert_everything_loads(tmp_path)
    rc, out = _run(tmp_path, yml)
    assert rc == 0, out[-3000:]
    _assert_everything_loads(tmp_path)
    assert not _temp_files(tmp_path)
    _assert_same_weights(_final(osp.join(tmp_path, 'experiments', NAME)), ref_weights)


# ------------------------------------------------------------------------------------------ atomic, safe loading
def test_every_torch_save_of_a_run_goes_through_atomic_save(run_train, monkeypatch):
    from dupru_basicsr.weights import io as checkpoint_io
    callers, replaced = [], []
    real_save, real_replace = torch.save, os.replace

    def spy_save(obj, f, *args, **kwargs):
        # the function of ours that asked for the save: the first frame outside torch and the atomic_write helper
        frame = sys._getframe(1)
        while frame.f_code.co_name in ('<lambda>', 'atomic_write'):
            frame = frame.f_back
        callers.append(frame.f_code.co_name)
        return real_save(obj, f, *args, **kwargs)

    def spy_replace(src, dst, *args, **kwargs):
        replaced.append(osp.abspath(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', spy_save)
    monkeypatch.setattr(checkpoint_io.os, 'replace', spy_replace)
    _, exp = run_train(_opt('atomic'))
    assert callers and set(callers) == {'atomic_save'}, callers
    written = glob.glob(osp.join(exp, '**', '*.pth'), recursive=True) + glob.glob(
        osp.join(exp, '**', '*.state'), recursive=True)
    assert len(written) == 21  # net_g_<2..12>, latest, 3 best + 3 last round tickets, 2 masks files, 6 states
    assert set(map(osp.abspath, written)) <= set(replaced)


def _copy_reference(reference, tmp_path):
    """The reference experiment under tmp_path, without its net_g_latest.pth (a resume has to recreate it)."""
    exp = osp.join(tmp_path, 'experiments', NAME)
    shutil.copytree(reference[0], exp)
    os.remove(osp.join(exp, 'models', 'net_g_latest.pth'))
    return exp


def _corrupt_tensor_data(path):
    """XOR bytes in the middle of the largest tensor record: the zip structure and pickle stay valid."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    with open(path, 'r+b') as f:
        raw = f.read()
        # the local header's extra field (alignment padding) can be longer than the central directory's
        local_extra = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], 'little')
        offset = info.header_offset + 30 + len(info.filename.encode()) + local_extra + info.compress_size // 2
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in raw[offset:offset + 16]))


def test_truncated_newest_state_falls_back_to_the_previous_one(run_train, reference, tmp_path, capsys,
                                                               monkeypatch):
    exp = _copy_reference(reference, tmp_path)
    state = osp.join(exp, 'training_states', '12.state')
    with open(state, 'r+b') as f:
        f.truncate(os.path.getsize(state) // 2)
    loads = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy_load)
    run_train(_opt(), '--auto_resume')
    out = capsys.readouterr().out
    assert re.search(r'Cannot resume from .*/training_states/12\.state: .*12\.state cannot be loaded \(.*\); it is '
                     r'truncated, corrupt', out), out[-2000:]
    log = open(sorted(glob.glob(osp.join(exp, 'train_*.log')))[-1]).read()
    assert 'Resuming training from epoch: 4, iter: 10.' in log  # 2 iterations per epoch: iterations 9-10 are epoch 4
    assert loads and all(w is True for w in loads)  # every load of the resume used weights_only=True
    monkeypatch.undo()
    _assert_everything_loads(tmp_path)  # 12.state was written again, whole
    _assert_same_weights(_final(exp), reference[1])


def test_corrupt_newest_network_falls_back_to_the_previous_state(run_train, reference, tmp_path, capsys):
    exp = _copy_reference(reference, tmp_path)
    net = osp.join(exp, 'models', 'net_g_12.pth')
    _corrupt_tensor_data(net)
    torch.load(net, weights_only=True)  # torch.load alone does not notice: the CRC check is what catches it
    run_train(_opt(), '--auto_resume')
    out = capsys.readouterr().out
    assert re.search(r'Cannot resume from .*/12\.state: .*/models/net_g_12\.pth cannot be loaded \(RuntimeError: '
                     r'record archive/data/\d+ fails its CRC check\)', out), out[-2000:]
    log = open(sorted(glob.glob(osp.join(exp, 'train_*.log')))[-1]).read()
    assert 'Resuming training from epoch: 4, iter: 10.' in log  # 2 iterations per epoch: iterations 9-10 are epoch 4
    _assert_everything_loads(tmp_path)
    _assert_same_weights(_final(exp), reference[1])


def test_no_usable_state_refuses_to_resume_and_touches_nothing(run_train, reference, tmp_path):
    from dupru_basicsr.plugin.resume import ResumeError
    exp = _copy_reference(reference, tmp_path)
    for path in glob.glob(osp.join(exp, 'training_states', '*.state')):
        with open(path, 'r+b') as f:
            f.truncate(100)
    before = sorted(os.listdir(osp.join(tmp_path, 'experiments')))
    with pytest.raises(ResumeError, match=r'--auto_resume found 6 training state\(s\) in .* but none is usable'):
        run_train(_opt(), '--auto_resume')
    assert sorted(os.listdir(osp.join(tmp_path, 'experiments'))) == before == [NAME]  # nothing archived


def test_explicit_corrupt_resume_state_names_the_file(run_train, reference, tmp_path):
    from dupru_basicsr.plugin.resume import ResumeError
    exp = _copy_reference(reference, tmp_path)
    state = osp.join(exp, 'training_states', '10.state')
    _corrupt_tensor_data(state)
    opt = _opt()
    opt['path']['resume_state'] = state
    with pytest.raises(ResumeError, match=rf'path\.resume_state: {re.escape(state)} cannot be used .*fails its CRC '
                       r'check.*use --auto_resume'):
        run_train(opt)


# ------------------------------------------------------------------------------------------ non-finite values
def _assert_last_good(exp, last, failed_at):
    """Checkpoints up to `last` load and are finite; nothing was saved at or after the failing iteration."""
    for it in range(2, last + 1, 2):
        ckpt = torch.load(osp.join(exp, 'models', f'net_g_{it}.pth'), weights_only=True)
        assert all(torch.isfinite(v).all() for params in ckpt.values() for v in params.values())
        torch.load(osp.join(exp, 'training_states', f'{it}.state'), weights_only=True)
    saved = [int(re.search(r'(\d+)', osp.basename(p)).group(1)) for p in glob.glob(osp.join(exp, 'models', '*.pth'))
             + glob.glob(osp.join(exp, 'training_states', '*.state')) if re.search(r'_\d+\.pth$|/\d+\.state$', p)]
    assert max(saved) == last and not osp.exists(osp.join(exp, 'models', 'net_g_latest.pth'))
    assert failed_at > last


def test_huge_learning_rate_stops_srmodel_with_the_last_checkpoint_intact(run_train, tmp_path):
    opt = tiny_options('nan_lr', total_iter=10, val_set=None, save_freq=2)
    # lr 1e-3 for 4 iterations, then 1e33: the weights blow up and the loss becomes inf/NaN
    opt['train']['scheduler'] = {'type': 'MultiStepRestartLR', 'milestones': [4], 'gamma': 1e30}
    with pytest.raises(FloatingPointError, match=r'Non-finite (loss|weights) .*at iteration (\d+); stopping') as e:
        run_train(opt)
    failed_at = int(re.search(r'at iteration (\d+)', str(e.value)).group(1))
    assert 'The last checkpoint (iteration 4: models/net_g_4.pth, training_states/4.state) is intact' in str(e.value)
    exp = osp.join(tmp_path, 'experiments', 'nan_lr')
    _assert_last_good(exp, 4, failed_at)
    assert str(e.value) in open(glob.glob(osp.join(exp, 'train_*.log'))[0]).read()


def test_nan_loss_stops_dupru_naming_iteration_and_round(run_train, tmp_path, monkeypatch):
    from dupru_basicsr.plugin.model import DUPruModel
    original = DUPruModel.optimize_parameters

    def poisoned(self, current_iter):
        if current_iter == 7:
            self.lq = self.lq * float('nan')
        original(self, current_iter)

    monkeypatch.setattr(DUPruModel, 'optimize_parameters', poisoned)
    with pytest.raises(FloatingPointError, match=r"Non-finite loss .* at iteration 7 \(round 2/3\)") as e:
        run_train(_opt('nan_dupru'))
    exp = osp.join(tmp_path, 'experiments', 'nan_dupru')
    _assert_last_good(exp, 6, 7)
    assert str(e.value) in open(glob.glob(osp.join(exp, 'train_*.log'))[0]).read()


def test_non_finite_weights_with_finite_loss_stop_before_validation_and_save(run_train, tmp_path, monkeypatch):
    """An inf weight at a round end: no ticket, no checkpoint, no state of that iteration is written."""
    from dupru_basicsr.plugin.model import DUPruModel
    original = DUPruModel.optimize_parameters

    def poisoned(self, current_iter):
        original(self, current_iter)
        if current_iter == 8:
            with torch.no_grad():
                self.net_g.conv_last.weight[0, 0, 0, 0] = float('inf')

    monkeypatch.setattr(DUPruModel, 'optimize_parameters', poisoned)
    with pytest.raises(FloatingPointError, match=r'^Non-finite weights in net_g\.conv_last\.weight at iteration 8 '
                       r'\(round 2/3\); stopping without validating or saving them\. The last checkpoint \(iteration '
                       r'6: .*\) is intact'):
        run_train(_opt('inf_weights'))
    exp = osp.join(tmp_path, 'experiments', 'inf_weights')
    _assert_last_good(exp, 6, 8)
    assert osp.isfile(osp.join(exp, 'models', 'net_g_round1_best.pth'))
    assert not osp.exists(osp.join(exp, 'models', 'net_g_round2_best.pth'))


def test_training_states_load_onto_the_cpu_even_where_cuda_is_present(run_train, monkeypatch, tmp_path):
    """Adam's `step` stays on the device it was loaded to: a state loaded onto a GPU would cost the non-fused Adam a
    host sync per parameter per step. dupru-train's loader and the import-time shim of basicsr.train both load onto
    the CPU, with CUDA present too (here pretended: asking for the current CUDA device fails the test)."""
    import basicsr.train

    from dupru_basicsr.plugin import shims
    from dupru_basicsr.plugin.resume import load_resume_state
    opt = tiny_options('cpu_state', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 2, 'rate': 30},
                       total_iter=4, val_set=None, save_freq=2, ema_decay=0.9)
    run_train(opt)

    def no_gpu_mapping(*args, **kwargs):
        raise AssertionError('a training state was mapped onto a CUDA device')

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'current_device', no_gpu_mapping)
    monkeypatch.chdir(tmp_path)
    run_opt = {'name': 'cpu_state', 'num_gpu': 1, 'auto_resume': True, 'rank': 0, 'dist': False,
               'path': {'resume_state': None, 'pretrain_network_g': None}}
    for load in (load_resume_state, shims.load_resume_state_cpu_safe):
        state = load(dict(run_opt, path=dict(run_opt['path'])))
        assert state['iter'] == 4
        steps = [s['step'] for o in state['optimizers'] for s in o['state'].values()]
        assert steps and all(s.device.type == 'cpu' for s in steps)
    assert basicsr.train.load_resume_state in (shims.load_resume_state_cpu_safe, load_resume_state)
