"""How much of the demo's table is noise: `dupru-demo` with several seeds on each kind of CPU kernels.

    python bench/demo_spread.py --budget cpu --seeds 0 1 2 --out demo_spread      # ~8 min per run on 2 cores

Each run is a fresh `dupru-demo --budget B --seed S --device cpu` in its own process. With `--isas AVX512 AVX2` (the
default) every seed runs twice: once with the kernels the CPU picks, once with PyTorch and oneDNN limited to AVX2
(`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`), the kernels an AVX2-only CPU (e.g. an AMD EPYC before Zen 4)
runs; an ISA above what the CPU has is left out. It prints every run's table, then per method the mean and range of
each column over all runs, the largest difference the ISA alone makes (same seed), and the gap of every method to
stock per run with its sign: a claim such as "DUPru is ahead of UPru" holds only where every run agrees.
The numbers in docs/demo_spread.md are this script's output.
"""
import argparse
import os
import os.path as osp
import subprocess
import sys

COLUMNS = ('psnr_rgb', 'ssim_rgb', 'psnr_y', 'ssim_y', 'body_sparsity', 'nonzero')


def parse_table(text):
    """{method: {column: value}} from the demo's printed table."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0] in ('stock', 'upru', 'dupru', 'dupru_gradual'):
            values = [float(p.rstrip('%').replace(',', '')) for p in parts[1:]]
            rows[parts[0]] = dict(zip(COLUMNS, values))
    return rows


def isa_env(isa, native):
    """The environment of a run limited to `isa`; the CPU's own choice (`native`) sets nothing."""
    env = dict(os.environ)
    if isa != native:
        env.update(ATEN_CPU_CAPABILITY=isa.lower(), ONEDNN_MAX_CPU_ISA=isa)
    return env


def available_isas(wanted):
    """(the ISAs of `wanted` this CPU can run, the one PyTorch picks by itself)."""
    import torch
    native = torch.backends.cpu.get_cpu_capability()  # e.g. AVX512, AVX2, DEFAULT
    order = ['DEFAULT', 'AVX2', 'AVX512']
    top = order.index(native) if native in order else 0
    return [isa for isa in wanted if isa in order and order.index(isa) <= top], native


def run_one(budget, seed, isa, native, out):
    folder = osp.join(out, f'{budget}_{isa}_seed{seed}')
    log = folder + '.txt'
    if osp.isfile(log) and 'Total time:' in open(log).read():  # done earlier: reuse (the runs are deterministic)
        return open(log).read()
    cmd = [sys.executable, '-m', 'dupru_basicsr.demo', '--budget', budget, '--seed', str(seed), '--device', 'cpu',
           '--out', folder, '--force', '--no-progress']
    done = subprocess.run(cmd, env=isa_env(isa, native), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f'{" ".join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}')
    with open(log, 'w') as f:
        f.write(done.stdout)
    return done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--budget', default='tiny', help='the demo preset (tiny, cpu)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--isas', nargs='+', default=['AVX512', 'AVX2'])
    parser.add_argument('--out', default='demo_spread')
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    isas, native = available_isas(args.isas)
    runs = {}
    for isa in isas:
        for seed in args.seeds:
            text = run_one(args.budget, seed, isa, native, args.out)
            runs[isa, seed] = parse_table(text)
            ran_on = next((line for line in text.splitlines() if line.startswith('Ran on:')), '')
            print(f'== {args.budget}, {isa}, seed {seed}: {ran_on}')
            print('\n'.join(line for line in text.splitlines() if line.split()[:1] and line.split()[0] in
                            ('method', 'stock', 'upru', 'dupru', 'dupru_gradual')), flush=True)
    methods = list(next(iter(runs.values())))
    print(f'\n== spread over {len(runs)} runs ({", ".join(isas)} x seeds {" ".join(map(str, args.seeds))})')
    print(f'{"method":14s} {"column":13s} {"mean":>10s} {"min":>10s} {"max":>10s} {"ISA alone (max |diff|)":>24s}')
    for method in methods:
        for column in COLUMNS:
            values = [r[method][column] for r in runs.values()]
            isa_diff = max((abs(runs[a, s][method][column] - runs[b, s][method][column]) for a in isas for b in isas
                            for s in args.seeds if a < b), default=0.0)
            print(f'{method:14s} {column:13s} {sum(values) / len(values):10.4f} {min(values):10.4f} '
                  f'{max(values):10.4f} {isa_diff:24.4f}')
    print('\n== PSNR-Y minus stock per run (dB); a sign that every run shares is a claim the runs support')
    print(f'{"run":22s} ' + ' '.join(f'{m:>14s}' for m in methods if m != 'stock') + f' {"dupru - upru":>14s}')
    for (isa, seed), r in runs.items():
        gaps = [r[m]['psnr_y'] - r['stock']['psnr_y'] for m in methods if m != 'stock']
        lead = r['dupru']['psnr_y'] - r['upru']['psnr_y'] if 'upru' in r else float('nan')
        print(f'{isa + " seed " + str(seed):22s} ' + ' '.join(f'{g:14.4f}' for g in gaps) + f' {lead:14.4f}')


if __name__ == '__main__':
    main()
