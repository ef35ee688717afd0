"""Data preparation for `dupru-prepare`: HR images -> BasicSR's `GTmod{s}` / `LRbicx{s}` folders (+ sub-images,
meta_info, LMDB).

Why this exists: SR results are only comparable when the LR images are made exactly like the benchmark ones, i.e.
HR mod-cropped to a multiple of the scale and downscaled with MATLAB's bicubic `imresize` (antialiasing on). BasicSR
ships a MATLAB-compatible port (`basicsr.utils.matlab_functions.imresize`) but only MATLAB scripts to drive it; this
module drives it from Python with BasicSR's folder and file conventions, so that BasicSR's `PairedImageDataset`
reads the result directly (folder mode, meta_info mode or LMDB mode).

Everything is validated before the first byte is written: a bad input raises `PrepareError` (exit code 2 from the
CLI) with a message that names the file or option and says how to fix it, and leaves the output folder as it was.
"""
import contextlib
import math
import multiprocessing
import os
import shutil
import sys
import warnings
from functools import reduce
from os import path as osp

import cv2
import numpy as np
import torch
from basicsr.data.transforms import mod_crop
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from tqdm import tqdm

from dupru_basicsr.data.bicubic import bicubic_resize
from dupru_basicsr.data.images import IMAGE_EXTENSIONS, list_images

# Colour photos bundled with scikit-image (no download needed); name -> loader name in `skimage.data`.
SKIMAGE_PHOTOS = {
    'astronaut': 'astronaut',
    'chelsea': 'chelsea',
    'coffee': 'coffee',
    'rocket': 'rocket',
    'immunohistochemistry': 'immunohistochemistry',
    'retina': 'retina',
    'hubble_deep_field': 'hubble_deep_field',
    'motorcycle': 'stereo_motorcycle',
}
PNG_COMPRESSION = 3  # BasicSR's extract_subimages.py default: a good size/speed trade-off for training data
LMDB_COMPRESSION = 1  # BasicSR's create_lmdb.py default
MAX_LISTED_PROBLEMS = 10  # a folder of 800 RGBA files should give a readable message, not 800 lines


class PrepareError(ValueError):
    """A bad input or option; the message names the file or option and says how to fix it."""


# ----------------------------------------------------------------------------------------------------------------
# Naming and planning
# ----------------------------------------------------------------------------------------------------------------
def gt_folder_name(scales):
    """`GTmod{lcm}`: one HR folder serves every scale only if its sizes divide by all of them (BasicSR's Set5 uses
    GTmod12 for x2/x3/x4)."""
    return f'GTmod{reduce(math.lcm, scales)}'


def lr_folder_name(scale):
    return f'LRbicx{scale}'


def _plan_outputs(out_dir, scales, subimages, lmdb, skimage):
    """Every path this run writes, so that existence checks, `--force` removal and the returned dict agree."""
    gt_name = gt_folder_name(scales)
    plan = {
        'out': out_dir,
        'source': osp.join(out_dir, 'source') if skimage else None,
        'gt': osp.join(out_dir, gt_name),
        'lr': {s: osp.join(out_dir, lr_folder_name(s)) for s in scales},
        'gt_sub': None,
        'lr_sub': {},
        'meta_info': {},
        'lmdb': {},
    }
    if subimages:
        plan['gt_sub'] = osp.join(out_dir, f'{gt_name}_sub')
        plan['lr_sub'] = {s: osp.join(out_dir, f'{lr_folder_name(s)}_sub') for s in scales}
        for folder in [plan['gt_sub']] + list(plan['lr_sub'].values()):
            name = osp.basename(folder)
            plan['meta_info'][name] = osp.join(out_dir, f'meta_info_{name}.txt')
    if lmdb:
        for folder in image_folders(plan):
            plan['lmdb'][osp.basename(folder)] = f'{folder}.lmdb'
    return plan


