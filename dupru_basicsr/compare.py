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
import base64
import csv
import datetime
import glob
import html
import io
import json
import math
import os
import os.path as osp
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm

import dupru_basicsr  # noqa: F401  (compatibility shims; must come before basicsr)
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.matlab_functions import imresize
from dupru_basicsr.data.images import list_images
from dupru_basicsr.export import compress_state_dict

METRICS = ('psnr_rgb', 'ssim_rgb', 'psnr_y', 'ssim_y')
MEAN_ROW = '(mean)'
HIGHLIGHT_IMAGES = ('butterfly', 'baby')  # the paper's Table 4 images
DEFAULT_CROP = 96
_MSRRESNET_KEYS = ('conv_first.weight', 'upconv1.weight', 'conv_hr.weight', 'conv_last.weight')
_BODY_KEY_RE = re.compile(r'^body\.(\d+)\.conv[12]\.weight$')
_ITER_CKPT_RE = re.compile(r'^net_g_(\d+)\.pth$')
_TICKET_RE = re.compile(r'^net_g_round(\d+)_best\.pth$')
_LOSS_LINE_RE = re.compile(r'iter:\s*([\d,]+).*?\bl_pix:\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))')


class CompareError(ValueError):
    """An input the comparison cannot use; the message names the file or folder and how to fix it."""


# ------------------------------------------------------------------------------------------------ data classes
@dataclass
class ModelEntry:
    """One run to compare: where its weights came from and how to build the network."""
    label: str
    method: str  # stock | dupru | upru | imp | <model_type> | checkpoint
    source: str  # what the user passed (experiment folder or .pth)
    checkpoint: str  # the file the weights were read from
    param_key: str  # params_ema | params | state_dict
    arch: dict  # MSRResNet keyword arguments
    exp_dir: Optional[str] = None
    rate: Optional[float] = None  # pruning.rate of a pruned experiment (Fig. 5)
    settings_from: Optional[str] = None  # the file method and rate were read from
    tickets: List[str] = field(default_factory=list)  # per-round best checkpoints (Fig. 4)
    logs: List[str] = field(default_factory=list)  # BasicSR train logs (training curves)
    state_dict: dict = field(default=None, repr=False)

    def info(self):
        return {k: v for k, v in asdict(self).items() if k != 'state_dict'}


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


@dataclass
class CompareResults:
    """Everything the report shows, as plain data (`to_dict()` is what results.json holds)."""
    models: List[dict]
    datasets: List[dict]
    rows: List[dict]  # per image rows and MEAN_ROW rows: label, method, dataset, image, psnr_rgb, ...
    model_stats: List[dict]
    baseline: Optional[str] = None
    round_curves: Dict[str, List[dict]] = field(default_factory=dict)
    rate_curves: Dict[str, List[dict]] = field(default_factory=dict)
    training_curves: Dict[str, dict] = field(default_factory=dict)
    figures: Dict[str, str] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def labels(self):
        return [m['label'] for m in self.models]

    def mean(self, label, dataset, metric='psnr_rgb'):
        """Mean `metric` of run `label` on `dataset`."""
        for row in self.rows:
            if row['label'] == label and row['dataset'] == dataset and row['image'] == MEAN_ROW:
                return row[metric]
        raise KeyError(f'No mean row for {label!r} on {dataset!r}')

    def value(self, label, dataset, image, metric='psnr_rgb'):
        """Per-image `metric` of run `label`."""
        for row in self.rows:
            if row['label'] == label and row['dataset'] == dataset and row['image'] == image:
                return row[metric]
        raise KeyError(f'No row for {label!r} on {dataset!r}/{image!r}')

    def to_dict(self):
        return _json_safe(asdict(self))


