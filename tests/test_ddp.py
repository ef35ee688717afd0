"""DDP on the CPU: `torchrun --nproc_per_node 2 -m dupru_basicsr.train -opt X --launcher pytorch` (gloo) keeps masks,
thresholds, frozen sets and weights identical on every rank after every round, only rank 0 writes the experiment,
the result matches a single process with the same global batch, and a killed DDP run resumes exactly.

Why the two runs can match: BasicSR's EnlargedSampler gives rank r the positions r, r+2, ... of one permutation
(seeded by the epoch), so with batch b per rank the union of the ranks' i-th batches is the single process's i-th
batch of 2b. The augmentation must not depend on the rank's random stream, so the training set here is made of
32x32 GT / 8x8 LR patches (gt_size 32: the "random" crop is the whole patch) without flips or rotations. DDP
averages the ranks' mean-loss gradients, which equals the mean over the global batch up to float rounding, so the
weights are compared with a tolerance, and the masks exactly."""
import glob
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import pytest
import torch

from conftest import shared_pair, tiny_options, write_options
from helpers.launch import install_dump

ROUNDS, E = 3, 4
ROUND_ENDS = [E * r for r in range(1, ROUNDS + 1)]
LAUNCH = osp.join(osp.dirname(osp.abspath(__file__)), 'helpers', 'launch.py')


@pytest.fixture(scope='module')
def patches(tmp_path_factory):
    """8 GT 32x32 / LR 8x8 pairs cut from the training photos (two side by side from the centre of each of the first
    4, aligned with the x4 grid)."""
    import cv2
    root = tmp_path_factory.mktemp('patches')
    gt_root, lq_root = shared_pair('train')
    for sub in ('gt', 'lq'):
        (root / sub).mkdir()
    for name in sorted(os.listdir(lq_root))[:4]:
        lq, gt = cv2.imread(osp.join(lq_root, name)), cv2.imread(osp.join(gt_root, name))
        for k, x in enumerate((lq.shape[1] // 2 - 8, lq.shape[1] // 2)):
            y = lq.shape[0] // 2 - 4
            patch = f'{osp.splitext(name)[0]}_{k}.png'
            cv2.imwrite(str(root / 'lq' / patch), lq[y:y + 8, x:x + 8])
            cv2.imwrite(str(root / 'gt' / patch), gt[4 * y:4 * y + 32, 4 * x:4 * x + 32])
    assert len(os.listdir(root / 'gt')) == 8
    return root


def _opt(name, batch, patches):
    opt = tiny_options(name, 'DUPruModel', pruning={'rounds': ROUNDS, 'iters_per_round': E, 'rate': 30},
                       total_iter=ROUNDS * E, val_freq=E, save_freq=2, ema_decay=0.9, gt_size=32, batch=batch)
    opt['datasets']['train'].update(dataroot_gt=str(patches / 'gt'), dataroot_lq=str(patches / 'lq'),
                                    use_hflip=False, use_rot=False)
    opt['dist_params'] = {'backend': 'nccl', 'port': 29500}  # BasicSR's default: must not matter on a CPU
    return opt


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _torchrun(folder, yml, dump_dir, *extra, kill_at=None):
    launcher = osp.join(osp.dirname(sys.executable), 'torchrun')
    cmd = [launcher] if osp.isfile(launcher) else [sys.executable, '-m', 'torch.distributed.run']
    cmd += ['--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(_free_port()), LAUNCH,
            '--dump-dir', str(dump_dir)] + (['--kill-at', kill_at] if kill_at else [])
    cmd += ['--', '-opt', yml, '--launcher', 'pytorch', *extra]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=400)


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _dump(folder, rank, it):
    return _load(osp.join(folder, f'rank{rank}_iter{it}.pth'))


def _assert_ranks_identical(dump_dir, iters):
    for it in iters:
        a, b = _dump(dump_dir, 0, it), _dump(dump_dir, 1, it)
        assert a['round'] == b['round'] == (it - 1) // E + 1
        assert a['thresholds'] == b['thresholds'], it
        for key in ('keep_masks', 'frozen', 'params'):
            assert list(a[key]) == list(b[key])
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), (it, key, name)


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory, patches):
    """One uninterrupted 2-process DDP run: (folder, experiment, dump folder, torchrun result)."""
    folder = tmp_path_factory.mktemp('ddp')
    yml = write_options(_opt('ddp', 2, patches), folder)
    result = _torchrun(folder, yml, folder / 'dump')
    return folder, osp.join(folder, 'experiments', 'ddp'), folder / 'dump', result


