"""Foundation: BasicSR 1.4.2 works through the shims on current torch/torchvision and on CPU, stock MSRResNet
trains, saves, reloads and resumes with `python -m dupru_basicsr.train`."""
import glob
import os
import os.path as osp
import subprocess
import sys
import pytest
import torch

from conftest import REPO, tiny_options

PY = sys.executable


def _run_py(code):
    return subprocess.run([PY, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_functional_tensor_shim_is_needed_and_works():
    import torchvision
    major, minor = (int(v) for v in torchvision.__version__.split('.')[:2])
    plain = _run_py('import basicsr')
    if (major, minor) >= (0, 17):
        assert plain.returncode != 0 and 'functional_tensor' in plain.stderr  # the shim is needed
    shimmed = _run_py('import dupru_basicsr, basicsr; from basicsr.data.degradations import rgb_to_grayscale; '
                      'import torch; print(rgb_to_grayscale(torch.ones(3, 2, 2)).shape)')
    assert shimmed.returncode == 0, shimmed.stderr
    assert 'torch.Size([1, 2, 2])' in shimmed.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CUDA assumption only breaks on CPU-only machines')
def test_stock_load_resume_state_needs_cuda_and_ours_does_not(tmp_path):
    from basicsr.train import load_resume_state as stock_load_resume_state  # noqa: F401 (maybe patched)
    import importlib

    import basicsr.train

    from dupru_basicsr.plugin import shims
    from dupru_basicsr.plugin.resume import load_resume_state
    state_path = tmp_path / '3.state'
    torch.save({'epoch': 0, 'iter': 3, 'optimizers': [], 'schedulers': []}, state_path)
    opt = {'auto_resume': False, 'path': {'resume_state': str(state_path)}, 'num_gpu': 0}
    original = importlib.reload(basicsr.train).load_resume_state  # the unpatched function
    try:
        with pytest.raises((RuntimeError, AssertionError, AttributeError)):
            original(dict(opt, path=dict(opt['path'])))
    finally:
        shims.patch_basicsr()
    state = load_resume_state(dict(opt, path=dict(opt['path'])))
    assert state['iter'] == 3


def _fixed_batch(n=6, size=24):
    """Centre crops of the first training pairs (LR size x size), as float tensors."""
    import cv2

    from conftest import shared_pair
    gt_root, lq_root = shared_pair('train')
    names = sorted(os.listdir(lq_root))[:n]
    lqs, gts = [], []
    for name in names:
        lq = cv2.imread(osp.join(lq_root, name))[:, :, ::-1].astype('float32') / 255
        gt = cv2.imread(osp.join(gt_root, name))[:, :, ::-1].astype('float32') / 255
        y, x = (lq.shape[0] - size) // 2, (lq.shape[1] - size) // 2
        lqs.append(torch.from_numpy(lq[y:y + size, x:x + size].copy()).permute(2, 0, 1))
        gts.append(torch.from_numpy(gt[4 * y:4 * (y + size), 4 * x:4 * (x + size)].copy()).permute(2, 0, 1))
    return torch.stack(lqs), torch.stack(gts)


@pytest.mark.slow
def test_stock_msrresnet_trains_loss_goes_down_and_checkpoint_reloads(run_train, monkeypatch):
    from basicsr.archs.srresnet_arch import MSRResNet
    from basicsr.models.sr_model import SRModel
    initial = {}
    original = SRModel.optimize_parameters

    def record(self, current_iter):
        if not initial:
            initial.update({k: v.clone() for k, v in self.net_g.state_dict().items()})
        original(self, current_iter)

    monkeypatch.setattr(SRModel, 'optimize_parameters', record)
    opt = tiny_options('stock_tiny', total_iter=250, val_set=None, gt_size=48, batch=4)
    opt['train']['optim_g']['lr'] = 1e-3
    model, exp = run_train(opt)

    lq, gt = _fixed_batch()
    net = MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4).eval()
    with torch.no_grad():
        net.load_state_dict(initial)
        loss_before = torch.nn.functional.l1_loss(net(lq), gt).item()
        ckpt = torch.load(osp.join(exp, 'models', 'net_g_latest.pth'), weights_only=True)
        net.load_state_dict(ckpt['params'], strict=True)
        loss_after = torch.nn.functional.l1_loss(net(lq), gt).item()
    # the test photos are smooth (on one run: L1 0.0320 before, 0.0311 after), so the margin is 1 %, not more
    assert loss_after < 0.99 * loss_before, (loss_before, loss_after)

    model.net_g.eval()
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(net(x), model.net_g(x))
    assert osp.isfile(osp.join(exp, 'training_states', '250.state'))


def test_cpu_resume_continues_from_saved_state(run_train):
    opt = tiny_options('stock_resume', total_iter=6, val_set=None, save_freq=3)
    _, exp = run_train(opt)
    full = torch.load(osp.join(exp, 'models', 'net_g_latest.pth'), weights_only=True)['params']
    # resume from the state at iteration 3 (explicit resume_state): the run continues to 6 on the CPU
    opt['name'] = 'stock_resume_b'
    opt['path']['resume_state'] = osp.join(exp, 'training_states', '3.state')
    import shutil
    shutil.copytree(exp, exp + '_b')
    for f in glob.glob(osp.join(exp + '_b', 'models', 'net_g_6.pth')) + glob.glob(
            osp.join(exp + '_b', 'training_states', '6.state')):
        osp.exists(f) and __import__('os').remove(f)
    opt['path']['resume_state'] = osp.join(exp + '_b', 'training_states', '3.state')
    _, exp_b = run_train(opt)
    resumed = torch.load(osp.join(exp_b, 'models', 'net_g_latest.pth'), weights_only=True)['params']
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


@pytest.mark.slow
def test_cli_train_and_test_from_the_current_directory(tmp_path):
    """`python -m dupru_basicsr.train` / `.test` root experiments/ and results/ at the current directory."""
    import yaml

    from conftest import write_options
    opt = tiny_options('cli_tiny', total_iter=2, val_set='val', gt_size=32)
    train_yml = write_options(opt, tmp_path)
    r = subprocess.run([PY, '-m', 'dupru_basicsr.train', '-opt', train_yml], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    # the console script (what the README runs) exits 0 too; here it resumes the finished run
    script = osp.join(osp.dirname(PY), 'dupru-train')
    if osp.isfile(script):
        r = subprocess.run([script, '-opt', train_yml, '--auto_resume'], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, (r.stdout[-500:], r.stderr[-2000:])
    ckpt = tmp_path / 'experiments' / 'cli_tiny' / 'models' / 'net_g_latest.pth'
    assert ckpt.is_file()
    test_opt = {
        'name': 'cli_tiny_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': dict(opt['datasets']['val'])},
        'network_g': opt['network_g'],
        'path': {'pretrain_network_g': str(ckpt), 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': False, 'suffix': None, 'metrics': opt['val']['metrics']},
    }
    test_yml = tmp_path / 'test.yml'
    test_yml.write_text(yaml.safe_dump(test_opt))
    test_script = osp.join(osp.dirname(PY), 'dupru-test')
    cmd = [test_script] if osp.isfile(test_script) else [PY, '-m', 'dupru_basicsr.test']
    r = subprocess.run(cmd + ['-opt', str(test_yml)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    logs = glob.glob(str(tmp_path / 'results' / 'cli_tiny_test' / 'test_*.log'))
    assert logs and '# psnr:' in open(logs[0]).read()
