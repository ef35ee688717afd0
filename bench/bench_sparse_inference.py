"""Sparse inference, measured honestly: how much faster than the fastest dense runtime does a pruned MSRResNet run?

One run times, side by side, the forward pass of one LR image through:

- PyTorch (eager, dense kernels; the reference every output is checked against, max |difference| <= 2e-4),
- ONNX Runtime (dense kernels, its worker threads' spinning off: a spinning pool on 2 cores steals the time of
  whatever runs next),
- MNN converted dense, twice from the same file (the A/A row: the two must agree within 3 %, else the machine was
  too noisy for the other rows),
- MNN with its sparse kernels (`--detectSparseSpeedUp`) for each pruned network: single weights (element) at 90 % of
  the whole network, blocks of 4 output channels (`granularity: oc_block4`) at 90 % and 95 %, and body-only 90 %
  for reference. Each block ticket's MNN file is checked to hold its convolutions in blocks of 4
  (deploy.mnn.check_sparse_storage).

Every repeat runs every (network, runtime) pair once, in an order shuffled with a fixed seed, so drifts of the
machine's load hit every row alike; the table gives the median and the spread (min-max) of `--repeats` repeats. Then
a per-operator profile of the sparse MNN run of the 90 % block ticket (MNN's callbacks: time per operator type; the
im2col and the sparse multiply run inside one Convolution operator and cannot be told apart from outside). It ends
with two lines a script can find:

    speed-up at 90 % (1x4 blocks) vs fastest dense: X.XX×
    speed-up at 95 % (1x4 blocks) vs fastest dense: X.XX×

Networks are MSRResNet x4 (64 features, 16 blocks by default) with random weights, pruned by magnitude per layer
(the whole network: body + upconv1, upconv2, conv_hr). Needs the `mnn` extra: pip install "dupru-basicsr[mnn]".

Usage: python bench/bench_sparse_inference.py [--size 120] [--threads 2] [--repeats 20] [--seed 0]
"""
import argparse
import os.path as osp
import random
import statistics
import tempfile
import time

import numpy as np
import torch

import dupru_basicsr  # noqa: F401
from basicsr.archs.srresnet_arch import MSRResNet
from dupru_basicsr.deploy.mnn import MNNRunner, check_sparse_storage, convert_onnx
from dupru_basicsr.export import export_onnx
from dupru_basicsr.pruning import prune_model

MAX_DIFF = 2e-4  # largest |output - PyTorch output| accepted
AA_TOLERANCE = 0.03  # the A/A rows' medians must agree within 3 %
# name: (pruned share of the targets, targets preset, granularity); None: the dense network
NETWORKS = {
    'dense': None,
    'element 90 %': (0.9, 'whole', 'element'),
    '1x4 90 %': (0.9, 'whole', 'oc_block4'),
    '1x4 95 %': (0.95, 'whole', 'oc_block4'),
    'body-only element 90 %': (0.9, 'body', 'element'),
}


def pruned_msrresnet(num_feat, num_block, setting, seed=0):
    """MSRResNet x4 with random weights, pruned by magnitude per layer as `setting` says (see NETWORKS)."""
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=num_feat, num_block=num_block, upscale=4).eval()
    if setting is not None:
        sparsity, targets, granularity = setting
        prune_model(net, sparsity, targets=targets, scope='layer', granularity=granularity)
    return net


def zeros_share(net):
    weights = [p for p in net.parameters() if p.dim() == 4]
    return sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)


