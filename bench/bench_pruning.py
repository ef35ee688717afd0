"""Benchmark of the pruning core on full-size MSRResNet x4 (num_feat 64, num_block 16).

Prints, measured side by side in one run (interleaved repeats, medians):
- a training step (forward + backward + Adam step, `zero_grad()` as BasicSR calls it) without pruning, with DUPru
  engaged (ours), with DUPru's freeze done the reference code's way (numpy round trip of every target weight and
  gradient: zeroes gradients only, inexact under momentum and weight decay), and with `torch.nn.utils.prune`
  (`l1_unstructured` on the same targets: forward-time masking `weight = weight_orig * weight_mask`, no freezing);
- our step hooks alone (`before_step` + `after_step`, timed inside DUPru steps of the model trained alone, and in
  the interleaved run) against the memory-traffic floor: one read of the targets' weights, gradients and masks and
  one write of weights and gradients, timed as plain copies and a one-pass reduction over flat buffers of the same
  sizes;
- the ops the hooks issue per step: top-level aten ops from `torch.profiler` on a CPU, and on CUDA also the kernel
  launches, and those of a whole training step without pruning and with DUPru;
- one prune (layer and global thresholds + masks + rewind to W0) of the MSRResNet body;
- the memory the pruner holds (rewind state + masks, the fused step's persistent buffers), in bytes of tensors.

Usage: python bench/bench_pruning.py [--device cpu|cuda] [--batch 2] [--gt-size 96] [--repeats 15] [--threads N]
"""
import argparse
import statistics
import time

import numpy as np
import torch
from torch.nn.utils import prune as torch_prune
from torch.profiler import ProfilerActivity, profile

import dupru_basicsr  # noqa: F401
from basicsr.archs.srresnet_arch import MSRResNet
from dupru_basicsr.pruning import Pruner, select_targets
from dupru_basicsr.utils.devices import synchronize as sync

TARGETS = ['body.*.weight']
RATE = 50  # a realistic mid-run state: half the body pruned


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def make(device, seed=0):
    torch.manual_seed(seed)
    return MSRResNet(num_feat=64, num_block=16, upscale=4).to(device)


def adam(net):
    return torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-9)


def step_fn(net, opt, lq, gt):

    def step():
        opt.zero_grad()  # set_to_none, as BasicSR: the gradients are fresh tensors every step
        torch.nn.functional.mse_loss(net(lq), gt).backward()
        opt.step()

    return step


def reference_way(pruner, eps):
    """DUPru's freeze done as the lottery-ticket reference code does it (numpy round trip of weights and grads)."""

    def hook(*args):
        for p in pruner.params.values():
            w = p.data.cpu().numpy()
            g = p.grad.data.cpu().numpy()
            p.grad.data = torch.from_numpy(np.where(np.abs(w) < eps, 0, g)).to(p.device)

    return hook


def torch_prune_net(device):
    """The same network with torch.nn.utils.prune's l1_unstructured on the same targets (a separate copy)."""
    net = make(device)
    modules = dict(net.named_modules())
    for name in select_targets(net, TARGETS):
        torch_prune.l1_unstructured(modules[name.rsplit('.', 1)[0]], 'weight', amount=RATE / 100)
    return net


class TimedHooks:
    """The pruner's optimizer hooks with the time spent in them recorded: wall time (device work included on CUDA)
    and the calling thread's CPU time (all of the hooks' CPU work with --threads 1 on a CPU; unlike wall time it
    does not count the time other processes hold the core)."""

    def __init__(self, pruner, device):
        self.pruner, self.device, self.times, self.cpu_times, self._t = pruner, device, [], [], (0.0, 0.0)

    def attach(self, opt):
        opt.register_step_pre_hook(self.before_step)
        opt.register_step_post_hook(self.after_step)

    def before_step(self, *args):
        sync(self.device)
        t, c = time.perf_counter(), time.thread_time()
        self.pruner.before_step(*args)
        sync(self.device)
        self._t = (time.perf_counter() - t, time.thread_time() - c)

    def after_step(self, *args):
        sync(self.device)
        t, c = time.perf_counter(), time.thread_time()
        self.pruner.after_step(*args)
        sync(self.device)
        self.times.append(self._t[0] + time.perf_counter() - t)
        self.cpu_times.append(self._t[1] + time.thread_time() - c)


def traffic_floor(pruner, device, repeats):
    """One read of the targets' weights, gradients and masks, one write of weights and gradients, over flat buffers
    of the same sizes: two copies and a max over the masks' bytes (vectorised, no branches)."""
    n = pruner.mask.numel()
    dtype = next(iter(pruner.params.values())).dtype
    w, g, w_out, g_out = (torch.randn(n, dtype=dtype, device=device) for _ in range(4))
    masks = (torch.rand(n, device=device) < 0.5).view(torch.uint8)
    times = []
    for _ in range(repeats + 3):
        sync(device)
        t = time.perf_counter()
        w_out.copy_(w)
        g_out.copy_(g)
        masks.max()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times[3:]), tensor_bytes([w, g, masks, w_out, g_out])


