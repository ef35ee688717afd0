"""The compressed sparse checkpoint format (`dupru-sparse-v1`, written by dupru-export).

An unstructured-sparse network is stored densely by PyTorch (a zero costs 4 bytes like any weight). This format
keeps, for every floating tensor, a bit-packed non-zero mask and the surviving values: all values in one tensor
(fp32, or fp16 with `half`) and all mask bits in another, so that a file has a few hundred bytes of overhead, not one
pickle record per tensor. Unpacking gives ordinary dense state dicts (bit-exact in fp32, including signed zeros)
with the stock keys under `params` / `params_ema`. A SHA-256 of the payload detects truncated or corrupted files.
"""
import hashlib
import math
import numpy as np
import torch

FORMAT = 'dupru-sparse-v1'
NETWORK_KEYS = ('params', 'params_ema')


class CompressedFormatError(ValueError):
    """Data that is not an intact compressed checkpoint; the message names the file and the fix."""


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


def is_compressed(data):
    """True for what `torch.load` returns from a file in this format."""
    return isinstance(data, dict) and data.get('format') == FORMAT


def pack_checkpoint(ckpt, half=False):
    """A BasicSR network checkpoint ({'params': ..., 'params_ema': ..., other entries}) -> the compressed file's
    contents. Keep masks are dropped (the non-zero bits are the masks); other entries are kept as `meta`."""
    payloads = {k: compress_state_dict(ckpt[k], half=half) for k in NETWORK_KEYS if k in ckpt}
    meta = {k: v for k, v in ckpt.items() if k not in NETWORK_KEYS + ('keep_masks', )}
    return {'format': FORMAT, 'half': half, 'payloads': payloads, 'sha256': _digest(payloads), 'meta': meta}


def unpack_checkpoint(data, path):
    """Inverse of `pack_checkpoint`, after checking the format and the checksum: {'params': dense state dict, ...}
    (what BasicSR's load_network reads). `path` only names the file in errors."""
    if not is_compressed(data):
        raise CompressedFormatError(f'{path} is not a {FORMAT} file made by dupru-export.')
    if _digest(data['payloads']) != data['sha256']:
        raise CompressedFormatError(f'{path} is corrupted (checksum mismatch); export it again from the original '
                                    'checkpoint.')
    out = {k: decompress_state_dict(p) for k, p in data['payloads'].items()}
    out.update(data.get('meta') or {})
    return out
