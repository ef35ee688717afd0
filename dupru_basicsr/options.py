"""Checks of BasicSR options and the `pruning:` section, run before anything is written to disk.

Every error is an `OptionError` that names the option key (or the file) and says how to fix it.
"""
import difflib
import os
import os.path as osp
import re
import warnings
import zlib
from dataclasses import dataclass, fields
from typing import List, Optional

from dupru_basicsr.data.images import list_images

DEFAULT_TARGETS = ('body.*.weight', )
_REWIND_RE = re.compile(r'^(init|none|lr|reinit|iter_(\d+))$')
GRADUAL = 'gradual'
GRADUAL_KEYS = ('start_iter', 'end_iter', 'final_sparsity', 'frequency')


class OptionError(ValueError):
    """A wrong or inconsistent option; the message names the key and the fix."""


class OptionWarning(UserWarning):
    """An option that is allowed but probably not meant (training starts); the message names the key and why."""


@dataclass
class PruningConfig:
    """The `pruning:` section of a BasicSR option file (defaults reproduce the paper's DUPru)."""
    method: str = 'dupru'  # dupru (|W| < eps frozen) | upru (W < eps frozen, reference code) | imp (pruned only)
    targets: Optional[List[str]] = None  # parameter name patterns; default: the preset of network_g.type
    rate: float = 10.0  # percent of the surviving target weights removed at each round boundary
    rounds: int = 25  # T; round 1 trains the dense network, each later round starts with one prune
    iters_per_round: Optional[int] = 40000  # E
    # explicit iterations per round (instead of rounds x iters_per_round), or `gradual`: gradual magnitude pruning
    # (Zhu & Gupta) in one round of iters_per_round iterations, set by start_iter, end_iter, final_sparsity, frequency
    schedule: Optional[object] = None
    eps: float = 1e-6
    scope: str = 'layer'  # layer: one threshold per tensor (paper) | global: one over all targets
    rewind: str = 'init'  # init | iter_<k> | none | lr (learning-rate rewinding) | reinit (same masks, fresh init)
    start_iter: Optional[int] = None  # schedule: gradual only
    end_iter: Optional[int] = None
    final_sparsity: Optional[float] = None
    frequency: Optional[int] = None
    plugins: Optional[List[str]] = None  # modules to import first (they register rules in PRUNING_REGISTRY)

    def resolve_targets(self, network_type):
        """The target patterns: `targets`, or the preset of `network_type` (dupru_basicsr.presets)."""
        if self.targets is not None:
            return list(self.targets)
        from dupru_basicsr.presets import preset_targets
        try:
            return preset_targets(network_type)
        except KeyError as e:
            raise OptionError(f'pruning.targets: {e.args[0]}') from None

    @property
    def round_lengths(self):
        if self.schedule and self.schedule != GRADUAL:
            return list(self.schedule)
        return [self.iters_per_round] * self.rounds

    @property
    def gradual(self):
        """{start_iter, end_iter, final_sparsity, frequency} with `schedule: gradual`, else None."""
        return {k: getattr(self, k) for k in GRADUAL_KEYS} if self.schedule == GRADUAL else None

    @property
    def rewind_iter(self):
        """k of `rewind: iter_<k>`, else None."""
        m = _REWIND_RE.match(self.rewind)
        return int(m.group(2)) if m and m.group(2) is not None else None

    @classmethod
    def from_opt(cls, section, key='pruning'):
        """Parse and validate a `pruning:` dict; `key` is the option path used in messages."""
        if section is not None and not isinstance(section, dict):
            raise OptionError(f'{key} is {section!r}; it must be a mapping of pruning options (method, rate, rounds, '
                              'iters_per_round, ...).')
        section = dict(section or {})
        known = [f.name for f in fields(cls)]
        for name in section:
            if name not in known:
                hint = _did_you_mean(name, known) or f' Known keys: {", ".join(known)}.'
                raise OptionError(f'Unknown option {key}.{name}.{hint}')
        if section.get('schedule') == GRADUAL:
            section.setdefault('rounds', 1)
        elif section.get('schedule') is not None:
            if 'iters_per_round' not in section:
                section['iters_per_round'] = None
            rounds = section.pop('rounds', None)
            if rounds is not None and isinstance(section['schedule'], (list, tuple)) and \
                    rounds != len(section['schedule']):
                raise OptionError(f'{key}.rounds is {rounds} but {key}.schedule lists {len(section["schedule"])} '
                                  'rounds; remove rounds (the schedule sets it) or make them agree.')
        cfg = cls(**section)
        cfg._validate(key)
        return cfg

    def _validate(self, key):
        self._import_plugins(key)
        from dupru_basicsr.registry import lookup
        for name, kind in (('method', 'freeze'), ('scope', 'scope')):
            try:
                lookup(getattr(self, name), kind)
            except KeyError as e:
                raise OptionError(f'{key}.{name}: {e.args[0]}') from None
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if self.targets is not None and (not self.targets
                                         or not all(isinstance(t, str) and t for t in self.targets)):
            raise OptionError(f'{key}.targets must be a non-empty list of parameter name patterns, '
                              f'e.g. {list(DEFAULT_TARGETS)}.')
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 < self.rate < 100:
            raise OptionError(f'{key}.rate is {self.rate!r}; it is the percent of surviving weights removed per '
                              'round and must lie strictly between 0 and 100 (the paper uses 10).')
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise OptionError(f'{key}.eps is {self.eps!r}; it must be a number >= 0 (the paper uses 1.0e-6).')
        if self.schedule == GRADUAL:
            self._validate_gradual(key)
        elif self.schedule is not None:
            if (not isinstance(self.schedule, (list, tuple)) or not self.schedule
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.schedule)):
                raise OptionError(f'{key}.schedule is {self.schedule!r}; give a non-empty list of positive iteration '
                                  'counts, one per round (e.g. [1000, 1000, 1000]), or gradual.')
            if self.iters_per_round is not None:
                raise OptionError(f'{key}: give either schedule or iters_per_round, not both.')
            self.rounds = len(self.schedule)
        else:
            if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
                raise OptionError(f'{key}.rounds is {self.rounds!r}; it must be an integer >= 1.')
            n = self.iters_per_round
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise OptionError(f'{key}.iters_per_round is {n!r}; it must be an integer >= 1 '
                                  f'(or give {key}.schedule: [iterations of round 1, round 2, ...]).')
        if self.schedule != GRADUAL:
            extra = [k for k in GRADUAL_KEYS if getattr(self, k) is not None]
            if extra:
                raise OptionError(f'{key}.{extra[0]} is only used with {key}.schedule: gradual; remove it or set the '
                                  'schedule.')
        m = _REWIND_RE.match(str(self.rewind))
        if not m:
            raise OptionError(f'{key}.rewind is "{self.rewind}"; use init, iter_<k> (e.g. iter_500), none, lr or '
                              'reinit.')
        k = self.rewind_iter
        if k is not None and k >= self.round_lengths[0]:
            raise OptionError(f'{key}.rewind is {self.rewind}, but the first round has only '
                              f'{self.round_lengths[0]} iterations; use k < {self.round_lengths[0]}.')

    def _import_plugins(self, key):
        if self.plugins is None:
            return
        if isinstance(self.plugins, str):
            self.plugins = [self.plugins]
        import importlib
        for module in self.plugins:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise OptionError(f'{key}.plugins: cannot import "{module}" ({e}); make it importable (installed, or '
                                  'on PYTHONPATH / in the current directory).') from None

    def _validate_gradual(self, key):
        if self.rounds != 1:
            raise OptionError(f'{key}.rounds is {self.rounds!r}, but schedule: gradual prunes within one round; '
                              'remove rounds or set it to 1.')
        n = self.iters_per_round
        if _as_int(n) is None or n < 1:
            raise OptionError(f'{key}.iters_per_round is {n!r}; with schedule: gradual it is the length of the run '
                              '(train.total_iter).')
        missing = [k for k in GRADUAL_KEYS if getattr(self, k) is None]
        if missing:
            raise OptionError(f'{key}.schedule is gradual but {", ".join(f"{key}.{m}" for m in missing)} '
                              f'{"is" if len(missing) == 1 else "are"} not set; give start_iter, end_iter, '
                              'final_sparsity (a fraction in (0, 1)) and frequency.')
        start, end, freq = (_as_int(self.start_iter), _as_int(self.end_iter), _as_int(self.frequency))
        if start is None or end is None or not 0 <= start < end <= n:
            raise OptionError(f'{key}.start_iter ({self.start_iter!r}) and {key}.end_iter ({self.end_iter!r}) must '
                              f'be integers with 0 <= start_iter < end_iter <= iters_per_round ({n}).')
        if isinstance(self.final_sparsity, bool) or not isinstance(self.final_sparsity, (int, float)) or \
                not 0 < self.final_sparsity < 1:
            raise OptionError(f'{key}.final_sparsity is {self.final_sparsity!r}; it is the pruned fraction of the '
                              'targets at end_iter and must lie strictly between 0 and 1 (e.g. 0.8).')
        if freq is None or freq < 1:
            raise OptionError(f'{key}.frequency is {self.frequency!r}; prune every `frequency` iterations, an '
                              'integer >= 1.')


