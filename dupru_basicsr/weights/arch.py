"""MSRResNet's keyword arguments read back from the keys and shapes of a state dict (no option file needed)."""
import math
import re

MSRRESNET_KEYS = ('conv_first.weight', 'upconv1.weight', 'conv_hr.weight', 'conv_last.weight')
_BODY_KEY_RE = re.compile(r'^body\.(\d+)\.conv[12]\.weight$')


class ArchError(ValueError):
    """A state dict that is not a BasicSR MSRResNet (or whose shape cannot be read); the message names the file."""


def infer_msrresnet_arch(state_dict, path):
    """MSRResNet keyword arguments from the keys and shapes of a state dict; ArchError if it is not MSRResNet.

    num_feat and the in/out channels come from conv_first / conv_last, num_block from the body.<i> indices, and the
    scale from the upsampler: upconv2 exists only at x4, otherwise upconv1 has num_feat * s^2 outputs (s = 2, 3).
    """
    missing = [k for k in MSRRESNET_KEYS if k not in state_dict]
    blocks = {int(m.group(1)) for k in state_dict if (m := _BODY_KEY_RE.match(k))}
    if missing or not blocks:
        shown = ', '.join(list(state_dict)[:6])
        raise ArchError(f'{path} is not an MSRResNet checkpoint (missing {", ".join(missing) or "body.* blocks"}; '
                        f'its first keys are: {shown}).')
    first = state_dict['conv_first.weight']
    num_feat = int(first.shape[0])
    if 'upconv2.weight' in state_dict:
        upscale = 4
    else:
        ratio = int(state_dict['upconv1.weight'].shape[0]) // num_feat
        upscale = int(round(math.sqrt(ratio)))
        if upscale not in (2, 3) or upscale * upscale * num_feat != state_dict['upconv1.weight'].shape[0]:
            raise ArchError(f'{path}: cannot infer the scale from upconv1 with '
                            f'{state_dict["upconv1.weight"].shape[0]} outputs and num_feat {num_feat}.')
    return {'num_in_ch': int(first.shape[1]), 'num_out_ch': int(state_dict['conv_last.weight'].shape[0]),
            'num_feat': num_feat, 'num_block': max(blocks) + 1, 'upscale': upscale}


def describe_arch(arch):
    """`num_feat=64, num_block=16, ...`: keyword arguments as reports and error messages show them."""
    return ', '.join(f'{k}={v}' for k, v in arch.items())
