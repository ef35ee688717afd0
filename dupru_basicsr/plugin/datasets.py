"""Checks of the `datasets:` sections: folders exist, GT/LR pairs match in names and sizes, every image is
complete (headers and end markers read, not the pixels), LMDBs are BasicSR's. Run before anything is written.
"""
import os
import os.path as osp
import re
import warnings
import zlib

from dupru_basicsr.data.images import list_images
from dupru_basicsr.plugin.option_base import OptionError, as_int


MAX_LISTED_PROBLEMS = 10  # a folder of 800 bad pairs gives a readable message, not 800 lines
_PNG_START = b'\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR'  # signature, then the 13-byte IHDR chunk
_PNG_END = b'\x00\x00\x00\x00IEND\xaeB`\x82'  # the IEND chunk that ends every complete PNG file
_JPEG_END = b'\xff\xd9'  # the end-of-image marker
_JPEG_TAIL = 1024  # bytes searched for it: some writers append a few bytes after the marker


class _ImageProblem(ValueError):
    """What is wrong with an image file (the message completes a sentence starting with its path)."""


def image_header(path):
    """(width, height) of an image file, from its header; raises ValueError saying what is wrong with the file.

    Reads the header and the last bytes, never the pixels, so that every pair of DIV2K's 32k sub-images is checked
    in seconds. Caught: empty or missing files, files no image library recognises, broken headers (PNG: IHDR
    checksum) and PNG / JPEG files cut short (their end marker is missing). Not caught: damaged bytes in the middle
    of a complete file; only decoding the pixels (BasicSR, when it loads the image) finds those.
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(len(_PNG_START) + 17)
            if head.startswith(_PNG_START):  # PNG, BasicSR's format, read directly: 5x faster than Pillow
                if zlib.crc32(head[12:29]) != int.from_bytes(head[29:33], 'big'):
                    raise _ImageProblem('has a damaged PNG header (its IHDR checksum does not match)')
                size, fmt = (int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')), 'PNG'
            else:
                size, fmt = _pillow_header(f)
            length = os.fstat(f.fileno()).st_size
            f.seek(max(0, length - _JPEG_TAIL))
            tail = f.read()
    except _ImageProblem:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported with its path
        raise _ImageProblem(f'cannot be read as an image ({type(e).__name__}: {e})') from None
    if min(size) < 1:
        raise _ImageProblem(f'has an empty image size {size[0]}x{size[1]} in its header')
    if fmt == 'PNG' and not tail.endswith(_PNG_END):
        raise _ImageProblem('is a truncated PNG file (it does not end with the IEND chunk)')
    if fmt == 'JPEG' and _JPEG_END not in tail:
        raise _ImageProblem('is a truncated JPEG file (no end-of-image marker in its last bytes)')
    return size


def _pillow_header(f):
    """((width, height), format) of any other image file, read by Pillow (a BasicSR dependency) from its header."""
    from PIL import Image
    f.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # e.g. DecompressionBombWarning: the size is all we want
        with Image.open(f) as img:
            return img.size, img.format


def _raise_problems(key, problems, total):
    """One OptionError for the problems of one dataset: a single line for one problem, else a list."""
    if len(problems) == 1:
        raise OptionError(f'{key}: {problems[0]}')
    lines = problems[:MAX_LISTED_PROBLEMS]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f'... and {len(problems) - MAX_LISTED_PROBLEMS} more')
    raise OptionError(f'{key}: {len(problems)} problems in {total} GT/LR pairs:\n'
                      + '\n'.join(f'  {line}' for line in lines))


def _pair_size_problems(key, phase, dset, scale, gt, lq, gt_size, lq_size):
    """Problems of one GT/LR pair of known sizes (width, height): GT = LR x scale, and a training crop fits."""
    (gw, gh), (lw, lh) = gt_size, lq_size
    if scale is not None and (gw, gh) != (lw * scale, lh * scale):
        return [f'GT image "{gt}" is {gw}x{gh} but its LR image "{lq}" is {lw}x{lh}; with scale {scale} the GT must '
                f'be {lw * scale}x{lh * scale}. Point dataroot_lq at the x{scale} LR images, or set scale to the '
                'factor of this data (or remove the pair).']
    crop = as_int(dset.get('gt_size')) if phase == 'train' else None
    if crop is not None and scale is not None and min(gw, gh) < crop:
        largest = min(gw, gh) // scale * scale
        return [f'GT image "{gt}" is {gw}x{gh}, smaller than {key}.gt_size {crop}, the training crop; lower gt_size '
                f'to at most {largest} or remove the pair.']
    return []


def _check_pairs(opt, phase, dset):
    """A PairedImageDataset on disk: every GT file has its LR file, and every pair has readable headers, GT = LR x
    scale and, for training, room for a gt_size crop (see `image_header` for what is and is not caught)."""
    key = f'datasets.{phase}'
    gt_root, lq_root = dset['dataroot_gt'], dset['dataroot_lq']
    for root_key, root in (('dataroot_gt', gt_root), ('dataroot_lq', lq_root)):
        if not osp.isdir(root):
            raise OptionError(f'{key}.{root_key}: "{root}" is not a folder; PairedImageDataset on disk reads the '
                              'images of a folder.')
    tmpl = dset.get('filename_tmpl', '{}')
    lq_files = set(list_images(lq_root, extensions=None, full_path=False))
    meta = dset.get('meta_info_file')
    if meta:
        with open(meta) as f:
            gt_names = [line.strip().split(' ')[0] for line in f if line.strip()]
        missing = next((n for n in gt_names if not osp.isfile(osp.join(gt_root, n))), None)
        if missing is not None:
            raise OptionError(f'{key}.meta_info_file: "{meta}" lists {missing}, which is not in dataroot_gt '
                              f'"{gt_root}"; regenerate the meta info file or fix dataroot_gt.')
    else:
        gt_names = list_images(gt_root, extensions=None, full_path=False)
        if len(gt_names) != len(lq_files):
            raise OptionError(f'{key}: dataroot_gt "{gt_root}" has {len(gt_names)} files but dataroot_lq "{lq_root}" '
                              f'has {len(lq_files)}; every GT image needs exactly one LR image of the same name.')
    if not gt_names:
        raise OptionError(f'{key}.dataroot_gt: "{gt_root}" has no images; prepare the data (e.g. `dupru-prepare`) or '
                          'fix the path.')
    pairs = []
    for name in gt_names:
        base, ext = osp.splitext(osp.basename(name))
        lq_name = f'{tmpl.format(base)}{ext}'
        if lq_name not in lq_files:
            raise OptionError(f'{key}: GT image "{osp.join(gt_root, name)}" has no LR image "{lq_name}" in '
                              f'dataroot_lq "{lq_root}"; fix dataroot_lq or filename_tmpl (now "{tmpl}").')
        pairs.append((osp.join(gt_root, name), osp.join(lq_root, lq_name)))
    scale = as_int(opt.get('scale'))
    if phase == 'train':
        _check_gt_size(dset, scale)
    problems = []
    for gt, lq in pairs:
        sizes = []
        for path in (gt, lq):
            try:
                sizes.append(image_header(path))
            except ValueError as e:
                problems.append(f'"{path}" {e}; replace it or remove the pair.')
        if len(sizes) == 2:
            problems += _pair_size_problems(key, phase, dset, scale, gt, lq, *sizes)
    if problems:
        _raise_problems(key, problems, len(pairs))
    if phase == 'train':
        _check_train_batch(opt, dset, len(pairs))


_LMDB_META_LINE = re.compile(r'^(?P<key>[^.\s]+)\S* \((?P<h>\d+),(?P<w>\d+),(?P<c>\d+)\)')


def _lmdb_sizes(key, root_key, root):
    """{key: (width, height)} from the meta_info.txt of a BasicSR LMDB (the sizes BasicSR wrote with the images)."""
    meta = osp.join(root, 'meta_info.txt')
    sizes = {}
    with open(meta) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _LMDB_META_LINE.match(line)
            if not m:
                raise OptionError(f'{key}.{root_key}: line {number} of "{meta}" is not "<name>.png (h,w,c) <level>" '
                                  f'({line.strip()!r}); rebuild the LMDB (e.g. `dupru-prepare --lmdb`).')
            sizes[m['key']] = (int(m['w']), int(m['h']))
    return sizes


def _check_lmdb_pairs(opt, phase, dset):
    """A PairedImageDataset in LMDBs: the same keys in both, and the sizes listed in their meta_info.txt agree with
    the scale and the training crop. The image bytes inside the LMDBs are not read."""
    key = f'datasets.{phase}'
    for root_key in ('dataroot_gt', 'dataroot_lq'):
        if not str(dset[root_key]).endswith('.lmdb'):
            raise OptionError(f'{key}.{root_key}: "{dset[root_key]}" does not end with .lmdb, which BasicSR requires '
                              'for io_backend.type: lmdb; point it at the .lmdb folder or set io_backend.type: disk.')
    gt_sizes = _lmdb_sizes(key, 'dataroot_gt', dset['dataroot_gt'])
    lq_sizes = _lmdb_sizes(key, 'dataroot_lq', dset['dataroot_lq'])
    if not gt_sizes:
        raise OptionError(f'{key}.dataroot_gt: "{dset["dataroot_gt"]}" lists no images in its meta_info.txt; rebuild '
                          'the LMDB.')
    only = sorted(set(gt_sizes) ^ set(lq_sizes))
    if only:
        where = 'dataroot_gt' if only[0] in gt_sizes else 'dataroot_lq'
        raise OptionError(f'{key}: the LMDBs hold different keys ({len(only)} in only one of them, e.g. "{only[0]}" '
                          f'only in {where}); BasicSR pairs GT and LR by key: rebuild them from matching folders.')
    scale = as_int(opt.get('scale'))
    if phase == 'train':
        _check_gt_size(dset, scale)
    problems = []
    for name in sorted(gt_sizes):
        gt, lq = f'{dset["dataroot_gt"]}:{name}', f'{dset["dataroot_lq"]}:{name}'
        problems += _pair_size_problems(key, phase, dset, scale, gt, lq, gt_sizes[name], lq_sizes[name])
    if problems:
        _raise_problems(key, problems, len(gt_sizes))
    if phase == 'train':
        _check_train_batch(opt, dset, len(gt_sizes))


def _check_gt_size(dset, scale):
    gt_size = dset.get('gt_size')
    if gt_size is not None and scale is not None and (as_int(gt_size) is None or gt_size % scale or gt_size < scale):
        hint = f', e.g. {max(scale, as_int(gt_size) // scale * scale)}' if as_int(gt_size) else ''
        raise OptionError(f'datasets.train.gt_size is {gt_size!r}; it must be a positive multiple of scale ({scale}) '
                          f'so that GT and LR crops match{hint}.')


def _check_train_batch(opt, dset, num_images):
    batch = as_int(dset.get('batch_size_per_gpu'))
    if batch is None or batch < 1:
        raise OptionError(f'datasets.train.batch_size_per_gpu is {dset.get("batch_size_per_gpu")!r}; set it to an '
                          'integer >= 1.')
    num_gpu = as_int(opt.get('num_gpu')) or 0
    per_iter = batch * (int(opt.get('world_size', 1)) if opt.get('dist') else max(1, num_gpu))
    ratio = dset.get('dataset_enlarge_ratio', 1)
    if num_images * ratio < per_iter:
        raise OptionError(f'datasets.train: {num_images} images x dataset_enlarge_ratio {ratio} give fewer samples '
                          f'than one batch ({per_iter}); every epoch would be empty and no iteration would run. '
                          'Lower batch_size_per_gpu or raise dataset_enlarge_ratio.')


def check_datasets(opt):
    datasets = opt.get('datasets') or {}
    if opt.get('is_train', True) and 'train' not in datasets:
        raise OptionError('datasets.train: missing; add the training dataset (e.g. a PairedImageDataset).')
    for phase, dset in datasets.items():
        io_backend = (dset.get('io_backend') or {}).get('type', 'disk')
        paired = dset.get('type') == 'PairedImageDataset'
        for root_key in ('dataroot_gt', 'dataroot_lq'):
            root = dset.get(root_key)
            if root is None:
                if paired:
                    raise OptionError(f'datasets.{phase}.{root_key} is not set; PairedImageDataset needs the GT '
                                      '(dataroot_gt) and LR (dataroot_lq) folders.')
                continue
            if not osp.exists(root):
                raise OptionError(f'datasets.{phase}.{root_key}: "{root}" does not exist. Prepare the data (e.g. '
                                  '`dupru-prepare`) or fix the path; relative paths are relative to the current '
                                  'directory.')
            if io_backend == 'lmdb' and not osp.exists(osp.join(root, 'meta_info.txt')):
                raise OptionError(f'datasets.{phase}.{root_key}: "{root}" is not an LMDB made by BasicSR '
                                  '(no meta_info.txt); set io_backend.type: disk or rebuild the LMDB.')
        meta = dset.get('meta_info_file')
        if meta and not osp.isfile(meta):
            raise OptionError(f'datasets.{phase}.meta_info_file: "{meta}" does not exist; remove the key or make it '
                              'with `dupru-prepare --subimages`.')
        if paired and io_backend == 'disk':
            _check_pairs(opt, phase, dset)
        elif paired and io_backend == 'lmdb':
            _check_lmdb_pairs(opt, phase, dset)


def check_prefetch_mode(opt):
    """datasets.train.prefetch_mode is one BasicSR knows (and `cuda` has pin_memory), before anything is written."""
    dset = opt['datasets']['train']
    mode = dset.get('prefetch_mode')
    if mode not in (None, 'cpu', 'cuda'):
        raise OptionError(f'datasets.train.prefetch_mode is {mode!r}; use cpu or cuda, or remove the key.')
    if mode == 'cuda' and dset.get('pin_memory') is not True:
        raise OptionError('datasets.train.prefetch_mode is cuda, which needs datasets.train.pin_memory: true.')