# ------------------------------------------------------------------------------------------------ compressed size
def saved_size_bytes(obj):
    """Bytes of `torch.save(obj)` (what the file on disk would take)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def compressed_size_bytes(state_dict):
    """Bytes of a torch.save'd `compress_state_dict(state_dict)` (dupru-export's format): the sparse checkpoint
    size of Table 5."""
    return saved_size_bytes(compress_state_dict(state_dict))


def model_stats(state_dict):
    """Dense / compressed size, parameter counts and body sparsity of a state dict (Table 5 columns)."""
    fp32 = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()) for k, v in state_dict.items()}
    body = [v for k, v in fp32.items() if k.startswith('body.') and k.endswith('weight')]
    body_numel = sum(v.numel() for v in body)
    body_zeros = sum(int((v == 0).sum()) for v in body)
    dense = saved_size_bytes(fp32)
    compressed = compressed_size_bytes(fp32)
    return {
        'params': sum(v.numel() for v in fp32.values()),
        'nonzero_params': sum(int(torch.count_nonzero(v)) for v in fp32.values()),
        'body_weights': body_numel,
        'body_sparsity': body_zeros / body_numel if body_numel else 0.0,
        'dense_bytes': dense,
        'compressed_bytes': compressed,
        'compression_ratio': dense / compressed if compressed else float('nan'),
    }


# ------------------------------------------------------------------------------------------------ checkpoints
def _torch_load(path):
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user-facing error
        raise CompareError(f'Cannot read checkpoint {path}: {type(e).__name__}: {e}') from e


def _read_yaml(path):
    try:
        with open(path, 'r') as f:
            opt = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise CompareError(f'Cannot read option file {path}: {e}') from e
    if not isinstance(opt, dict):
        raise CompareError(f'Option file {path} is not a YAML mapping.')
    return opt


def select_state_dict(ckpt, path):
    """The network weights of a checkpoint: `params_ema` when present (what SRModel evaluates), else `params`.

    Also accepts a bare state dict. Returns (state_dict, key) with DataParallel's `module.` prefix removed, as
    BasicSR's `load_network` does.
    """
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        state, key = ckpt, 'state_dict'
    else:
        for key in ('params_ema', 'params'):
            if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
                state = ckpt[key]
                break
        else:
            keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise CompareError(f'{path} holds no network weights ("params_ema", "params" or a state dict); found '
                               f'{keys}. Is it a BasicSR training state (*.state) rather than a net_g_*.pth?')
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    return state, key


def infer_msrresnet_arch(state_dict, path):
    """MSRResNet keyword arguments from the keys and shapes of a state dict; CompareError if it is not MSRResNet.

    num_feat and the in/out channels come from conv_first / conv_last, num_block from the body.<i> indices, and the
    scale from the upsampler: upconv2 exists only at x4, otherwise upconv1 has num_feat * s^2 outputs (s = 2, 3).
    """
    missing = [k for k in _MSRRESNET_KEYS if k not in state_dict]
    blocks = {int(m.group(1)) for k in state_dict if (m := _BODY_KEY_RE.match(k))}
    if missing or not blocks:
        shown = ', '.join(list(state_dict)[:6])
        raise CompareError(f'{path} is not an MSRResNet checkpoint (missing {", ".join(missing) or "body.* blocks"}; '
                           f'its first keys are: {shown}). dupru-compare evaluates BasicSR MSRResNet networks only.')
    first = state_dict['conv_first.weight']
    num_feat = int(first.shape[0])
    if 'upconv2.weight' in state_dict:
        upscale = 4
    else:
        ratio = int(state_dict['upconv1.weight'].shape[0]) // num_feat
        upscale = int(round(math.sqrt(ratio)))
        if upscale not in (2, 3) or upscale * upscale * num_feat != state_dict['upconv1.weight'].shape[0]:
            raise CompareError(f'{path}: cannot infer the scale from upconv1 with '
                               f'{state_dict["upconv1.weight"].shape[0]} outputs and num_feat {num_feat}.')
    return {'num_in_ch': int(first.shape[1]), 'num_out_ch': int(state_dict['conv_last.weight'].shape[0]),
            'num_feat': num_feat, 'num_block': max(blocks) + 1, 'upscale': upscale}


def arch_from_option(opt, path, scale):
    """MSRResNet keyword arguments from an option file's `network_g`; checks the type and the scale."""
    net_opt = dict(opt.get('network_g') or {})
    net_type = net_opt.pop('type', None)
    if net_type != 'MSRResNet':
        raise CompareError(f'{path}: network_g type is {net_type!r}, not MSRResNet; dupru-compare evaluates BasicSR '
                           'MSRResNet networks only.')
    arch = {'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16, 'upscale': 4}  # MSRResNet defaults
    arch.update({k: v for k, v in net_opt.items() if k in arch})
    opt_scale = opt.get('scale', arch['upscale'])
    for what, value in (('scale', opt_scale), ('network_g.upscale', arch['upscale'])):
        if int(value) != scale:
            raise CompareError(f'{path}: {what} is {value} but --scale is {scale}; compare runs of one scale at a '
                               'time (pass --scale to match).')
    return arch


def _check_scale(arch, path, scale):
    if arch['upscale'] != scale:
        raise CompareError(f'{path} holds an x{arch["upscale"]} MSRResNet but --scale is {scale}; compare runs of one '
                           'scale at a time (pass --scale to match).')


def build_network(arch, state_dict, path, device):
    """MSRResNet with the given weights loaded strictly, in eval mode on `device`."""
    net = MSRResNet(**arch)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CompareError(f'{path} does not fit MSRResNet({_arch_str(arch)}): {str(e).splitlines()[0]} '
                           f'(check network_g of the option file or --arch-opt).') from e
    return net.to(device).eval()


def _arch_str(arch):
    return ', '.join(f'{k}={v}' for k, v in arch.items())


def _method_from_option(opt):
    """'stock' for SRModel, the pruning method for DUPruModel (or any run with a pruning: section)."""
    from dupru_basicsr.options import PruningConfig
    model_type = opt.get('model_type', 'SRModel')
    if isinstance(opt.get('pruning'), dict) or model_type == 'DUPruModel':
        pruning = opt.get('pruning') or {}
        rate = pruning.get('rate', PruningConfig.rate)
        return str(pruning.get('method', PruningConfig.method)), float(rate)
    if model_type == 'SRModel':
        return 'stock', None
    return str(model_type).lower(), None


def saved_pruning_settings(exp_dir):
    """(method, rate, file) of a pruned run as its own checkpoints record them, or None.

    The option copy in the folder is what the last start of the run wrote, which need not be what trained it; the
    pruning state in the newest readable `training_states/<iter>.state` (method and rate) and, failing that, the
    newest ticket `models/net_g_round<r>_best.pth` (method; rate when it records one) are what the run used.
    """
    from dupru_basicsr.compat import load_training_state
    states = [(int(m.group(1)), p) for p in glob.glob(osp.join(glob.escape(exp_dir), 'training_states', '*.state'))
              if (m := re.match(r'^(\d+)\.state$', osp.basename(p)))]
    for _, path in sorted(states, reverse=True):
        try:
            pruning = load_training_state(path).get('pruning')
            return str(pruning['pruner']['method']), float(pruning['rounds']['rate']), path
        except Exception:  # noqa: BLE001 - unreadable, or not a pruned run's state: try the next source
            continue
    for path in reversed(find_tickets(exp_dir)):
        try:
            ticket = torch.load(path, map_location='cpu', weights_only=True)['ticket']
            rate = ticket.get('rate')
            return str(ticket['method']), None if rate is None else float(rate), path
        except Exception:  # noqa: BLE001
            continue
    return None


def find_option_file(exp_dir):
    """The option YAML BasicSR copied into the experiment folder (the newest if there are several)."""
    found = glob.glob(osp.join(exp_dir, '*.yml')) + glob.glob(osp.join(exp_dir, '*.yaml'))
    return max(found, key=osp.getmtime) if found else None


def find_checkpoint(exp_dir):
    """`models/net_g_latest.pth`, else the `net_g_<iter>.pth` with the highest iteration."""
    models_dir = osp.join(exp_dir, 'models')
    latest = osp.join(models_dir, 'net_g_latest.pth')
    if osp.isfile(latest):
        return latest
    iters = [(int(m.group(1)), p) for p in glob.glob(osp.join(models_dir, 'net_g_*.pth'))
             if (m := _ITER_CKPT_RE.match(osp.basename(p)))]
    if not iters:
        raise CompareError(f'No checkpoint in experiment folder {exp_dir}: expected {latest} or '
                           f'{models_dir}/net_g_<iter>.pth. Train the run first (dupru-train) or pass a .pth file.')
    return max(iters)[1]


def find_tickets(exp_dir):
    """Per-round best checkpoints `models/net_g_round{r}_best.pth` written by DUPruModel, sorted by round."""
    found = [(int(m.group(1)), p) for p in glob.glob(osp.join(exp_dir, 'models', 'net_g_round*_best.pth'))
             if (m := _TICKET_RE.match(osp.basename(p)))]
    return [p for _, p in sorted(found)]


def load_model_entry(source, scale, arch_opt=None):
    """A ModelEntry for an experiment folder or a single .pth checkpoint (see the module docstring)."""
    source = str(source)
    if osp.isdir(source):
        exp_dir = source.rstrip('/\\') or source
        ckpt_path = find_checkpoint(exp_dir)
        opt_path = find_option_file(exp_dir)
        opt = _read_yaml(opt_path) if opt_path else {}
        state, key = select_state_dict(_torch_load(ckpt_path), ckpt_path)
        inferred = infer_msrresnet_arch(state, ckpt_path)  # a clear error for non-MSRResNet weights
        _check_scale(inferred, ckpt_path, scale)
        if opt_path:
            arch = arch_from_option(opt, opt_path, scale)
            method, rate = _method_from_option(opt)
        else:
            arch, (method, rate) = inferred, ('checkpoint', None)
        settings_from = opt_path
        saved = saved_pruning_settings(exp_dir)
        if saved is not None:
            saved_method, saved_rate, settings_from = saved
            # a ticket without a rate: the option copy's rate only if it describes the same method
            rate = saved_rate if saved_rate is not None or saved_method != method else rate
            method = saved_method
        name = osp.basename(osp.abspath(exp_dir))
        logs = sorted(glob.glob(osp.join(exp_dir, 'train_*.log')), key=osp.getmtime)
        return ModelEntry(label=f'{method} ({name})', method=method, source=source, checkpoint=ckpt_path,
                          param_key=key, arch=arch, exp_dir=exp_dir, rate=rate, settings_from=settings_from,
                          tickets=find_tickets(exp_dir), logs=logs, state_dict=state)
    if not osp.isfile(source):
        raise CompareError(f'{source} is neither an experiment folder nor a checkpoint file.')
    ckpt = _torch_load(source)
    state, key = select_state_dict(ckpt, source)
    inferred = infer_msrresnet_arch(state, source)
    _check_scale(inferred, source, scale)
    method, rate = 'checkpoint', None
    if arch_opt:
        opt = _read_yaml(arch_opt)
        arch = arch_from_option(opt, arch_opt, scale)
        if 'model_type' in opt or 'pruning' in opt:
            method, rate = _method_from_option(opt)
    else:
        arch = inferred
    if isinstance(ckpt, dict) and isinstance(ckpt.get('ticket'), dict) and ckpt['ticket'].get('method'):
        method = str(ckpt['ticket']['method'])
    stem = osp.splitext(osp.basename(source))[0]
    label = stem if method == 'checkpoint' else f'{method} ({stem})'
    return ModelEntry(label=label, method=method, source=source, checkpoint=source, param_key=key, arch=arch,
                      rate=rate, state_dict=state)


# ------------------------------------------------------------------------------------------------ datasets
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
                               f'(BasicSR layout <data-root>/{name}/GTmod12 and LRbicx{scale}), point --data-root '
                               f'at the folder that holds {name}, or pass --dataset-dirs {name}=GT_DIR:LR_DIR.')
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
            gt_dir, lr_dir = osp.join(data_root, name, 'GTmod12'), osp.join(data_root, name, f'LRbicx{scale}')
        datasets.append(load_dataset(name, gt_dir, lr_dir, scale))
    return datasets


