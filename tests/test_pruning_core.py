"""Pruning core (pure PyTorch): targets, masks, thresholds, freezing, rewind, rounds, state."""
import pytest
import torch
from torch import nn

from conftest import device_params
from dupru_basicsr.pruning import (Mask, Pruner, RoundSchedule, num_to_remove, prune_global, prune_layerwise,
                                   select_targets)


class TinyNet(nn.Module):
    """Same naming as MSRResNet: conv_first, body.<i>.conv1/2, conv_last."""

    def __init__(self, nf=8, nb=2):
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(*[nn.Sequential() for _ in range(nb)])
        for blk in self.body:
            blk.add_module('conv1', nn.Conv2d(nf, nf, 3, padding=1))
            blk.add_module('conv2', nn.Conv2d(nf, nf, 3, padding=1))
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)
        self.register_buffer('running', torch.zeros(3))

    def forward(self, x):
        x = torch.relu(self.conv_first(x))
        for blk in self.body:
            x = x + blk.conv2(torch.relu(blk.conv1(x)))
        return self.conv_last(x)


def _net(seed=0, nf=8, nb=2, device='cpu'):
    """Initialised on the CPU (the same weights on every device), then moved to `device`."""
    torch.manual_seed(seed)
    return TinyNet(nf, nb).to(device)


def test_select_targets_default_pattern_and_errors():
    net = _net()
    targets = select_targets(net, ['body.*.weight'])
    assert list(targets) == ['body.0.conv1.weight', 'body.0.conv2.weight', 'body.1.conv1.weight',
                             'body.1.conv2.weight']
    with pytest.raises(ValueError, match='"bdy.*.weight" matches no parameter'):
        select_targets(net, ['bdy.*.weight'])
    net.register_parameter('steps', nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False))
    with pytest.raises(ValueError, match='"steps".*torch.int64.*floating-point'):
        select_targets(net, ['steps'])


def test_num_to_remove_rounds_half_up():
    assert num_to_remove(1000, 10) == 100
    assert num_to_remove(5, 10) == 1  # 0.5 -> 1 (Python's round would give 0)
    assert num_to_remove(4, 10) == 0
    assert num_to_remove(25, 10) == 3  # 2.5 -> 3


@pytest.mark.parametrize('device', device_params())
def test_layerwise_removes_exact_smallest_with_index_tiebreak(device):
    w = torch.tensor([0.5, -0.1, 0.1, 0.3, -0.1, 2.0, 0.0, 0.7, 0.1, -0.9], device=device)
    mask = Mask({'w': torch.ones(10, dtype=torch.bool, device=device)})
    new, thr = prune_layerwise({'w': w}, mask, 30)  # 3 of 10: 0.0 then the first two of the four 0.1-ties
    assert new['w'].tolist() == [True, False, False, True, True, True, False, True, True, True]
    assert thr['w'] == pytest.approx(0.1)
    # next round only considers survivors: 7 alive -> remove round(2.1) = 2: the remaining 0.1s at 4 and 8
    w2 = w * new['w']
    new2, _ = prune_layerwise({'w': w2}, new, 30)
    assert new2['w'].tolist() == [True, False, False, True, False, True, False, True, False, True]


@pytest.mark.parametrize('device', device_params())
def test_survivors_follow_geometric_schedule_exactly(device):
    net = _net(nf=16, nb=2, device=device)
    pruner = Pruner(net, ['body.*.weight'], 'dupru')
    per_layer = 16 * 16 * 9
    assert per_layer == 2304
    # 20 % of the survivors each round, rounded half up: 2304 -> 1843 -> 1474 -> 1179 -> 943 -> 754 -> 603
    # (0.8^6 * 2304 = 603.98: the kept fraction follows (1 - p)^k to the weight)
    for expected in [1843, 1474, 1179, 943, 754, 603]:
        pruner.prune(20)
        for n in pruner.params:
            assert int(pruner.mask[n].sum()) == expected
            assert int((pruner.params[n] != 0).sum()) == expected