@pytest.mark.slow
def test_ddp_ranks_agree_after_every_round_and_only_rank0_writes(ddp_run):
    folder, exp, dump_dir, result = ddp_run
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(os.listdir(dump_dir)) == sorted(f'rank{r}_iter{it}.pth' for r in (0, 1) for it in ROUND_ENDS)
    _assert_ranks_identical(dump_dir, ROUND_ENDS)
    log_files = glob.glob(osp.join(exp, 'train_*.log'))
    assert len(log_files) == 1  # rank 1 logs nowhere on disk
    log = open(log_files[0]).read()
    assert 'World size (gpu number): 2' in log and 'Network: DistributedDataParallel - MSRResNet' in log
    # the option file asks for NCCL (BasicSR's default); a CPU run (num_gpu: 0) uses gloo, even on a CUDA machine
    assert 'backend: nccl' in log and 'Distributed: gloo backend, world size 2.' in log
    # rank 0's masks are those of the experiment's masks files; thresholds were really computed
    for r in range(2, ROUNDS + 1):
        saved = _load(osp.join(exp, 'models', f'masks_round{r}.pth'))['keep_masks']
        mine = _dump(dump_dir, 0, r * E)
        assert all(torch.equal(saved[n], mine['keep_masks'][n]) for n in saved)
        assert len(mine['thresholds']) == 4 and all(t is not None and t > 0 for t in mine['thresholds'].values())
    # the frozen set holds the pruned entries (and any live |W| < eps)
    last = _dump(dump_dir, 0, ROUND_ENDS[-1])
    assert all(bool((last['frozen'][n] | last['keep_masks'][n]).all()) for n in last['frozen'])
    # only rank 0 wrote the experiment: the files are those of a single-process run, nothing twice
    names = sorted(osp.relpath(p, exp) for p in glob.glob(osp.join(exp, '**', '*'), recursive=True)
                   if osp.isfile(p) and not p.endswith('.log'))
    expected = sorted([f'models/net_g_{i}.pth' for i in range(2, 13, 2)] + ['models/net_g_latest.pth'] +
                      [f'models/net_g_round{r}_{k}.pth' for r in (1, 2, 3) for k in ('best', 'last')] +
                      [f'models/masks_round{r}.pth' for r in (2, 3)] +
                      [f'training_states/{i}.state' for i in range(2, 13, 2)] + ['ddp.yml'])
    assert names == expected
    assert not glob.glob(osp.join(folder, 'experiments', '*_archived_*'))


@pytest.mark.slow
def test_ddp_matches_a_single_process_with_the_same_global_batch(ddp_run, patches, run_train, tmp_path):
    _, exp, dump_dir, result = ddp_run
    assert result.returncode == 0, result.stderr[-4000:]
    from dupru_basicsr.hooks import hooks
    dump = install_dump(str(tmp_path / 'dump_single'))
    try:
        _, exp_single = run_train(_opt('single', 4, patches))
    finally:
        hooks.remove(dump)
    for it in ROUND_ENDS:
        ddp, single = _dump(dump_dir, 0, it), _dump(tmp_path / 'dump_single', 0, it)
        for name in single['keep_masks']:
            assert torch.equal(ddp['keep_masks'][name], single['keep_masks'][name]), (it, name)
        for name, thr in single['thresholds'].items():
            assert ddp['thresholds'][name] == pytest.approx(thr, rel=1e-4, abs=1e-7), (it, name)
    a = _load(osp.join(exp, 'models', 'net_g_latest.pth'))
    b = _load(osp.join(exp_single, 'models', 'net_g_latest.pth'))
    worst = 0.0
    for key in ('params', 'params_ema'):
        for name in b[key]:
            assert torch.allclose(a[key][name], b[key][name], rtol=1e-4, atol=1e-5), (key, name)
            worst = max(worst, float((a[key][name] - b[key][name]).abs().max()))
    print(f'largest |DDP - single| weight difference: {worst:.3g}')
    # and the run really trained (the comparison is not between two copies of W0)
    w0 = _load(osp.join(exp_single, 'training_states', '12.state'))['pruning']['pruner']['rewind_state']
    assert not torch.allclose(b['params']['conv_first.weight'], w0['conv_first.weight'])


@pytest.mark.slow
def test_killed_ddp_run_resumes_to_the_same_weights(ddp_run, patches, tmp_path):
    _, exp_full, _, result = ddp_run
    assert result.returncode == 0, result.stderr[-4000:]
    yml = write_options(_opt('ddp', 2, patches), tmp_path)
    # both ranks die at the start of round 3, right after its prune
    killed = _torchrun(tmp_path, yml, tmp_path / 'dump_killed', kill_at='after_lr:9')
    assert killed.returncode != 0
    exp = osp.join(tmp_path, 'experiments', 'ddp')
    assert not osp.exists(osp.join(exp, 'models', 'net_g_latest.pth'))
    for path in glob.glob(osp.join(exp, '*', '*.pth')) + glob.glob(osp.join(exp, '*', '*.state')):
        _load(path)
    shutil.rmtree(tmp_path / 'dump_killed')
    resumed = _torchrun(tmp_path, yml, tmp_path / 'dump_resumed', '--auto_resume')
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = open(sorted(glob.glob(osp.join(exp, 'train_*.log')))[-1]).read()
    assert any(f'Resuming training from epoch: {e}, iter: {i}.' in log for e in range(6) for i in (6, 8)), log[-3000:]
    _assert_ranks_identical(tmp_path / 'dump_resumed', [12])
    a = _load(osp.join(exp_full, 'models', 'net_g_latest.pth'))
    b = _load(osp.join(exp, 'models', 'net_g_latest.pth'))
    for key in ('params', 'params_ema'):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