# ------------------------------------------------------------------------------------------------ evaluation
def image_to_input(lr_bgr, device):
    """BasicSR's data path: BGR uint8 -> float32 / 255 -> RGB CHW tensor with a batch dimension."""
    return img2tensor(lr_bgr.astype(np.float32) / 255., bgr2rgb=True, float32=True).unsqueeze(0).to(device)


@torch.no_grad()
def super_resolve(net, lr_bgr, device):
    """SR image of a BGR uint8 LR image, returned as BGR uint8 through `tensor2img` (as SRModel validation)."""
    output = net(image_to_input(lr_bgr, device))
    return tensor2img([output.detach().cpu()])


def image_metrics(sr_bgr, gt_bgr, crop_border):
    """BasicSR's PSNR / SSIM on BGR uint8 images, on RGB and on the Y channel."""
    return {
        'psnr_rgb': float(calculate_psnr(sr_bgr, gt_bgr, crop_border, test_y_channel=False)),
        'ssim_rgb': float(calculate_ssim(sr_bgr, gt_bgr, crop_border, test_y_channel=False)),
        'psnr_y': float(calculate_psnr(sr_bgr, gt_bgr, crop_border, test_y_channel=True)),
        'ssim_y': float(calculate_ssim(sr_bgr, gt_bgr, crop_border, test_y_channel=True)),
    }


