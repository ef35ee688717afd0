"""A DUPru run trained on each device (tests/conftest.py:device_params; bench/gpu_check.py runs them on CUDA): an
interrupted run resumes with Adam's `step` on the CPU (no host sync per parameter per step), masks on the model's
device, the interrupted round's masks and index, and pruned entries exactly 0.0 in every checkpoint (EMA too)."""
import glob
import os
import os.path as osp
import pytest
import torch

from conftest import device_params, tiny_options, train_until_killed

ROUNDS, E = 2, 3


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('device', device_params())
def test_a_dupru_run_resumes_on_its_device_with_cpu_steps_and_exact_zeros(run_train, monkeypatch, tmp_path, device):
    opt = tiny_options(f'dev_{device}', 'DUPruModel', pruning={'rounds': ROUNDS, 'iters_per_round': E, 'rate': 40},
                       total_iter=ROUNDS * E, val_freq=E, save_freq=1, ema_decay=0.9)
    opt['num_gpu'] = 1 if device.startswith('cuda') else 0
    train_until_killed(monkeypatch, run_train, opt, E + 2)
    interrupted = _load(osp.join(str(tmp_path), 'experiments', opt['name'], 'training_states', f'{E + 1}.state'))
    model, exp = run_train(opt, '--auto_resume')
    target_device = torch.device(device).type
    assert model.device.type == target_device
    assert all(m.device.type == target_device for _, m in model.pruner.mask.items())
    steps = [s['step'] for s in model.optimizer_g.state.values() if torch.is_tensor(s.get('step'))]
    assert steps and all(s.device.type == 'cpu' for s in steps)
    saved = interrupted['pruning']
    assert saved['rounds']['round'] == model.rounds.round == ROUNDS - 1
    assert model.pruner.mask.equal(type(model.pruner.mask)(saved['pruner']['keep_masks']))
    for path in glob.glob(osp.join(exp, 'models', 'net_g_*.pth')):
        it = osp.basename(path)[len('net_g_'):-len('.pth')]
        if (it.isdigit() and int(it) <= E) or it.startswith('round1_'):
            continue  # round 1 is dense
        ckpt = _load(path)
        for key in ('params', 'params_ema'):
            for name, keep in saved['pruner']['keep_masks'].items():
                w = ckpt[key][name]
                assert torch.equal(w[~keep], torch.zeros(int((~keep).sum()))), (path, key, name)


@pytest.fixture
def restore_determinism():
    """The settings deterministic: true changes are process-wide: put them back after the test."""
    from dupru_basicsr.utils.devices import determinism_settings
    before, env = determinism_settings(), os.environ.get('CUBLAS_WORKSPACE_CONFIG')
    yield before
    torch.use_deterministic_algorithms(before['deterministic_algorithms'])
    torch.backends.cudnn.benchmark = before['cudnn_benchmark']
    torch.backends.cudnn.deterministic = before['cudnn_deterministic']
    torch.backends.cudnn.allow_tf32 = before['cudnn_allow_tf32']
    torch.backends.cuda.matmul.allow_tf32 = before['matmul_allow_tf32']
    if env is None:
        os.environ.pop('CUBLAS_WORKSPACE_CONFIG', None)


def _settings_while_training(run_train, opt):
    from dupru_basicsr.hooks import hooks
    from dupru_basicsr.utils.devices import determinism_settings
    seen = []

    def listen(point, **info):
        if point == 'after_step':
            seen.append(determinism_settings())

    hooks.add(listen)
    try:
        model, exp = run_train(opt)
    finally:
        hooks.remove(listen)
    return seen[-1], model


def test_deterministic_option_turns_off_autotuning_and_tf32_under_both_loops(run_train, restore_determinism):
    from basicsr.models import build_model
    opt = tiny_options('nondet', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 1, 'rate': 30},
                       total_iter=2, val_set=None)
    default, _ = _settings_while_training(run_train, opt)
    assert default['cudnn_benchmark'] is True and default['deterministic_algorithms'] is False  # BasicSR's
    opt = dict(opt, name='det', deterministic=True)
    seen, _ = _settings_while_training(run_train, opt)
    assert seen == {'deterministic_algorithms': True, 'cudnn_benchmark': False, 'cudnn_deterministic': True,
                    'cudnn_allow_tf32': False, 'matmul_allow_tf32': False}
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    # BasicSR's own loop sets cudnn.benchmark = True, then builds the model: DUPruModel applies the option itself
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    built = dict(opt, is_train=True, dist=False, rank=0, world_size=1, auto_resume=False,
                 path={'models': '/nonexistent', 'pretrain_network_g': None, 'strict_load_g': True,
                       'resume_state': None})
    build_model(built)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark is False


def test_deterministic_must_be_a_boolean(run_train, tmp_path):
    from dupru_basicsr.plugin.option_base import OptionError
    opt = tiny_options('det_bad', 'SRModel', total_iter=2, val_set=None)
    opt['deterministic'] = 'yes'
    with pytest.raises(OptionError, match="deterministic is 'yes'; use true"):
        run_train(opt)
    assert not osp.exists(tmp_path / 'experiments')


@pytest.mark.parametrize('device', device_params())
def test_two_deterministic_runs_give_the_same_bits(run_train, restore_determinism, device):
    """With deterministic: true the same options give bit-identical weights (on CUDA: no autotuning, no TF32,
    deterministic cuDNN/cuBLAS kernels; the prune's threshold search avoids CUDA's kthvalue, which has none)."""
    finals = []
    for k in range(2):
        opt = tiny_options(f'det_{device}_{k}', 'DUPruModel', total_iter=4, val_set=None, save_freq=4,
                           pruning={'rounds': 2, 'iters_per_round': 2, 'rate': 40})
        opt.update(deterministic=True, num_gpu=1 if device.startswith('cuda') else 0)
        _, exp = run_train(opt)
        finals.append(_load(osp.join(exp, 'models', 'net_g_latest.pth'))['params'])
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