def image_folders(plan):
    """The image folders a run produces, HR first (the order of the summary and of the LMDBs)."""
    folders = [plan['gt']] + list(plan['lr'].values())
    if plan['gt_sub']:
        folders += [plan['gt_sub']] + list(plan['lr_sub'].values())
    return folders


def _planned_paths(plan):
    paths = [plan['source']] if plan['source'] else []
    return paths + image_folders(plan) + list(plan['meta_info'].values()) + list(plan['lmdb'].values())


def crop_positions(length, crop_size, step, thresh_size):
    """Top-left corners along one axis, exactly as BasicSR's `extract_subimages.py`: a regular grid plus one last
    crop flush with the border when more than `thresh_size` pixels would otherwise be dropped."""
    if length < crop_size:
        raise ValueError(f'length {length} is smaller than the crop size {crop_size}')
    positions = np.arange(0, length - crop_size + 1, step)
    if length - (positions[-1] + crop_size) > thresh_size:
        positions = np.append(positions, length - crop_size)
    return [int(p) for p in positions]


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------
def _is_inside(path, folder):
    """True if `path` is `folder` or below it (after resolving symlinks, so `--out ./x/../in` is caught too)."""
    path, folder = osp.realpath(path), osp.realpath(folder)
    return osp.commonpath([path, folder]) == folder


def _format_problems(header, problems):
    lines = problems[:MAX_LISTED_PROBLEMS]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f'... and {len(problems) - MAX_LISTED_PROBLEMS} more')
    return header + '\n' + '\n'.join(f'  {line}' for line in lines)


