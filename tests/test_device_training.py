"""A DUPru run trained on each device (tests/conftest.py:device_params; bench/gpu_check.py runs them on CUDA): an
interrupted run resumes with Adam's `step` on the CPU (no host sync per parameter per step), masks on the model's
device, the interrupted round's masks and index, and pruned entries exactly 0.0 in every checkpoint (EMA too)."""
import glob
import os.path as osp
import pytest
import torch

from conftest import device_params, tiny_options

ROUNDS, E = 2, 3


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('device', device_params())
def test_a_dupru_run_resumes_on_its_device_with_cpu_steps_and_exact_zeros(run_train, monkeypatch, tmp_path, device):
    from dupru_basicsr.plugin.model import DUPruModel
    opt = tiny_options(f'dev_{device}', 'DUPruModel', pruning={'rounds': ROUNDS, 'iters_per_round': E, 'rate': 40},
                       total_iter=ROUNDS * E, val_freq=E, save_freq=1, ema_decay=0.9)
    opt['num_gpu'] = 1 if device.startswith('cuda') else 0
    original = DUPruModel.optimize_parameters

    def crash(self, current_iter):
        if current_iter == E + 2:
            raise KeyboardInterrupt('simulated kill')
        original(self, current_iter)

    monkeypatch.setattr(DUPruModel, 'optimize_parameters', crash)
    with pytest.raises(KeyboardInterrupt):
        run_train(opt)
    monkeypatch.setattr(DUPruModel, 'optimize_parameters', original)
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
