"""Time of the data check before training (`dupru_basicsr.plugin.options.check_options`) on a DIV2K-sized training set.

Makes N GT/LR PNG pairs (default 32000, DIV2K's sub-image count for 480x480 crops; small images, since the check
reads only headers and the last bytes) in a temporary folder and times the check of every pair, --repeats times.
The first repeat may read from disk; later ones read from the page cache.

    python bench/bench_data_check.py --pairs 32000 --repeats 3
"""
import argparse
import os
import os.path as osp
import statistics
import tempfile
import time

import cv2
import numpy as np

import dupru_basicsr  # noqa: F401  (shims before basicsr)
from dupru_basicsr.plugin.datasets import check_datasets as _check_datasets


def make_pairs(root, pairs, gt_size=48, scale=4):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (480, 480, 3), dtype=np.uint8)
    for folder in ('gt', 'lq'):
        os.makedirs(osp.join(root, folder))
    for i in range(pairs):
        y, x = (i * 7) % (480 - gt_size), (i * 13) % (480 - gt_size)
        gt = np.ascontiguousarray(base[y:y + gt_size, x:x + gt_size])
        lq = cv2.resize(gt, (gt_size // scale, gt_size // scale), interpolation=cv2.INTER_AREA)
        cv2.imwrite(osp.join(root, 'gt', f'{i:05d}_s001.png'), gt)
        cv2.imwrite(osp.join(root, 'lq', f'{i:05d}_s001.png'), lq)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pairs', type=int, default=32000)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        make_pairs(root, args.pairs)
        print(f'made {args.pairs} GT/LR PNG pairs in {time.perf_counter() - start:.1f} s')
        opt = {'scale': 4, 'num_gpu': 0, 'is_train': True, 'datasets': {'train': {
            'type': 'PairedImageDataset', 'dataroot_gt': osp.join(root, 'gt'), 'dataroot_lq': osp.join(root, 'lq'),
            'io_backend': {'type': 'disk'}, 'gt_size': 48, 'batch_size_per_gpu': 16}}}
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _check_datasets(opt)
            times.append(time.perf_counter() - start)
        print(f'check of {args.pairs} pairs ({2 * args.pairs} files): ' + ', '.join(f'{t:.2f} s' for t in times)
              + f' (median {statistics.median(times):.2f} s)')


if __name__ == '__main__':
    main()
