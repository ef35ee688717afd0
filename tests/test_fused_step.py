"""The fused freezing step: a fixed number of ops whatever the number of target tensors, no host sync in the hooks,
exact on the bit level, and its cached flat buffers follow every change of masks or parameter storage."""
import contextlib
import warnings

import pytest
import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from conftest import device_params, record_calls_in_steps, tiny_options
from dupru_basicsr.pruning import Mask, Pruner

MAX_OPS = 12
STEPS = ['eager', 'compiled']  # the step engines: eager_step.EagerStep and compiled_step.CompiledStep


def _ran_as(pruner, step, steps):
    """The engine that ran `steps` optimizer steps is the one asked for (no fallback); a compiled one ran both
    hooks compiled every step."""
    assert pruner.step == step
    if step == 'compiled':
        assert pruner.engine.compiled_calls == 2 * steps


def _chain(n, seed=0, device='cpu'):
    """n small convs in a row: n target tensors named '<i>.weight' (initialised on the CPU, moved to `device`)."""
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(n)]).to(device)


def _pruned(n, method, eps=5e-2, device='cpu', step='eager'):
    net = _chain(n, device=device)
    pruner = Pruner(net, ['*.weight'], method, eps=eps, step=step)
    pruner.prune(30)
    return net, pruner


def _set_grads(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=g).to(p.device)


def _profiled_step(pruner, net, *activities):
    """The torch.profiler events of one before_step + after_step, on fresh gradient tensors (as after BasicSR's
    zero_grad (set_to_none) and backward)."""
    _set_grads(net, seed=2)
    if ProfilerActivity.CUDA in activities:
        torch.cuda.synchronize()  # the gradients' copies done before the profiler starts
    with profile(activities=list(activities)) as prof:
        pruner.before_step()
        pruner.after_step()
    return prof.events()


def _top_level_ops(pruner, net):
    """Names of the aten ops that one before_step + after_step issues, counted as the torch.profiler events
    without a parent event (ops called by other ops, e.g. the per-tensor copies inside a CPU _foreach_copy_, are
    children and not counted). The first step builds the flat buffers and is not counted."""
    _set_grads(net)
    pruner.before_step()
    pruner.after_step()
    return [e.name for e in _profiled_step(pruner, net, ProfilerActivity.CPU) if e.cpu_parent is None]


def _cuda_kernels(pruner, net):
    """Names of the device activities (kernels, copies, memsets) of one step on CUDA, after _top_level_ops."""
    events = _profiled_step(pruner, net, ProfilerActivity.CPU, ProfilerActivity.CUDA)
    return [e.name for e in events if e.device_type == DeviceType.CUDA]


@pytest.mark.parametrize('device', device_params())
@pytest.mark.parametrize('method', ['dupru', 'upru', 'imp'])
def test_op_count_is_small_and_independent_of_the_number_of_targets(method, device):
    counts, kernels = {}, {}
    for n in (32, 320):
        net, pruner = _pruned(n, method, device=device)
        ops = _top_level_ops(pruner, net)
        assert all(name.startswith('aten::') for name in ops), ops
        counts[n] = len(ops)
        if device.startswith('cuda'):
            kernels[n] = _cuda_kernels(pruner, net)
    assert counts[32] == counts[320] <= MAX_OPS, counts
    if kernels:
        # MSRResNet's 32 targets in a few launches (a per-tensor loop would take several per target). A foreach op
        # splits its tensor lists over launches when they exceed one launch's arguments (30 to 336 tensors a launch
        # by build and list count), so 320 targets may take a few more: not compared.
        assert 0 < len(kernels[32]) <= 2 * MAX_OPS, kernels


def test_a_shape_dependent_custom_rule_is_called_per_tensor_an_elementwise_one_once():
    shapes = []

    def per_tensor(weight, keep_mask, eps):
        shapes.append(tuple(weight.shape))
        return weight.abs() < eps

    def flat_rule(weight, keep_mask, eps):
        shapes.append(tuple(weight.shape))
        return weight.abs() < eps

    flat_rule.elementwise = True
    for rule, expected in ((per_tensor, [(2, 2, 3, 3)] * 4), (flat_rule, [(4 * 36, )])):
        shapes.clear()
        net = _chain(4)
        pruner = Pruner(net, ['*.weight'], rule, eps=5e-2)
        pruner.prune(30)
        _set_grads(net)
        pruner.before_step()
        pruner.after_step()
        assert shapes == expected, rule.__name__


class _HostSync(AssertionError):
    pass


def _refuse_host_reads(m):
    def refuse(*args, **kwargs):
        raise _HostSync('a tensor was read back to the host inside a step hook')

    for name in ('item', 'tolist', 'numpy', '__bool__', '__int__', '__float__', '__index__'):
        m.setattr(torch.Tensor, name, refuse)


