"""`dupru-prepare`: HR images -> BasicSR's `GTmod{s}` / `LRbicx{s}` folders (+ sub-images, meta_info, LMDB).

    python -m dupru_basicsr.prepare --input datasets/SunHays80/HR --out datasets/SunHays80 --scales 2 3 4
    python -m dupru_basicsr.prepare --skimage --out datasets/skimage --scales 4 --subimages --crop-size 240 --step 120

The command line only; what is made and why, and the checks done before anything is written, are in
`dupru_basicsr.data.prepare`.
"""
import argparse
import os
import sys
import time
from os import path as osp

from dupru_basicsr.data.prepare import PrepareError, image_folders, prepare

EXIT_BAD_INPUT = 2


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(
        prog='dupru-prepare',
        description='Make BasicSR SR data from HR images: <out>/GTmod{lcm(scales)} (mod-cropped HR) and '
        '<out>/LRbicx{s} (MATLAB-compatible bicubic), optionally DIV2K-style sub-images with meta_info files '
        'and LMDBs. Nothing is written if any input is bad (exit code 2).')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--input', metavar='DIR', help='folder of HR images (png, jpg, bmp, tif; not recursive)')
    source.add_argument('--skimage', action='store_true',
                        help="use scikit-image's bundled colour photos (written to <out>/source/)")
    parser.add_argument('--out', metavar='DIR', required=True, help='output root (must not be inside --input)')
    parser.add_argument('--scales', type=int, nargs='+', default=[4], metavar='S', help='scales (default: 4)')
    parser.add_argument('--subimages', action='store_true',
                        help='also cut sub-images (<folder>_sub/ + <out>/meta_info_<folder>_sub.txt)')
    parser.add_argument('--crop-size', type=int, default=480, help='GT sub-image size (default: 480)')
    parser.add_argument('--step', type=int, default=240, help='GT sub-image stride (default: 240)')
    parser.add_argument('--thresh-size', type=int, default=0,
                        help='add a border-aligned last crop when more than this many pixels remain (default: 0)')
    parser.add_argument('--lmdb', action='store_true', help='also write <folder>.lmdb for every image folder')
    parser.add_argument('--convert', action='store_true',
                        help='convert grayscale / RGBA / 16-bit images to 8-bit RGB instead of refusing them')
    parser.add_argument('--force', action='store_true', help='replace existing outputs')
    parser.add_argument('--workers', type=int, default=None, help='processes (default: all CPU cores)')
    return parser


def _summary(result, seconds):
    folders = [result['source']] if result['source'] else []
    folders += image_folders(result) + list(result['meta_info'].values()) + list(result['lmdb'].values())
    lines = [f'Prepared {result["num_images"]} image(s), scales x{", x".join(map(str, result["lr"]))}, '
             f'in {seconds:.1f} s:']
    for path in folders:
        if path.endswith('.lmdb') or not osp.isdir(path):
            lines.append(f'  {path}')
        else:
            lines.append(f'  {path}  ({len(os.listdir(path))} files)')
    return '\n'.join(lines)


def main(argv=None):
    """Console script `dupru-prepare`; returns the exit code (2 for a bad input, with the reason on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return it, so that main() is callable in-process
        return exc.code
    start = time.time()
    try:
        result = prepare(input_dir=args.input, out_dir=args.out, scales=args.scales, skimage=args.skimage,
                         subimages=args.subimages, crop_size=args.crop_size, step=args.step,
                         thresh_size=args.thresh_size, lmdb=args.lmdb, force=args.force, workers=args.workers,
                         convert=args.convert)
    except PrepareError as exc:
        print(f'dupru-prepare: error: {exc}', file=sys.stderr)
        return EXIT_BAD_INPUT
    print(_summary(result, time.time() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
