"""Compatibility shims that let BasicSR 1.4.2 run on current torch/torchvision and on machines without CUDA.

What importing `dupru_basicsr` does (only fixes of what crashes; other BasicSR models save and load as before):

1. torchvision >= 0.17 removed `torchvision.transforms.functional_tensor`; `basicsr.data.degradations` imports
   `rgb_to_grayscale` from it at import time, so `import basicsr` fails. `apply()` registers the private successor
   module (`torchvision.transforms._functional_tensor`) under the old name.
2. `torch.load(weights_only=True)` (torch >= 2.6's default) refuses BasicSR training states (MultiStepRestartLR
   keeps a `collections.Counter`): `apply()` allows that class.
3. `basicsr.train.load_resume_state` calls `torch.cuda.current_device()`, which raises without CUDA:
   `patch_cpu_resume()` replaces it with `load_resume_state_cpu_safe`, the same function that loads the state onto
   the CPU (with CUDA too: see its docstring). This reaches every caller of
   `basicsr.train.train_pipeline`; a checkout's `python basicsr/train.py` runs its own copy (`__main__`), which
   no import can reach.

What `dupru-train` (and `dupru-test`) add on top, for their own process only (`patch_basicsr()`):

4. its `load_resume_state` (`plugin.resume`): `--auto_resume` takes the newest *usable* training state;
5. `--launcher pytorch` calls `torch.cuda.set_device` and BaseModel wraps DDP with a CUDA device id; without CUDA
   we use the gloo backend and a CPU DistributedDataParallel instead;
6. `--force_yml` values go through `eval()` in BasicSR (`_postprocess_yml_value`, for lists): they are read as YAML
   instead (`plugin.option_base.parse_force_value`), and the keys, which BasicSR pastes into Python code, are checked
   to be plain words before BasicSR sees them (`utils.cli.apply_force_yml`);
7. BaseModel writes checkpoints and training states with a plain `torch.save` (a kill mid-write leaves a truncated
   file that `--auto_resume` then picks): every model of the run writes them atomically (temp file, fsync, rename)
   instead, and loads networks with `weights_only=True`. DUPruModel does so itself under any loop
   (`plugin.checkpointing.AtomicCheckpointMixin`).
"""
import collections
import importlib
import sys
import torch

from dupru_basicsr.weights.io import load_checkpoint

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


def load_resume_state_cpu_safe(opt):
    """BasicSR 1.4.2's `basicsr.train.load_resume_state`, except that the state is loaded onto the CPU (BasicSR's
    calls `torch.cuda.current_device()`, which raises without CUDA, and with CUDA puts Adam's `step` on the GPU,
    where the non-fused Adam reads it back with a host sync per parameter per step; `Optimizer.load_state_dict`
    moves the rest to the parameters' device)."""
    import os.path as osp

    from basicsr.utils import check_resume, scandir
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
    resume_state = load_checkpoint(resume_state_path)
    check_resume(opt, resume_state['iter'])
    return resume_state


def patch_cpu_resume():
    """Import-time fix 3: `basicsr.train.load_resume_state` loads onto the CPU. Returns True when it is in place.

    Does nothing while `basicsr.models` is still being imported: in a checkout registered with `dupru-register`,
    BasicSR's model scan imports `dupru_basicsr`, and `basicsr.train` cannot be imported before that scan ends
    (the checkout's `python basicsr/train.py` runs its own copy of the function anyway). Leaves alone a function
    that is not BasicSR's (e.g. `dupru-train`'s, set by `patch_basicsr`).
    """
    models = sys.modules.get('basicsr.models')
    if models is None or not hasattr(models, 'build_model'):
        return False
    import basicsr.train
    current = basicsr.train.load_resume_state
    if getattr(current, '__module__', None) == 'basicsr.train':
        basicsr.train.load_resume_state = load_resume_state_cpu_safe
    return True


def patch_basicsr():
    """`dupru-train`'s and `dupru-test`'s patches of BasicSR (4-7 above) for their own process. Safe to call many
    times; imports basicsr."""
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel

    from dupru_basicsr.plugin import checkpointing
    from dupru_basicsr.plugin.option_base import parse_force_value
    from dupru_basicsr.plugin.resume import load_resume_state
    basicsr.train.load_resume_state = load_resume_state
    # --force_yml values as YAML, never eval() (the command line checks the keys and values first)
    basicsr.utils.options._postprocess_yml_value = lambda value: parse_force_value(value, value)
    basicsr.utils.dist_util._init_dist_pytorch = _init_dist_pytorch_cpu_aware
    BaseModel.model_to_device = _model_to_device_cpu_aware
    BaseModel.save_network = checkpointing.save_network
    BaseModel.load_network = checkpointing.load_network
    BaseModel.training_state = checkpointing.training_state
    BaseModel.save_training_state = checkpointing.save_training_state


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