@contextlib.contextmanager
def _cuda_syncs_raise(device):
    """On CUDA, a synchronizing CUDA operation inside raises (torch.cuda.set_sync_debug_mode('error'))."""
    if not device.startswith('cuda'):
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode('error')
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@pytest.mark.parametrize('device', device_params())
def test_hooks_never_read_a_tensor_back_to_the_host(monkeypatch, device):
    """No device sync: the hooks never turn a tensor into a Python value (the CPU stand-in), and on CUDA they call
    no synchronizing CUDA operation."""
    net, pruner = _pruned(8, 'dupru', device=device)
    for seed in (2, 3):  # the first step builds the buffers, the second reuses them
        _set_grads(net, seed=seed)
        with monkeypatch.context() as m, _cuda_syncs_raise(device):
            _refuse_host_reads(m)
            pruner.before_step()
            pruner.after_step()
    with pytest.raises(_HostSync):  # the patch does catch such a read: frozen_fraction counts on the host
        with monkeypatch.context() as m:
            _refuse_host_reads(m)
            pruner.frozen_fraction()
    if device.startswith('cuda'):  # and so does the sync debug mode
        with pytest.raises(RuntimeError, match='synchronizing CUDA operation'), _cuda_syncs_raise(device):
            pruner.frozen_fraction()


def _bits(t):
    return t.detach().view(torch.int32) if t.dtype == torch.float32 else t.detach().view(torch.int64)


def _step_and_check(net, pruner, opt, x, y):
    """One training step; pruned entries are +0.0 (bit pattern 0), frozen ones keep their exact bit pattern, their
    gradients are +0.0, and something learns."""
    frozen = pruner.frozen_masks()
    before = {n: p.detach().clone() for n, p in pruner.params.items()}
    opt.zero_grad()
    nn.functional.mse_loss(net(x), y).backward()
    opt.step()
    for n, p in pruner.params.items():
        pruned = ~pruner.mask[n]
        assert torch.equal(_bits(p)[pruned], torch.zeros_like(_bits(p)[pruned])), n
        assert torch.equal(_bits(p.grad)[pruned], torch.zeros_like(_bits(p.grad)[pruned])), n
        assert torch.equal(_bits(p)[frozen[n]], _bits(before[n])[frozen[n]]), n
        assert torch.equal(_bits(p.grad)[frozen[n]], torch.zeros_like(_bits(p.grad)[frozen[n]])), n
    assert any(not torch.equal(p, before[n]) for n, p in pruner.params.items())