def ort_session(onnx_path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.add_session_config_entry('session.inter_op.allow_spinning', '0')
    session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def build(nets, tmp, threads, shape):
    """[(row, network name, callable)] for every timed pair, plus {network: the MNN file of its sparse row} and the
    block-storage problems of the block tickets."""
    rows, sparse_files, storage = [], {}, {}
    for name, net in nets.items():
        checkpoint = osp.join(tmp, f'{len(rows)}.pth')
        torch.save({'params': net.state_dict()}, checkpoint)
        onnx_path = export_onnx(checkpoint, osp.join(tmp, f'{len(rows)}.onnx'))
        rows.append((f'{name}: PyTorch', name, lambda x, net=net: net(torch.from_numpy(x)).numpy()))
        if NETWORKS.get(name) is None:
            rows.append((f'{name}: ONNX Runtime', name, ort_session(onnx_path, threads)))
            dense = convert_onnx(onnx_path, osp.join(tmp, 'dense.mnn'), sparse=False)
            rows.append((f'{name}: MNN dense (A)', name, MNNRunner(dense, shape, threads)))
            rows.append((f'{name}: MNN dense (A, same file)', name, MNNRunner(dense, shape, threads)))
            continue
        block = 4 if NETWORKS[name][2] == 'oc_block4' else 1
        mnn = convert_onnx(onnx_path, osp.join(tmp, f'{len(rows)}.mnn'), sparse=True, block=block)
        if block > 1:
            storage[name] = check_sparse_storage(mnn, dict(net.state_dict()), block)
        sparse_files[name] = mnn
        rows.append((f'{name}: MNN sparse', name, MNNRunner(mnn, shape, threads)))
    return rows, sparse_files, storage


def profile_mnn(mnn_path, shape, threads, x, repeats=5):
    """{operator type: median seconds per run} of MNN on `mnn_path` (its per-operator callbacks)."""
    import MNN
    runner = MNNRunner(mnn_path, shape, threads)
    runner(x)  # warm
    per_type = {}
    for _ in range(repeats):
        runner.input.copyFrom(MNN.Tensor(shape, MNN.Halide_Type_Float, np.ascontiguousarray(x, np.float32),
                                         MNN.Tensor_DimensionType_Caffe))
        starts, totals = {}, {}

        def begin(tensors, info):
            starts[info.getName()] = time.perf_counter()
            return True

        def end(tensors, info):
            totals[info.getType()] = totals.get(info.getType(), 0.0) + time.perf_counter() - starts[info.getName()]
            return True

        runner.interpreter.runSessionWithCallBackInfo(runner.session, begin, end)
        for kind, seconds in totals.items():
            per_type.setdefault(kind, []).append(seconds)
    return {kind: statistics.median(v) for kind, v in per_type.items()}


def measure(num_feat=64, num_block=16, size=120, threads=2, repeats=20, seed=0, warmup=2):
    """Everything the report prints: {'rows': {row: {network, median, min, max, diff}}, 'zeros': {network: share},
    'storage': {block ticket: problems}, 'profile': {op type: seconds}}."""
    torch.set_num_threads(threads)
    shape = (1, 3, size, size)
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    nets = {name: pruned_msrresnet(num_feat, num_block, setting, seed) for name, setting in NETWORKS.items()}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        rows, sparse_files, storage = build(nets, tmp, threads, shape)
        references = {name: net(torch.from_numpy(x)).numpy() for name, net in nets.items()}
        results = {}
        for row, network, run in rows:
            results[row] = {'network': network, 'times': [],
                            'diff': float(np.abs(run(x) - references[network]).max())}
            for _ in range(warmup):
                run(x)
        order = list(range(len(rows)))
        shuffle = random.Random(seed)
        for _ in range(repeats):
            shuffle.shuffle(order)
            for i in order:
                row, _, run = rows[i]
                t = time.perf_counter()
                run(x)
                results[row]['times'].append(time.perf_counter() - t)
        profile = profile_mnn(sparse_files['1x4 90 %'], shape, threads, x)
    for r in results.values():
        times = r.pop('times')
        r.update(median=statistics.median(times), min=min(times), max=max(times))
    setting = dict(num_feat=num_feat, num_block=num_block, size=size, threads=threads, repeats=repeats, seed=seed)
    return {'rows': results, 'zeros': {name: zeros_share(net) for name, net in nets.items()}, 'storage': storage,
            'profile': profile, 'setting': setting}


def fastest_dense(rows):
    dense = {k: v['median'] for k, v in rows.items() if v['network'] == 'dense'}
    name = min(dense, key=dense.get)
    return name, dense[name]


def report(results):
    """The printed report: the table, the A/A check, the storage check, the profile and the two speed-up lines."""
    s, rows = results['setting'], results['rows']
    fast_name, fast = fastest_dense(rows)
    lines = [f'MSRResNet x4 ({s["num_feat"]} features, {s["num_block"]} blocks) forward of one {s["size"]}x{s["size"]} '
             f'LR image, {s["threads"]} thread(s), {s["repeats"]} repeats in a shuffled order (seed {s["seed"]}); '
             f'torch {torch.__version__}', '',
             '| row | zero conv weights | median (ms) | min-max (ms) | vs fastest dense | max diff from PyTorch |',
             '|---|---|---|---|---|---|']
    for row, r in rows.items():
        ok = '' if r['diff'] <= MAX_DIFF else ' **over 2e-4**'
        lines.append(f'| {row} | {100 * results["zeros"][r["network"]]:.1f} % | {1e3 * r["median"]:.1f} | '
                     f'{1e3 * r["min"]:.1f}-{1e3 * r["max"]:.1f} | {fast / r["median"]:.2f}x | {r["diff"]:.1e}{ok} |')
    a, b = rows['dense: MNN dense (A)']['median'], rows['dense: MNN dense (A, same file)']['median']
    aa = abs(a - b) / min(a, b)
    lines += ['', f'A/A (the same MNN file timed twice): {100 * aa:.1f} % apart: '
              + ('within 3 %, the rows are comparable.' if aa <= AA_TOLERANCE else
                 'MORE than 3 %: the machine was too noisy; rerun on an idle machine.'),
              f'Fastest dense runtime: {fast_name} ({1e3 * fast:.1f} ms).']
    for name, problems in results['storage'].items():
        lines.append(f'{name}: ' + ('every pruned convolution stored by MNN in blocks of 4 output channels.'
                                    if not problems else 'stored otherwise: '
                                    + '; '.join(f'{m} ({why})' for m, why in problems)))
    total = sum(results['profile'].values())
    lines += ['', 'Sparse MNN, 1x4 90 %, time per operator type (MNN callbacks; median of 5 runs):']
    for kind, seconds in sorted(results['profile'].items(), key=lambda kv: -kv[1]):
        lines.append(f'  {kind:20s} {1e3 * seconds:8.2f} ms  {100 * seconds / total:5.1f} %')
    lines.append('')
    for level in ('90', '95'):
        lines.append(f'speed-up at {level} % (1x4 blocks) vs fastest dense: '
                     f'{fast / rows[f"1x4 {level} %: MNN sparse"]["median"]:.2f}×')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=120, help='LR input height and width (default 120)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0, help='weights, input and the order of the timed runs')
    parser.add_argument('--num-feat', type=int, default=64, help='features (default 64)')
    parser.add_argument('--num-block', type=int, default=16, help='blocks (default 16)')
    args = parser.parse_args(argv)
    results = measure(args.num_feat, args.num_block, args.size, args.threads, args.repeats, args.seed)
    print(report(results))
    return results


if __name__ == '__main__':
    main()