@pytest.mark.parametrize('device', device_params())
def test_global_scope_one_threshold_over_all_layers(device):
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], device=device)
    b = torch.tensor([0.5, 0.6, 10.0, 11.0], device=device)
    mask = Mask.ones_like({'a': a, 'b': b})
    new, thr = prune_global({'a': a, 'b': b}, mask, 50)
    assert new['a'].tolist() == [False, False, True, True]
    assert new['b'].tolist() == [False, False, True, True]
    assert thr['global'] == 2.0
    layer, _ = prune_layerwise({'a': a, 'b': b}, mask, 50)
    assert layer['a'].tolist() == [False, False, True, True] and layer['b'].tolist() == [False, False, True, True]
    # a layer-imbalanced case where the scopes differ
    b2 = torch.tensor([10.0, 20.0, 30.0, 40.0], device=device)
    new, _ = prune_global({'a': a, 'b': b2}, mask, 50)
    assert new['a'].sum() == 0 and new['b'].sum() == 4


def test_global_threshold_on_20m_elements_is_exact():
    g = torch.Generator().manual_seed(0)
    weights = {'x': torch.randn(12_000_000, generator=g), 'y': torch.randn(8_000_000, generator=g)}
    weights['x'][:1000] = 0.25  # a block of ties at what becomes a pruned value
    mask = Mask.ones_like(weights)
    new, thr = prune_global(weights, mask, 10)
    removed = mask.num_kept() - new.num_kept()
    assert removed == 2_000_000
    all_abs = torch.cat([weights['x'].abs(), weights['y'].abs()])
    kept = torch.cat([new['x'], new['y']])
    assert all_abs[~kept].max() <= all_abs[kept].min()


@pytest.mark.parametrize('device', device_params())
def test_freeze_rules_hand_computed_with_negative_weights(device):
    w0 = torch.tensor([[0.5, -0.4, 0.0, -5e-7, 3e-7, -0.2]], device=device)
    grad = torch.full_like(w0, 1.0)
    expected = {
        # dupru: |W| < eps frozen (the zero and both tiny ones), both signs learn
        'dupru': [False, False, True, True, True, False],
        # upru (reference code): W < eps frozen -> every negative weight and the tiny positive one
        'upru': [False, True, True, True, True, True],
        # imp: only pruned entries (the mask) are frozen
        'imp': [False, False, True, False, False, False],
    }
    for method, frozen in expected.items():
        lin = nn.Linear(6, 1, bias=False).to(device)
        with torch.no_grad():
            lin.weight.copy_(w0)
        pruner = Pruner(lin, ['weight'], method, eps=1e-6)
        pruner.mask = Mask({'weight': w0 != 0})
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        pruner.attach(opt)
        lin.weight.grad = grad.clone()
        opt.step()
        moved = (lin.weight != w0)[0].tolist()
        assert moved == [not f for f in frozen], method
        assert lin.weight.grad[0].tolist() == [0.0 if f else 1.0 for f in frozen], method
        assert pruner.frozen_fraction() == pytest.approx(sum(frozen) / 6)


@pytest.mark.parametrize('make_opt', [
    lambda p: torch.optim.SGD(p, lr=0.05),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
],
                         ids=['sgd', 'sgd_momentum_wd', 'adam_wd', 'adamw'])
@pytest.mark.parametrize('method', ['dupru', 'upru', 'imp'])
@pytest.mark.parametrize('device', device_params())
def test_exact_zeros_and_bit_identical_frozen_values(make_opt, method, device):
    net = _net(seed=1, device=device)
    pruner = Pruner(net, ['body.*.weight'], method, eps=1e-2)  # a big eps so that some live weights freeze
    opt = make_opt(net.parameters())
    pruner.attach(opt)
    x, y = torch.randn(2, 3, 8, 8).to(device), torch.randn(2, 3, 8, 8).to(device)
    for step in range(12):
        if step == 4:  # prune mid-way: momentum buffers of the now-pruned entries are non-zero
            pruner.prune(40)
        before = {n: p.detach().clone() for n, p in pruner.params.items()}
        frozen = pruner.frozen_masks()
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        for n, p in pruner.params.items():
            assert torch.equal(p[~pruner.mask[n]], torch.zeros_like(p[~pruner.mask[n]])), (method, step, n)
            assert torch.equal(p[frozen[n]], before[n][frozen[n]]), (method, step, n)
            if method == 'upru' and step > 4:
                neg = (before[n] < 0)
                assert torch.equal(p[neg], before[n][neg])
        # something does learn
        assert any(not torch.equal(p, before[n]) for n, p in pruner.params.items())


