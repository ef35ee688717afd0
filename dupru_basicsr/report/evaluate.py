"""Measuring a run: the network, BasicSR's PSNR / SSIM (RGB and Y), forward time, model size and sparsity, and the
per-round tickets of a pruned run."""
import io
import statistics
import time

import numpy as np
import torch
from tqdm import tqdm

import dupru_basicsr  # noqa: F401  (compatibility shims; must come before basicsr)
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from dupru_basicsr.pruning.presets import BODY_PREFIX, UPSAMPLER_PREFIXES
from dupru_basicsr.report import CompareError
from dupru_basicsr.report.results import METRICS
from dupru_basicsr.report.runs import read_checkpoint, select_state_dict, ticket_round
from dupru_basicsr.utils.devices import synchronize
from dupru_basicsr.weights.arch import describe_arch
from dupru_basicsr.weights.compressed import compress_state_dict


def build_network(arch, state_dict, path, device):
    """MSRResNet with the given weights loaded strictly, in eval mode on `device`."""
    net = MSRResNet(**arch)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CompareError(f'{path} does not fit MSRResNet({describe_arch(arch)}): {str(e).splitlines()[0]} '
                           f'(check network_g of the option file or --arch-opt).') from e
    return net.to(device).eval()


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


def mean_metrics(rows):
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
    def sync():
        synchronize(device)  # the model's device (torch.cuda.synchronize() alone waits for the current one)

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
    """Dense / compressed size, parameter counts and sparsity of a state dict (Table 5 columns): body (body.*
    weights), upsampler (upconv*, conv_hr, ...), whole model (all parameters) and per layer (every weight tensor)."""
    fp32 = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()) for k, v in state_dict.items()}
    zeros = {k: int((v == 0).sum()) for k, v in fp32.items()}

    def sparsity(keys):
        numel = sum(fp32[k].numel() for k in keys)
        return sum(zeros[k] for k in keys) / numel if numel else 0.0

    weights = [k for k in fp32 if k.endswith('weight') and fp32[k].dim() > 1]
    body = [k for k in weights if k.startswith(BODY_PREFIX)]
    upsampler = [k for k in weights if k.startswith(UPSAMPLER_PREFIXES)]
    dense = saved_size_bytes(fp32)
    compressed = compressed_size_bytes(fp32)
    params = sum(v.numel() for v in fp32.values())
    nonzero = params - sum(zeros.values())  # the zeros counted above (NaN is not zero either way)
    return {
        'params': params,
        'nonzero_params': nonzero,
        'body_weights': sum(fp32[k].numel() for k in body),
        'body_sparsity': sparsity(body),
        'upsampler_sparsity': sparsity(upsampler),
        'model_sparsity': 1 - nonzero / params if params else 0.0,
        'layer_sparsity': {k: zeros[k] / fp32[k].numel() for k in weights},
        'dense_bytes': dense,
        'compressed_bytes': compressed,
        'compression_ratio': dense / compressed if compressed else float('nan'),
    }


def evaluate_tickets(model, dataset, scale, device, progress=True):
    """Mean metrics on `dataset` of each per-round ticket of a pruned run (Fig. 4 data); bad tickets are noted."""
    points, notes = [], []
    for path in model.tickets:
        try:
            ckpt = read_checkpoint(path)
            state, key = select_state_dict(ckpt, path)
            net = build_network(model.arch, state, path, device)
        except CompareError as e:
            notes.append(f'Skipped ticket {path}: {e}')
            continue
        info = ckpt.get('ticket', {}) if isinstance(ckpt, dict) else {}
        kept = info.get('kept_fraction')
        if kept is None:
            kept = 1 - model_stats(state)['body_sparsity']
        round_idx = info.get('round') or ticket_round(path)
        rows = evaluate_dataset(net, dataset, scale, device, f'{model.label} round {round_idx}', progress)
        points.append({'round': int(round_idx), 'iter': info.get('iter'), 'kept_percent': 100 * float(kept),
                       'param_key': key, 'path': path, 'val_metric': info.get('metric'),
                       'val_value': info.get('value'), **mean_metrics(rows)})
        del net
    return points, notes
