"""The whole product in one command: `dupru-demo` (or `python -m dupru_basicsr.demo`).

1. Prepares data from the colour photos that scikit-image ships (no download): most for training (DIV2K-style
   sub-images), two held out for evaluation, with BasicSR's MATLAB-compatible bicubic x4 (`dupru_basicsr.prepare`).
2. Trains stock MSRResNet, UPru and DUPru on the same data with the same budget and LR schedule (the stock run gets
   the same total number of iterations, T x E, and the same per-round cosine restarts).
3. Evaluates the three on the held-out images and writes the comparison report (`dupru_basicsr.compare`).

On a CPU it uses a tiny MSRResNet and finishes in about ten minutes on 2 cores; with CUDA it uses the full network
(64 features, 16 blocks) and a longer schedule. `--budget` picks a preset or sets the iterations per round.
Checkpoints are written atomically, so Ctrl-C leaves complete ones behind; rerunning resumes where it stopped.
"""
import argparse
import os
import os.path as osp
import sys
import time

import yaml

HELD_OUT = ('astronaut', 'chelsea')  # evaluation photos; never trained on
SKIP_TRAIN = ('retina', )  # mostly black background: a poor training image
METHODS = ('stock', 'upru', 'dupru')
MARKER = '.dupru_demo'

# name -> network width/depth, crops, batch, rounds x iterations per round, pruning rate (%), lr
PRESETS = {
    'tiny': dict(num_feat=16, num_block=2, gt_size=32, batch=2, rounds=2, iters=5, rate=30, lr=1e-3),
    'cpu': dict(num_feat=16, num_block=2, gt_size=48, batch=8, rounds=4, iters=500, rate=30, lr=1e-3),
    'gpu': dict(num_feat=64, num_block=16, gt_size=128, batch=16, rounds=5, iters=4000, rate=30, lr=2e-4),
}


class DemoError(ValueError):
    """A wrong demo option or output folder; the message says what to do."""


def prepare_data(data_dir, progress=True, subimages=True):
    """skimage photos -> <data_dir>/{train,val}/{GTmod4,LRbicx4}; train also as 120x120 sub-images when
    `subimages` (the test suite trains on the whole photos and does without them)."""
    import cv2

    from dupru_basicsr.data.prepare import load_skimage_photos, prepare
    photos = load_skimage_photos()
    held_out = [n for n in HELD_OUT if n in photos]
    if len(held_out) < 1 or len(photos) - len(held_out) < 2:
        raise DemoError(f'scikit-image provides too few photos offline ({sorted(photos)}); use dupru-prepare on '
                        'your own images and the options in options/train/tiny instead.')
    folders = {}
    for split, names in (('train', [n for n in photos if n not in held_out and n not in SKIP_TRAIN]),
                         ('val', held_out)):
        source = osp.join(data_dir, 'source', split)
        os.makedirs(source, exist_ok=True)
        for name in names:
            cv2.imwrite(osp.join(source, f'{name}.png'), cv2.cvtColor(photos[name], cv2.COLOR_RGB2BGR))
        folders[split] = prepare(
            input_dir=source,
            out_dir=osp.join(data_dir, split),
            scales=(4, ),
            subimages=subimages and split == 'train',
            crop_size=120,
            step=60,
            force=True,
            progress=progress)
    return folders


def format_table(results, dataset):
    """The demo's summary table: one row per method."""
    stats = {s['label']: s for s in results.model_stats}
    header = (f'{"method":8s} {"PSNR-RGB":>9s} {"SSIM-RGB":>9s} {"PSNR-Y":>8s} {"SSIM-Y":>8s} {"body sparsity":>14s} '
              f'{"non-zero params":>16s} {"ms/image":>9s}')
    lines = [header, '-' * len(header)]
    for label in results.labels:
        s = stats[label]
        ms = (s.get('timing') or {}).get('ms_per_image')
        lines.append(f'{label:8s} {results.mean(label, dataset, "psnr_rgb"):9.4f} '
                     f'{results.mean(label, dataset, "ssim_rgb"):9.4f} {results.mean(label, dataset, "psnr_y"):8.4f} '
                     f'{results.mean(label, dataset, "ssim_y"):8.4f} {100 * s["body_sparsity"]:13.2f}% '
                     f'{s["nonzero_params"]:16,d} {"n/a" if ms is None else f"{ms:9.2f}"}')
    return '\n'.join(lines)