def _as_int(value):
    """`value` as an int when it is a whole number (YAML may give 1e6 as a float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _did_you_mean(name, known):
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f' Did you mean "{close[0]}"?' if close else ''


def _check_registered(opt):
    """model_type and network_g.type exist in BasicSR's registries (importing basicsr registers them)."""
    import basicsr.archs  # noqa: F401  (fills ARCH_REGISTRY)
    import basicsr.models  # noqa: F401  (fills MODEL_REGISTRY)
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
    for key, registry, value in (('model_type', MODEL_REGISTRY, opt.get('model_type')),
                                 ('network_g.type', ARCH_REGISTRY, (opt.get('network_g') or {}).get('type'))):
        if value is None:
            if key == 'model_type' or opt.get('network_g') is not None:
                raise OptionError(f'{key} is not set; name a registered BasicSR class, e.g. '
                                  f'{"SRModel or DUPruModel" if key == "model_type" else "MSRResNet"}.')
            continue
        if value not in registry:
            raise OptionError(f'{key} is "{value}", which is not registered in BasicSR.'
                              f'{_did_you_mean(value, registry.keys())} (Custom classes must be imported before '
                              'training starts.)')


def _check_devices(opt):
    import torch
    num_gpu = opt.get('num_gpu', 0)
    if num_gpu in (None, 'auto'):
        return
    if _as_int(num_gpu) is None or num_gpu < 0:
        raise OptionError(f'num_gpu is {num_gpu!r}; use a number of GPUs >= 0, or auto.')
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if num_gpu > available:
        raise OptionError(f'num_gpu is {num_gpu} but this machine has {available} CUDA device(s); set num_gpu: auto '
                          '(all GPUs, or the CPU when there is none) or num_gpu: 0 for the CPU.')


