"""Benchmark of the pruning core on full-size MSRResNet x4 (num_feat 64, num_block 16).

Prints, measured side by side in one run (interleaved repeats, medians):
- a training step (forward + backward + Adam step) with DUPru engaged vs the same step without pruning;
- the same DUPru step done the reference code's way (numpy round trip of every target weight and gradient);
- one prune (layer and global thresholds + masks + rewind to W0) of the MSRResNet body;
- the memory the pruner holds (rewind state + masks) and its transient per-step buffers, in bytes of tensors.

Usage: python bench/bench_pruning.py [--device cpu|cuda] [--batch 2] [--gt-size 96] [--repeats 15]
"""
import argparse
import statistics
import time

import numpy as np
import torch

import dupru_basicsr  # noqa: F401
from basicsr.archs.srresnet_arch import MSRResNet
from dupru_basicsr.pruning import Pruner


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def make(device, seed=0):
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=64, num_block=16, upscale=4).to(device)
    return net, torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-9)


def step_fn(net, opt, lq, gt, before_step=None):

    def step():
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.mse_loss(net(lq), gt)
        loss.backward()
        if before_step is not None:
            before_step()
        opt.step()

    return step


def reference_way(pruner, eps):
    """DUPru's freeze done as the lottery-ticket reference code does it (numpy round trip of weights and grads)."""

    def hook():
        for p in pruner.params.values():
            w = p.data.cpu().numpy()
            g = p.grad.data.cpu().numpy()
            p.grad.data = torch.from_numpy(np.where(np.abs(w) < eps, 0, g)).to(p.device)

    return hook


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

    plain_net, plain_opt = make(device)
    dupru_net, dupru_opt = make(device)
    pruner = Pruner(dupru_net, ['body.*.weight'], 'dupru', eps=1e-6)
    pruner.snapshot()
    pruner.prune(50)  # a realistic mid-run state: half the body pruned
    pruner.attach(dupru_opt)
    ref_net, ref_opt = make(device)
    ref_pruner = Pruner(ref_net, ['body.*.weight'], 'dupru', eps=1e-6)
    ref_pruner.prune(50)

    steps = {
        'plain': step_fn(plain_net, plain_opt, lq, gt),
        'dupru': step_fn(dupru_net, dupru_opt, lq, gt),
        'reference_numpy': step_fn(ref_net, ref_opt, lq, gt, reference_way(ref_pruner, 1e-6)),
    }
    times = {k: [] for k in steps}
    for _ in range(3):  # warm-up
        for fn in steps.values():
            fn()
    sync(device)
    for _ in range(args.repeats):
        for name, fn in steps.items():  # interleaved: drifts of machine load hit all variants alike
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}

    prune_times = {}
    for scope in ('layer', 'global'):
        net, _ = make(device, seed=1)
        p = Pruner(net, ['body.*.weight'], 'dupru', scope=scope)
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
    for p in pruner.params.values():
        p.grad = torch.zeros_like(p)
    pruner.before_step()
    frozen, saved = pruner._step_cache
    transient = tensor_bytes(frozen) + tensor_bytes(saved)
    pruner.after_step()

    print(f'MSRResNet x4 (64 feat, 16 blocks), device {device}, batch {args.batch}, GT {args.gt_size}x{args.gt_size}, '
          f'torch {torch.__version__}, threads {torch.get_num_threads()}, {args.repeats} interleaved repeats')
    print(f'train step, no pruning           : {1e3 * med["plain"]:8.2f} ms')
    print(f'train step, DUPru (ours)         : {1e3 * med["dupru"]:8.2f} ms   ratio {med["dupru"] / med["plain"]:.3f}')
    print(f'train step, DUPru reference way  : {1e3 * med["reference_numpy"]:8.2f} ms   ratio '
          f'{med["reference_numpy"] / med["plain"]:.3f}')
    over_ours = med['dupru'] - med['plain']
    over_ref = med['reference_numpy'] - med['plain']
    print(f'overhead per step: ours {1e3 * over_ours:.2f} ms, reference way {1e3 * over_ref:.2f} ms')
    for scope, t in prune_times.items():
        print(f'one prune + rewind ({scope:6s} scope): {1e3 * t:8.2f} ms')
    print(f'target (body) weights            : {target_bytes / 1e6:8.2f} MB')
    print(f'held: rewind state of targets + masks : {(rewind_target_bytes + mask_bytes) / 1e6:.2f} MB = '
          f'{(rewind_target_bytes + mask_bytes) / target_bytes:.3f} x target bytes')
    print(f'held: rewind state of all params/buffers + masks : {(rewind_bytes + mask_bytes) / 1e6:.2f} MB = '
          f'{(rewind_bytes + mask_bytes) / target_bytes:.3f} x target bytes')
    print(f'transient during a step (frozen masks + saved values): {transient / 1e6:.2f} MB = '
          f'{transient / target_bytes:.3f} x target bytes')


if __name__ == '__main__':
    main()