def run_demo(out='dupru_demo', budget=None, rounds=None, device=None, force=False, progress=True,
             prepare_only=False):
    """Prepare, train the three methods, compare. Returns (CompareResults, table text), or the prepared folders
    when `prepare_only`."""
    import torch

    from dupru_basicsr.experiments import make_options, train_experiment
    from dupru_basicsr.report.build import compare
    cuda = torch.cuda.is_available() if device is None else device.startswith('cuda')
    if budget is None:
        budget = 'gpu' if cuda else 'cpu'
    if str(budget) in PRESETS:
        preset = dict(PRESETS[str(budget)])
    else:
        try:
            iters = int(budget)
        except ValueError:
            raise DemoError(f'--budget {budget!r}: use one of {", ".join(PRESETS)} or a number of iterations per '
                            'round (e.g. --budget 200).') from None
        if iters < 1:
            raise DemoError(f'--budget {iters}: the iterations per round must be >= 1.')
        preset = dict(PRESETS['gpu' if cuda else 'cpu'], iters=iters)
    if rounds is not None:
        if rounds < 1:
            raise DemoError(f'--rounds {rounds}: must be >= 1.')
        preset['rounds'] = rounds

    out = osp.abspath(out)
    if osp.exists(out) and not osp.isdir(out):
        raise DemoError(f'--out {out} is a file; give a folder (it is created if missing).')
    if osp.isdir(out) and os.listdir(out) and not osp.exists(osp.join(out, MARKER)) and not force:
        raise DemoError(f'--out {out} exists and was not made by dupru-demo; choose another folder or pass --force.')
    os.makedirs(out, exist_ok=True)
    settings_path = osp.join(out, MARKER)
    settings = {'preset': preset, 'cuda': cuda}
    resume = False
    if osp.exists(settings_path):
        with open(settings_path) as f:
            resume = yaml.safe_load(f) == settings  # same settings: continue the earlier (interrupted) demo
    if not resume:
        import shutil
        for sub in ('experiments', 'options', 'report', 'data'):
            shutil.rmtree(osp.join(out, sub), ignore_errors=True)
    with open(settings_path, 'w') as f:
        yaml.safe_dump(settings, f)

    t0 = time.time()
    print(f'dupru-demo: {"CUDA" if cuda else "CPU"}, MSRResNet x4 {preset["num_feat"]} features / '
          f'{preset["num_block"]} blocks, {preset["rounds"]} rounds x {preset["iters"]} iterations, pruning '
          f'{preset["rate"]}% per round, output in {out}', flush=True)
    data = prepare_data(osp.join(out, 'data'), progress=progress)
    if prepare_only:
        print(f'Prepared {osp.join(out, "data")}: train/ (sub-images) and val/ (held-out), x4.')
        return data
    gpus = 1 if cuda else 0
    exps = [train_experiment(make_options(method, data, preset, f'demo_{method}', gpus), out, method, progress)[0]
            for method in METHODS]
    results = compare(exps, dataset_dirs=[f'heldout={data["val"]["gt"]}:{data["val"]["lr"][4]}'],
                      out_dir=osp.join(out, 'report'), labels=list(METHODS), device='cuda' if cuda else 'cpu',
                      repeats=3, warmup=1, progress=progress)
    table = format_table(results, 'heldout')
    print(f'\nHeld-out images: {", ".join(HELD_OUT)} (x4, metrics on RGB and Y with a 4-pixel border crop)\n')
    print(table)
    print(f'\nExperiments: {osp.join(out, "experiments")}\nReport:      {osp.join(out, "report", "report.html")}'
          f'\nTotal time:  {time.time() - t0:.0f} s')
    return results, table


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='dupru-demo', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='dupru_demo', help='output folder (default: ./dupru_demo)')
    parser.add_argument('--budget', default=None,
                        help=f'preset ({", ".join(PRESETS)}; default: gpu with CUDA, else cpu) or iterations per round')
    parser.add_argument('--rounds', type=int, default=None, help='number of rounds T (default: from the preset)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=None, help='default: cuda when available')
    parser.add_argument('--force', action='store_true', help='use --out even if it holds other files')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--prepare-only', action='store_true',
                        help='only prepare the data (for the option files in options/train/tiny)')
    args = parser.parse_args(argv)
    from dupru_basicsr.report import CompareError
    from dupru_basicsr.utils.cli import run_command

    def run():
        run_demo(args.out, args.budget, args.rounds, args.device, args.force, not args.no_progress, args.prepare_only)

    try:
        return run_command('dupru-demo', run, (DemoError, CompareError))
    except KeyboardInterrupt:
        print('\ndupru-demo: interrupted; completed checkpoints are kept; run the same command again to continue.',
              file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
