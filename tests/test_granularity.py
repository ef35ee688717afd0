"""Block granularity (`granularity: oc_block<N>`): N consecutive output channels at one (input channel, kh, kw) are
kept or removed together, with exact counts per layer and globally, scored by their L2 norm; every method and
schedule keeps exact zeros; layers whose output channels N does not divide are refused; resume checks it."""
import pytest
import torch
from torch import nn

from conftest import run_in, tiny_options
from dupru_basicsr.plugin.option_base import OptionError
from dupru_basicsr.plugin.pruning_options import PruningConfig, check_resume_options, resume_config
from dupru_basicsr.pruning import Pruner
from dupru_basicsr.pruning.granularity import block_scores, block_size


def _blocks_whole(keep, n):
    b = keep.reshape(keep.shape[0] // n, n, -1)
    return bool((b == b[:, :1]).all())


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Linear(16, 12))


@pytest.mark.parametrize('scope', ['layer', 'global'])
@pytest.mark.parametrize('n', [2, 4])
def test_whole_blocks_exact_counts_and_zeros(scope, n):
    net = _net()
    pruner = Pruner(net, ['*.weight'], 'dupru', scope=scope, granularity=f'oc_block{n}')
    pruner.prune(30)
    pruner.prune(sparsity=0.75)
    blocks = {name: p.numel() // n for name, p in pruner.params.items()}
    for name, keep in pruner.mask.items():
        assert _blocks_whole(keep, n), name
        w = pruner.params[name].detach()
        assert torch.equal(w[~keep], torch.zeros(int((~keep).sum())))
        if scope == 'layer':
            assert int((~keep).sum()) // n == int(blocks[name] * 0.75 + 0.5), name
    if scope == 'global':
        assert (pruner.mask.numel() - pruner.mask.num_kept()) // n == int(sum(blocks.values()) * 0.75 + 0.5)


def test_blocks_with_the_smallest_l2_norm_go_first():
    lin = nn.Linear(1, 4, bias=False)
    with torch.no_grad():  # two blocks of 2 output channels: L1 ranks (3, 0) above (2, 2), L2 the other way round
        lin.weight.copy_(torch.tensor([[3.0], [0.0], [2.0], [2.0]]))
    assert block_scores({'weight': lin.weight}, 2)['weight'].flatten().tolist() == pytest.approx([3.0, 8 ** 0.5])
    pruner = Pruner(lin, ['weight'], 'imp', granularity='oc_block2')
    pruner.prune(50)
    assert pruner.mask['weight'].flatten().tolist() == [True, True, False, False]


def test_element_is_the_default_and_unknown_or_indivisible_granularities_are_refused():
    assert block_size('element') == 1 and block_size('oc_block4') == 4
    with pytest.raises(ValueError, match='Unknown pruning granularity "oc_block0"'):
        Pruner(_net(), ['*.weight'], granularity='oc_block0')
    with pytest.raises(ValueError, match=r'multiple of 16; these are not: 0.weight \(\(8, 3, 3, 3\)\), 2.weight'):
        Pruner(_net(), ['*.weight'], granularity='oc_block16')
    with pytest.raises(OptionError, match='pruning.granularity: Unknown pruning granularity "blocks"'):
        PruningConfig.from_opt({'granularity': 'blocks'})


@pytest.mark.parametrize('method, extra', [
    ('dupru', {'rounds': 3, 'iters_per_round': 3, 'sparsity': 0.75}),
    ('upru', {'rounds': 3, 'iters_per_round': 3, 'sparsity': 0.75, 'scope': 'global'}),
    ('imp', {'schedule': 'gradual', 'rounds': 1, 'iters_per_round': 9, 'start_iter': 1, 'end_iter': 7,
             'sparsity': 0.75, 'frequency': 2}),
])
def test_every_method_and_schedule_trains_whole_block_zeros_in_basicsrs_loop(tmp_path, method, extra):
    opt = tiny_options(f'blocks_{method}', 'DUPruModel', total_iter=9, val_set=None,
                       pruning=dict(extra, method=method, granularity='oc_block4', targets='whole'))
    opt['pruning'].pop('rate')
    model = run_in(tmp_path, opt)
    ckpt = torch.load(tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth', weights_only=True)
    for name, keep in model.pruner.mask.items():
        assert _blocks_whole(keep, 4), name
        assert torch.equal(ckpt['params'][name][~keep], torch.zeros(int((~keep).sum())))
    assert model.pruner.mask.sparsity() == pytest.approx(0.75, abs=0.01)


def test_a_resume_with_another_granularity_is_refused_and_old_states_mean_element():
    opt = tiny_options('g', 'DUPruModel', total_iter=8, pruning={'rounds': 2, 'iters_per_round': 4})
    state = {'iter': 4, 'pruning': {'config': resume_config(opt)}}
    changed = tiny_options('g', 'DUPruModel', total_iter=8,
                           pruning={'rounds': 2, 'iters_per_round': 4, 'granularity': 'oc_block4'})
    with pytest.raises(OptionError, match="pruning.granularity: 'element' -> 'oc_block4'"):
        check_resume_options(changed, state)
    old_config = {k: v for k, v in resume_config(opt).items() if k != 'granularity'}  # written before the key
    assert check_resume_options(opt, {'iter': 4, 'pruning': {'config': old_config}}) == []
    with pytest.raises(OptionError, match="pruning.granularity: 'element' -> 'oc_block4'"):
        check_resume_options(changed, {'iter': 4, 'pruning': {'config': old_config}})
