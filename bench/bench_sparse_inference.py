"""Sparse inference, measured: does a pruned MSRResNet run faster than the dense one, and where?

For each network it prints, measured side by side in one run (the runtimes take turns every repeat; medians), the
forward time of one LR image in PyTorch (eager, dense kernels), ONNX Runtime (dense kernels), MNN converted dense and
MNN converted with `--detectSparseSpeedUp` (its sparse convolution kernels where the zeros make them faster), the
speed-up of sparse MNN over dense MNN, and the largest output difference of each runtime from PyTorch.

Networks: by default full MSRResNet x4 (64 features, 16 blocks) with random weights, dense and with magnitude masks
(per layer: the smallest |W| of each target tensor zeroed) at 90 % of the body, 90 % and 95 % of the whole network
(`targets: whole`); or `--checkpoints` (BasicSR or dupru-export files, e.g. the study's tickets; MSRResNet inferred).
Needs the `mnn` extra: pip install "dupru-basicsr[mnn]".

Usage: python bench/bench_sparse_inference.py [--size 120] [--threads 2] [--repeats 10] [--checkpoints A.pth ...]
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time

import numpy as np
import torch

import dupru_basicsr  # noqa: F401
from basicsr.archs.srresnet_arch import MSRResNet
from dupru_basicsr.deploy.mnn import MNNRunner, convert_onnx
from dupru_basicsr.export import _dense_checkpoint, export_onnx, load_into
from dupru_basicsr.pruning.presets import preset_targets
from dupru_basicsr.pruning import select_targets
from dupru_basicsr.weights.arch import infer_msrresnet_arch

RUNTIMES = ('pytorch', 'onnxruntime', 'mnn_dense', 'mnn_sparse')


def masked_msrresnet(num_feat, num_block, sparsity, kind, seed=0):
    """MSRResNet x4 with random weights; `sparsity` of each tensor of the `kind` preset (body / whole) zeroed by
    magnitude. Returns the BasicSR-format state dict."""
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=num_feat, num_block=num_block, upscale=4)
    if sparsity:
        with torch.no_grad():
            for p in select_targets(net, preset_targets('MSRResNet', kind)).values():
                k = int(sparsity * p.numel())
                threshold = p.abs().flatten().kthvalue(k).values
                p[p.abs() <= threshold] = 0
    return net.state_dict()


def zeros_share(state):
    weights = [v for k, v in state.items() if v.dim() == 4]
    return sum(int((v == 0).sum()) for v in weights) / sum(v.numel() for v in weights)


def build(network, tmp, name, threads, shape):
    """(conv-weight state dict, {runtime: callable}) of one network (a checkpoint path or a state dict): PyTorch,
    an ONNX Runtime session, MNN converted dense and sparse."""
    import onnxruntime as ort
    checkpoint = network if isinstance(network, str) else osp.join(tmp, f'{name}.pth')
    if not isinstance(network, str):
        torch.save({'params': network}, checkpoint)
    state = _dense_checkpoint(checkpoint)
    state = state.get('params_ema') or state.get('params')  # what export_onnx exports
    net = load_into(MSRResNet(**infer_msrresnet_arch(state, checkpoint)), checkpoint, 'params_ema').eval()
    onnx_path = export_onnx(checkpoint, osp.join(tmp, f'{name}.onnx'))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
    mnn = {kind: MNNRunner(convert_onnx(onnx_path, osp.join(tmp, f'{name}_{kind}.mnn'), sparse=kind == 'sparse'),
                           shape, threads) for kind in ('dense', 'sparse')}
    runners = {
        'pytorch': lambda x: net(torch.from_numpy(x)).numpy(),
        'onnxruntime': lambda x: session.run(None, {'lq': x})[0],
        'mnn_dense': mnn['dense'],
        'mnn_sparse': mnn['sparse'],
    }
    return state, runners


def measure(networks, size, threads, repeats, warmup=2):
    """{name: {runtime: median seconds, 'diff_<runtime>': max |output - PyTorch output|, 'zeros': share of conv
    weights that are 0}} for `networks` ({name: checkpoint path or state dict})."""
    torch.set_num_threads(threads)
    shape = (1, 3, size, size)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        built = {name: build(net, tmp, name, threads, shape) for name, net in networks.items()}
        for name, (params, runners) in built.items():
            reference = runners['pytorch'](x)
            results[name] = {'zeros': zeros_share(params), 'times': {r: [] for r in RUNTIMES}}
            for runtime, run in runners.items():
                results[name][f'diff_{runtime}'] = float(np.abs(run(x) - reference).max())
                for _ in range(warmup):
                    run(x)
        for _ in range(repeats):  # interleaved: every network and runtime in turn, every repeat
            for name, (_, runners) in built.items():
                for runtime, run in runners.items():
                    t = time.perf_counter()
                    run(x)
                    results[name]['times'][runtime].append(time.perf_counter() - t)
    for row in results.values():
        for runtime, times in row.pop('times').items():
            row[runtime] = statistics.median(times)
    return results


def format_table(results, size, threads, repeats):
    lines = [f'MSRResNet x4 forward, one {size}x{size} LR image, {threads} thread(s), median of {repeats} interleaved '
             f'repeats; torch {torch.__version__}', '',
             '| network | zero conv weights | PyTorch (ms) | ONNX Runtime (ms) | MNN dense (ms) | MNN sparse (ms) | '
             'sparse MNN speed-up over dense MNN | largest difference from PyTorch (ORT / MNN dense / MNN sparse) |',
             '|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        lines.append(f'| {name} | {100 * r["zeros"]:.1f} % | {1e3 * r["pytorch"]:.1f} | {1e3 * r["onnxruntime"]:.1f} | '
                     f'{1e3 * r["mnn_dense"]:.1f} | {1e3 * r["mnn_sparse"]:.1f} | '
                     f'{r["mnn_dense"] / r["mnn_sparse"]:.2f}x | {r["diff_onnxruntime"]:.1e} / '
                     f'{r["diff_mnn_dense"]:.1e} / {r["diff_mnn_sparse"]:.1e} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=120, help='LR input height and width (default 120)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--num-feat', type=int, default=64, help='synthetic networks: features (default 64)')
    parser.add_argument('--num-block', type=int, default=16, help='synthetic networks: blocks (default 16)')
    parser.add_argument('--checkpoints', nargs='+', default=None,
                        help='measure these checkpoints (MSRResNet) instead of the synthetic networks')
    args = parser.parse_args(argv)
    if args.checkpoints:
        networks = {osp.basename(osp.dirname(osp.dirname(p))) or osp.basename(p): p for p in args.checkpoints}
    else:
        networks = {'dense': masked_msrresnet(args.num_feat, args.num_block, 0, 'body')}
        for sparsity, kind in ((0.9, 'body'), (0.9, 'whole'), (0.95, 'whole')):
            networks[f'{kind} {100 * sparsity:g} %'] = masked_msrresnet(args.num_feat, args.num_block, sparsity, kind)
    results = measure(networks, args.size, args.threads, args.repeats)
    print(format_table(results, args.size, args.threads, args.repeats))
    return results


if __name__ == '__main__':
    main()
