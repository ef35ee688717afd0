"""Equal-budget quality study: how sparse can MSRResNet get before it loses PSNR?

    python -m dupru_basicsr.study --preset cpu-small --train-hr datasets/SunHays80/HR --data-root datasets

On the same data, seeds and total iterations (T x E) it trains
- stock MSRResNet for E and for T x E iterations,
- UPru and DUPru with rewind to init (the paper), late rewinding (iter_k) and learning-rate rewinding (lr),
- gradual magnitude pruning (Zhu & Gupta, DUPru freezing) to the same final sparsity,
repeats everything for several seeds, evaluates on Set5 and Set14 (RGB and Y) with the comparison report (which also
draws PSNR vs remaining weights per round), and writes `study.md` / `study.json` with seed means and spreads.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

from dupru_basicsr.experiments import make_options, train_experiment

PRESETS = {
    # tiny MSRResNet on a 2-core CPU: 2 seeds x 9 runs of <= 1500 iterations, under 40 minutes
    'cpu-small': dict(num_feat=16, num_block=2, gt_size=48, batch=8, rounds=5, iters=300, rate=45, lr=1e-3,
                      seeds=(0, 1), late_k=30, gradual=dict(start_iter=150, end_iter=1050, frequency=75)),
    # a few minutes, for checking the pipeline
    'smoke': dict(num_feat=8, num_block=1, gt_size=32, batch=2, rounds=2, iters=4, rate=30, lr=1e-3, seeds=(0, 1),
                  late_k=1, gradual=dict(start_iter=2, end_iter=6, frequency=2)),
    # full MSRResNet on a GPU (DIV2K-style data)
    'gpu': dict(num_feat=64, num_block=16, gt_size=128, batch=16, rounds=5, iters=20000, rate=45, lr=2e-4,
                seeds=(0, 1), late_k=2000, gradual=dict(start_iter=10000, end_iter=70000, frequency=1000)),
}


class StudyError(ValueError):
    """A bad study input; the message names it and the fix."""


def recipes(preset):
    """(label, method, rewind, options) of every run of one seed."""
    final_sparsity = 1 - (1 - preset['rate'] / 100)**(preset['rounds'] - 1)
    runs = [('stock_E', 'stock', None, dict(total_iter=preset['iters'])), ('stock_TxE', 'stock', None, {})]
    for method in ('upru', 'dupru'):
        for rewind in ('init', f'iter_{preset["late_k"]}', 'lr'):
            runs.append((f'{method}_{rewind.split("_")[0]}', method, rewind, {}))
    runs.append(('dupru_gradual', 'dupru', None, dict(gradual=dict(preset['gradual'], final_sparsity=final_sparsity))))
    return runs


def prepare_study_data(train_hr, out, progress):
    from dupru_basicsr.data.prepare import prepare
    folder = osp.join(out, 'data', 'train')
    if not osp.isfile(osp.join(folder, 'meta_info_GTmod4_sub.txt')):
        prepare(input_dir=train_hr, out_dir=folder, scales=(4, ), subimages=True, crop_size=240, step=240,
                force=True, progress=progress)
    return {'gt_sub': osp.join(folder, 'GTmod4_sub'), 'lr_sub': {4: osp.join(folder, 'LRbicx4_sub')}}


def summarise(results, runs, seeds, datasets):
    """Per recipe: mean and spread (max - min over seeds) of each metric, and the difference to stock T x E."""
    stats = {s['label']: s for s in results.model_stats}
    table = {}
    for label, *_ in runs:
        row = {'body_sparsity': statistics.mean(stats[f'{label}_s{s}']['body_sparsity'] for s in seeds)}
        for ds in datasets:
            for metric in ('psnr_y', 'psnr_rgb', 'ssim_y'):
                values = [results.mean(f'{label}_s{s}', ds, metric) for s in seeds]
                row[f'{ds}_{metric}'] = statistics.mean(values)
                row[f'{ds}_{metric}_spread'] = max(values) - min(values)
                row[f'{ds}_{metric}_seeds'] = values
        table[label] = row
    base = table['stock_TxE']
    for row in table.values():
        for ds in datasets:
            row[f'{ds}_psnr_y_vs_stock'] = row[f'{ds}_psnr_y'] - base[f'{ds}_psnr_y']
    return table


def format_markdown(table, datasets, preset, seeds):
    head = ['recipe', 'body sparsity']
    for ds in datasets:
        head += [f'{ds} PSNR-Y (spread)', f'{ds} Δ vs stock T×E', f'{ds} PSNR-RGB', f'{ds} SSIM-Y']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for label, row in table.items():
        cells = [label, f'{100 * row["body_sparsity"]:.2f}%']
        for ds in datasets:
            cells += [f'{row[f"{ds}_psnr_y"]:.4f} ({row[f"{ds}_psnr_y_spread"]:.4f})',
                      f'{row[f"{ds}_psnr_y_vs_stock"]:+.4f}', f'{row[f"{ds}_psnr_rgb"]:.4f}',
                      f'{row[f"{ds}_ssim_y"]:.4f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    note = (f'Means over seeds {list(seeds)}; spread = max - min over seeds. MSRResNet x4 {preset["num_feat"]} '
            f'features / {preset["num_block"]} blocks; T = {preset["rounds"]} rounds x E = {preset["iters"]} '
            'iterations, '
            f'{preset["rate"]}% of the survivors pruned per round.')
    return '\n'.join(lines) + '\n\n' + note + '\n'


def run_study(preset_name='cpu-small', train_hr='datasets/SunHays80/HR', data_root='datasets',
              datasets=('Set5', 'Set14'), out='results/study', seeds=None, progress=True):
    import torch

    from dupru_basicsr.report.build import compare
    preset = dict(PRESETS[preset_name])
    seeds = tuple(seeds or preset['seeds'])
    for ds in datasets:
        if not osp.isdir(osp.join(data_root, ds)):
            raise StudyError(f'{osp.join(data_root, ds)} does not exist; pass --data-root with '
                             f'{"/".join(datasets)} in BasicSR layout (GTmod12, LRbicx4), e.g. made by dupru-prepare.')
    if not osp.isdir(train_hr):
        raise StudyError(f'--train-hr {train_hr} does not exist; point it at a folder of HR images.')
    if osp.exists(out) and not osp.isdir(out):
        raise StudyError(f'--out {out} is a file; give a folder (it is created if missing).')
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    train = prepare_study_data(train_hr, out, progress)
    # the held-out val set for tickets: the first evaluation set
    val = {'gt': osp.join(data_root, datasets[0], 'GTmod12'), 'lr': {4: osp.join(data_root, datasets[0], 'LRbicx4')}}
    data = {'train': train, 'val': val}
    gpus = 1 if torch.cuda.is_available() else 0
    runs = recipes(preset)
    exps, labels, timings = [], [], {}
    for seed in seeds:
        for label, method, rewind, extra in runs:
            name = f'study_{preset_name}_{label}_s{seed}'
            opt = make_options(method, data, preset, name, gpus, seed=seed, rewind=rewind or 'init', **extra)
            opt['datasets']['val']['name'] = datasets[0]
            exp, seconds = train_experiment(opt, out, f'{label} s{seed}', progress)
            if seconds is not None:
                timings[name] = seconds
            exps.append(exp)
            labels.append(f'{label}_s{seed}')
    results = compare(exps, datasets=list(datasets), data_root=data_root, out_dir=osp.join(out, 'report'),
                      labels=labels, baseline=f'stock_TxE_s{seeds[0]}', repeats=0, progress=progress)
    table = summarise(results, runs, seeds, datasets)
    markdown = format_markdown(table, datasets, preset, seeds)
    with open(osp.join(out, 'study.md'), 'w') as f:
        f.write(markdown)
    with open(osp.join(out, 'study.json'), 'w') as f:
        json.dump({'preset': preset_name, 'settings': {k: v for k, v in preset.items()}, 'seeds': list(seeds),
                   'table': table, 'train_seconds': timings, 'total_seconds': time.time() - t0}, f, indent=1,
                  default=str)
    print(markdown)
    print(f'Report: {osp.join(out, "report", "report.html")}\nTotal time: {time.time() - t0:.0f} s')
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(prog='dupru-study', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu-small')
    parser.add_argument('--train-hr', default='datasets/SunHays80/HR', help='folder of HR training images')
    parser.add_argument('--data-root', default='datasets', help='folder with the evaluation sets (BasicSR layout)')
    parser.add_argument('--datasets', nargs='+', default=['Set5', 'Set14'])
    parser.add_argument('--seeds', nargs='+', type=int, default=None)
    parser.add_argument('--out', default='results/study')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    from dupru_basicsr.data.prepare import PrepareError
    from dupru_basicsr.report import CompareError
    from dupru_basicsr.utils.cli import run_command

    def run():
        run_study(args.preset, args.train_hr, args.data_root, args.datasets, args.out, args.seeds,
                  not args.no_progress)

    return run_command('dupru-study', run, (StudyError, CompareError, PrepareError))


if __name__ == '__main__':
    sys.exit(main())