def _check_options(input_dir, out_dir, scales, skimage, subimages, crop_size, step, thresh_size, workers):
    if skimage and input_dir is not None:
        raise PrepareError('--input and --skimage are exclusive: give a folder of HR images or --skimage, not both.')
    if not skimage and input_dir is None:
        raise PrepareError('no input: give --input DIR (a folder of HR images) or --skimage.')
    if not out_dir:
        raise PrepareError('no output folder: give --out DIR.')
    if not scales:
        raise PrepareError('--scales is empty: give at least one integer scale, e.g. --scales 4.')
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
            raise PrepareError(f'--scales {scale!r}: scales must be integers >= 2 (e.g. --scales 2 3 4).')
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise PrepareError(f'--workers {workers!r}: give a positive number of processes (or leave it out for all '
                           'CPU cores).')
    if subimages:
        for option, value, minimum in (('--crop-size', crop_size, 1), ('--step', step, 1),
                                       ('--thresh-size', thresh_size, 0)):
            if not isinstance(value, (int, np.integer)) or value < minimum:
                raise PrepareError(f'{option} {value!r}: must be an integer >= {minimum}.')
        # LR sub-images are the GT ones divided by s, so crop and step must divide by every scale for the pairs to
        # stay pixel-aligned (BasicSR's 480/240 for DIV2K works for x2, x3 and x4).
        for option, value in (('--crop-size', crop_size), ('--step', step)):
            bad = [s for s in scales if value % s]
            if bad:
                multiple = reduce(math.lcm, scales)
                fixed = max(multiple, value // multiple * multiple)
                raise PrepareError(f'{option} {value} is not divisible by scale(s) {", ".join(map(str, bad))}: the LR '
                                   f'sub-images would not line up with the GT ones; use a multiple of {multiple} '
                                   f'(e.g. {option} {fixed}).')


def _check_paths(input_dir, plan, force):
    out_dir = plan['out']
    if input_dir is not None:
        if not osp.exists(input_dir):
            raise PrepareError(f'--input {input_dir} does not exist: point it at the folder of HR images.')
        if not osp.isdir(input_dir):
            raise PrepareError(f'--input {input_dir} is not a folder: point it at the folder of HR images.')
        if _is_inside(out_dir, input_dir):
            where = 'is' if osp.realpath(out_dir) == osp.realpath(input_dir) else 'is inside'
            raise PrepareError(f'--out {out_dir} {where} --input {input_dir}: outputs would mix with the HR images '
                               'that are read; choose an output folder outside the input folder (e.g. next to it).')
        for path in _planned_paths(plan):
            if _is_inside(input_dir, path):
                raise PrepareError(f'--input {input_dir} is inside {path}, which this run writes (and --force '
                                   'would delete); move the HR images elsewhere or choose another --out.')
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise PrepareError(f'--out {out_dir} exists and is not a folder: choose another --out.')
    existing = [path for path in _planned_paths(plan) if osp.lexists(path)]
    if existing and not force:
        raise PrepareError(
            _format_problems('output already exists (rerun with --force to replace it, or choose another --out):',
                             existing))


def _check_names(paths, subimages, lmdb):
    """Output names are `<stem>.png`, so stems must be unique; meta_info lines and LMDB keys add restrictions."""
    problems = []
    seen = {}
    for path in paths:
        stem = osp.splitext(osp.basename(path))[0]
        if stem in seen:
            problems.append(f'{path}: same name as {seen[stem]}, both would be written as {stem}.png; rename one.')
        seen[stem] = path
        if (subimages or lmdb) and any(c.isspace() for c in stem):
            problems.append(f'{path}: the name contains whitespace, which breaks BasicSR meta_info files and LMDB '
                            'keys; rename it (e.g. replace spaces with underscores).')
        if lmdb and not stem.isascii():
            problems.append(f'{path}: LMDB keys must be ASCII (BasicSR encodes them as ASCII); rename it.')
    if problems:
        raise PrepareError(_format_problems('bad image file name(s):', problems))


def _describe_image(path, img):
    """What validation needs to know about one decoded image (pure data, so it travels back from a worker)."""
    if img is None:
        return {'path': path, 'error': 'cannot be decoded: unreadable or corrupt image file'}
    channels = 1 if img.ndim == 2 else img.shape[2]
    return {'path': path, 'height': img.shape[0], 'width': img.shape[1], 'channels': channels,
            'dtype': str(img.dtype), 'error': None}


def inspect_image(path):
    """Decode one image fully and describe it. Full decoding is the point: a truncated file only shows on decode.
    OpenCV returns the readable part of a truncated JPEG (with a warning on stderr), so JPEGs are first decoded by
    Pillow, which raises instead."""
    with contextlib.suppress(AttributeError):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    orientation = 1
    if path.lower().endswith(('.jpg', '.jpeg')):
        from PIL import Image
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                with Image.open(path) as pil_img:
                    pil_img.load()
                    orientation = pil_img.getexif().get(0x0112, 1)  # EXIF Orientation: 1 = as stored
        except Exception:  # noqa: BLE001  (any decoder failure means a corrupt file)
            return _describe_image(path, None)
    try:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    return dict(_describe_image(path, img), orientation=orientation)


def min_side(scale):
    """The smallest HR side (after mod-crop) usable at `scale`: 4 x scale (4 LR pixels), and at least 2 x scale + 11
    so that BasicSR's SSIM, which crops `scale` border pixels (crop_border: 4 for x4 in its options) and then a
    5-pixel margin of its 11x11 Gaussian window, keeps at least one pixel (else SSIM is NaN or OpenCV raises)."""
    return max(4 * scale, 2 * scale + 11)


def _image_problems(info, multiple, max_scale, subimages, crop_size, convert):
    """Problems with one image, each naming the file and the fix; empty if it can be used."""
    path = info['path']
    if info['error']:
        return [f'{path}: {info["error"]}; replace or remove it.']
    problems = []
    channels, dtype = info['channels'], info['dtype']
    if dtype not in ('uint8', 'uint16'):
        problems.append(f'{path}: {dtype} pixels are not supported; save it as an 8-bit RGB image.')
    elif dtype == 'uint16' and not convert:
        problems.append(f'{path}: 16-bit image; save it as 8-bit RGB or rerun with --convert.')
    if channels not in (1, 2, 3, 4):
        problems.append(f'{path}: {channels} channels are not supported; save it as an 8-bit RGB image.')
    elif channels != 3 and not convert:
        kind = {1: 'grayscale', 2: 'grayscale with alpha', 4: 'RGBA (has an alpha channel)'}[channels]
        problems.append(f'{path}: {kind} image, but SR training expects RGB; convert it to RGB (e.g. with '
                        'Pillow\'s Image.convert("RGB")) or rerun with --convert.')
    height, width = info['height'], info['width']
    cropped_h, cropped_w = height - height % multiple, width - width % multiple
    cropped = f'{height}x{width} ({cropped_h}x{cropped_w} after mod-crop to a multiple of {multiple})'
    min_size = min_side(max_scale)
    if min(cropped_h, cropped_w) < min_size:
        problems.append(f'{path}: {cropped} is too small to evaluate at x{max_scale}: every side must keep at least '
                        f'{min_size} pixels after mod-crop (4 LR pixels, and room for the 11x11 SSIM window inside '
                        f'the {max_scale}-pixel border that PSNR/SSIM crop); remove it or use smaller --scales.')
    elif subimages and min(cropped_h, cropped_w) < crop_size:
        problems.append(f'{path}: {cropped} is smaller than --crop-size {crop_size}; remove it or lower --crop-size '
                        f'(keeping it a multiple of {multiple}).')
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Image processing (runs in worker processes)
# ----------------------------------------------------------------------------------------------------------------
def _init_worker():
    """One thread per process: the pool already uses every core, more threads would only oversubscribe them (and
    keeps forked children away from the parent's OpenMP pool)."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def to_bgr_uint8(img):
    """3-channel uint8 BGR from what `cv2.imread(..., IMREAD_UNCHANGED)` returns (the `--convert` path): 16 bit is
    rescaled, grayscale replicated, alpha dropped (as Pillow's `convert('RGB')` does)."""
    if img.dtype == np.uint16:
        img = np.floor(img / 257. + 0.5).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] in (1, 2):
        img = img[:, :, 0]
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def _write_png(path, img):
    if not cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]):
        raise OSError(f'could not write {path}')