def _mean_metrics(rows):
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def evaluate_dataset(net, dataset, scale, device, desc, progress=True, on_output=None):
    """Per-image metric dicts of one network on one dataset; `on_output(image, sr)` sees every SR image."""
    rows = []
    for image in tqdm(dataset.images, desc=desc, unit='img', disable=not progress, leave=False):
        sr = super_resolve(net, image.lr, device)
        rows.append({'image': image.stem, **image_metrics(sr, image.gt, scale)})
        if on_output is not None:
            on_output(image, sr)
    return rows


@torch.no_grad()
def time_models(nets, images, device, repeats=5, warmup=2):
    """Forward time per image in ms of each network in `nets` ({label: net}), measured side by side.

    Per image: `warmup` untimed runs of every network, then `repeats` rounds in which each network runs once (timed;
    CUDA synchronised before and after); the per-image time is the median over the rounds and the reported time the
    mean over images. Interleaving the networks means load changes on a shared machine hit all of them alike, so the
    ratios stay meaningful. Only the forward is timed (input already on the device), which is what the paper's
    Table 5 compares: pruning to zeros does not change the dense convolutions' work.
    """
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    per_image = {label: [] for label in nets}
    for image in images:
        x = image_to_input(image.lr, device)
        for net in nets.values():
            for _ in range(warmup):
                net(x)
        sync()
        times = {label: [] for label in nets}
        for _ in range(repeats):
            for label, net in nets.items():
                start = time.perf_counter()
                net(x)
                sync()
                times[label].append(time.perf_counter() - start)
        for label in nets:
            per_image[label].append(statistics.median(times[label]))
    return {label: {'ms_per_image': 1000 * float(np.mean(values)), 'ms_per_image_each': [1000 * t for t in values],
                    'images': len(values), 'repeats': repeats, 'warmup': warmup}
            for label, values in per_image.items()}


def time_inference(net, images, device, repeats=5, warmup=2):
    """`time_models` for a single network."""
    return time_models({'net': net}, images, device, repeats, warmup)['net']


def _resolve_device(device):
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise CompareError(f'--device {device} requested but CUDA is not available here; use --device cpu.')
    return device


# ------------------------------------------------------------------------------------------------ logs and tickets
def parse_train_logs(paths):
    """(iterations, l_pix) from BasicSR train logs, sorted by iteration; a resumed run's later log wins."""
    points = {}
    for path in paths:
        with open(path, 'r', errors='replace') as f:
            for line in f:
                m = _LOSS_LINE_RE.search(line)
                if m:
                    points[int(m.group(1).replace(',', ''))] = float(m.group(2))
    iters = sorted(points)
    return {'iter': iters, 'l_pix': [points[i] for i in iters], 'logs': list(paths)}


def evaluate_tickets(model, dataset, scale, device, progress=True):
    """Mean metrics on `dataset` of each per-round ticket of a pruned run (Fig. 4 data); bad tickets are noted."""
    points, notes = [], []
    for path in model.tickets:
        try:
            ckpt = _torch_load(path)
            state, key = select_state_dict(ckpt, path)
            net = build_network(model.arch, state, path, device)
        except CompareError as e:
            notes.append(f'Skipped ticket {path}: {e}')
            continue
        info = ckpt.get('ticket', {}) if isinstance(ckpt, dict) else {}
        kept = info.get('kept_fraction')
        if kept is None:
            kept = 1 - model_stats(state)['body_sparsity']
        round_idx = info.get('round') or int(_TICKET_RE.match(osp.basename(path)).group(1))
        rows = evaluate_dataset(net, dataset, scale, device, f'{model.label} round {round_idx}', progress)
        points.append({'round': int(round_idx), 'iter': info.get('iter'), 'kept_percent': 100 * float(kept),
                       'param_key': key, 'path': path, 'val_metric': info.get('metric'),
                       'val_value': info.get('value'), **_mean_metrics(rows)})
        del net
    return points, notes