class FloorHooks:
    """The traffic floor's work done in a training step, where our hooks run (right after backward, with the caches
    as training leaves them): one read and write of every target gradient before the step (x * 1.0), one read of a
    1-byte mask, one read and write of every target weight after it. Not exact: the floor of the bytes moved."""

    def __init__(self, params):
        self.weights = [p.detach() for p in params]
        self.params = params
        self.mask = torch.ones(sum(p.numel() for p in params), dtype=torch.uint8, device=params[0].device)

    def before_step(self, *args):
        torch._foreach_mul_([p.grad for p in self.params], 1.0)
        self.mask.max()

    def after_step(self, *args):
        torch._foreach_mul_(self.weights, 1.0)


def hook_ops(pruner, device):
    """Top-level ops (profiler events without a parent: aten ops, a compiled region) and, on CUDA, kernel launches
    of one before_step + after_step, from torch.profiler."""
    for p in pruner.params.values():
        p.grad = torch.randn_like(p)
    pruner.before_step()
    pruner.after_step()  # buffers built
    for p in pruner.params.values():
        p.grad = torch.randn_like(p)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with profile(activities=activities) as prof:
        pruner.before_step()
        pruner.after_step()
        sync(device)
    events = prof.events()
    top = [e.name for e in events if e.cpu_parent is None and e.device_type == torch.autograd.DeviceType.CPU]
    kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA) if device.type == 'cuda' \
        else None
    return len(top), kernels, top