def _check_schedule_options(opt):
    """The BasicSR training-loop options that would otherwise fail (or silently do nothing) mid-run."""
    train = opt.get('train')
    if not isinstance(train, dict):
        raise OptionError('train: section missing; it needs total_iter, optim_g, scheduler and a loss (pixel_opt).')
    total = _as_int(train.get('total_iter'))
    if total is None or total < 1:
        raise OptionError(f'train.total_iter is {train.get("total_iter")!r}; set it to the number of training '
                          'iterations (an integer >= 1).')
    logger = opt.get('logger') or {}
    for k in ('print_freq', 'save_checkpoint_freq'):
        v = _as_int(logger.get(k))
        if v is None or v < 1:
            raise OptionError(f'logger.{k} is {logger.get(k)!r}; set it to a number of iterations >= 1.')
    if opt.get('val') is not None:
        v = _as_int(opt['val'].get('val_freq'))
        if v is None or v < 1:
            raise OptionError(f'val.val_freq is {opt["val"].get("val_freq")!r}; set it to a number of iterations >= 1 '
                              '(or remove the val: section).')
    sched = train.get('scheduler') or {}
    if sched.get('type') == 'CosineAnnealingRestartLR':
        periods, weights = sched.get('periods') or [], sched.get('restart_weights') or [1]
        if not periods or not all(_as_int(p) is not None and p > 0 for p in periods):
            raise OptionError(f'train.scheduler.periods is {periods!r}; give a list of positive iteration counts.')
        if len(weights) != len(periods):
            raise OptionError(f'train.scheduler.restart_weights has {len(weights)} entries but periods has '
                              f'{len(periods)}; give one restart weight per period.')
        if not _is_pruning_model(opt.get('model_type')) and sum(periods) < total:
            raise OptionError(f'train.scheduler.periods sum to {sum(periods)}, less than train.total_iter ({total}): '
                              'the cosine schedule would end before training does; make the periods sum to '
                              f'{total}.')


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
    crop = _as_int(dset.get('gt_size')) if phase == 'train' else None
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
    scale = _as_int(opt.get('scale'))
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
    scale = _as_int(opt.get('scale'))
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
    if gt_size is not None and scale is not None and (_as_int(gt_size) is None or gt_size % scale):
        hint = f', e.g. {max(scale, _as_int(gt_size) // scale * scale)}' if _as_int(gt_size) else ''
        raise OptionError(f'datasets.train.gt_size is {gt_size!r}; it must be a multiple of scale ({scale}) so that '
                          f'GT and LR crops match{hint}.')


