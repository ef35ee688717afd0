"""Target presets for BasicSR networks, the pruning registry with a user rule, trained through the YAML interface."""
import os.path as osp
import sys
import pytest
import torch

from conftest import tiny_options
from dupru_basicsr.pruning.presets import TARGET_PRESETS, WHOLE_TARGET_PRESETS, preset_targets
from dupru_basicsr.pruning import num_to_remove, select_targets

TINY_NETS = {
    'MSRResNet': dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4),
    'EDSR': dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4, res_scale=1, img_range=255.),
    'RCAN': dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_group=2, num_block=2, squeeze_factor=4, upscale=4,
                 res_scale=1, img_range=255.),
    'RRDBNet': dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=16, num_block=2, num_grow_ch=8),
    'SwinIR': dict(upscale=4, in_chans=3, img_size=16, window_size=4, img_range=1., depths=[2, 2], embed_dim=24,
                   num_heads=[2, 2], mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv'),
}
# full-size networks: the preset must cover most of the weights
FULL_NETS = {
    'MSRResNet': dict(num_feat=64, num_block=16, upscale=4),
    'EDSR': dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4),
    'RCAN': dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_group=10, num_block=20, upscale=4),
    'RRDBNet': dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32),
    'SwinIR': dict(upscale=4, in_chans=3, img_size=48, window_size=8, img_range=1., depths=[6] * 6, embed_dim=180,
                   num_heads=[6] * 6, mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv'),
}


def _build(arch, kwargs):
    from basicsr.utils.registry import ARCH_REGISTRY
    return ARCH_REGISTRY.get(arch)(**kwargs)


@pytest.mark.parametrize('arch', sorted(TARGET_PRESETS))
def test_preset_covers_most_weights_but_not_first_and_last(arch):
    net = _build(arch, FULL_NETS[arch])
    targets = select_targets(net, preset_targets(arch))
    covered = sum(p.numel() for p in targets.values())
    total = sum(p.numel() for p in net.parameters())
    assert covered / total > 0.75, (arch, covered / total)
    assert not any(n.startswith(('conv_first', 'conv_last', 'upsample', 'upconv')) for n in targets)
    assert all(n.endswith('weight') for n in targets)


@pytest.mark.parametrize('arch', sorted(WHOLE_TARGET_PRESETS))
def test_whole_preset_adds_the_upsampler_and_leaves_only_first_and_last_dense(arch):
    net = _build(arch, FULL_NETS[arch])
    body = select_targets(net, preset_targets(arch))
    whole = select_targets(net, preset_targets(arch, 'whole'))
    assert set(body) < set(whole)
    added = set(whole) - set(body)
    assert added and all(n.startswith(('upconv', 'conv_hr', 'upsample', 'conv_up')) for n in added), added
    convs = {f'{name}.weight' for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    dense = convs - set(whole)
    assert {n.split('.')[0] for n in dense} <= {'conv_first', 'conv_last', 'conv_before_upsample'} | (
        {'body'} if arch == 'RCAN' else set()), dense  # RCAN: channel attention's 1x1 convs stay dense
    if arch == 'MSRResNet':
        total = sum(p.numel() for p in net.parameters())
        assert sorted(added) == ['conv_hr.weight', 'upconv1.weight', 'upconv2.weight']
        assert sum(p.numel() for p in whole.values()) == 1511424 and total == 1517571  # 99.6 % of the weights
        assert dense == {'conv_first.weight', 'conv_last.weight'}


def test_targets_option_names_a_preset_or_lists_patterns():
    from dupru_basicsr.plugin.option_base import OptionError
    from dupru_basicsr.plugin.pruning_options import PruningConfig
    assert PruningConfig.from_opt({'targets': 'whole'}).resolve_targets('MSRResNet') == \
        preset_targets('MSRResNet', 'whole')
    assert PruningConfig.from_opt({'targets': 'body'}).resolve_targets('MSRResNet') == ['body.*.weight']
    assert PruningConfig.from_opt({}).resolve_targets('MSRResNet') == ['body.*.weight']
    assert PruningConfig.from_opt({'targets': 'upconv1.weight'}).resolve_targets('MSRResNet') == ['upconv1.weight']
    with pytest.raises(OptionError, match='pruning.targets: No pruning target preset for network type "SwinIR"'):
        PruningConfig.from_opt({'targets': 'whole'}).resolve_targets('SwinIR')
    with pytest.raises(OptionError, match='preset .body or whole. or a non-empty list'):
        PruningConfig.from_opt({'targets': []})


def test_unknown_network_needs_explicit_targets():
    with pytest.raises(KeyError, match='No pruning target preset for network type "VGGStyle".*pruning.targets'):
        preset_targets('VGGStyle')


@pytest.mark.parametrize('arch', sorted(TARGET_PRESETS))
def test_tiny_network_trains_two_rounds_with_exact_sparsity(run_train, arch):
    opt = tiny_options(f'preset_{arch}', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 2, 'rate': 40},
                       total_iter=4, val_set=None, gt_size=32, batch=1)
    del opt['pruning']['targets']  # chosen from network_g.type
    opt['network_g'] = dict(type=arch, **TINY_NETS[arch])
    model, exp = run_train(opt)
    assert model.pruner.targets == preset_targets(arch)
    masks = torch.load(osp.join(exp, 'models', 'masks_round2.pth'), weights_only=True)['keep_masks']
    final = torch.load(osp.join(exp, 'models', 'net_g_latest.pth'), weights_only=True)['params']
    for name, keep in masks.items():
        assert int(keep.sum()) == keep.numel() - num_to_remove(keep.numel(), 40), name
        assert torch.equal(final[name][~keep], torch.zeros(int((~keep).sum()))), name


PLUGIN = '''
from dupru_basicsr.plugin.registry import FREEZE_RULE_REGISTRY


@FREEZE_RULE_REGISTRY.register()
def freeze_nothing_but_pruned(weight, keep_mask, eps):
    """A user rule: like imp, and it counts its calls."""
    freeze_nothing_but_pruned.calls += 1
    return ~keep_mask


freeze_nothing_but_pruned.calls = 0
'''


def test_user_registered_rule_trains_through_yaml(run_train, tmp_path, monkeypatch):
    (tmp_path / 'my_rules.py').write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    opt = tiny_options('user_rule', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 3, 'rate': 30,
                                                           'method': 'freeze_nothing_but_pruned',
                                                           'plugins': ['my_rules']},
                       total_iter=6, val_set=None)
    model, _ = run_train(opt)
    rules = sys.modules['my_rules'].freeze_nothing_but_pruned
    assert rules.calls == 6 * 4  # every step, every target tensor
    assert model.pruner.method == 'freeze_nothing_but_pruned'
    assert model.pruner.mask.sparsity() == pytest.approx(num_to_remove(2304, 30) / 2304)


def test_unknown_method_lists_registered_ones(run_train):
    from dupru_basicsr.plugin.option_base import OptionError
    opt = tiny_options('bad_rule', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 3, 'method': 'dupro'},
                       total_iter=6, val_set=None)
    with pytest.raises(OptionError, match=r'pruning.method.*"dupro".*registered: dupru, (.*, )?imp, upru'):
        run_train(opt)
