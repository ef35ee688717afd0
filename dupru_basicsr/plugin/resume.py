"""Choosing the training state a run resumes from: `--auto_resume` takes the newest *usable* one (corrupt or
truncated files are skipped), an explicit `path.resume_state` must load with its network checkpoint, and a DDP run
resumes every rank from the state rank 0 chose. `dupru-train` installs `load_resume_state` in place of BasicSR's
(`plugin.shims.patch_basicsr`).

The file I/O itself (atomic writes, the CRC-checked load) lives in `dupru_basicsr.weights.io`.
"""
import glob
import os.path as osp
from dupru_basicsr.errors import ResumeError
from dupru_basicsr.weights.io import load_checkpoint


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
    state_dir = opt['path'].get('training_states') or osp.join(
        opt['path'].get('experiments_root') or osp.join('experiments', opt['name']), 'training_states')
    models_dir = opt['path'].get('models') or osp.join(osp.dirname(state_dir), 'models')
    candidates = [(it, p) for p in glob.glob(osp.join(glob.escape(state_dir), '*.state'))
                  if (it := _state_iter(p)) is not None]
    skipped = []
    for it, path in sorted(candidates, reverse=True):
        try:
            state = load_training_state(path)
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


def load_training_state(path):
    """Load a BasicSR training state (`*.state`) safely (CRC check, `weights_only=True`) onto the CPU, whatever
    the run's device: `Optimizer.load_state_dict` moves the optimizer's state to its parameters' device but keeps
    Adam's `step` where it was loaded (a CUDA `step` costs the non-fused Adam a host sync per parameter per step),
    and the pruner moves its masks and rewind state itself."""
    return load_checkpoint(path, 'cpu')


def _dist_world():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def load_resume_state(opt):
    """CPU-safe replacement of `basicsr.train.load_resume_state`.

    `--auto_resume` takes the newest *usable* training state (see `find_resume_state`); in a
    distributed run rank 0 chooses it and broadcasts its path, so that every rank resumes from the same iteration.
    An explicit `path.resume_state` that cannot be read (or whose net_g_<iter>.pth cannot) fails with a message
    naming the file.
    """
    from basicsr.utils import check_resume

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
                resume_state = load_training_state(path)
        if error is not None:
            raise ResumeError(error)
        if path is not None:
            opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        try:
            resume_state = load_training_state(path)
            if opt['path'].get('models'):
                check_resume_pair(path, resume_state, opt['path']['models'])
        except Exception as e:  # noqa: BLE001 - name the file whatever went wrong
            raise ResumeError(f'path.resume_state: {path} cannot be used ({type(e).__name__}: {e}). Point it at '
                              'another training state, or use --auto_resume to take the newest usable one.') from e
    if resume_state is not None:
        check_resume(opt, resume_state['iter'])
    return resume_state


def optimizer_steps_on_cpu(resume_state):
    """Give the optimizer states of a training state CPU `step` tensors, in place, as `load_training_state` (which
    loads onto the CPU) does: a checkout's own basicsr/train.py loads the state onto the GPU, and
    Optimizer.load_state_dict keeps Adam's `step` where it was loaded (a host sync per parameter per step for the
    non-fused Adam). Fused/capturable optimizers move them back themselves."""
    import torch
    for optimizer_state in resume_state.get('optimizers') or []:
        for param_state in optimizer_state.get('state', {}).values():
            if torch.is_tensor(param_state.get('step')):
                param_state['step'] = param_state['step'].cpu()


def recorded_pruning_config(pruning):
    """The pruning settings a training state's `pruning` entry records (plugin.pruning_options.RESUME_KEYS): its
    `config`, or for states written before it existed, what its pruner and round schedule keep (method, targets,
    rate, schedule, eps, scope; a late-rewinding point). The one reader of both layouts (resume check, report)."""
    if 'config' in pruning:
        # granularity came later: a state without it pruned single weights
        return dict({'granularity': 'element'}, **pruning['config'])
    pruner, rounds = pruning.get('pruner') or {}, pruning.get('rounds') or {}
    old = {'method': pruner.get('method'), 'targets': pruner.get('targets'), 'rate': rounds.get('rate'),
           'round_lengths': rounds.get('lengths'), 'eps': pruner.get('eps'), 'scope': pruner.get('scope')}
    if rounds.get('rewind_iter') is not None:
        old['rewind'] = f'iter_{rounds["rewind_iter"]}'
    old = {k: v for k, v in old.items() if v is not None}
    old['granularity'] = 'element'  # states without a config were written before block granularity existed
    for k in ('rate', 'eps'):
        if k in old:
            old[k] = float(old[k])
    if 'round_lengths' in old:
        old['round_lengths'] = [int(n) for n in old['round_lengths']]
    if 'targets' in old:
        old['targets'] = [str(t) for t in old['targets']]
    return old