def _check_train_batch(opt, dset, num_images):
    batch = _as_int(dset.get('batch_size_per_gpu'))
    if batch is None or batch < 1:
        raise OptionError(f'datasets.train.batch_size_per_gpu is {dset.get("batch_size_per_gpu")!r}; set it to an '
                          'integer >= 1.')
    num_gpu = _as_int(opt.get('num_gpu')) or 0
    per_iter = batch * (int(opt.get('world_size', 1)) if opt.get('dist') else max(1, num_gpu))
    ratio = dset.get('dataset_enlarge_ratio', 1)
    if num_images * ratio < per_iter:
        raise OptionError(f'datasets.train: {num_images} images x dataset_enlarge_ratio {ratio} give fewer samples '
                          f'than one batch ({per_iter}); every epoch would be empty and no iteration would run. '
                          'Lower batch_size_per_gpu or raise dataset_enlarge_ratio.')


def _check_datasets(opt):
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


def _network_scale(net_opt):
    for k in ('upscale', 'scale'):
        if k in net_opt:
            return net_opt[k]
    return None


def _check_scale(opt):
    scale = opt.get('scale')
    net_scale = _network_scale(opt.get('network_g') or {})
    if scale is None:
        if any((d or {}).get('type') == 'PairedImageDataset' for d in (opt.get('datasets') or {}).values()):
            raise OptionError('scale is not set; PairedImageDataset needs it (the upscaling factor, e.g. scale: 4'
                              + (f', as network_g upscales by {net_scale}' if net_scale else '') + ').')
        return
    if _as_int(scale) is None or scale < 1:
        raise OptionError(f'scale is {scale!r}; set it to the integer upscaling factor (e.g. 4).')
    if net_scale is not None and int(scale) != int(net_scale):
        raise OptionError(f'scale is {scale} but network_g upscales by {net_scale}; make them equal.')


def check_options(opt):
    """Check a parsed BasicSR option dict before training/testing starts. Raises OptionError.

    Cheap checks first; the data check reads the folder listings and the header of every GT/LR image (seconds for
    DIV2K's 32k sub-images).
    """
    is_train = opt.get('is_train', True)
    _check_registered(opt)
    _check_devices(opt)
    _check_scale(opt)
    if is_train:
        _check_schedule_options(opt)
        if opt.get('pruning') is not None and not _is_pruning_model(opt.get('model_type')):
            raise OptionError(f'pruning: is given but model_type is {opt.get("model_type")}, which ignores it; set '
                              'model_type: DUPruModel or remove the pruning: section.')
        if _is_pruning_model(opt.get('model_type')):
            check_pruning_options(opt)
    _check_datasets(opt)


