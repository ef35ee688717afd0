"""The compiled freezing step (`step='compiled'`, option `pruning.step: compiled`) gives the eager step's results bit
for bit, re-decides after outside writes, falls back to the eager step where compiling fails, and issues a fixed
number of calls; pruned entries' optimizer state is held at cheap values without changing any weight."""
import copy
import warnings

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from dupru_basicsr.pruning import Pruner, compiled_step
from dupru_basicsr.pruning.optimizer_state import STATE_HELD_AT


def _chain(n, seed=0, width=4):
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Conv2d(width, width, 3, padding=1) for _ in range(n)])


def _bits(state):
    return {k: v.detach().clone().view(torch.int32) for k, v in state.items()}


def _train(net, method, step, optimizer, settle=True, steps=24, outside=None):
    """`steps` Adam/SGD steps with a prune at 8, a rewind to the snapshot at 12 and, with `outside`, a
    load_state_dict of the weights halved at 16 (written into the net between two steps, not through the pruner, as a
    user or a loader could: more weights fall under eps)."""
    pruner = Pruner(net, ['*.weight'], method, eps=3e-2, step=step)
    pruner.settle_optimizer_state = settle
    pruner.snapshot()
    pruner.prune(40)
    opt = optimizer(net.parameters())
    pruner.attach(opt)
    g = torch.Generator().manual_seed(5)
    for i in range(steps):
        x = torch.randn(2, 4, 6, 6, generator=g)
        opt.zero_grad()
        nn.functional.mse_loss(net(x), torch.zeros_like(x)).backward()
        opt.step()
        if i == 8:
            pruner.prune(30)
        if i == 12:
            pruner.rewind('init')
        if i == 16 and outside:
            net.load_state_dict({k: v * 0.5 for k, v in net.state_dict().items()})  # the next step must see them
    return pruner, opt


OPTIMIZERS = {
    'adamw-amsgrad': lambda params: torch.optim.AdamW(params, lr=2e-2, weight_decay=0.1, amsgrad=True),
    'sgd-momentum': lambda params: torch.optim.SGD(params, lr=5e-2, momentum=0.9, weight_decay=1e-2),
}


@pytest.mark.parametrize('method', ['dupru', 'upru', 'imp'])
def test_compiled_step_gives_the_eager_steps_weights_bit_for_bit(method):
    net = _chain(5)
    results = {}
    for step in ('eager', 'compiled'):
        trained = copy.deepcopy(net)
        pruner, _ = _train(trained, method, step, OPTIMIZERS['adamw-amsgrad'], outside=True)
        assert pruner.step == step
        if step == 'compiled':
            assert pruner.engine.compiled_calls == 2 * 24  # every hook of every step ran compiled code
        results[step] = _bits(trained.state_dict())
        for name, keep in pruner.mask.items():
            assert torch.equal(results[step][name][~keep], torch.zeros(int((~keep).sum()), dtype=torch.int32))
    assert results['eager'].keys() == results['compiled'].keys()
    for k in results['eager']:
        assert torch.equal(results['eager'][k], results['compiled'][k]), k


@pytest.mark.slow
def test_more_networks_than_dynamos_recompile_limit_all_run_compiled():
    """Every compiled engine compiles its own code objects: a process that prunes more differently shaped networks
    than dynamo's recompile limit still runs each one compiled (a shared function would fall back at the ninth)."""
    limit = torch._dynamo.config.recompile_limit
    for n in range(1, limit + 3):  # n targets: a new list of shapes each time
        net = _chain(n, seed=n)
        expected = copy.deepcopy(net)
        pruner, _ = _train(net, 'dupru', 'compiled', OPTIMIZERS['sgd-momentum'], steps=3)
        _train(expected, 'dupru', 'eager', OPTIMIZERS['sgd-momentum'], steps=3)
        assert pruner.step == 'compiled' and pruner.engine.compiled_calls == 6, n  # 3 steps x 2 hooks
        for k, v in _bits(expected.state_dict()).items():
            assert torch.equal(v, _bits(net.state_dict())[k]), (n, k)


