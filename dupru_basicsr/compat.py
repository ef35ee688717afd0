"""Compatibility shims that let BasicSR 1.4.2 run on current torch/torchvision and on machines without CUDA.

What importing `dupru_basicsr` does (only fixes of what crashes; other BasicSR models save and load as before):

1. torchvision >= 0.17 removed `torchvision.transforms.functional_tensor`; `basicsr.data.degradations` imports
   `rgb_to_grayscale` from it at import time, so `import basicsr` fails. `apply()` registers the private successor
   module (`torchvision.transforms._functional_tensor`) under the old name.
2. `torch.load(weights_only=True)` (torch >= 2.6's default) refuses BasicSR training states (MultiStepRestartLR
   keeps a `collections.Counter`): `apply()` allows that class.
3. `basicsr.train.load_resume_state` calls `torch.cuda.current_device()`, which raises without CUDA:
   `patch_cpu_resume()` replaces it with `load_resume_state_cpu_safe`, the same function that maps the state onto
   the CPU when there is no CUDA (with CUDA it is BasicSR's own). This reaches every caller of
   `basicsr.train.train_pipeline`; a checkout's `python basicsr/train.py` runs its own copy (`__main__`), which
   no import can reach.

What `dupru-train` (and `dupru-test`) add on top, for their own process only (`patch_basicsr()`):

4. its `load_resume_state` below: `--auto_resume` takes the newest *usable* training state;
5. `--launcher pytorch` calls `torch.cuda.set_device` and BaseModel wraps DDP with a CUDA device id; without CUDA
   we use the gloo backend and a CPU DistributedDataParallel instead;
6. BaseModel writes checkpoints and training states with a plain `torch.save` (a kill mid-write leaves a truncated
   file that `--auto_resume` then picks): every model of the run writes them atomically (temp file, fsync, rename)
   instead, and loads networks with `weights_only=True`. DUPruModel does so itself under any loop
   (`utils.checkpoint.AtomicCheckpointMixin`).
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


def load_resume_state_cpu_safe(opt):
    """BasicSR 1.4.2's `basicsr.train.load_resume_state`, except that without CUDA the state is mapped onto the CPU
    (BasicSR's calls `torch.cuda.current_device()`, which raises there). With CUDA it is BasicSR's own function."""
    import os.path as osp

    from basicsr.utils import check_resume, scandir
    if torch.cuda.is_available() and _STOCK_LOAD_RESUME_STATE is not None:
        return _STOCK_LOAD_RESUME_STATE(opt)
    resume_state_path = None
    if opt['auto_resume']:
        state_path = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_path):
            states = list(scandir(state_path, suffix='state', recursive=False, full_path=False))
            if len(states) != 0:
                states = [float(v.split('.state')[0]) for v in states]
                resume_state_path = osp.join(state_path, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    resume_state = torch.load(resume_state_path, map_location='cpu')
    check_resume(opt, resume_state['iter'])
    return resume_state


_STOCK_LOAD_RESUME_STATE = None


def patch_cpu_resume():
    """Import-time fix 3: `basicsr.train.load_resume_state` works without CUDA. Returns True when it is in place.

    Does nothing while `basicsr.models` is still being imported: in a checkout registered with `dupru-register`,
    BasicSR's model scan imports `dupru_basicsr`, and `basicsr.train` cannot be imported before that scan ends
    (the checkout's `python basicsr/train.py` runs its own copy of the function anyway). Leaves alone a function
    that is not BasicSR's (e.g. `dupru-train`'s, set by `patch_basicsr`).
    """
    global _STOCK_LOAD_RESUME_STATE
    models = sys.modules.get('basicsr.models')
    if models is None or not hasattr(models, 'build_model'):
        return False
    import basicsr.train
    current = basicsr.train.load_resume_state
    if getattr(current, '__module__', None) == 'basicsr.train':
        _STOCK_LOAD_RESUME_STATE = current
        basicsr.train.load_resume_state = load_resume_state_cpu_safe
    return True


def patch_basicsr():
    """`dupru-train`'s and `dupru-test`'s patches of BasicSR (4-6 above) for their own process. Safe to call many
    times; imports basicsr."""
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
