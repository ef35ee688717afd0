"""What `dupru-train` adds to BasicSR's training loop, kept apart from the loop itself (`dupru_basicsr.train`):

- one process per experiment folder (`lock_experiment`, a flock the OS releases even on SIGKILL);
- log files that are never overwritten (`open_log_file`);
- exact resume: every epoch draws its random numbers from a seed derived from (manual_seed, rank, epoch)
  (`epoch_seed`);
- a non-finite loss or non-finite weights stop the run naming the iteration and round (`check_finite_loss`,
  `check_finite_weights`);
- which of validation and saving an iteration needs, round ends included (`iteration_end`);
- whether the option file asks for the CPU before BasicSR initialises DDP (`asks_for_cpu`).
"""
import logging
import math
import os.path as osp

from dupru_basicsr.plugin.lock import FolderLock, LockError


def epoch_seed(opt, epoch):
    # Distinct per rank and per epoch, and independent of how many iterations ran before (resume-exact).
    return int(opt['manual_seed']) + int(opt['rank']) + 100003 * (epoch + 1)


def _where(model, it):
    """' (round r/T)' for models with pruning rounds, else ''."""
    rounds = getattr(model, 'rounds', None)
    return f' (round {rounds.round_of(it) + 1}/{rounds.num_rounds})' if rounds is not None else ''


def _last_good(last_saved):
    if last_saved is None:
        return 'No checkpoint was saved yet.'
    return (f'The last checkpoint (iteration {last_saved}: models/net_g_{last_saved}.pth, '
            f'training_states/{last_saved}.state) is intact; lower the learning rate or check the data, then resume '
            'with --auto_resume.')


def check_finite_loss(model, it, last_saved):
    """Raise FloatingPointError when a logged loss of this iteration is NaN or infinite."""
    bad = {k: v for k, v in (getattr(model, 'log_dict', None) or {}).items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f'Non-finite loss {bad} at iteration {it}{_where(model, it)}; stopping before '
                                 f'anything is saved. {_last_good(last_saved)}')


def check_finite_weights(model, it, last_saved, logger=None):
    """Raise FloatingPointError (logged to `logger` first) when a network of the model holds a NaN or infinite
    value. Costs one host sync; the loop calls it only before validating or saving."""
    import torch
    for attr in sorted(vars(model)):
        net = getattr(model, attr)
        if not (attr.startswith('net_') and isinstance(net, torch.nn.Module)):
            continue
        tensors = [(k, v) for k, v in model.get_bare_model(net).state_dict().items() if v.is_floating_point()]
        if not tensors or bool(torch.stack([torch.isfinite(v).all() for _, v in tensors]).all()):
            continue
        name = next(k for k, v in tensors if not bool(torch.isfinite(v).all()))
        message = (f'Non-finite weights in {attr}.{name} at iteration {it}{_where(model, it)}; stopping without '
                   f'validating or saving them. {_last_good(last_saved)}')
        if logger is not None:
            logger.error(message)
        raise FloatingPointError(message)


def lock_experiment(opt):
    """Lock `experiments/<name>` for this run (`plugin.lock`); returns the lock (None on ranks > 0).

    Rank 0 takes the lock and tells the other ranks whether it got it, so that a refused DDP start stops every
    rank with the same message instead of leaving them waiting for rank 0."""
    lock, error = None, None
    if opt['rank'] == 0:
        try:
            lock = FolderLock(opt['path']['experiments_root']).acquire()
        except LockError as e:
            error = str(e)
    if opt['dist'] and opt['world_size'] > 1:
        import torch.distributed as dist
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        raise LockError(error)
    return lock


def open_log_file(folder, name):
    """A FileHandler on a new `train_<name>_<time>.log` in `folder`; never an existing file (a second start within
    the same second gets `..._<n>.log`)."""
    from basicsr.utils import get_time_str
    stem = osp.join(folder, f'train_{name}_{get_time_str()}')
    for n in range(1, 1000):
        path = f'{stem}.log' if n == 1 else f'{stem}_{n}.log'
        try:
            return logging.FileHandler(path, mode='x'), path
        except FileExistsError:
            continue
    raise FileExistsError(f'{stem}.log and 998 numbered variants exist')


def close_handler(logger, handler):
    logger.removeHandler(handler)
    handler.close()


def asks_for_cpu(argv):
    """True when the option file of `argv` (-opt) says num_gpu: 0 (read before BasicSR initialises DDP)."""
    import argparse

    import yaml
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    known, _ = parser.parse_known_args(argv)
    try:
        with open(known.opt) as f:
            return (yaml.safe_load(f) or {}).get('num_gpu') == 0
    except (OSError, TypeError, yaml.YAMLError, AttributeError):
        return False  # parse_options reports the problem


def iteration_end(model, opt, it):
    """(round_end, validate, save) for iteration `it`: BasicSR validates at multiples of val.val_freq and saves at
    multiples of logger.save_checkpoint_freq; a model with rounds (`model.is_round_end(it)`, DUPruModel) is also
    validated and saved at every round end, so every round's ticket is kept and a resume never crosses a round
    boundary twice."""
    round_end = bool(getattr(model, 'is_round_end', lambda it: False)(it))
    validate = opt.get('val') is not None and it % opt['val']['val_freq'] == 0
    save = it % opt['logger']['save_checkpoint_freq'] == 0 or round_end
    return round_end, validate, save
