"""Resume-state finder that skips corrupt files, and BaseModel's checkpoint methods made atomic.

The file I/O itself (atomic writes, the CRC-checked load) lives in `dupru_basicsr.weights.io`.
"""
import glob
import os.path as osp

from dupru_basicsr.weights.io import (KILL_ENV, atomic_save, kill_point, load_checkpoint,  # noqa: F401
                                      remove_stale_temp_files, verify_crc)


class ResumeError(RuntimeError):
    """No usable training state to resume from (all candidates are unreadable or inconsistent)."""


def _state_iter(path):
    try:
        return int(osp.basename(path).split('.state')[0])
    except ValueError:
        return None


def check_resume_pair(state_path, state, models_dir):
    """Raise ValueError unless `state` is a training state whose network checkpoint next to it loads."""
    it = _state_iter(state_path)
    if not isinstance(state, dict) or 'iter' not in state:
        raise ValueError('it is not a BasicSR training state (no "iter")')
    if it is not None and state['iter'] != it:
        raise ValueError(f'it records iteration {state["iter"]}')
    net_path = osp.join(models_dir, f'net_g_{state["iter"]}.pth')
    if not osp.isfile(net_path):
        raise ValueError(f'its network checkpoint {net_path} is missing')
    net = load_checkpoint(net_path)
    if not isinstance(net, dict) or 'params' not in net:
        raise ValueError(f'its network checkpoint {net_path} has no "params"')


def find_resume_state(opt):
    """Newest readable training state of an experiment, with its network checkpoint present and readable.

    Returns (path, state), or (None, None) when there is no training state at all. A corrupt or truncated newest
    state (or net_g_<iter>.pth) is reported and the previous one is tried, so that `--auto_resume` survives a crash
    during a save. When states exist but none is usable this raises ResumeError rather than starting afresh.
    """
    from dupru_basicsr.compat import load_training_state
    state_dir = opt['path'].get('training_states') or osp.join(
        opt['path'].get('experiments_root') or osp.join('experiments', opt['name']), 'training_states')
    models_dir = opt['path'].get('models') or osp.join(osp.dirname(state_dir), 'models')
    candidates = [(it, p) for p in glob.glob(osp.join(glob.escape(state_dir), '*.state'))
                  if (it := _state_iter(p)) is not None]
    skipped = []
    for it, path in sorted(candidates, reverse=True):
        try:
            state = load_training_state(path, opt.get('num_gpu', 0))
            check_resume_pair(path, state, models_dir)
        except Exception as e:  # noqa: BLE001 - any unreadable file means: try the previous one
            reason = f'{path}: {e}'
            skipped.append(reason)
            print(f'Cannot resume from {reason}. Trying an older training state.', flush=True)
            continue
        return path, state
    if skipped:
        raise ResumeError(f'--auto_resume found {len(skipped)} training state(s) in {state_dir} but none is usable:\n  '
                          + '\n  '.join(skipped) + '\nRestore the files, pass -opt with path.resume_state of a good '
                          'state, or move the experiment folder away to start afresh.')
    return None, None


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
        save_dict[key_] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state_dict.items()}
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
    load_net = {(k[7:] if k.startswith('module.') else k): v for k, v in load_net.items()}
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