@pytest.mark.parametrize('device', device_params())
def test_dupru_updates_negative_weights_upru_does_not(device):
    changed = {}
    for method in ('dupru', 'upru'):
        net = _net(seed=2, device=device)
        pruner = Pruner(net, ['body.*.weight'], method)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        pruner.attach(opt)
        w_before = pruner.params['body.0.conv1.weight'].detach().clone()
        x = torch.randn(1, 3, 8, 8).to(device)
        nn.functional.mse_loss(net(x), torch.zeros(1, 3, 8, 8, device=device)).backward()
        opt.step()
        neg = w_before < 0
        changed[method] = int((pruner.params['body.0.conv1.weight'][neg] != w_before[neg]).sum())
    assert changed['upru'] == 0
    assert changed['dupru'] > 0.9 * int(neg.sum())


@pytest.mark.parametrize('device', device_params())
def test_rewind_modes(device):
    net = _net(seed=3, device=device)
    pruner = Pruner(net, ['body.*.weight'], 'dupru')
    pruner.snapshot()
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net.running.add_(5.0)
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    pruner.prune(50)
    mask = pruner.mask

    pruner.rewind('none')  # trained weights ⊙ mask, everything else untouched
    for k, v in net.state_dict().items():
        exp = trained[k] * mask[k] if k in pruner.params else trained[k]
        assert torch.equal(v, exp), k

    pruner.rewind('init')  # W0 ⊙ mask for targets, W0 for all other parameters and buffers
    for k, v in net.state_dict().items():
        exp = w0[k] * mask[k] if k in pruner.params else w0[k]
        assert torch.equal(v, exp), k
    assert torch.equal(net.running, torch.zeros(3, device=device))

    fresh = _net(seed=99, device=device).state_dict()
    pruner.rewind('reinit', fresh)
    for k, v in net.state_dict().items():
        exp = fresh[k] * mask[k] if k in pruner.params else fresh[k]
        assert torch.equal(v, exp), k
    assert pruner.mask.equal(mask)  # same masks
    with pytest.raises(ValueError, match='fresh_state'):
        pruner.rewind('reinit')


@pytest.mark.parametrize('device', device_params())
def test_apply_mask_to_a_copy_e_g_ema(device):
    net, ema = _net(seed=4, device=device), _net(seed=5, device=device)
    pruner = Pruner(net, ['body.*.weight'])
    pruner.prune(30)
    pruner.apply_mask(ema)
    for n, p in select_targets(ema, ['body.*.weight']).items():
        assert torch.equal(p != 0, pruner.mask[n])


@pytest.mark.parametrize('device', device_params())
def test_state_dict_round_trip_mid_training(tmp_path, device):
    net = _net(seed=6, device=device)
    pruner = Pruner(net, ['body.*.weight'], 'upru', eps=1e-5, scope='global')
    pruner.snapshot()
    pruner.prune(25)
    state = pruner.state_dict()
    torch.save(state, tmp_path / 'p.pth')
    loaded = torch.load(tmp_path / 'p.pth', weights_only=True)

    other = Pruner(_net(seed=7, device=device), ['body.*.weight'], 'upru', eps=1e-5, scope='global')
    other.load_state_dict(loaded)  # saved on the CPU, loaded onto the device of the pruned model
    assert other.mask.equal(pruner.mask)
    assert all(m.device == pruner.mask[n].device for n, m in other.mask.items())
    for k in pruner.rewind_state:
        assert torch.equal(other.rewind_state[k], pruner.rewind_state[k])
    with pytest.raises(ValueError, match="method='upru'.*'dupru'"):
        Pruner(_net(), ['body.*.weight'], 'dupru', scope='global').load_state_dict(loaded)