def _is_pruning_model(model_type):
    from basicsr.utils.registry import MODEL_REGISTRY

    from dupru_basicsr.models.dupru_model import DUPruModel
    return model_type in MODEL_REGISTRY and issubclass(MODEL_REGISTRY.get(model_type), DUPruModel)


def _build_network(opt):
    """network_g built as BasicSR builds it (without its logging), or an OptionError naming the bad argument."""
    # Not basicsr's build_network: it logs, and BasicSR's root logger must not be touched before the log file
    # handler is set up (it would never get one).
    # fork_rng: a check must not draw from the run's random stream, or DUPruModel (which checks its options when it
    # is built) would start from another W0 than SRModel with the same manual_seed.
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY
    net_opt = dict(opt['network_g'])
    arch = net_opt.pop('type')
    try:
        with torch.random.fork_rng(devices=[]):
            return ARCH_REGISTRY.get(arch)(**net_opt)
    except TypeError as e:
        raise OptionError(f'network_g: {arch} cannot be built from these options ({e}); fix the network_g keys.') \
            from None


def check_pretrained_network(opt):
    """`path.pretrain_network_g`, when set, is a checkpoint that loads into network_g as BasicSR will load it (same
    param key fallback, same strictness). Raises OptionError naming the file; run it before anything is written."""
    path = (opt.get('path') or {}).get('pretrain_network_g')
    if path is None or not opt.get('network_g'):
        return
    key = 'path.pretrain_network_g'
    if not osp.isfile(path):
        raise OptionError(f'{key}: "{path}" does not exist; point it at a network checkpoint (e.g. '
                          'experiments/<name>/models/net_g_latest.pth) or remove the key.')
    from dupru_basicsr.export import FORMAT
    from dupru_basicsr.utils.checkpoint import load_checkpoint
    try:
        ckpt = load_checkpoint(path)
    except RuntimeError as e:
        raise OptionError(f'{key}: {e}') from None
    if isinstance(ckpt, dict) and ckpt.get('format') == FORMAT:
        raise OptionError(f'{key}: "{path}" is a compressed file made by dupru-export, which BasicSR cannot load; '
                          'point it at the original checkpoint (net_g_*.pth).')
    param_key = opt['path'].get('param_key_g', 'params')
    if isinstance(ckpt, dict) and param_key is not None and param_key not in ckpt and 'params' in ckpt:
        param_key = 'params'  # what BasicSR's load_network falls back to
    state = ckpt.get(param_key) if isinstance(ckpt, dict) and param_key is not None else ckpt
    if not isinstance(state, dict) or not state:
        raise OptionError(f'{key}: "{path}" holds no network weights under "{param_key}"; point it at a BasicSR '
                          'network checkpoint (net_g_*.pth), or set path.param_key_g.')
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    try:
        _build_network(opt).load_state_dict(state, strict=opt['path'].get('strict_load_g', True))
    except RuntimeError as e:
        detail = ' '.join(line.strip() for line in str(e).splitlines()[:2])[:300]
        raise OptionError(f'{key}: "{path}" does not fit network_g ({detail}); point it at weights of this '
                          'architecture or fix network_g.') from None


EPS_WARN_FRACTION = 0.01  # warn when pruning.eps exceeds this fraction of the median initial |W| of the targets


def _is_normalisation(module):
    import torch.nn as nn
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def _list_names(names, limit=4):
    return ', '.join(names[:limit]) + (f' and {len(names) - limit} more' if len(names) > limit else '')