def test_a_failing_compile_warns_and_the_step_continues_eager_with_the_same_results(monkeypatch):
    net = _chain(3)
    expected = copy.deepcopy(net)
    _train(expected, 'dupru', 'eager', OPTIMIZERS['adamw-amsgrad'], steps=6)

    def no_compiler(rule, eps):
        def fail(*args):
            raise RuntimeError('InvalidCxxCompiler: No working C++ compiler found')
        return fail

    monkeypatch.setattr(compiled_step, '_make_after_step', no_compiler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        pruner, _ = _train(net, 'dupru', 'compiled', OPTIMIZERS['adamw-amsgrad'], steps=6)
    assert pruner.step == 'eager'
    assert sum('torch.compile failed (RuntimeError: InvalidCxxCompiler' in str(w.message) for w in caught) == 1
    for k, v in _bits(expected.state_dict()).items():
        assert torch.equal(v, _bits(net.state_dict())[k]), k


def _profiled_calls(pruner, net):
    """Top-level profiler events of one before_step + after_step (after a first step that builds and compiles)."""
    for _ in range(2):
        for p in net.parameters():
            p.grad = torch.randn_like(p)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            pruner.before_step()
            pruner.after_step()
    return [e.name for e in prof.events() if e.cpu_parent is None]


def test_compiled_step_issues_a_fixed_small_number_of_calls():
    counts = {}
    for n in (8, 40):
        net = _chain(n, width=2)
        pruner = Pruner(net, ['*.weight'], 'dupru', eps=5e-2, step='compiled')
        pruner.prune(30)
        names = _profiled_calls(pruner, net)
        assert sum(name.startswith('Torch-Compiled Region') for name in names) == 2, names  # before + after
        assert not any(name.startswith('aten::') for name in names), names  # no eager op around them
        counts[n] = len(names)
    assert counts[8] == counts[40] <= 6, counts


@pytest.mark.parametrize('optimizer', sorted(OPTIMIZERS))
def test_pruned_entries_optimizer_state_is_held_without_changing_a_weight(optimizer):
    net = _chain(4)
    results = {}
    for settle in (True, False):
        trained = copy.deepcopy(net)
        pruner, opt = _train(trained, 'dupru', 'eager', OPTIMIZERS[optimizer], settle=settle, steps=10)
        results[settle] = (_bits(trained.state_dict()), pruner, opt)
    (settled, pruner, opt), (unsettled, plain_pruner, opt_plain) = results[True], results[False]
    for k in settled:
        assert torch.equal(settled[k], unsettled[k]), k  # the same weights, bit for bit
    for name, p in pruner.params.items():
        state, plain_state = opt.state[p], opt_plain.state[plain_pruner.params[name]]
        held = [k for k in STATE_HELD_AT if k in state]
        assert held, sorted(state)
        pruned = ~pruner.mask[name]
        for key in held:
            # the prune at step 8 pruned more entries: held from the next step on
            value = state[key][pruned]
            assert torch.equal(value, torch.full_like(value, STATE_HELD_AT[key])), (name, key)
            # a kept entry's state is the optimizer's own (frozen ones too: a rewind can make them learn again)
            assert torch.equal(state[key][~pruned], plain_state[key][~pruned]), (name, key)
        assert not torch.equal(plain_state[held[-1]][pruned], state[held[-1]][pruned])


def test_pruning_step_option_trains_the_same_bits_in_basicsrs_loop(tmp_path):
    """`pruning.step: compiled` in an option file: DUPruModel's pruner compiles its step and the run ends with the
    eager run's weights, bit for bit (2 rounds: a prune and a rewind in between)."""
    import os.path as osp

    from conftest import run_in, tiny_options
    finals = {}
    for step in ('eager', 'compiled'):
        opt = tiny_options(f'step_{step}', 'DUPruModel', total_iter=6, val_set=None,
                           pruning={'rounds': 2, 'iters_per_round': 3, 'rate': 40, 'step': step})
        folder = tmp_path / step
        folder.mkdir()
        model = run_in(folder, opt)
        assert model.pruner.step == step
        finals[step] = torch.load(osp.join(folder, 'experiments', opt['name'], 'models', 'net_g_latest.pth'),
                                  weights_only=True)['params']
    for k, v in finals['eager'].items():
        assert torch.equal(v.view(torch.int32), finals['compiled'][k].view(torch.int32)), k


def test_unknown_step_option_is_refused_naming_the_key():
    from dupru_basicsr.plugin.option_base import OptionError
    from dupru_basicsr.plugin.pruning_options import PruningConfig
    with pytest.raises(OptionError, match="pruning.step is 'fused'; use one of eager, compiled"):
        PruningConfig.from_opt({'step': 'fused'})