@pytest.mark.parametrize('step', STEPS)
@pytest.mark.parametrize('device', device_params())
def test_buffers_follow_prune_rewind_load_new_masks_and_replaced_storage(tmp_path, device, step):
    net = _chain(6, seed=4, device=device)
    pruner = Pruner(net, ['*.weight'], 'dupru', eps=2e-2, step=step)
    pruner.snapshot()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    pruner.attach(opt)
    x, y = torch.randn(2, 2, 6, 6).to(device), torch.randn(2, 2, 6, 6).to(device)
    _step_and_check(net, pruner, opt, x, y)
    pruner.prune(40)  # new Mask object
    _step_and_check(net, pruner, opt, x, y)
    pruner.rewind('init')  # weights copied in place
    _step_and_check(net, pruner, opt, x, y)
    state = pruner.state_dict()
    pruner.prune(40)
    _step_and_check(net, pruner, opt, x, y)
    pruner.load_state_dict(state)  # Mask.load_state_dict: same Mask object, entries replaced
    pruner.apply_mask()
    _step_and_check(net, pruner, opt, x, y)
    assert pruner.mask.equal(Mask({k: v for k, v in state['keep_masks'].items()}))
    masks = {n: m.clone() for n, m in pruner.mask.items()}
    keep = masks['0.weight'].view(-1)
    keep[int(keep.nonzero()[0])] = False  # one more entry pruned
    pruner.mask = Mask(masks)  # a new Mask assigned
    pruner.apply_mask()
    _step_and_check(net, pruner, opt, x, y)
    with torch.no_grad():
        for p in pruner.params.values():
            p.data = p.data.clone()  # storage replaced, as model.to() does
    _step_and_check(net, pruner, opt, x, y)
    _ran_as(pruner, step, 7)
    net.double()  # dtype changed: 64-bit patterns (the compiled step is for float32: eager, with a warning)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-2)
    pruner.detach()
    pruner.attach(opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        _step_and_check(net, pruner, opt, x.double(), y.double())
    assert pruner.step == 'eager'
    assert any('float32' in str(w.message) for w in caught) == (step == 'compiled')


@pytest.mark.parametrize('step', STEPS)
@pytest.mark.parametrize('device', device_params())
def test_non_finite_gradients_and_negative_zero_at_frozen_entries_are_exact(device, step):
    lin = nn.Linear(6, 1, bias=False).to(device)
    w0 = torch.tensor([[0.5, -0.0, 0.0, -5e-7, 0.3, -0.2]], device=device)
    with torch.no_grad():
        lin.weight.copy_(w0)
    pruner = Pruner(lin, ['weight'], 'dupru', eps=1e-6, step=step)
    pruner.mask = Mask({'weight': torch.tensor([[True, True, False, True, True, True]], device=device)})
    opt = torch.optim.Adam(lin.parameters(), lr=0.1, weight_decay=0.1)
    pruner.attach(opt)
    inf = float('inf')
    lin.weight.grad = torch.tensor([[1.0, float('nan'), inf, -inf, -0.0, 1.0]], device=device)
    opt.step()
    frozen = [False, True, True, True, False, False]
    w, g = lin.weight.detach()[0], lin.weight.grad[0]
    for i, f in enumerate(frozen):
        if f:
            assert _bits(w[i]) == _bits(w0[0, i]), i  # -0.0 stays -0.0, 0.0 stays 0.0
            assert _bits(g[i]) == 0, i  # exactly +0.0, as masked_fill(0.0): NaN and inf gone
        else:
            assert not torch.equal(w[i], w0[0, i]), i  # learns (gradient and weight decay)
    # a learning entry's gradient is untouched, sign of zero too
    assert _bits(g[4]) == _bits(torch.tensor(-0.0, device=device))
    assert torch.isfinite(opt.state[lin.weight]['exp_avg']).all()
    assert pruner.frozen_fraction() == pytest.approx(3 / 6)
    _ran_as(pruner, step, 1)


@pytest.mark.parametrize('step', STEPS)
@pytest.mark.parametrize('device', device_params())
def test_a_target_without_gradient_is_skipped_and_the_others_masked(device, step):
    net, pruner = _pruned(3, 'imp', device=device, step=step)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    pruner.attach(opt)
    _set_grads(net)
    net[1].weight.grad = None
    before = {n: p.detach().clone() for n, p in pruner.params.items()}
    opt.step()
    assert torch.equal(net[1].weight, before['1.weight'])
    for n in ('0.weight', '2.weight'):
        p = pruner.params[n]
        assert torch.equal(p.grad[~pruner.mask[n]], torch.zeros(int((~pruner.mask[n]).sum()), device=device))
        assert torch.equal(p[~pruner.mask[n]], torch.zeros(int((~pruner.mask[n]).sum()), device=device))
        assert not torch.equal(p, before[n])
    _ran_as(pruner, step, 1)


def test_targets_of_mixed_dtype_are_refused_with_their_names():
    net = _chain(2)
    net[1].double()
    pruner = Pruner(net, ['*.weight'], 'dupru')
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    with pytest.raises(ValueError, match=r'one dtype and device: "1.weight" is torch.float64'):
        pruner.before_step()


def test_dupru_model_counts_the_frozen_fraction_only_when_it_logs(run_train, monkeypatch):
    calls = record_calls_in_steps(monkeypatch, Pruner, 'frozen_fraction')
    opt = tiny_options('frozen_log', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 3, 'rate': 30},
                       total_iter=6, val_set=None)
    opt['logger']['print_freq'] = 3
    model, _ = run_train(opt)
    assert True not in calls  # never inside a training step
    assert calls.count(False) >= 2  # the logs of iterations 3 and 6 (and the round-start stats)
    assert model.pruner.mask.sparsity() <= model.get_current_log()['frozen'] <= 1.0  # at least the pruned ones


@pytest.mark.parametrize('device', device_params())
@pytest.mark.parametrize('set_to_none', [True, False])
def test_the_optimizer_sees_exactly_the_masked_gradients(set_to_none, device, monkeypatch):
    """Fresh gradients (BasicSR's zero_grad) or kept ones that backward accumulates into (set_to_none=False)."""
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)  # two backward passes, the same bits on CUDA
    net, pruner = _pruned(3, 'dupru', eps=5e-2, device=device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    pruner.attach(opt)
    x, y = torch.randn(2, 2, 6, 6).to(device), torch.randn(2, 2, 6, 6).to(device)
    for _ in range(3):
        frozen = pruner.frozen_masks()
        opt.zero_grad(set_to_none=set_to_none)
        loss = nn.functional.mse_loss(net(x), y)
        expected = torch.autograd.grad(loss, list(pruner.params.values()), retain_graph=True)
        loss.backward()
        opt.step()
        for (n, p), e in zip(pruner.params.items(), expected):
            assert torch.equal(p.grad, e.masked_fill(frozen[n], 0.0)), n