def warn_about_targets(net, targets, cfg):
    """OptionWarnings (training still starts) for pruning targets that are biases or normalisation weights, and for
    an eps above EPS_WARN_FRACTION of the median |W| of the targets in the freshly built `net`. Returns the messages.

    Why: biases start at 0.0 and normalisation weights at 1.0, so magnitude pruning either removes biases first or
    cannot rank the weights, and DUPru / UPru freeze every target below eps (DUPru: |W| < eps) from the first step,
    so zero-initialised biases never train; an eps near the weights' own size freezes live weights, not only pruned
    ones. Warnings, not errors: such settings are legitimate experiments."""
    import torch
    modules = dict(net.named_modules())
    biases, norms = [], []
    for name in targets:
        owner, _, leaf = name.rpartition('.')
        if leaf == 'bias':
            biases.append(name)
        elif _is_normalisation(modules.get(owner)):
            norms.append(name)
    freezes_by_eps = cfg.method != 'imp'  # imp freezes the pruned weights only; dupru, upru and custom rules get eps
    messages = []
    if biases:
        frozen = f', and {cfg.method} freezes them (they are below eps) from the first step' if freezes_by_eps else ''
        messages.append(f'pruning.targets selects {len(biases)} bias tensor(s) ({_list_names(biases)}): biases start '
                        f'at 0.0, so magnitude pruning removes them first{frozen}; prune weights only (e.g. '
                        'body.*.weight).')
    if norms:
        messages.append(f'pruning.targets selects {len(norms)} normalisation weight(s) ({_list_names(norms)}): they '
                        'all start at 1.0, so magnitude pruning cannot rank them, and pruning one removes a whole '
                        "channel's scale; prune convolution / linear weights only.")
    with torch.no_grad():
        magnitudes = torch.cat([p.detach().abs().flatten().float() for p in targets.values()])
        median = magnitudes.median().item() if magnitudes.numel() else 0.0
    if freezes_by_eps and median > 0 and cfg.eps > EPS_WARN_FRACTION * median:
        messages.append(f'pruning.eps is {cfg.eps:g}, above {EPS_WARN_FRACTION:.0%} of the median initial |W| of the '
                        f'targets ({median:.3g}): {cfg.method} freezes the target weights that eps marks as pruned '
                        f'(|W| < eps for dupru), so it would freeze live weights too; use an eps well below '
                        f'{median:.3g} (the paper uses 1.0e-6).')
    for message in messages:
        warnings.warn(message, OptionWarning, stacklevel=2)
    return messages


def check_pruning_options(opt):
    """Validate the `pruning:` section against the rest of the options (targets exist, iterations add up)."""
    from dupru_basicsr.pruning.targets import select_targets
    cfg = PruningConfig.from_opt(opt.get('pruning'))
    train = opt.get('train') or {}
    total = train.get('total_iter')
    if total is None or int(total) != sum(cfg.round_lengths):
        how = (f'rounds ({cfg.rounds}) x iters_per_round ({cfg.iters_per_round})'
               if cfg.schedule is None else f'the sum of pruning.schedule ({cfg.schedule})')
        raise OptionError(f'train.total_iter is {total} but {how} = {sum(cfg.round_lengths)}; set '
                          f'train.total_iter: {sum(cfg.round_lengths)} or change the pruning schedule.')
    sched = dict(train.get('scheduler') or {})
    periods = sched.get('periods')
    if sched.get('type') == 'CosineAnnealingRestartLR' and periods and sum(periods) < max(cfg.round_lengths):
        raise OptionError(f'train.scheduler.periods sum to {sum(periods)}, but the LR schedule restarts every round '
                          f'and the longest round has {max(cfg.round_lengths)} iterations; make the periods sum to '
                          'the iterations of one round.')
    if opt.get('network_g'):
        targets = cfg.resolve_targets(opt['network_g'].get('type'))
        net = _build_network(opt)
        try:
            warn_about_targets(net, select_targets(net, targets), cfg)
        except ValueError as e:
            raise OptionError(f'pruning.targets: {e} Fix the pattern (fnmatch syntax, e.g. body.*.weight).') from None
    return cfg


# ---------------------------------------------------------------------------------------------------- resume checks
# The pruning options that change the result of a run, as `resume_config` records them in every training state;
# (key, how the message names it). `plugins` is not one (it only imports modules).
RESUME_KEYS = (
    ('method', 'pruning.method'),
    ('targets', 'pruning.targets (resolved patterns)'),
    ('rate', 'pruning.rate'),
    ('round_lengths', 'pruning.rounds x iters_per_round / schedule (iterations of each round)'),
    ('eps', 'pruning.eps'),
    ('scope', 'pruning.scope'),
    ('rewind', 'pruning.rewind'),
    ('start_iter', 'pruning.start_iter'),
    ('end_iter', 'pruning.end_iter'),
    ('final_sparsity', 'pruning.final_sparsity'),
    ('frequency', 'pruning.frequency'),
)


