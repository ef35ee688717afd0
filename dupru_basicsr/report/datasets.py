"""The images every run is evaluated on: GT / LR folder pairs (BasicSR layout or explicit), paired by file name
and read once."""
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import List

import cv2
import numpy as np

from dupru_basicsr.data.images import list_images
from dupru_basicsr.report import CompareError


@dataclass
class ImagePair:
    stem: str
    gt_path: str
    lr_path: str
    gt: np.ndarray = field(repr=False)  # BGR uint8, as cv2 reads it
    lr: np.ndarray = field(repr=False)


@dataclass
class DatasetEntry:
    name: str
    gt_dir: str
    lr_dir: str
    images: List[ImagePair]

    def info(self):
        return {'name': self.name, 'gt_dir': self.gt_dir, 'lr_dir': self.lr_dir,
                'images': [img.stem for img in self.images]}


def parse_dataset_dirs(specs):
    """`NAME=GT_DIR:LR_DIR` strings -> {name: (gt_dir, lr_dir)}."""
    dirs = {}
    for spec in specs or ():
        name, sep, pair = spec.partition('=')
        gt_dir, sep2, lr_dir = pair.rpartition(':')
        if not sep or not sep2 or not name or not gt_dir or not lr_dir:
            raise CompareError(f'--dataset-dirs {spec!r}: expected NAME=GT_DIR:LR_DIR.')
        dirs[name] = (gt_dir, lr_dir)
    return dirs


def _read_image(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)  # BGR uint8, as BasicSR's imfrombytes
    if img is None:
        raise CompareError(f'Cannot read image {path}.')
    return img


def pair_images(name, gt_dir, lr_dir, scale):
    """(stem, gt_path, lr_path) pairs by file stem; LR stems may carry an `x4` / `_x4` suffix (DIV2K style)."""
    gt_paths = {osp.splitext(osp.basename(p))[0]: p for p in list_images(gt_dir)}
    lr_paths = {}
    for p in list_images(lr_dir):
        stem = osp.splitext(osp.basename(p))[0]
        plain = re.sub(rf'[_-]?x{scale}$', '', stem, flags=re.IGNORECASE)
        lr_paths[stem if stem in gt_paths or plain not in gt_paths else plain] = p
    if not gt_paths:
        raise CompareError(f'Dataset {name}: no images in {gt_dir}.')
    unmatched = [s for s in gt_paths if s not in lr_paths]
    if unmatched:
        shown = ', '.join(unmatched[:5]) + (' ...' if len(unmatched) > 5 else '')
        raise CompareError(f'Dataset {name}: {len(unmatched)} GT image(s) in {gt_dir} have no LR image of the same '
                           f'name in {lr_dir}: {shown}.')
    return [(stem, gt_paths[stem], lr_paths[stem]) for stem in sorted(gt_paths)]


def load_dataset(name, gt_dir, lr_dir, scale):
    """Read all pairs of a dataset into memory (once, shared by every run) and check GT size = LR size x scale."""
    for folder in (gt_dir, lr_dir):
        if not osp.isdir(folder):
            raise CompareError(f'Dataset folder {folder} does not exist (dataset {name}). Make it with `dupru-prepare` '
                               f'(BasicSR layout <data-root>/{name}/GTmod12, or the GTmod<k> it writes, and '
                               f'LRbicx{scale}), point --data-root at the folder that holds {name}, or pass '
                               f'--dataset-dirs {name}=GT_DIR:LR_DIR.')
    images = []
    for stem, gt_path, lr_path in pair_images(name, gt_dir, lr_dir, scale):
        gt, lr = _read_image(gt_path), _read_image(lr_path)
        if gt.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise CompareError(f'GT/LR size mismatch for image {stem} of dataset {name}: GT {gt_path} is '
                               f'{gt.shape[1]}x{gt.shape[0]} but LR {lr_path} is {lr.shape[1]}x{lr.shape[0]} '
                               f'(x{scale} = {lr.shape[1] * scale}x{lr.shape[0] * scale}). Crop GT to a multiple of '
                               f'the scale and make LR from it (dupru-prepare), or check --scale.')
        images.append(ImagePair(stem, gt_path, lr_path, gt, lr))
    return DatasetEntry(name, gt_dir, lr_dir, images)


def gt_folder(dataset_root, scale):
    """The HR folder of a dataset in BasicSR's layout for `scale`: `GTmod12` (BasicSR's Set5/Set14, one folder for
    x2/x3/x4) when present, else the `GTmod<k>` with k a multiple of `scale` that `dupru-prepare --scales ...` wrote
    (the smallest k: the least cropped), else `GTmod12` (load_dataset then says it is missing and how to make it)."""
    names = os.listdir(dataset_root) if osp.isdir(dataset_root) else []
    mods = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r'GTmod(\d+)', n))
                  and osp.isdir(osp.join(dataset_root, n)))
    if 12 in mods and 12 % scale == 0:
        return osp.join(dataset_root, 'GTmod12')
    fitting = [k for k in mods if k % scale == 0]
    return osp.join(dataset_root, f'GTmod{fitting[0]}' if fitting else 'GTmod12')


def resolve_datasets(names, data_root, scale, dataset_dirs=None):
    """`--datasets` names under `data_root` (BasicSR layout) plus `--dataset-dirs` pairs, loaded."""
    explicit = parse_dataset_dirs(dataset_dirs)
    order = list(names or ()) + [n for n in explicit if n not in (names or ())]
    if not order:
        raise CompareError('No dataset given: pass --datasets NAME ... (under --data-root) or --dataset-dirs.')
    datasets = []
    for name in order:
        if name in explicit:
            gt_dir, lr_dir = explicit[name]
        else:
            if name in ('.', '..') or any(c in name for c in '/\\') or osp.isabs(name):
                raise CompareError(f'--datasets {name}: a dataset name is a folder directly under --data-root '
                                   f'({data_root}); give its name (e.g. Set5), or --dataset-dirs NAME=GT_DIR:LR_DIR '
                                   'for folders elsewhere.')
            gt_dir, lr_dir = gt_folder(osp.join(data_root, name), scale), osp.join(data_root, name, f'LRbicx{scale}')
        datasets.append(load_dataset(name, gt_dir, lr_dir, scale))
    return datasets
