"""Side-by-side evaluation of stock and pruned MSRResNet runs: the paper's Tables 2-5 and Figs. 4-5 as one report.

Usage::

    dupru-compare experiments/stock experiments/dupru experiments/upru --datasets Set5 Set14 BSD100
    python -m dupru_basicsr.compare net_g_latest.pth --arch-opt options/train/x.yml --datasets Set5 --out results/c

or, from Python (notebooks, the demo)::

    from dupru_basicsr.compare import compare
    results = compare(['experiments/stock', 'experiments/dupru'], datasets=['Set5'])
    results.mean('dupru (dupru)', 'Set5', 'psnr_y')

Why a tool of its own rather than `dupru-test` on each run: the paper's claims are *differences* between runs
(DUPru vs UPru vs stock), so every run has to be measured the same way, on the same images, in one place. The
numbers follow BasicSR's SRModel validation exactly (cv2-read BGR images, RGB [0, 1] input, `tensor2img` output,
`basicsr.metrics.calculate_psnr` / `calculate_ssim` on BGR uint8 with crop_border = scale), so they agree with the
validation lines of the training logs and with BasicSR's model zoo numbers.

Outputs in `--out` (default results/compare): results.csv / results.json (one row per run x dataset x image, plus
'(mean)' rows), report.md (figures as PNG files beside it) and report.html (self-contained: figures embedded as
data URIs, so the file can be mailed or attached on its own).
"""
import argparse
import sys

from dupru_basicsr.report import CompareError
from dupru_basicsr.report.build import compare
from dupru_basicsr.report.figures import DEFAULT_CROP
from dupru_basicsr.report.results import METRICS


def build_parser():
    parser = argparse.ArgumentParser(
        prog='dupru-compare',
        description='Evaluate stock and pruned MSRResNet runs on the same images (BasicSR metrics) and write '
        'results.csv/json and a report (report.md, self-contained report.html).')
    parser.add_argument('inputs', nargs='+', metavar='EXP_OR_CKPT',
                        help='experiment folder (experiments/<name>) or a net_g_*.pth checkpoint')
    parser.add_argument('--datasets', nargs='*', default=[], help='dataset names under --data-root (BasicSR layout '
                        '<root>/<name>/GTmod12, else the GTmod<k> with k a multiple of the scale, and '
                        'LRbicx<scale>)')
    parser.add_argument('--data-root', default='datasets')
    parser.add_argument('--dataset-dirs', nargs='*', default=[], metavar='NAME=GT_DIR:LR_DIR',
                        help='extra datasets as explicit folder pairs (images paired by file name)')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--out', default='results/compare', help='output folder (default: results/compare)')
    parser.add_argument('--labels', nargs='+', help='display names, one per input')
    parser.add_argument('--baseline', help='label of the run the difference table compares to (default: the first '
                        'stock SRModel run)')
    parser.add_argument('--arch-opt', help='option YAML whose network_g describes .pth inputs (default: inferred '
                        'from the state dict)')
    parser.add_argument('--crops', nargs='+', help='image names for the crop grid, one row each (default: the first '
                        '4 images of the first dataset)')
    parser.add_argument('--crop-box', nargs=4, type=int, metavar=('X', 'Y', 'W', 'H'),
                        help=f'HR crop window (default: {DEFAULT_CROP}x{DEFAULT_CROP} around the image centre)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per image (median); 0 skips timing')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs per image before timing')
    parser.add_argument('--time-images', type=int, help='time only the first N images of the first dataset')
    parser.add_argument('--no-tickets', action='store_true', help='skip evaluating per-round tickets (Fig. 4)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def main(argv=None):
    """Console script `dupru-compare`; returns 0, or 2 on a user error (CompareError, an unwritable --out: the
    message printed to stderr)."""
    from dupru_basicsr.utils.cli import run_command
    args = build_parser().parse_args(argv)
    return run_command('dupru-compare', lambda: _run(args), (CompareError, OSError))


def _run(args):
    results = compare(args.inputs, datasets=args.datasets, data_root=args.data_root, scale=args.scale,
                      out_dir=args.out, labels=args.labels, crops=args.crops, crop_box=args.crop_box,
                      device=args.device, repeats=args.repeats, warmup=args.warmup, time_images=args.time_images,
                      dataset_dirs=args.dataset_dirs, arch_opt=args.arch_opt, baseline=args.baseline,
                      tickets=not args.no_tickets, progress=not args.no_progress)
    width = max(len(label) for label in results.labels)
    for ds in results.datasets:
        print(f'{ds["name"]} ({len(ds["images"])} images)  PSNR/SSIM RGB  |  Y')
        for label in results.labels:
            m = {k: results.mean(label, ds['name'], k) for k in METRICS}
            print(f'  {label:<{width}}  {m["psnr_rgb"]:.4f}/{m["ssim_rgb"]:.4f}  |  '
                  f'{m["psnr_y"]:.4f}/{m["ssim_y"]:.4f}')
    for note in results.notes:
        print(f'Note: {note}')
    print('Wrote ' + ', '.join(results.files.values()) + ' and ' + ', '.join(results.figures.values()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
