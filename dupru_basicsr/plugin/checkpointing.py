"""BaseModel's checkpoint methods made atomic (temp file, fsync, rename) and loading with `weights_only=True`.

`AtomicCheckpointMixin` gives them to one model class (DUPruModel); `dupru-train` also installs them on BaseModel for
every model of its own process (`plugin.shims.patch_basicsr`).
"""
import os.path as osp

from dupru_basicsr.weights.io import atomic_save, load_checkpoint, strip_module_prefix


def save_network(self, net, net_label, current_iter, param_key='params'):
    """Atomic version of `BaseModel.save_network` (same file name and content; rank 0 only)."""
    from basicsr.utils.dist_util import get_dist_info
    if get_dist_info()[0] != 0:
        return
    label = 'latest' if current_iter == -1 else current_iter
    save_path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    assert len(nets) == len(keys), 'The lengths of net and param_key should be the same.'
    save_dict = {}
    for net_, key_ in zip(nets, keys):
        state_dict = self.get_bare_model(net_).state_dict()
        save_dict[key_] = {k: v.cpu() for k, v in strip_module_prefix(state_dict).items()}
    atomic_save(save_dict, save_path)


def load_network(self, net, load_path, strict=True, param_key='params'):
    """`BaseModel.load_network` with `weights_only=True` and a clear error for an unreadable file."""
    from basicsr.utils import get_root_logger
    logger = get_root_logger()
    net = self.get_bare_model(net)
    load_net = load_checkpoint(load_path)
    if param_key is not None:
        if param_key not in load_net and 'params' in load_net:
            param_key = 'params'
            logger.info('Loading: params_ema does not exist, use params.')
        load_net = load_net[param_key]
    logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    load_net = strip_module_prefix(load_net)
    self._print_different_keys_loading(net, load_net, strict)
    net.load_state_dict(load_net, strict=strict)


def training_state(self, epoch, current_iter):
    """The dict BasicSR saves as `{iter}.state`: epoch, iter, optimizer and scheduler states."""
    return {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers]
    }


def save_training_state(self, epoch, current_iter):
    """Atomic version of `BaseModel.save_training_state`; the content comes from `self.training_state` so that
    models can add to it (DUPruModel adds the pruning state)."""
    from basicsr.utils.dist_util import get_dist_info
    if current_iter == -1 or get_dist_info()[0] != 0:
        return
    save_path = osp.join(self.opt['path']['training_states'], f'{current_iter}.state')
    atomic_save(self.training_state(epoch, current_iter), save_path)


class AtomicCheckpointMixin:
    """The checkpoint methods above as methods of a BasicSR model: `class M(AtomicCheckpointMixin, SRModel)`.

    A model that inherits them saves atomically and loads with `weights_only=True` under any training loop
    (BasicSR's own `train_pipeline` included), and extends `training_state` to put its own state into
    `training_states/<iter>.state`, without patching BaseModel for the other models of the process.
    """
    save_network = save_network
    load_network = load_network
    training_state = training_state
    save_training_state = save_training_state
