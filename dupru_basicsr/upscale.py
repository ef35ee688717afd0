"""Upscale your own images (no ground truth) with a trained or pruned network: `dupru-upscale`.

    dupru-upscale -i photos/ -o photos_x4/ --model experiments/<run>/models/net_g_round25_best.pth
    dupru-upscale -i big.png -o out/ --model small.pth --tile 256 --device cuda

What BasicSR's `inference/` scripts and Real-ESRGAN's `inference_realesrgan.py` do, for the networks this package
trains: the model is an ordinary BasicSR checkpoint (`params_ema`, else `params`) or a compressed file from
`dupru-export`; its network is read from the weights (MSRResNet) or from `--arch-opt OPTIONS.yml` (its `network_g`).
A pruned network runs as the dense network it is (its zeros are ordinary weights; for sparse kernels, export it with
`dupru-export --mnn`).

Images: PNG, JPEG, BMP, TIFF, WebP; 8- or 16-bit; grey (run as three equal channels, written back grey) and RGBA
(the alpha channel resized bicubically, as Real-ESRGAN's default does). `--tile N` runs the network on N x N input
tiles, each with `--tile-pad` pixels of context on every side, so a big image fits in memory; with a pad of at least
the network's receptive radius (MSRResNet 64x16: 35 input pixels) the tiles join into the whole image's output to
float rounding. Outputs are written atomically (temporary file, then rename) as `<name><suffix>.<ext>`.

Every check of the options, the model, the inputs' names and the output paths (one that is an input image is
refused) runs before the first image; an image that turns out unreadable is named, left out, and the command exits
with 1 after the others.
"""
import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

from dupru_basicsr.utils.devices import check_device

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class UpscaleError(ValueError):
    """Bad input to dupru-upscale; the message names the option or file and the fix."""


def list_images(path):
    """The image files `path` names: itself (a file), or the images directly inside it (a folder), sorted."""
    if osp.isfile(path):
        if osp.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
            raise UpscaleError(f'--input {path} is not an image file ({", ".join(IMAGE_EXTENSIONS)}).')
        return [path]
    if not osp.isdir(path):
        raise UpscaleError(f'--input {path} does not exist: give an image file or a folder of images.')
    images = sorted(osp.join(path, name) for name in os.listdir(path)
                    if osp.splitext(name)[1].lower() in IMAGE_EXTENSIONS and osp.isfile(osp.join(path, name)))
    if not images:
        raise UpscaleError(f'--input {path} holds no image file ({", ".join(IMAGE_EXTENSIONS)}).')
    return images


def output_paths(images, out_dir, suffix='', ext='auto'):
    """The output file of each input image: `out_dir/<name><suffix>.<ext>` (ext 'auto': the input's). Refuses two
    inputs that would write one file, and an output that is one of the inputs."""
    outputs = []
    for image in images:
        stem, own_ext = osp.splitext(osp.basename(image))
        outputs.append(osp.join(out_dir, f'{stem}{suffix}{own_ext if ext == "auto" else "." + ext}'))
    seen = {}
    for image, out in zip(images, outputs):
        if osp.normcase(osp.abspath(out)) in seen:
            raise UpscaleError(f'{image} and {seen[osp.normcase(osp.abspath(out))]} would both be written to {out}: '
                               'give --ext png (the inputs differ only in their extension).')
        seen[osp.normcase(osp.abspath(out))] = image
    inputs = {osp.normcase(osp.realpath(image)) for image in images}
    for out in outputs:
        if osp.normcase(osp.realpath(out)) in inputs:
            raise UpscaleError(f'{out} is an input image: give another --output folder or a --suffix (e.g. _x4), so '
                               'no input is overwritten.')
    return outputs


def read_image(path):
    """An image file -> (float32 BGR array in [0, 1], H x W x 3; its alpha channel or None; max value 255 or
    65535; whether it was grey)."""
    import cv2
    data = np.fromfile(path, dtype=np.uint8)  # cv2.imread cannot say why it failed; imdecode of the bytes can
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UpscaleError(f'{path} cannot be read as an image (empty, truncated or another format).')
    max_value = 65535 if image.dtype == np.uint16 else 255
    if image.dtype not in (np.uint8, np.uint16):
        raise UpscaleError(f'{path} has {image.dtype} pixels; 8- and 16-bit images are supported.')
    image = image.astype(np.float32) / max_value
    grey, alpha = image.ndim == 2, None
    if grey:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image, alpha = image[:, :, :3], image[:, :, 3]
    elif image.shape[2] == 1:
        image, grey = np.repeat(image, 3, axis=2), True
    return image, alpha, max_value, grey


def to_file_array(image, alpha, max_value, grey):
    """The inverse of read_image for an output: clamp to [0, 1], round to the input's bit depth."""
    import cv2
    if grey:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif alpha is not None:
        image = np.concatenate([image, np.clip(alpha, 0, 1)[:, :, None]], axis=2)
    dtype = np.uint16 if max_value == 65535 else np.uint8
    return (np.clip(image, 0, 1) * max_value).round().astype(dtype)


@torch.no_grad()
def upscale_tensor(net, lq, scale, tile=0, tile_pad=10):
    """`net(lq)` for a 1 x C x H x W tensor; with `tile` > 0, on tiles of `tile` x `tile` input pixels, each run
    with `tile_pad` pixels of the image around it (fewer at the borders) and only its own part of the output kept."""
    if tile <= 0:
        return net(lq)
    _, _, height, width = lq.shape
    out = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            pad_top, pad_left = max(top - tile_pad, 0), max(left - tile_pad, 0)
            pad_bottom, pad_right = min(bottom + tile_pad, height), min(right + tile_pad, width)
            sr = net(lq[:, :, pad_top:pad_bottom, pad_left:pad_right])
            if out is None:
                out = sr.new_zeros(sr.shape[0], sr.shape[1], height * scale, width * scale)
            y0, x0 = (top - pad_top) * scale, (left - pad_left) * scale
            out[:, :, top * scale:bottom * scale, left * scale:right * scale] = \
                sr[:, :, y0:y0 + (bottom - top) * scale, x0:x0 + (right - left) * scale]
    return out