def step_launches(step, device):
    """CUDA device activities (kernels, copies, memsets) of one call of `step`, from torch.profiler."""
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        sync(device)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--gt-size', type=int, default=96)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave as is)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    lq = torch.rand(args.batch, 3, args.gt_size // 4, args.gt_size // 4, device=device)
    gt = torch.rand(args.batch, 3, args.gt_size, args.gt_size, device=device)

    def dupru(step='eager', settle=True):
        """A DUPru network at RATE % with Adam and our hooks (timed), its pruner and the compile time."""
        net = make(device)
        pruner = Pruner(net, TARGETS, 'dupru', eps=1e-6, step=step)
        pruner.settle_optimizer_state = settle
        pruner.snapshot()
        pruner.prune(RATE)
        opt = adam(net)
        hooks = TimedHooks(pruner, device)
        hooks.attach(opt)
        fn = step_fn(net, opt, lq, gt)
        t = time.perf_counter()
        fn()  # builds the buffers (and compiles)
        return fn, pruner, hooks, time.perf_counter() - t

    plain_net = make(device)
    variants = {'dupru': dupru(), 'dupru_compiled': dupru('compiled'), 'dupru_unsettled': dupru(settle=False)}
    ref_net = make(device)
    ref_pruner = Pruner(ref_net, TARGETS, 'dupru', eps=1e-6)
    ref_pruner.prune(RATE)
    ref_opt = adam(ref_net)
    ref_opt.register_step_pre_hook(reference_way(ref_pruner, 1e-6))
    tp_net = torch_prune_net(device)

    steps = {'plain': step_fn(plain_net, adam(plain_net), lq, gt),
             **{name: v[0] for name, v in variants.items()},
             'reference_numpy': step_fn(ref_net, ref_opt, lq, gt),
             'torch_prune': step_fn(tp_net, adam(tp_net), lq, gt)}
    times = {k: [] for k in steps}
    for _ in range(3):  # warm-up
        for fn in steps.values():
            fn()
    for _, _, hooks, _ in variants.values():
        hooks.times.clear()
        hooks.cpu_times.clear()
    sync(device)
    for _ in range(args.repeats):
        for name, fn in steps.items():  # interleaved: drifts of machine load hit all variants alike
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    hook_stats = {}
    for name in ('dupru', 'dupru_compiled'):
        fn, pruner, hooks, compile_time = variants[name]
        mixed = statistics.median(hooks.times)
        # the hooks in a training loop of the one model, as in real training (in the interleaved run the other
        # models' steps leave the caches colder)
        hooks.times.clear()
        hooks.cpu_times.clear()
        for _ in range(args.repeats + 3):
            fn()
        top_ops, kernels, names = hook_ops(pruner, device)
        buffers = pruner.engine.buffers()
        hook_stats[name] = dict(time=statistics.median(hooks.times[3:]), cpu=statistics.median(hooks.cpu_times[3:]),
                                mixed=mixed, ops=top_ops, kernels=kernels, names=names, compile=compile_time,
                                buffers=tensor_bytes(buffers), step=pruner.step)
    pruner = variants['dupru'][1]
    floor_time, floor_bytes = traffic_floor(pruner, device, args.repeats)
    # the same bytes moved where the hooks run, in a training loop of its own (caches as training leaves them)
    floor_net = make(device)
    floor_pruner = Pruner(floor_net, TARGETS, 'dupru')
    floor_pruner.prune(RATE)
    floor_opt = adam(floor_net)
    floor_hooks = TimedHooks(FloorHooks(list(floor_pruner.params.values())), device)
    floor_hooks.attach(floor_opt)
    floor_step = step_fn(floor_net, floor_opt, lq, gt)
    for _ in range(args.repeats + 3):
        floor_step()
    floor_in_training = statistics.median(floor_hooks.times[3:])
    launches = {name: step_launches(steps[name], device) for name in ('plain', 'dupru', 'dupru_compiled')} \
        if device.type == 'cuda' else None

    prune_times = {}
    for scope in ('layer', 'global'):
        net = make(device, seed=1)
        p = Pruner(net, TARGETS, 'dupru', scope=scope)
        p.snapshot()
        ts = []
        for _ in range(5):
            sync(device)
            t = time.perf_counter()
            p.prune(10)
            p.rewind('init')
            sync(device)
            ts.append(time.perf_counter() - t)
        prune_times[scope] = statistics.median(ts)

    target_bytes = tensor_bytes(pruner.params.values())
    rewind_bytes = tensor_bytes(pruner.rewind_state.values())
    rewind_target_bytes = tensor_bytes(pruner.rewind_state[n] for n in pruner.params)
    mask_bytes = tensor_bytes(pruner.mask[n] for n in pruner.mask)

    print(f'MSRResNet x4 (64 feat, 16 blocks), device {device}, batch {args.batch}, GT {args.gt_size}x{args.gt_size}, '
          f'torch {torch.__version__}, threads {torch.get_num_threads()}, {args.repeats} interleaved repeats, '
          f'{len(pruner.params)} target tensors ({pruner.mask.numel():,d} weights), {RATE}% pruned')
    print(f'train step, no pruning                  : {1e3 * med["plain"]:8.2f} ms')
    for key, label in (('dupru', 'DUPru (ours, eager step)'), ('dupru_compiled', 'DUPru (ours, compiled step)'),
                       ('dupru_unsettled', 'DUPru eager, state unsettled'),
                       ('reference_numpy', 'DUPru reference way (numpy)'), ('torch_prune', 'torch.nn.utils.prune l1')):
        print(f'train step, {label:28s}: {1e3 * med[key]:8.2f} ms   ratio {med[key] / med["plain"]:.3f}   '
              f'overhead {1e3 * (med[key] - med["plain"]):6.2f} ms')
    print(f'traffic floor ({floor_bytes / 1e6:.1f} MB moved)          : {1e3 * floor_time:8.2f} ms   '
          '(warm caches, alone)')
    print(f'traffic floor in training (same bytes)  : {1e3 * floor_in_training:8.2f} ms   (where the hooks run: '
          'right after backward)')
    for name, h in hook_stats.items():
        print(f'{name:15s} hooks alone (before+after_step): {1e3 * h["time"]:6.2f} ms   hooks / floor '
              f'{h["time"] / floor_time:.1f}, / floor in training {h["time"] / floor_in_training:.1f}   '
              f'(CPU time of the calling thread {1e3 * h["cpu"]:.2f} ms; in the '
              f'interleaved run {1e3 * h["mixed"]:.2f} ms); step as run: {h["step"]}; first step (buffers'
              f'{", compile" if name == "dupru_compiled" else ""}) {h["compile"]:.1f} s')
        print(f'{name:15s} hook ops per step: {h["ops"]} top-level profiler events ({", ".join(h["names"])})'
              + ('' if h['kernels'] is None else f', {h["kernels"]} CUDA kernel launches'))
        print(f'{name:15s} held while training: the step\'s flat buffers {h["buffers"] / 1e6:.2f} MB = '
              f'{h["buffers"] / target_bytes:.3f} x target bytes')
    if launches is not None:
        print('CUDA launches (kernels, copies, memsets) per training step: ' +
              ', '.join(f'{k} {v}' for k, v in launches.items()))
    for scope, t in prune_times.items():
        print(f'one prune + rewind ({scope:6s} scope): {1e3 * t:8.2f} ms')
    print(f'target (body) weights            : {target_bytes / 1e6:8.2f} MB')
    print(f'held: rewind state of targets + masks : {(rewind_target_bytes + mask_bytes) / 1e6:.2f} MB = '
          f'{(rewind_target_bytes + mask_bytes) / target_bytes:.3f} x target bytes')
    print(f'held: rewind state of all params/buffers + masks : {(rewind_bytes + mask_bytes) / 1e6:.2f} MB = '
          f'{(rewind_bytes + mask_bytes) / target_bytes:.3f} x target bytes')


if __name__ == '__main__':
    main()