def _shape_of(img):
    return (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2])


def process_image(task):
    """Mod-crop one HR image, write it and its bicubic LR versions and, optionally, the aligned sub-images.

    Returns the name and shapes of every written file so that the parent writes the meta_info files (sorted, and
    without workers racing on one file).
    """
    path, plan, opt = task
    name = osp.splitext(osp.basename(path))[0]
    img = to_bgr_uint8(cv2.imread(path, cv2.IMREAD_UNCHANGED))
    gt = mod_crop(img, reduce(math.lcm, opt['scales']))
    _write_png(osp.join(plan['gt'], f'{name}.png'), gt)
    height, width = gt.shape[:2]
    lrs = {}
    for scale in opt['scales']:
        lr = bicubic_resize(gt, 1 / scale)
        if lr.shape[:2] != (height // scale, width // scale):  # imresize sizes with ceil(h / s): guard float error
            raise RuntimeError(f'{path}: x{scale} LR is {lr.shape[:2]}, expected {(height // scale, width // scale)}')
        _write_png(osp.join(plan['lr'][scale], f'{name}.png'), lr)
        lrs[scale] = lr

    written = {osp.basename(plan['gt']): [(f'{name}.png', _shape_of(gt))]}
    written.update({osp.basename(plan['lr'][s]): [(f'{name}.png', _shape_of(lrs[s]))] for s in opt['scales']})
    if opt['subimages']:
        # Positions come from the GT grid and are divided by s for LR (instead of gridding each LR image on its
        # own with thresh/s) so every LR sub-image is exactly its GT sub-image downscaled, whatever --thresh-size.
        h_space = crop_positions(height, opt['crop_size'], opt['step'], opt['thresh_size'])
        w_space = crop_positions(width, opt['crop_size'], opt['step'], opt['thresh_size'])
        sources = [(plan['gt_sub'], gt, 1)] + [(plan['lr_sub'][s], lrs[s], s) for s in opt['scales']]
        for folder, image, factor in sources:
            size = opt['crop_size'] // factor
            entries = written.setdefault(osp.basename(folder), [])
            index = 0
            for top in h_space:
                for left in w_space:
                    index += 1
                    top_lr, left_lr = top // factor, left // factor
                    patch = np.ascontiguousarray(image[top_lr:top_lr + size, left_lr:left_lr + size, ...])
                    sub_name = f'{name}_s{index:03d}.png'
                    _write_png(osp.join(folder, sub_name), patch)
                    entries.append((sub_name, _shape_of(patch)))
    return written


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------
def load_skimage_photos():
    """scikit-image's bundled colour photos as RGB uint8 arrays, skipping any this version lacks or would have to
    download (so `--skimage` works offline)."""
    import skimage.data

    photos = {}
    for name, loader in SKIMAGE_PHOTOS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                img = getattr(skimage.data, loader)()
        except Exception:  # noqa: BLE001  (missing loader, missing optional `pooch`, no network, ...)
            continue
        if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
            img = img[0]
        if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
            photos[name] = img
    if not photos:
        raise PrepareError('--skimage: none of the scikit-image photos could be loaded offline; use --input DIR.')
    return photos


def _default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool_context():
    """Workers are forked from a fresh, single-threaded forkserver, never from the caller: a child forked from a
    process whose OpenCV (or OpenMP) thread pool has run waits forever on locks copied from the parent (seen as a
    hang in `cv2.setNumThreads`), and callers such as test sessions or notebooks have usually run those pools.
    Preloading this module in the server makes every later worker start cheap; `spawn` where there is no fork."""
    if 'forkserver' in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context('forkserver')
        context.set_forkserver_preload(['dupru_basicsr.data.prepare'])
        return context
    return multiprocessing.get_context('spawn')


def _map(function, tasks, workers, progress, desc, initializer=None):
    """`function` over `tasks` with a tqdm bar, in a process pool when it pays off; results in task order."""
    workers = min(workers, len(tasks))
    bar = tqdm(total=len(tasks), desc=desc, unit='image', disable=not progress)
    results = [None] * len(tasks)
    try:
        if workers <= 1:
            for i, task in enumerate(tasks):
                results[i] = function(task)
                bar.update(1)
        else:
            with _pool_context().Pool(workers, initializer=initializer) as pool:
                for i, result in pool.imap_unordered(_indexed_call, [(function, i, t) for i, t in enumerate(tasks)]):
                    results[i] = result
                    bar.update(1)
    finally:
        bar.close()
    return results


def _indexed_call(args):
    function, index, task = args
    return index, function(task)


def _write_meta_info(path, entries):
    """BasicSR meta_info format: one `name.png (h,w,c)` line per image, sorted by name."""
    with open(path, 'w') as f:
        for name, (h, w, c) in sorted(entries):
            f.write(f'{name} ({h},{w},{c})\n')


def _write_lmdb(folder, lmdb_path, entries):
    """BasicSR LMDB of one folder (keys = file stems, meta_info.txt written by BasicSR). BasicSR's own output (one
    progress line per image) is silenced, the caller shows one bar per folder instead; the map size is given
    explicitly because BasicSR's estimate (10x the first image) is too small when image sizes differ."""
    names = sorted(name for name, _ in entries)
    raw_bytes = sum(h * w * c for _, (h, w, c) in entries)
    with open(os.devnull, 'w') as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        make_lmdb_from_imgs(folder, lmdb_path, names, [osp.splitext(n)[0] for n in names],
                            compress_level=LMDB_COMPRESSION, map_size=2 * raw_bytes + 64 * 1024**2)


def prepare(input_dir=None,
            out_dir=None,
            scales=(4, ),
            skimage=False,
            subimages=False,
            crop_size=480,
            step=240,
            thresh_size=0,
            lmdb=False,
            force=False,
            workers=None,
            convert=False,
            progress=True):
    """Make BasicSR SR folders from HR images; see the module docstring and `python -m dupru_basicsr.prepare -h`.

    With more than one worker the images are processed in a process pool (forkserver / spawn), so a calling
    script needs the usual `if __name__ == '__main__':` guard.

    Raises:
        PrepareError: on any bad input or option, before anything is written.

    Returns:
        dict: output paths: `out`, `source` (`--skimage` only, else None), `gt`, `lr` ({scale: path}), `gt_sub`
            (None without sub-images), `lr_sub`, `meta_info` and `lmdb` ({folder name: path}); plus the counts
            `num_images` and `num_subimages` (GT sub-images).
    """
    scales = [scales] if isinstance(scales, (int, np.integer)) else list(scales)
    _check_options(input_dir, out_dir, scales, skimage, subimages, crop_size, step, thresh_size, workers)
    scales = sorted(set(int(s) for s in scales))
    workers = int(workers) if workers else _default_workers()
    multiple = reduce(math.lcm, scales)
    plan = _plan_outputs(out_dir, scales, subimages, lmdb, skimage)
    _check_paths(input_dir, plan, force)

    # --- read and check every image (nothing written yet) ---
    if skimage:
        photos = load_skimage_photos()
        paths = [osp.join(plan['source'], f'{name}.png') for name in photos]
        infos = [_describe_image(f'skimage.data.{SKIMAGE_PHOTOS[name]}()', img) for name, img in photos.items()]
    else:
        paths = list_images(input_dir)
        if not paths:
            raise PrepareError(f'--input {input_dir} contains no images ({", ".join(IMAGE_EXTENSIONS)}): point it at '
                               'the folder of HR images.')
        _check_names(paths, subimages, lmdb)
        infos = _map(inspect_image, paths, workers, progress, 'Check', initializer=_init_worker)
    problems = [
        problem for info in infos
        for problem in _image_problems(info, multiple, max(scales), subimages, crop_size, convert)
    ]
    if problems:
        raise PrepareError(_format_problems(f'{len(problems)} problem(s) with the input images:', problems))
    turned = [info['path'] for info in infos if info.get('orientation', 1) not in (1, None)]
    if turned:
        # the pixels are used as stored (as BasicSR's dataset scripts do); a camera's rotation tag is not applied
        print(f'dupru-prepare: note: {len(turned)} JPEG(s) carry an EXIF orientation tag, which is not applied (the '
              f'pixels are used as stored, so they may lie on their side): {", ".join(turned[:3])}'
              f'{", ..." if len(turned) > 3 else ""}. Rotate them first if upright images matter.', file=sys.stderr)

    # --- write ---
    for path in _planned_paths(plan):
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path)
        elif osp.lexists(path):
            os.remove(path)
    if skimage:
        os.makedirs(plan['source'])
        for path, img in zip(paths, photos.values()):
            _write_png(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    for folder in image_folders(plan):
        os.makedirs(folder)
    opt = {'scales': scales, 'subimages': subimages, 'crop_size': crop_size, 'step': step, 'thresh_size': thresh_size}
    results = _map(process_image, [(path, plan, opt) for path in paths], workers, progress, 'Prepare',
                   initializer=_init_worker)
    entries = {}
    for written in results:
        for folder_name, items in written.items():
            entries.setdefault(folder_name, []).extend(items)
    for folder_name, meta_path in plan['meta_info'].items():
        _write_meta_info(meta_path, entries[folder_name])
    for folder_name, lmdb_path in tqdm(plan['lmdb'].items(), desc='LMDB', unit='folder',
                                       disable=not (progress and lmdb)):
        _write_lmdb(osp.join(plan['out'], folder_name), lmdb_path, entries[folder_name])

    plan['num_images'] = len(paths)
    plan['num_subimages'] = len(entries[osp.basename(plan['gt_sub'])]) if subimages else 0
    return plan