def network_scale(net, net_opt):
    scale = net_opt.get('upscale', net_opt.get('scale'))
    if scale is None:  # another architecture: measure it
        device = next(net.parameters()).device
        with torch.no_grad():
            scale = net(torch.zeros(1, 3, 8, 8, device=device)).shape[-1] // 8
    return int(scale)


def sparsity(net):
    """The share of exact zeros among the network's conv / linear weights."""
    weights = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def upscale_images(model, inputs, out_dir, arch_opt=None, param_key='params_ema', device='cpu', tile=0, tile_pad=10,
                   suffix='', ext='auto', progress=print):
    """Upscale every image of `inputs` (a file or a folder) with the network of `model`, into `out_dir`. Every
    check (the model, the inputs, the outputs) runs before the first image. Returns (the output paths written, the
    images left out with the reason)."""
    from dupru_basicsr.export import ExportError, build_network
    from dupru_basicsr.weights.io import atomic_write_bytes
    if tile < 0 or tile_pad < 0:
        raise UpscaleError(f'--tile {tile} / --tile-pad {tile_pad}: give 0 or more pixels (--tile 0: no tiles).')
    if ext not in ('auto', 'png', 'jpg'):
        raise UpscaleError(f'--ext {ext}: give auto (the input\'s), png or jpg.')
    device = check_device(device, UpscaleError)
    images = list_images(inputs)
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise UpscaleError(f'--output {out_dir} is a file: give a folder (made if missing).')
    outputs = output_paths(images, out_dir, suffix, ext)
    try:
        net, net_opt = build_network(model, arch_opt, param_key, option='--arch-opt')
    except ExportError as e:
        raise UpscaleError(str(e)) from None
    net = net.to(device)
    scale = network_scale(net, net_opt)
    in_ch = net_opt.get('num_in_ch', 3)
    if in_ch != 3:
        raise UpscaleError(f'{model}: the network takes {in_ch} input channels; dupru-upscale runs RGB networks.')
    progress(f'dupru-upscale: {net_opt.get("type", type(net).__name__)} x{scale} from {model} '
             f'({sparsity(net):.2%} of its conv weights are zero), {len(images)} image(s) on {device}'
             + (f', tiles of {tile} px + {tile_pad} px pad' if tile else ''))
    os.makedirs(out_dir, exist_ok=True)
    import cv2
    written, left_out = [], []
    for image_path, out_path in zip(images, outputs):
        start = time.perf_counter()
        try:
            image, alpha, max_value, grey = read_image(image_path)
        except UpscaleError as e:
            progress(f'  {e} Left out.')
            left_out.append((image_path, str(e)))
            continue
        lq = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).unsqueeze(0).to(device)
        sr = upscale_tensor(net, lq, scale, tile, tile_pad)[0].float().cpu().numpy().transpose(1, 2, 0)[:, :, ::-1]
        if alpha is not None:
            alpha = cv2.resize(alpha, (sr.shape[1], sr.shape[0]), interpolation=cv2.INTER_CUBIC)
        array = to_file_array(np.ascontiguousarray(sr), alpha, max_value, grey)
        ok, encoded = cv2.imencode(osp.splitext(out_path)[1], array)
        if not ok:
            raise UpscaleError(f'{out_path}: OpenCV cannot write this format; give --ext png.')
        atomic_write_bytes(encoded.tobytes(), out_path)
        written.append(out_path)
        progress(f'  {image_path} ({image.shape[1]}x{image.shape[0]}) -> {out_path} ({sr.shape[1]}x{sr.shape[0]}, '
                 f'{time.perf_counter() - start:.2f} s)')
    return written, left_out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='dupru-upscale', description=__doc__.split('\n\n')[0],
        epilog='Every check runs before the first image: exit status 2 with one error line on bad input, 1 when an '
        'image could not be read (the others are written).')
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='the folder the outputs go to (made if missing)')
    parser.add_argument('--model', required=True,
                        help='a BasicSR network checkpoint (net_g_*.pth) or a compressed file from dupru-export')
    parser.add_argument('--arch-opt', default=None,
                        help='an option YAML whose network_g builds the network (default: MSRResNet read from the '
                        'weights)')
    parser.add_argument('--param-key', default='params_ema',
                        help='the weights to use (default params_ema, else params)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default cpu)')
    parser.add_argument('--tile', type=int, default=0, help='input tile size in pixels; 0 (default): the whole image')
    parser.add_argument('--tile-pad', type=int, default=10, help='pixels of context around each tile (default 10)')
    parser.add_argument('--suffix', default='', help='added to each output name (default: none)')
    parser.add_argument('--ext', default='auto', help='auto (the input\'s), png or jpg (default auto)')
    args = parser.parse_args(argv)
    try:
        written, left_out = upscale_images(args.model, args.input, args.output, args.arch_opt, args.param_key,
                                           args.device, args.tile, args.tile_pad, args.suffix, args.ext)
    except UpscaleError as e:
        print(f'dupru-upscale: error: {e}', file=sys.stderr)
        return 2
    if left_out:
        print(f'dupru-upscale: {len(written)} image(s) written, {len(left_out)} left out: '
              + ', '.join(path for path, _ in left_out), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
