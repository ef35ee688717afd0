"""The CUDA check in one command: what a GPU machine must show, measured in one run, written to docs/results.md.

    python bench/gpu_check.py --device cuda                 # on a CUDA machine, about 5 minutes on an H100/H200
    python bench/gpu_check.py --device cpu --budget tiny --out /tmp/results.md   # the same steps on a CPU (a test)

Steps (each one's output, time and exit status go into the report; a failed step fails the command, the others
still run):
1. the device-parametrised tests (`pytest -m devices`, DUPRU_TEST_DEVICES=<device>): masks, exact zeros under
   Adam/AdamW, frozen values, the fused step's op and launch counts and no host sync, prune/rewind/save/load, a
   DUPru run resumed on the device, two deterministic runs giving the same bits;
2. `bench/bench_pruning.py` at BasicSR's batch 16 of 128x128 GT crops (full MSRResNet x4): step time of DUPru
   against stock, hook time, launches per step;
3. a short demo with the GPU preset (`dupru-demo --budget gpu --iters E --rounds 2`): full MSRResNet, 240 px
   sub-images, 128 px crops, batch 16, every run of the demo, scored on the held-out photos;
4. a short stock and DUPru training (`dupru_basicsr.train`, the GPU preset's options on the demo's data): seconds
   per iteration of each, measured side by side.

On a machine with the package installed (`pip install -e .`), or with basicsr and its small dependencies on
PYTHONPATH (bench/README.md: the GPU machine's one-call command).
"""
import argparse
import datetime
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a copy of the repository without installing it

# budget -> bench repeats / batch / GT size, demo iterations per round, training iterations per run
BUDGETS = {
    'full': dict(repeats=15, batch=16, gt_size=128, demo_iters=100, train_iters=200),
    'tiny': dict(repeats=2, batch=1, gt_size=32, demo_iters=1, train_iters=4),
}


def run_tests(device):
    env = dict(os.environ, DUPRU_TEST_DEVICES=device, PYTHONUNBUFFERED='1')
    cmd = [sys.executable, '-m', 'pytest', '-q', '-m', 'devices', '-p', 'no:cacheprovider', '-rs', 'tests']
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    out = result.stdout + result.stderr
    summary = next((line for line in reversed(out.splitlines()) if re.search(r'\d+ (passed|failed|error)', line)),
                   '(no pytest summary)')
    failed = result.returncode != 0 or 'skipped' in summary  # on the device asked for, nothing may skip
    return f'DUPRU_TEST_DEVICES={device} python -m pytest -q -m devices tests', summary.strip('= '), out, failed


def run_bench(device, budget):
    cmd = [sys.executable, osp.join('bench', 'bench_pruning.py'), '--device', device, '--batch', str(budget['batch']),
           '--gt-size', str(budget['gt_size']), '--repeats', str(budget['repeats'])]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if not line.startswith('USDT:')]
    out = '\n'.join(lines) if result.returncode == 0 else result.stdout + result.stderr
    return 'python ' + ' '.join(cmd[1:]), out, result.returncode != 0


def run_short_demo(device, budget, work):
    from dupru_basicsr.demo import run_demo
    out = osp.join(work, 'demo')
    start = time.time()
    _, table = run_demo(out, budget='gpu', rounds=2, iters=budget['demo_iters'], device=device, progress=False)
    command = f'dupru-demo --budget gpu --device {device} --iters {budget["demo_iters"]} --rounds 2 --out DIR'
    return command, table, time.time() - start, out


