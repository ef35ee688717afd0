"""Compatibility shims that let BasicSR 1.4.2 run on current torch/torchvision and on machines without CUDA.

`apply()` runs when `dupru_basicsr` is imported, before anything imports basicsr. Each shim is idempotent and only
acts when the problem it fixes is present, so on an old stack (torchvision < 0.17, CUDA machine) it does nothing.

1. torchvision >= 0.17 removed `torchvision.transforms.functional_tensor`; `basicsr.data.degradations` imports
   `rgb_to_grayscale` from it at import time, so `import basicsr` fails. We register the private successor module
   (`torchvision.transforms._functional_tensor`) under the old name.
2. `basicsr.train.load_resume_state` maps the resume state onto `torch.cuda.current_device()`, which raises without
   CUDA, and relies on `torch.load`'s old unpickling default. We replace it with `load_resume_state` below: maps to
   the device the run uses and loads with `weights_only=True` (allowing the `collections.Counter` that BasicSR's
   MultiStepRestartLR keeps in its state).
3. `--launcher pytorch` calls `torch.cuda.set_device` and BaseModel wraps DDP with a CUDA device id; without CUDA
   we use the gloo backend and a CPU DistributedDataParallel instead.
4. BaseModel writes checkpoints and training states with a plain `torch.save` (a kill mid-write leaves a truncated
   file that `--auto_resume` then picks): we write them atomically (temp file, fsync, rename) instead.
"""
import collections
import importlib
import sys
import torch

_APPLIED = False


def shim_functional_tensor():
    """Make `torchvision.transforms.functional_tensor` importable again. Returns True when the shim was needed."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return False
    try:
        importlib.import_module(name)
        return False
    except ImportError:
        pass
    module = importlib.import_module('torchvision.transforms._functional_tensor')
    sys.modules[name] = module
    import torchvision.transforms
    torchvision.transforms.functional_tensor = module
    return True


def allow_training_state_globals():
    """Let `torch.load(weights_only=True)` read BasicSR training states (MultiStepRestartLR keeps a Counter)."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals([collections.Counter])


def resume_map_location(num_gpu):
    """Where to put tensors of a resume state: the current CUDA device when the run uses GPUs, else the CPU."""
    if num_gpu and torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        return lambda storage, loc: storage.cuda(device_id)
    return 'cpu'


def load_training_state(path, num_gpu=0):
    """Load a BasicSR training state (`*.state`) safely and onto the right device."""
    return torch.load(path, map_location=resume_map_location(num_gpu), weights_only=True)


def load_resume_state(opt):
    """CPU-safe replacement of `basicsr.train.load_resume_state` (same behaviour otherwise)."""
    from basicsr.utils import check_resume

    from dupru_basicsr.utils.checkpoint import find_resume_state
    resume_state_path = None
    if opt['auto_resume']:
        resume_state_path, resume_state = find_resume_state(opt)
        if resume_state_path is not None:
            opt['path']['resume_state'] = resume_state_path
    else:
        resume_state_path = opt['path'].get('resume_state')
        resume_state = load_training_state(resume_state_path, opt.get('num_gpu', 0)) if resume_state_path else None
    if resume_state is not None:
        check_resume(opt, resume_state['iter'])
    return resume_state


def patch_basicsr():
    """Patch BasicSR functions that assume CUDA. Safe to call many times; imports basicsr."""
    import basicsr.train
    import basicsr.utils.dist_util
    from basicsr.models.base_model import BaseModel
    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.dist_util._init_dist_pytorch = _init_dist_pytorch_cpu_aware
    BaseModel.model_to_device = _model_to_device_cpu_aware
    from dupru_basicsr.utils import checkpoint
    BaseModel.save_network = checkpoint.save_network
    BaseModel.training_state = checkpoint.training_state
    BaseModel.save_training_state = checkpoint.save_training_state


def apply():
    """Apply the import-time shims (no basicsr import here, so this is cheap and cannot recurse)."""
    global _APPLIED
    if _APPLIED:
        return
    shim_functional_tensor()
    allow_training_state_globals()
    _APPLIED = True


def _init_dist_pytorch_cpu_aware(backend='nccl', **kwargs):
    """`basicsr.utils.dist_util._init_dist_pytorch` without its unconditional `torch.cuda.set_device`.

    On a machine without CUDA (or when the requested backend is not built, e.g. NCCL on CPU-only torch) this uses
    gloo, which is what `torchrun --nproc_per_node 2 -m dupru_basicsr.train --launcher pytorch` needs on CPU.
    """
    import os
    import torch.distributed as dist
    rank = int(os.environ['RANK'])
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count())
    else:
        backend = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, **kwargs)


def _model_to_device_cpu_aware(self, net):
    """`BaseModel.model_to_device` that does not ask CUDA for a device id when the run is on the CPU."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net
