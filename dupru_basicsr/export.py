"""Compressed sparse checkpoints and ONNX export of pruned networks: `dupru-export`.

    dupru-export experiments/<run>/models/net_g_round25_best.pth --out small.pth [--half]
    dupru-export small.pth --onnx model.onnx [--arch-opt options/train/....yml]

An unstructured-sparse network is stored densely by PyTorch (a zero costs 4 bytes like any weight). The compressed
format keeps, for every floating tensor, a bit-packed non-zero mask and the surviving values: all values in one
tensor (fp32, or fp16 with --half) and all mask bits in another, so that a file has a few hundred bytes of overhead,
not one pickle record per tensor. `load_compressed` turns it back into ordinary dense state dicts (bit-exact in fp32,
including signed zeros) with the stock keys under `params` / `params_ema`, which any BasicSR network loads strictly.
A SHA-256 of the payload detects truncated or corrupted files.
"""
import argparse
import hashlib
import math
import os.path as osp
import sys
import numpy as np
import torch

FORMAT = 'dupru-sparse-v1'


class ExportError(ValueError):
    """A file that cannot be exported or loaded; the message names the file and the fix."""


def _nonzero_bits(flat):
    # by bit pattern, so that -0.0 survives the round trip and the result is bit-exact
    as_int = flat.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()])
    return as_int != 0


def compress_state_dict(state_dict, half=False):
    """{name: tensor} -> a compact dict (see the module docstring). Non-floating tensors are kept dense."""
    index, values, bits, dense = [], [], [], {}
    offset_values = offset_bits = 0
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if not tensor.is_floating_point():
            dense[name] = tensor.clone()
            continue
        flat = tensor.reshape(-1)
        nonzero = _nonzero_bits(flat)
        kept = flat[nonzero]
        values.append(kept.to(torch.float16 if half else torch.float32))
        entry = {'name': name, 'shape': list(tensor.shape), 'dtype': str(tensor.dtype).replace('torch.', ''),
                 'values': [offset_values, kept.numel()], 'bits': None}  # no mask for a tensor without zeros
        if kept.numel() < flat.numel():
            packed = np.packbits(nonzero.numpy())
            bits.append(torch.from_numpy(packed))
            entry['bits'] = [offset_bits, packed.size]
            offset_bits += packed.size
        index.append(entry)
        offset_values += kept.numel()
    values = torch.cat(values) if values else torch.zeros(0)
    bits = torch.cat(bits) if bits else torch.zeros(0, dtype=torch.uint8)
    return {'index': index, 'values': values, 'bits': bits, 'dense': dense, 'order': list(state_dict)}


def decompress_state_dict(packed):
    """Inverse of `compress_state_dict`: an ordinary dense state dict."""
    state_dict = {}
    values, bits = packed['values'], packed['bits'].numpy()
    for item in packed['index']:
        numel = math.prod(item['shape'])
        start, count = item['values']
        dtype = getattr(torch, item['dtype'])
        if item['bits'] is None:
            flat = values[start:start + count].to(dtype)
        else:
            bit_start, bit_count = item['bits']
            nonzero = np.unpackbits(bits[bit_start:bit_start + bit_count], count=numel).astype(bool)
            flat = torch.zeros(numel, dtype=dtype)
            flat[torch.from_numpy(nonzero)] = values[start:start + count].to(dtype)
        state_dict[item['name']] = flat.reshape(item['shape'])
    state_dict.update(packed['dense'])
    return {k: state_dict[k] for k in packed['order']}


def _digest(payloads):
    h = hashlib.sha256()
    for p in payloads.values():
        h.update(p['values'].numpy().tobytes())
        h.update(p['bits'].numpy().tobytes())
        h.update(repr((p['index'], p['order'])).encode())
    return h.hexdigest()


def export_compressed(checkpoint, out_path, half=False):
    """Write the compressed form of a BasicSR checkpoint (`params`, `params_ema`, masks dropped: the non-zero bits
    are the masks). Returns (dense file bytes, compressed file bytes)."""
    from dupru_basicsr.utils.checkpoint import atomic_save
    check_output_path(out_path, '--out', [checkpoint])
    ckpt = _load(checkpoint)
    keys = [k for k in ('params', 'params_ema') if k in ckpt]
    if not keys:
        raise ExportError(f'{checkpoint} has no "params" / "params_ema" state dict: pass a BasicSR network checkpoint '
                          '(experiments/<name>/models/net_g_*.pth).')
    payloads = {}
    for k in keys:
        payloads[k] = compress_state_dict(ckpt[k], half=half)
    meta = {k: v for k, v in ckpt.items() if k not in ('params', 'params_ema', 'keep_masks')}
    atomic_save({'format': FORMAT, 'half': half, 'payloads': payloads, 'sha256': _digest(payloads), 'meta': meta},
                out_path)
    return osp.getsize(checkpoint), osp.getsize(out_path)


def _load(path):
    if not osp.isfile(path):
        raise ExportError(f'{path} does not exist.')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: say which and why
        raise ExportError(f'Cannot read {path} ({type(e).__name__}: {e}); the file is truncated or not a PyTorch '
                          'checkpoint.') from None


