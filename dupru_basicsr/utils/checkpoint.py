"""Atomic checkpoint writes and a resume-state finder that skips corrupt files."""
import glob
import os
import os.path as osp
import tempfile
import torch


def atomic_save(obj, path):
    """`torch.save` to a temporary file in the same folder, fsync, then rename over `path`.

    A reader (or a resumed run after a kill) sees either the old complete file or the new complete file, never a
    half-written one.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _state_iter(path):
    try:
        return int(osp.basename(path).split('.state')[0])
    except ValueError:
        return None


def find_resume_state(opt):
    """Newest readable training state of an experiment, with its network checkpoint present and readable.

    Returns (path, state) or (None, None). A corrupt or truncated newest state is reported and the previous one is
    tried, so that `--auto_resume` survives a crash during a save.
    """
    from dupru_basicsr.compat import load_training_state
    state_dir = osp.join(opt['path'].get('experiments_root') or osp.join('experiments', opt['name']),
                         'training_states')
    models_dir = opt['path'].get('models') or osp.join(osp.dirname(state_dir), 'models')
    candidates = [(it, p) for p in glob.glob(osp.join(state_dir, '*.state')) if (it := _state_iter(p)) is not None]
    for it, path in sorted(candidates, reverse=True):
        try:
            state = load_training_state(path, opt.get('num_gpu', 0))
            if state.get('iter') != it:
                raise ValueError(f'it records iteration {state.get("iter")}')
            net_path = osp.join(models_dir, f'net_g_{it}.pth')
            torch.load(net_path, map_location='cpu', weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file means: try the previous one
            print(f'Cannot resume from {path} ({type(e).__name__}: {e}); trying an older training state.', flush=True)
            continue
        return path, state
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