# ------------------------------------------------------------------------------------------------ figures
def _new_figure(width=6.4, height=4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas, without pyplot's global state or backend switching
    return fig


def _save_figure(fig, path):
    fig.tight_layout()
    fig.savefig(path, format='png', bbox_inches='tight')
    return path


def _many_lines(ax, count):
    """Distinct colours for up to 20 lines (matplotlib's default cycle repeats after 10)."""
    if count > 10:
        from cycler import cycler
        from matplotlib import colormaps
        ax.set_prop_cycle(cycler(color=[colormaps['tab20'](i % 20) for i in range(count)]))


def _legend(ax, count):
    """Inside the axes for a few lines, beside them (not over the data) for many."""
    if count > 6:
        ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend()


def _log_percent_axis(ax, values):
    """Log-scaled, decreasing x axis of remaining-weight percentages with plain tick labels (100, 50, 10.7 ...)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    ax.set_xscale('log')
    ticks = sorted({round(v, 3) for v in values if v > 0})
    if len(ticks) > 10:
        lo, hi = min(ticks), max(ticks)
        ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01) if lo <= t <= hi] or ticks
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:.3g}'))
    ax.invert_xaxis()


def plot_round_curves(round_curves, dataset_name, path):
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    _many_lines(ax, len(round_curves))
    for label, points in round_curves.items():
        points = sorted(points, key=lambda p: -p['kept_percent'])
        ax.plot([p['kept_percent'] for p in points], [p['psnr_rgb'] for p in points], marker='o', label=label)
    _log_percent_axis(ax, [p['kept_percent'] for points in round_curves.values() for p in points])
    ax.ticklabel_format(axis='y', useOffset=False)
    ax.set_xlabel('Remaining body weights (%)')
    ax.set_ylabel(f'PSNR (RGB) on {dataset_name} (dB)')
    ax.set_title('PSNR of each round\'s best ticket vs remaining weights')
    ax.grid(True, alpha=0.3)
    _legend(ax, len(round_curves))
    return _save_figure(fig, path)


def plot_rate_curves(rate_curves, dataset_name, path):
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for method, points in rate_curves.items():
        points = sorted(points, key=lambda p: p['rate'])
        ax.plot([p['rate'] for p in points], [p['psnr_rgb'] for p in points], marker='o', label=method)
    ax.set_xlabel('Pruning rate per round (%)')
    ax.ticklabel_format(axis='y', useOffset=False)
    ax.set_ylabel(f'PSNR (RGB) on {dataset_name} (dB)')
    ax.set_title('Final model PSNR vs pruning rate')
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_figure(fig, path)


def plot_training_curves(training_curves, path):
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    _many_lines(ax, len(training_curves))
    all_positive = True
    for label, curve in training_curves.items():
        ax.plot(curve['iter'], curve['l_pix'], label=label, linewidth=1)
        all_positive &= all(v > 0 for v in curve['l_pix'])
    if all_positive:
        ax.set_yscale('log')
    ax.set_xlabel('Iteration')
    ax.set_ylabel('l_pix')
    ax.set_title('Training loss (from the train logs)')
    ax.grid(True, alpha=0.3)
    _legend(ax, len(training_curves))
    return _save_figure(fig, path)


def crop_window(height, width, crop_box=None, size=DEFAULT_CROP):
    """(x, y, w, h) inside the image: `crop_box` clamped, or a `size` square around the centre."""
    if crop_box is not None:
        x, y, w, h = (int(v) for v in crop_box)
    else:
        w = h = size
        x, y = (width - min(w, width)) // 2, (height - min(h, height)) // 2
    x, y = min(max(x, 0), max(width - 1, 0)), min(max(y, 0), max(height - 1, 0))
    return x, y, max(1, min(w, width - x)), max(1, min(h, height - y))


def plot_crop_grid(crop_rows, path):
    """One row per chosen image: bicubic, each run, GT, all on the same HR window."""
    ncols = max(len(row['panels']) for row in crop_rows)
    fig = _new_figure(2.2 * ncols, 2.5 * len(crop_rows))
    for r, row in enumerate(crop_rows):
        for c, (title, img_bgr) in enumerate(row['panels']):
            ax = fig.add_subplot(len(crop_rows), ncols, r * ncols + c + 1)
            ax.imshow(cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB), interpolation='nearest')
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f'{row["dataset"]}/{row["image"]}', fontsize=7)
    return _save_figure(fig, path)


def bicubic_upsample(lr_bgr, scale):
    """MATLAB-style bicubic upsampling (BasicSR's imresize) of a BGR uint8 image, as the usual baseline."""
    out = imresize(lr_bgr.astype(np.float64) / 255., scale)
    return np.clip(np.round(out * 255.), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ tables
def _fmt(value, digits=4, signed=False):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    if round(value, digits) == 0:
        value = 0.0  # no "-0.0000"
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def _is_best(value, values, digits=4):
    """Best (highest) at the printed precision, so that equal printed numbers never differ in boldness."""
    shown = [round(v, digits) for v in values if v is not None and not math.isnan(v)]
    if len(shown) < 2 or value is None or math.isnan(value) or len(set(shown)) == 1:
        return False
    return round(value, digits) == max(shown)


def _pair_cell(psnr, ssim, psnrs, ssims):
    return [(_fmt(psnr), _is_best(psnr, psnrs)), (_fmt(ssim), _is_best(ssim, ssims))]


def build_tables(results, highlight):
    """The report's tables as data: {title, caption, header, rows: [(cells, highlighted)]}; a cell is a list of
    (text, bold) parts joined by ' / '."""
    labels, datasets = results.labels, [d['name'] for d in results.datasets]
    tables = []
    for channel, name in (('rgb', 'Table 2 analogue: mean PSNR / SSIM (RGB)'),
                          ('y', 'Table 3 analogue: mean PSNR / SSIM (Y channel)')):
        means = {(lb, ds): (results.mean(lb, ds, f'psnr_{channel}'), results.mean(lb, ds, f'ssim_{channel}'))
                 for lb in labels for ds in datasets}
        rows = []
        for lb in labels:
            cells = [[(lb, False)]]
            for ds in datasets:
                psnrs = [means[(other, ds)][0] for other in labels]
                ssims = [means[(other, ds)][1] for other in labels]
                cells.append(_pair_cell(*means[(lb, ds)], psnrs, ssims))
            rows.append((cells, False))
        tables.append({'title': name, 'header': ['Method'] + datasets, 'rows': rows,
                       'caption': f'x{results.settings["scale"]}, crop border {results.settings["scale"]}, '
                                  'BasicSR calculate_psnr / calculate_ssim; best of each column in bold (compared '
                                  'at the printed precision; nothing is bold when all are equal).'})
    if results.baseline:
        header = ['Method'] + [f'{ds} {ch}' for ds in datasets for ch in ('RGB', 'Y')]
        rows = []
        for lb in labels:
            if lb == results.baseline:
                continue
            cells = [[(lb, False)]]
            for ds in datasets:
                for ch in ('rgb', 'y'):
                    d_psnr = results.mean(lb, ds, f'psnr_{ch}') - results.mean(results.baseline, ds, f'psnr_{ch}')
                    d_ssim = results.mean(lb, ds, f'ssim_{ch}') - results.mean(results.baseline, ds, f'ssim_{ch}')
                    cells.append([(_fmt(d_psnr, signed=True), False), (_fmt(d_ssim, signed=True), False)])
            rows.append((cells, False))
        tables.append({'title': f'Difference to the stock run {results.baseline} (ΔPSNR dB / ΔSSIM)',
                       'header': header, 'rows': rows, 'caption': 'Positive = better than the stock run.'})
    for channel, name in (('rgb', 'Table 4 analogue: per-image PSNR / SSIM (RGB)'),
                          ('y', 'Per-image PSNR / SSIM (Y channel)')):
        rows = []
        for ds in results.datasets:
            for stem in ds['images']:
                psnrs = [results.value(lb, ds['name'], stem, f'psnr_{channel}') for lb in labels]
                ssims = [results.value(lb, ds['name'], stem, f'ssim_{channel}') for lb in labels]
                cells = [[(ds['name'], False)], [(stem, False)]]
                cells += [_pair_cell(p, s, psnrs, ssims) for p, s in zip(psnrs, ssims)]
                rows.append((cells, stem.lower() in highlight))
        tables.append({'title': name, 'header': ['Dataset', 'Image'] + labels, 'rows': rows,
                       'caption': f'Highlighted: {", ".join(sorted(highlight))} (when present); best of each row in '
                                  'bold.'})
    rows = []
    for stats in results.model_stats:
        timing = stats.get('timing') or {}
        cells = [[(stats['label'], False)], [(_fmt(timing.get('ms_per_image'), 2), False)],
                 [(_fmt(stats['dense_bytes'] / 1e6, 3), False)], [(f'{stats["params"]:,d}', False)],
                 [(f'{stats["nonzero_params"]:,d}', False)], [(_fmt(100 * stats['body_sparsity'], 2), False)],
                 [(_fmt(stats['compressed_bytes'] / 1e6, 3), False)], [(_fmt(stats['compression_ratio'], 2), False)]]
        rows.append((cells, False))
    timing_note = results.settings.get('timing_note', '')
    tables.append({'title': 'Table 5 analogue: inference time and model size',
                   'header': ['Method', 'Time / image (ms)', 'Dense size (MB)', 'Params', 'Non-zero params',
                              'Body sparsity (%)', 'Compressed size (MB)', 'Dense / compressed'],
                   'rows': rows,
                   'caption': f'{timing_note} Dense size: bytes of the fp32 state dict saved with torch.save; '
                              'compressed: dupru-export format (bit-packed non-zero masks + fp32 non-zero values); '
                              'MB = 10^6 bytes. Body sparsity: zeros in body.* weights.'})
    ticket_rows = []
    for label, points in results.round_curves.items():
        for p in sorted(points, key=lambda q: q['round']):
            ticket_rows.append(([[(label, False)], [(str(p['round']), False)], [(str(p['iter']), False)],
                                 [(_fmt(p['kept_percent'], 2), False)], [(_fmt(p['psnr_rgb']), False)],
                                 [(_fmt(p['psnr_y']), False)]], False))
    if ticket_rows:
        tables.append({'title': 'Per-round tickets (Fig. 4 data)',
                       'header': ['Run', 'Round', 'Iter', 'Kept body weights (%)', 'PSNR RGB', 'PSNR Y'],
                       'rows': ticket_rows,
                       'caption': f'Each round\'s best checkpoint evaluated on {results.datasets[0]["name"]}.'})
    return tables


def _md_cell(parts):
    text = ' / '.join(f'**{t}**' if bold else t for t, bold in parts)
    return text.replace('|', '\\|')


def _html_cell(parts):
    return ' / '.join(f'<b>{html.escape(t)}</b>' if bold else html.escape(t) for t, bold in parts)


def render_markdown(results, tables):
    settings = results.settings
    lines = ['# dupru-compare report', '', f'Generated {settings["generated"]} on {settings["device"]} '
             f'(torch {settings["torch"]}); x{settings["scale"]}; datasets: '
             f'{", ".join(d["name"] for d in results.datasets)}.', '', '## Runs', '']
    for m in results.models:
        lines.append(f'- **{m["label"]}**: `{m["checkpoint"]}` ({m["param_key"]}), MSRResNet({_arch_str(m["arch"])})')
    for table in tables:
        lines += ['', f'## {table["title"]}', '', '| ' + ' | '.join(table['header']) + ' |',
                  '|' + '---|' * len(table['header'])]
        for cells, highlighted in table['rows']:
            texts = [_md_cell(c) for c in cells]
            if highlighted:
                texts[1 if len(texts) > 1 else 0] = '★ ' + texts[1 if len(texts) > 1 else 0]
            lines.append('| ' + ' | '.join(texts) + ' |')
        lines += ['', f'*{table["caption"]}*']
    lines += ['', '## Figures', '']
    for key, path in results.figures.items():
        lines += [f'![{FIGURE_TITLES[key]}]({osp.basename(path)})', '', f'*{FIGURE_TITLES[key]}*', '']
    if results.notes:
        lines += ['## Notes', ''] + [f'- {n}' for n in results.notes]
    return '\n'.join(lines) + '\n'


FIGURE_TITLES = {
    'rounds': 'Fig. 4 analogue: PSNR vs remaining weights, per round',
    'rates': 'Fig. 5 analogue: PSNR vs pruning rate',
    'training': 'Training curves (l_pix vs iteration)',
    'crops': 'Crops: bicubic, each run, GT (PSNR RGB of the whole image)',
}

_HTML_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.2em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.highlight td { background: #fff3c4; }
.caption { font-size: 0.85em; color: #555; margin-bottom: 1.5em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def render_html(results, tables):
    """Self-contained HTML: the figures are embedded as base64 PNG data URIs; no file or URL is referenced."""
    settings = results.settings
    esc = html.escape
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">', '<title>dupru-compare report</title>',
             f'<style>{_HTML_STYLE}</style></head><body>', '<h1>dupru-compare report</h1>',
             f'<p>Generated {esc(settings["generated"])} on {esc(settings["device"])} '
             f'(torch {esc(settings["torch"])}); '
             f'x{settings["scale"]}; datasets: {esc(", ".join(d["name"] for d in results.datasets))}.</p>',
             '<h2>Runs</h2><ul>']
    for m in results.models:
        parts.append(f'<li><b>{esc(m["label"])}</b>: <code>{esc(m["checkpoint"])}</code> ({esc(m["param_key"])}), '
                     f'MSRResNet({esc(_arch_str(m["arch"]))})</li>')
    parts.append('</ul>')
    for table in tables:
        parts.append(f'<h2>{esc(table["title"])}</h2><table><thead><tr>')
        parts.append(''.join(f'<th>{esc(h)}</th>' for h in table['header']) + '</tr></thead><tbody>')
        for cells, highlighted in table['rows']:
            cls = ' class="highlight"' if highlighted else ''
            parts.append(f'<tr{cls}>' + ''.join(f'<td>{_html_cell(c)}</td>' for c in cells) + '</tr>')
        parts.append(f'</tbody></table><div class="caption">{esc(table["caption"])}</div>')
    parts.append('<h2>Figures</h2>')
    for key, path in results.figures.items():
        with open(path, 'rb') as f:
            data = base64.b64encode(f.read()).decode('ascii')
        parts.append(f'<figure><img alt="{esc(FIGURE_TITLES[key])}" src="data:image/png;base64,{data}">'
                     f'<figcaption>{esc(FIGURE_TITLES[key])}</figcaption></figure>')
    if results.notes:
        parts.append('<h2>Notes</h2><ul>' + ''.join(f'<li>{esc(n)}</li>' for n in results.notes) + '</ul>')
    parts.append('</body></html>')
    return '\n'.join(parts) + '\n'


# ------------------------------------------------------------------------------------------------ outputs
def _json_safe(obj):
    """JSON has no NaN / inf (PSNR of identical images is inf): write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


CSV_FIELDS = ('label', 'method', 'dataset', 'image') + METRICS


def write_outputs(results, out_dir, highlight):
    """results.csv, results.json, report.md, report.html into `out_dir` (figures are already there)."""
    files = {'csv': osp.join(out_dir, 'results.csv'), 'json': osp.join(out_dir, 'results.json'),
             'markdown': osp.join(out_dir, 'report.md'), 'html': osp.join(out_dir, 'report.html')}
    results.files = files
    with open(files['csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for row in results.rows:
            writer.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v) for k, v in row.items()})
    with open(files['json'], 'w') as f:
        json.dump(results.to_dict(), f, indent=1, allow_nan=False)
    tables = build_tables(results, highlight)
    with open(files['markdown'], 'w', encoding='utf-8') as f:
        f.write(render_markdown(results, tables))
    with open(files['html'], 'w', encoding='utf-8') as f:
        f.write(render_html(results, tables))
    return files


# ------------------------------------------------------------------------------------------------ API
def _unique_labels(labels):
    seen, unique = {}, []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f'{label} #{seen[label]}')
    return unique


def _find_crop_targets(datasets, crops):
    if not crops:
        return [(datasets[0].name, datasets[0].images[0].stem)]
    targets = []
    for name in crops:
        match = next(((d.name, img.stem) for d in datasets for img in d.images if img.stem.lower() == name.lower()),
                     None)
        if match is None:
            known = ', '.join(img.stem for d in datasets for img in d.images[:20])
            raise CompareError(f'--crops {name}: no image with that name in the datasets (images: {known}).')
        targets.append(match)
    return targets


def compare(inputs: Sequence[str], datasets: Sequence[str] = (), data_root='datasets', scale=4,
            out_dir='results/compare', labels=None, crops=None, crop_box=None, device='cpu', repeats=5, warmup=2,
            time_images=None, dataset_dirs=None, arch_opt=None, baseline=None, tickets=True, progress=True,
            write=True) -> CompareResults:
    """Evaluate runs (experiment folders or .pth files) on datasets and write the report; see the module docstring.

    Every input is checked (checkpoints, architecture, scale, datasets, image sizes) before any network runs, so a
    mistake fails in seconds rather than after an hour of evaluation. `write=False` skips figures and files.
    `time_images` limits timing to the first N images of the first dataset (default all); `repeats=0` skips it.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise CompareError('Nothing to compare: pass experiment folders or .pth checkpoints.')
    if scale not in (2, 3, 4):
        raise CompareError(f'--scale {scale}: MSRResNet supports x2, x3 and x4.')
    if repeats < 0 or warmup < 0:
        raise CompareError('--repeats and --warmup must be >= 0.')
    if labels is not None and len(labels) != len(inputs):
        raise CompareError(f'--labels gives {len(labels)} label(s) for {len(inputs)} input(s).')
    if crop_box is not None and (len(crop_box) != 4 or min(crop_box[2:]) < 1):
        raise CompareError(f'--crop-box {crop_box}: expected X Y W H with W, H >= 1 (HR pixels).')
    if write and osp.exists(out_dir) and not osp.isdir(out_dir):
        raise CompareError(f'--out {out_dir} is a file; give a folder for the report (it is created if missing).')
    dev = _resolve_device(device)

    models = [load_model_entry(p, scale, arch_opt) for p in inputs]
    for model, label in zip(models, _unique_labels(labels or [m.label for m in models])):
        model.label = label
    data = resolve_datasets(datasets, data_root, scale, dataset_dirs)
    crop_targets = _find_crop_targets(data, crops)
    if baseline is None:
        baseline = next((m.label for m in models if m.method == 'stock'), None)
    elif baseline not in [m.label for m in models]:
        raise CompareError(f'--baseline {baseline!r} is not one of the run labels: {[m.label for m in models]}.')

    nets = {m.label: build_network(m.arch, m.state_dict, m.checkpoint, dev) for m in models}  # strict loads first
    notes, rows, stats_rows, crop_outputs = [], [], [], {}
    first = data[0]
    timed_images = first.images[:time_images] if time_images else first.images
    for model in models:
        net = nets[model.label]
        for ds in data:
            keep = {stem for name, stem in crop_targets if name == ds.name}

            def on_output(image, sr, ds=ds, keep=keep, label=model.label):
                if image.stem in keep:
                    crop_outputs[(ds.name, image.stem, label)] = sr

            per_image = evaluate_dataset(net, ds, scale, dev, f'{model.label} / {ds.name}', progress, on_output)
            base = {'label': model.label, 'method': model.method, 'dataset': ds.name}
            rows += [{**base, **r} for r in per_image]
            rows.append({**base, 'image': MEAN_ROW, **_mean_metrics(per_image)})
        stats_rows.append({'label': model.label, 'method': model.method, **model_stats(model.state_dict)})
    timings = time_models(nets, timed_images, dev, repeats, warmup) if repeats else {}
    for stats in stats_rows:
        stats['timing'] = timings.get(stats['label'])
    del nets
    threads = f', {torch.get_num_threads()} threads' if dev.type == 'cpu' else ''
    timing_note = (f'Time: network forward only on {dev}{threads}; per image {warmup} warm-up run(s), then the median '
                   f'of {repeats} runs with the networks interleaved; mean over {len(timed_images)} image(s) of '
                   f'{first.name}.' if repeats else 'Timing skipped (repeats = 0).')
    results = CompareResults(
        models=[m.info() for m in models], datasets=[d.info() for d in data], rows=rows, model_stats=stats_rows,
        baseline=baseline, notes=notes,
        settings={'scale': scale, 'crop_border': scale, 'device': str(dev), 'torch': torch.__version__,
                  'data_root': data_root, 'repeats': repeats, 'warmup': warmup, 'timing_note': timing_note,
                  'generated': datetime.datetime.now().isoformat(timespec='seconds'),
                  'crops': [list(t) for t in crop_targets], 'crop_box': list(crop_box) if crop_box else None})
    if baseline is None:
        notes.append('No stock (SRModel) run given: the difference table is omitted (pass a stock experiment or '
                     '--baseline LABEL).')

    # Fig. 4 data: each pruned run's per-round tickets on the first dataset.
    if tickets:
        for model in models:
            if model.tickets:
                points, ticket_notes = evaluate_tickets(model, first, scale, dev, progress)
                notes += ticket_notes
                if points:
                    results.round_curves[model.label] = points
    # Fig. 5 data: final PSNR of pruned runs against their pruning rate.
    pruned = [m for m in models if m.rate is not None]
    if len({m.rate for m in pruned}) >= 2:
        for m in pruned:
            results.rate_curves.setdefault(m.method, []).append(
                {'label': m.label, 'rate': m.rate, 'psnr_rgb': results.mean(m.label, first.name, 'psnr_rgb'),
                 'psnr_y': results.mean(m.label, first.name, 'psnr_y')})
    else:
        notes.append('Fig. 5 analogue (PSNR vs pruning rate) skipped: it needs pruned runs with at least two '
                     'different pruning.rate values.')
    for m in models:
        if m.logs:
            curve = parse_train_logs(m.logs)
            if curve['iter']:
                results.training_curves[m.label] = curve
    if not write:
        return results

    os.makedirs(out_dir, exist_ok=True)
    if results.round_curves:
        results.figures['rounds'] = plot_round_curves(results.round_curves, first.name,
                                                      osp.join(out_dir, 'fig4_psnr_vs_kept.png'))
    else:
        notes.append('Fig. 4 analogue skipped: no per-round tickets (models/net_g_round{r}_best.pth) found.')
    if results.rate_curves:
        results.figures['rates'] = plot_rate_curves(results.rate_curves, first.name,
                                                    osp.join(out_dir, 'fig5_psnr_vs_rate.png'))
    if results.training_curves:
        results.figures['training'] = plot_training_curves(results.training_curves,
                                                           osp.join(out_dir, 'training_curves.png'))
    else:
        notes.append('Training curves skipped: no l_pix lines in any train_*.log of the given experiment folders.')
    crop_rows = []
    for ds_name, stem in crop_targets:
        ds = next(d for d in data if d.name == ds_name)
        image = next(img for img in ds.images if img.stem == stem)
        x, y, w, h = crop_window(*image.gt.shape[:2], crop_box)

        def cut(img, x=x, y=y, w=w, h=h):
            return img[y:y + h, x:x + w]

        bicubic = bicubic_upsample(image.lr, scale)
        panels = [(f'Bicubic {calculate_psnr(bicubic, image.gt, scale):.2f} dB', cut(bicubic))]
        for model in models:
            value = results.value(model.label, ds_name, stem, 'psnr_rgb')
            panels.append((f'{model.label} {value:.2f} dB', cut(crop_outputs[(ds_name, stem, model.label)])))
        panels.append(('GT', cut(image.gt)))
        crop_rows.append({'dataset': ds_name, 'image': stem, 'box': [x, y, w, h], 'panels': panels})
    results.settings['crop_windows'] = {f'{r["dataset"]}/{r["image"]}': r['box'] for r in crop_rows}
    results.figures['crops'] = plot_crop_grid(crop_rows, osp.join(out_dir, 'crops.png'))
    highlight = set(HIGHLIGHT_IMAGES) | {stem.lower() for _, stem in crop_targets if crops}
    write_outputs(results, out_dir, highlight)
    return results


# ------------------------------------------------------------------------------------------------ CLI
def build_parser():
    parser = argparse.ArgumentParser(
        prog='dupru-compare',
        description='Evaluate stock and pruned MSRResNet runs on the same images (BasicSR metrics) and write '
        'results.csv/json and a report (report.md, self-contained report.html).')
    parser.add_argument('inputs', nargs='+', metavar='EXP_OR_CKPT',
                        help='experiment folder (experiments/<name>) or a net_g_*.pth checkpoint')
    parser.add_argument('--datasets', nargs='*', default=[], help='dataset names under --data-root (BasicSR layout '
                        '<root>/<name>/GTmod12 and LRbicx<scale>)')
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
    parser.add_argument('--crops', nargs='+', help='image names for the crop grid (default: first image of the first '
                        'dataset)')
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