def run_short_training(device, budget, demo_out):
    """Stock (one cosine) and DUPru (2 rounds, 90 % of the body pruned at the round boundary, rewind to W0) with
    the GPU preset on the demo's data: median seconds per iteration of each, the first fifth of the iterations
    (start-up, cuDNN autotuning) left out."""
    from dupru_basicsr.demo import PRESETS
    from dupru_basicsr.experiments import make_options, train_experiment
    from dupru_basicsr.pruning import rate_for_sparsity
    from dupru_basicsr.utils.devices import synchronize
    half = max(1, budget['train_iters'] // 2)
    preset = dict(PRESETS['gpu'], rounds=2, iters=half)  # DUPru: 2 rounds (one prune); stock: one cosine over both
    data = {'train': {'gt_sub': osp.join(demo_out, 'data', 'train', 'GTmod4_sub'),
                      'lr_sub': {4: osp.join(demo_out, 'data', 'train', 'LRbicx4_sub')}},
            'val': {'gt': osp.join(demo_out, 'data', 'val', 'GTmod4'),
                    'lr': {4: osp.join(demo_out, 'data', 'val', 'LRbicx4')}}}
    root = osp.join(demo_out, 'speed')
    gpus = 1 if device == 'cuda' else 0
    per_iter = {}
    for label, method, kwargs in (('stock', 'stock', dict(restarts=False)),
                                  ('dupru', 'dupru', dict(rate=rate_for_sparsity(0.9, 1), rewind='init'))):
        opt = make_options(method, data, preset, f'speed_{label}', gpus, **kwargs)
        opt.pop('val')
        opt['datasets'].pop('val')
        opt['logger']['save_checkpoint_freq'] = 2 * half
        stamps = []

        def on_iter(it, total):
            synchronize(device)
            stamps.append(time.perf_counter())

        train_experiment(opt, root, label, progress=False, on_iter=on_iter)
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        per_iter[label] = statistics.median(steps[len(steps) // 5:]) if steps else float('nan')
    return per_iter


def machine(device):
    import platform

    import torch
    if device == 'cuda':
        return (f'{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}, Python '
                f'{platform.python_version()}')
    return (f'CPU {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch '
            f'{torch.__version__}, Python {platform.python_version()}')


def step(report, title, fn):
    """Run one step; returns its result, or None after recording its traceback (a failed step)."""
    start = time.time()
    try:
        result = fn()
    except Exception:  # noqa: BLE001 - record it, run the other steps, fail at the end
        report.append(f'## {title}\n\nFAILED after {time.time() - start:.0f} s:\n\n```\n{traceback.format_exc()}```\n')
        return None
    return result, time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    parser.add_argument('--budget', choices=sorted(BUDGETS), default='full')
    parser.add_argument('--out', default=osp.join(REPO, 'docs', 'results.md'), help='the report (Markdown)')
    parser.add_argument('--work', default=None, help='folder for the demo and training runs (default: a temporary one)')
    args = parser.parse_args(argv)
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: error: --device cuda: no CUDA device is visible here; --device cpu runs the same steps on '
              'the CPU.', file=sys.stderr)
        return 2
    budget = BUDGETS[args.budget]
    work = args.work or tempfile.mkdtemp(prefix='gpu_check_')
    t0 = time.time()
    failed = False
    report = [f'# Results of `python bench/gpu_check.py --device {args.device} --budget {args.budget}`\n',
              f'Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine(args.device)}; every number below '
              'is this run\'s output (one run).\n']

    done = step(report, '1. Device tests', lambda: run_tests(args.device))
    if done:
        (command, summary, out, tests_failed), seconds = done
        failed |= tests_failed
        report.append(f'## 1. Device tests\n\n`{command}`: **{summary}** ({seconds:.0f} s).\n')
        if tests_failed:
            report.append(f'```\n{out[-6000:]}\n```\n')
    else:
        failed = True

    done = step(report, '2. Pruning benchmark', lambda: run_bench(args.device, budget))
    if done:
        (command, out, bench_failed), seconds = done
        failed |= bench_failed
        report.append(f'## 2. Pruning benchmark\n\n`{command}` ({seconds:.0f} s):\n\n```\n{out.strip()}\n```\n')
    else:
        failed = True

    done = step(report, '3. Short demo, GPU preset', lambda: run_short_demo(args.device, budget, work))
    demo_out = None
    if done:
        (command, table, seconds, demo_out), _ = done
        report.append(f'## 3. Short demo, GPU preset\n\n`{command}` ({seconds:.0f} s; {budget["demo_iters"]} '
                      f'iterations per round: a check that every branch runs, not a quality result):\n\n'
                      f'```\n{table}\n```\n')
    else:
        failed = True

    if demo_out is not None:
        done = step(report, '4. Stock vs DUPru training speed',
                    lambda: run_short_training(args.device, budget, demo_out))
        if done:
            per_iter, seconds = done
            report.append(
                f'## 4. Stock vs DUPru training speed\n\n{budget["train_iters"]} iterations each of `dupru_basicsr.'
                f'train` with the GPU preset (MSRResNet 64x16, batch 16, 128 px crops) on the demo\'s data, no '
                f'validation ({seconds:.0f} s): median seconds per iteration (the first fifth left out): stock '
                f'{per_iter["stock"]:.4f} s, DUPru {per_iter["dupru"]:.4f} s, ratio '
                f'{per_iter["dupru"] / per_iter["stock"]:.3f}.\n')
        else:
            failed = True
    report.append(f'Total: {time.time() - t0:.0f} s; {"FAILED" if failed else "all steps passed"}.\n')
    text = '\n'.join(report)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    print(text)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
