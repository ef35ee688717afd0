"""MATLAB-compatible bicubic resizing of uint8 images: the one resize behind the LR images (dupru-prepare) and the
bicubic baseline of the report (dupru-compare).

Computed with BasicSR's port of MATLAB's `imresize` (antialiasing on) in float64, as MATLAB computes in double, and
converted back to uint8 by rounding half away from zero, as MATLAB's `im2uint8` / `uint8()` do (the benchmark LR
images were made that way). `np.round` would round halves to even (2.5 -> 2), which MATLAB never does.
"""
import numpy as np
from basicsr.utils.matlab_functions import imresize


def float_to_uint8(img):
    """[0, 1] floats -> uint8 with MATLAB's rounding: clip to [0, 255], then half away from zero (>= 0: floor + .5)."""
    return np.floor(np.clip(img * 255., 0, 255) + 0.5).astype(np.uint8)


def bicubic_resize(img, scale):
    """MATLAB `imresize(img, scale, 'bicubic')` on a uint8 HxW(xC) image; `scale` < 1 downscales (1 / 4 for x4 LR).
    Each channel is filtered on its own, so BGR in -> BGR out."""
    return float_to_uint8(imresize(img.astype(np.float64) / 255., scale))