def resume_config(opt, cfg=None):
    """The normalized pruning settings of a run (plain types, `RESUME_KEYS`): what a resume must not change.

    Different spellings of one schedule (rounds x iters_per_round or the same list in schedule) compare equal."""
    cfg = cfg or PruningConfig.from_opt(opt.get('pruning'))
    gradual = cfg.gradual or {}
    return {
        'method': str(cfg.method),
        'targets': [str(t) for t in cfg.resolve_targets((opt.get('network_g') or {}).get('type'))],
        'rate': float(cfg.rate),
        'round_lengths': [int(n) for n in cfg.round_lengths],
        'eps': float(cfg.eps),
        'scope': str(cfg.scope),
        'rewind': str(cfg.rewind),
        'start_iter': gradual.get('start_iter'),
        'end_iter': gradual.get('end_iter'),
        'final_sparsity': None if gradual.get('final_sparsity') is None else float(gradual['final_sparsity']),
        'frequency': gradual.get('frequency'),
    }


def _recorded_config(pruning):
    """The settings a training state records: its `config`, or for states written before it existed, what its
    pruner and round schedule keep (method, targets, rate, schedule, eps, scope; a late-rewinding point)."""
    if 'config' in pruning:
        return dict(pruning['config'])
    pruner, rounds = pruning.get('pruner') or {}, pruning.get('rounds') or {}
    old = {'method': pruner.get('method'), 'targets': pruner.get('targets'), 'rate': rounds.get('rate'),
           'round_lengths': rounds.get('lengths'), 'eps': pruner.get('eps'), 'scope': pruner.get('scope')}
    if rounds.get('rewind_iter') is not None:
        old['rewind'] = f'iter_{rounds["rewind_iter"]}'
    old = {k: v for k, v in old.items() if v is not None}
    for k in ('rate', 'eps'):
        if k in old:
            old[k] = float(old[k])
    if 'round_lengths' in old:
        old['round_lengths'] = [int(n) for n in old['round_lengths']]
    if 'targets' in old:
        old['targets'] = [str(t) for t in old['targets']]
    return old


def check_resume_options(opt, resume_state):
    """Refuse to resume a DUPruModel run whose pruning options changed in a way that alters the result.

    Raises one OptionError that lists every changed key with its old and new value. A training state without a
    pruning state (written by another model, or by a DUPruModel under BasicSR's loop before the model saved its
    state itself) is refused too. States written before the config was recorded are checked on what they record,
    and the keys they do not record (rewind, gradual settings) are named in a warning. Returns the list of keys
    that could not be checked. No-op for models other than DUPruModel or without a resume state.
    """
    if resume_state is None or not _is_pruning_model(opt.get('model_type')):
        return []
    where = (opt.get('path') or {}).get('resume_state') or 'the training state'
    pruning = resume_state.get('pruning') if isinstance(resume_state, dict) else None
    if not isinstance(pruning, dict):
        raise OptionError(f'{where} has no pruning state (it was written by another model, or by a DUPruModel run '
                          'of an older dupru-basicsr under BasicSR\'s own loop); it cannot continue the round '
                          'schedule. Resume a DUPruModel run from its own training_states, or start it afresh '
                          '(another name, or move the experiment folder away).')
    old, new = _recorded_config(pruning), resume_config(opt)
    changed = [f'{label}: {old[k]!r} -> {new[k]!r}' for k, label in RESUME_KEYS if k in old and old[k] != new[k]]
    if changed:
        raise OptionError(f'Cannot resume from {where}: these pruning options differ from the run being resumed, '
                          'and a resumed run would mix two settings: ' + '; '.join(changed) + '. Restore them in the '
                          'option file, or start a new run under another name.')
    unchecked = [label for k, label in RESUME_KEYS if k not in old]
    if unchecked:
        import logging
        logging.getLogger('basicsr').warning(
            f'{where} was written by an older dupru-basicsr and does not record {", ".join(unchecked)}; they '
            'cannot be checked against this run: make sure they are unchanged.')
    return unchecked
