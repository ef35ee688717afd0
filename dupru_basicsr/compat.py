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
   file that `--auto_resume` then picks): we write them atomically (temp file, fsync, rename) instead, and load
   networks with `weights_only=True`.
"""
import collections
import importlib
import sys
import torch

_APPLIED = False
_CPU_RUN = False  # set by the training entry point when the option file asks for num_gpu: 0


def set_cpu_run(cpu_run):
    """Tell `--launcher pytorch` initialisation that this run keeps its tensors on the CPU (gloo even with CUDA)."""
    global _CPU_RUN
    _CPU_RUN = bool(cpu_run)


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
    """Load a BasicSR training state (`*.state`) safely (CRC check, `weights_only=True`) onto the right device."""
    from dupru_basicsr.utils.checkpoint import load_checkpoint
    return load_checkpoint(path, resume_map_location(num_gpu))


def _dist_world():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def load_resume_state(opt):
    """CPU-safe replacement of `basicsr.train.load_resume_state`.

    `--auto_resume` takes the newest *usable* training state (see `utils.checkpoint.find_resume_state`); in a
    distributed run rank 0 chooses it and broadcasts its path, so that every rank resumes from the same iteration.
    An explicit `path.resume_state` that cannot be read (or whose net_g_<iter>.pth cannot) fails with a message
    naming the file.
    """
    from basicsr.utils import check_resume

    from dupru_basicsr.utils.checkpoint import ResumeError, check_resume_pair, find_resume_state
    num_gpu = opt.get('num_gpu', 0)
    resume_state = None
    if opt['auto_resume']:
        rank, world_size = _dist_world()
        path, error = None, None
        if rank == 0:
            try:
                path, resume_state = find_resume_state(opt)
            except ResumeError as e:
                error = str(e)
        if world_size > 1:
            import torch.distributed as dist
            shared = [path, error]
            dist.broadcast_object_list(shared, src=0)
            path, error = shared
            if rank != 0 and path is not None:
                resume_state = load_training_state(path, num_gpu)
        if error is not None:
            raise ResumeError(error)
        if path is not None:
            opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        try:
            resume_state = load_training_state(path, num_gpu)
            if opt['path'].get('models'):
                check_resume_pair(path, resume_state, opt['path']['models'])
        except Exception as e:  # noqa: BLE001 - name the file whatever went wrong
            raise ResumeError(f'path.resume_state: {path} cannot be used ({type(e).__name__}: {e}). Point it at '
                              'another training state, or use --auto_resume to take the newest usable one.') from e
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
    BaseModel.load_network = checkpoint.load_network
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

    BasicSR calls it without the option file's `dist_params`, so `backend` is NCCL unless a caller says otherwise.
    On a machine without CUDA, for a run with `num_gpu: 0` (see `set_cpu_run`), or when NCCL is not built, this
    uses gloo, which is what `torchrun --nproc_per_node 2 -m dupru_basicsr.train --launcher pytorch` needs on CPU.
    """
    import os
    import torch.distributed as dist
    rank = int(os.environ['RANK'])
    cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0 and not _CPU_RUN
    if cuda:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count())
    if not cuda or (backend == 'nccl' and not dist.is_nccl_available()):
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