def load_compressed(path):
    """A compressed file -> {'params': dense state dict, 'params_ema': ...} (what BasicSR's load_network reads)."""
    data = _load(path)
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise ExportError(f'{path} is not a {FORMAT} file made by dupru-export.')
    if _digest(data['payloads']) != data['sha256']:
        raise ExportError(f'{path} is corrupted (checksum mismatch); export it again from the original checkpoint.')
    out = {k: decompress_state_dict(p) for k, p in data['payloads'].items()}
    out.update(data.get('meta') or {})
    return out


def load_into(network, path, param_key='params'):
    """Load a compressed (or ordinary) checkpoint into `network` strictly, with a clear error on a mismatch."""
    data = _load(path)
    ckpt = load_compressed(path) if isinstance(data, dict) and data.get('format') == FORMAT else data
    state = ckpt.get(param_key) or ckpt.get('params')
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f'{path} does not fit {type(network).__name__}: {str(e).splitlines()[0]} ... (check the '
                          'architecture options: num_feat, num_block, upscale).') from None
    return network


def export_onnx(checkpoint, onnx_path, arch_opt=None, param_key='params_ema', input_size=(1, 3, 32, 32)):
    """Export the dense network of a checkpoint (ordinary or compressed) to ONNX (needs the `onnx` package)."""
    from dupru_basicsr.compare import CompareError, infer_msrresnet_arch
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError('ONNX export needs the onnx package: pip install "dupru-basicsr[onnx]".') from None
    check_output_path(onnx_path, '--onnx', [checkpoint] + ([arch_opt] if arch_opt else []))
    data = _load(checkpoint)
    ckpt = load_compressed(checkpoint) if isinstance(data, dict) and data.get('format') == FORMAT else data
    state = ckpt.get(param_key) or ckpt.get('params')
    if arch_opt:
        import yaml
        try:
            with open(arch_opt) as f:
                net_opt = dict(yaml.safe_load(f)['network_g'])
        except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError) as e:
            raise ExportError(f'--arch-opt {arch_opt}: cannot read network_g from it ({type(e).__name__}: {e}); give '
                              'a BasicSR option YAML file with a network_g section.') from None
    else:
        try:
            net_opt = dict(infer_msrresnet_arch(state, checkpoint), type='MSRResNet')
        except CompareError as e:
            raise ExportError(f'{e} Pass --arch-opt with the network_g options of this network.') from None
    from basicsr.utils.registry import ARCH_REGISTRY
    net_opt = dict(net_opt)
    net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    net.load_state_dict(state, strict=True)
    net.eval()
    torch.onnx.export(net, (torch.rand(*input_size), ), onnx_path, dynamo=False, input_names=['lq'],
                      output_names=['sr'], dynamic_axes={'lq': {0: 'batch', 2: 'height', 3: 'width'},
                                                         'sr': {0: 'batch', 2: 'height', 3: 'width'}})
    return onnx_path


def check_output_path(path, option, inputs=()):
    """`path` is a file name in an existing folder, and none of `inputs`: the command writes exactly the file it was
    given and never over what it reads. Raises ExportError."""
    if osp.isdir(path):
        raise ExportError(f'{option} {path} is a folder; give the name of the file to write (e.g. '
                          f'{osp.join(path, "small.pth")}).')
    folder = osp.dirname(path) or '.'
    if not osp.isdir(folder):
        raise ExportError(f'{option} {path}: the folder {folder} does not exist; create it first or write elsewhere.')
    for other in inputs:
        if osp.realpath(path) == osp.realpath(other) or (osp.exists(path) and osp.exists(other)
                                                         and osp.samefile(path, other)):
            raise ExportError(f'{option} {path} is the input file {other}; it would be overwritten. Write to another '
                              'file.')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='dupru-export', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='a BasicSR checkpoint (e.g. net_g_round25_best.pth) or a compressed file')
    parser.add_argument('--out', help='compressed output file')
    parser.add_argument('--half', action='store_true', help='store the surviving values in fp16')
    parser.add_argument('--onnx', help='also (or only) export the dense network to this ONNX file')
    parser.add_argument('--arch-opt', help='option YAML with network_g (default: inferred for MSRResNet)')
    args = parser.parse_args(argv)
    if not args.out and not args.onnx:
        parser.error('give --out (compressed checkpoint) and/or --onnx')
    from dupru_basicsr.utils.cli import run_command
    return run_command('dupru-export', lambda: _run(args), (ExportError, OSError))


def _run(args):
    inputs = [args.checkpoint] + ([args.arch_opt] if args.arch_opt else [])
    if args.out:  # both outputs are checked before either is written
        check_output_path(args.out, '--out', inputs)
    if args.onnx:
        check_output_path(args.onnx, '--onnx', inputs + ([args.out] if args.out else []))
    if args.out:
        dense, small = export_compressed(args.checkpoint, args.out, args.half)
        print(f'{args.checkpoint}: {dense / 1e6:.3f} MB -> {args.out}: {small / 1e6:.3f} MB '
              f'({dense / small:.2f}x smaller{", fp16 values" if args.half else ""})')
    if args.onnx:
        export_onnx(args.checkpoint, args.onnx, args.arch_opt)
        print(f'ONNX: {args.onnx} ({osp.getsize(args.onnx) / 1e6:.3f} MB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
