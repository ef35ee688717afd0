"""Device facts the commands share (pure PyTorch): the device a `--device` flag names, waiting for a device, and the
switch to deterministic kernels.

CUDA training is not bit-reproducible by default: BasicSR sets `cudnn.benchmark = True` (the fastest convolution
algorithm is chosen per shape by timing, and may differ between runs), cuDNN's backward kernels may accumulate in a
different order from run to run, and cuDNN convolutions use TF32 on Ampere and newer GPUs
(`torch.backends.cudnn.allow_tf32` is True by default). `use_deterministic_algorithms()` turns all of that off (the
`deterministic: true` option); runs get slower.
"""
import os
import torch


NO_CUDA = ('--device {device}: no CUDA device is visible here (torch {torch}, {build}); use --device cpu, or leave '
           '--device out to use CUDA where present.')


def check_device(device, error=ValueError, no_cuda=NO_CUDA):
    """The device a `--device` value names, as its string ('cpu', 'cuda', 'cuda:1'; None: 'cuda' when CUDA is present,
    else 'cpu'). A CUDA device where CUDA is absent raises `error` (before the command writes anything) with the
    message `no_cuda`, formatted with `device`, `torch` (the version) and `build` (the CUDA torch was built for)."""
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        build = f'built for CUDA {torch.version.cuda}' if torch.version.cuda else 'a CPU-only build'
        raise error(no_cuda.format(device=device, torch=torch.__version__, build=build))
    return str(device)


def synchronize(device):
    """Wait for the work queued on `device` (a CUDA device: that device, not the current one); a no-op elsewhere."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def use_deterministic_algorithms():
    """Deterministic kernels only (an op without one raises), no cuDNN autotuning, no TF32: the same inputs give the
    same bits on the same machine and software. Process-wide, like the settings it changes."""
    # cuBLAS needs a fixed workspace for reproducible results; read when cuBLAS starts, so set it before any matmul
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def determinism_settings():
    """The process's current settings that decide reproducibility (for logs and tests)."""
    return {
        'deterministic_algorithms': torch.are_deterministic_algorithms_enabled(),
        'cudnn_benchmark': torch.backends.cudnn.benchmark,
        'cudnn_deterministic': torch.backends.cudnn.deterministic,
        'cudnn_allow_tf32': torch.backends.cudnn.allow_tf32,
        'matmul_allow_tf32': torch.backends.cuda.matmul.allow_tf32,
    }