@pytest.mark.parametrize('device', device_params())
def test_mask_save_load_and_stats(tmp_path, device):
    m = Mask({'a': torch.tensor([True, False, False, True], device=device),
              'b': torch.tensor([[True, True], [True, False]], device=device)})
    assert m.num_kept() == 5 and m.numel() == 8
    assert m.sparsity() == pytest.approx(3 / 8)
    assert m.layer_sparsity() == {'a': 0.5, 'b': 0.25}
    m.save(tmp_path / 'm.pth')
    assert Mask.load(tmp_path / 'm.pth').equal(m)  # the saved masks (loaded on the CPU; equal compares there)
    torch.save({'x': 1}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='not a mask file'):
        Mask.load(tmp_path / 'bad.pth')


def test_round_schedule_boundaries_and_state():
    rs = RoundSchedule([3, 2, 4], rewind_iter=1)
    assert [rs.round_of(i) for i in range(1, 10)] == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert [rs.local_iter(i) for i in range(1, 10)] == [1, 2, 3, 1, 2, 1, 2, 3, 4]
    assert [i for i in range(1, 10) if rs.is_round_end(i)] == [3, 5, 9]
    assert not rs.needs_prune(3) and rs.needs_prune(4)
    rs.round = 1
    assert not rs.needs_prune(5) and rs.needs_prune(6)
    assert rs.is_snapshot_iter(1) and not rs.is_snapshot_iter(2)
    other = RoundSchedule([3, 2, 4], rewind_iter=1)
    other.load_state_dict(rs.state_dict())
    assert other.round == 1
    with pytest.raises(ValueError, match='differs from this run'):
        RoundSchedule([3, 3, 3]).load_state_dict(rs.state_dict())
    with pytest.raises(ValueError, match='not inside the first round'):
        RoundSchedule([3, 2], rewind_iter=3)


@pytest.mark.parametrize('device', device_params())
def test_gradual_schedule_is_cubic_and_prune_to_sparsity_is_exact(device):
    from dupru_basicsr.pruning import GradualSchedule
    gs = GradualSchedule(start_iter=10, end_iter=50, final_sparsity=0.9, frequency=10)
    assert [i for i in range(1, 61) if gs.is_prune_iter(i)] == [10, 20, 30, 40, 50]
    assert gs.sparsity_at(5) == 0.0 and gs.sparsity_at(10) == 0.0
    assert gs.sparsity_at(30) == pytest.approx(0.9 * (1 - 0.5**3))
    assert gs.sparsity_at(50) == pytest.approx(0.9) and gs.sparsity_at(70) == pytest.approx(0.9)
    net = _net(seed=8, device=device)
    pruner = Pruner(net, ['body.*.weight'], 'imp')
    numel = 8 * 8 * 9
    for it in (20, 30, 40, 50):
        pruner.prune(sparsity=gs.sparsity_at(it))
        expected_pruned = int(numel * gs.sparsity_at(it) + 0.5)
        for n in pruner.params:
            assert numel - int(pruner.mask[n].sum()) == expected_pruned
    assert expected_pruned == 518  # 576 * 0.9 = 518.4
    kept_before = pruner.mask.num_kept()
    pruner.prune(sparsity=0.5)  # masks never loosen
    assert pruner.mask.num_kept() == kept_before
    with pytest.raises(ValueError, match='exactly one'):
        pruner.prune()


@pytest.mark.parametrize('device', device_params())
def test_rewind_lr_keeps_trained_weights_times_mask(device):
    net = _net(seed=9, device=device)
    pruner = Pruner(net, ['body.*.weight'])
    pruner.snapshot()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    pruner.prune(20)
    pruner.rewind('lr')
    for k, v in net.state_dict().items():
        assert torch.equal(v, trained[k] * pruner.mask[k] if k in pruner.params else trained[k])
