"""The pretrained workflow: options/train/train_MSRResNet_x4_DUPru_from_trained.yml starts from a trained dense
checkpoint in BasicSR's format (`params`, `params_ema`) and prunes the whole network while fine-tuning; its dense
baseline file starts from the same checkpoint. Both run here as shipped, on the test data, with F and the data made
small."""
import os.path as osp

import pytest
import torch
import yaml

from basicsr.archs.srresnet_arch import MSRResNet
from conftest import REPO, shared_pair

PRUNED = osp.join(REPO, 'options', 'train', 'train_MSRResNet_x4_DUPru_from_trained.yml')
DENSE = osp.join(REPO, 'options', 'train', 'train_MSRResNet_x4_from_trained_dense.yml')
F = 12


def _shipped(path, checkpoint):
    """The shipped option file with the test data, F = 12 iterations and a learning rate too small to move a weight
    measurably (so that the start is visible in the result); everything else as shipped."""
    with open(path) as f:
        opt = yaml.safe_load(f)
    opt['num_gpu'] = 0
    train = opt['datasets']['train']
    train['dataroot_gt'], train['dataroot_lq'] = shared_pair('train')
    train.pop('meta_info_file')
    train.update(gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0, dataset_enlarge_ratio=1)
    val = opt['datasets']['val']
    val['dataroot_gt'], val['dataroot_lq'] = shared_pair('val')
    del opt['datasets']['val_2']
    opt['path']['pretrain_network_g'] = checkpoint
    opt['train']['total_iter'] = F
    opt['train']['scheduler']['periods'] = [F]
    opt['train']['optim_g']['lr'] = 1e-12
    opt['val']['val_freq'] = F
    opt['logger'].update(print_freq=1, save_checkpoint_freq=F, use_tb_logger=False)
    if 'pruning' in opt:
        opt['pruning'].update(iters_per_round=F, start_iter=1, end_iter=F * 6 // 10, frequency=1)
    return opt


def _checkpoint(tmp_path, keys):
    """A BasicSR-format checkpoint of full MSRResNet x4 (as the model zoo's and BasicSR's own saves are): `params`,
    and `params_ema` (other weights) when asked."""
    torch.manual_seed(3)
    params = MSRResNet(num_feat=64, num_block=16, upscale=4).state_dict()
    ckpt = {'params': params}
    if 'params_ema' in keys:
        ckpt['params_ema'] = {k: v + 0.01 for k, v in params.items()}
    path = str(tmp_path / 'MSRResNet_x4.pth')
    torch.save(ckpt, path)
    return path, ckpt


@pytest.mark.parametrize('keys', [('params', ), ('params', 'params_ema')], ids=['zoo-params', 'with-ema'])
def test_pruned_fine_tune_starts_from_the_checkpoint_and_prunes_the_whole_network(run_train, tmp_path, keys):
    path, ckpt = _checkpoint(tmp_path, keys)
    start = ckpt['params_ema' if 'params_ema' in keys else 'params']  # param_key_g: params_ema, else params
    opt = _shipped(PRUNED, path)
    assert opt['pruning']['targets'] == 'whole' and opt['pruning']['rewind'] == 'none'
    model, exp = run_train(opt)
    final = torch.load(osp.join(exp, 'models', f'net_g_{F}.pth'), weights_only=True)
    net = final['params']
    masks = model.pruner.mask
    upsampler = sorted(n for n in masks if not n.startswith('body.'))
    assert upsampler == ['conv_hr.weight', 'upconv1.weight', 'upconv2.weight']
    for name, keep in masks.items():
        # 90 % of every target layer, exactly; the pruned entries exactly 0.0 and the kept ones the start's
        assert abs(int(keep.sum()) - 0.1 * keep.numel()) <= 1, name
        assert torch.equal(net[name][~keep], torch.zeros(int((~keep).sum()))), name
        torch.testing.assert_close(net[name][keep], start[name][keep], rtol=0, atol=1e-6)
    for name in ('conv_first.weight', 'conv_last.weight'):  # dense, as they started
        torch.testing.assert_close(net[name], start[name], rtol=0, atol=1e-6)
        assert int((net[name] == 0).sum()) == 0
    zeros = sum(int((v == 0).sum()) for v in net.values())
    total = sum(v.numel() for v in net.values())
    assert 0.89 < zeros / total < 0.9  # 90 % of 99.6 % of the weights


def test_dense_baseline_starts_from_the_same_checkpoint(run_train, tmp_path):
    path, ckpt = _checkpoint(tmp_path, ('params', 'params_ema'))
    opt = _shipped(DENSE, path)
    assert opt['model_type'] == 'SRModel' and 'pruning' not in opt
    with open(PRUNED) as f:
        pruned = yaml.safe_load(f)
    # the same start, F and LR curve as the pruned file
    assert opt['path'] == dict(pruned['path'], pretrain_network_g=path)
    with open(DENSE) as f:
        shipped = yaml.safe_load(f)
    assert shipped['train'] == pruned['train'] and shipped['datasets'] == pruned['datasets']
    _, exp = run_train(opt)
    net = torch.load(osp.join(exp, 'models', f'net_g_{F}.pth'), weights_only=True)['params']
    for name, value in net.items():
        torch.testing.assert_close(value, ckpt['params_ema'][name], rtol=0, atol=1e-6)
