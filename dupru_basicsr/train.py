"""Training entry point: `python -m dupru_basicsr.train -opt options/train/....yml [--auto_resume] [--launcher ...]`.

It is BasicSR's `basicsr.train.train_pipeline` (same options, same experiment layout, same logs), rooted at the
current directory, with what a long pruning run needs on top:

- one process per experiment folder: `experiments/<name>` is locked (`dupru_basicsr.utils.lock`, a flock the OS
  releases even on SIGKILL) before anything is renamed or written; a second start is refused naming the holder;
- a refused start changes nothing: the option file, the options, the pretrained weights, the resume state and its
  fit to the model are all checked before the folder is archived or created and before the option copy and the log
  file are written; log files are never overwritten (`train_<name>_<time>[_<n>].log`);
- resume is exact: every epoch draws its random numbers from a seed derived from (manual_seed, rank, epoch), and a
  resumed run replays the batches of the interrupted epoch that were already consumed, so an interrupted and
  resumed run ends with the same weights as an uninterrupted one;
- a model may declare round ends (`model.is_round_end(iter)`, DUPruModel does): the pipeline validates and saves
  a checkpoint there, so every round's ticket is kept and resuming never crosses a round boundary twice;
- every checkpoint is written atomically, `--auto_resume` takes the newest *usable* training state and removes
  the temporary files a killed save left behind (`dupru_basicsr.utils.checkpoint`);
- a non-finite loss or non-finite weights stop the run with a FloatingPointError naming the iteration (and round)
  before anything else is saved, so the last good checkpoint stays the newest one.

Test-only hooks, inert unless their environment variable is set:
- `DUPRU_TEST_KILL_AT=<where>:<iter>` SIGKILLs the process at `after_lr:<iter>` (right after the learning-rate
  update of that iteration; at a round's first iteration that is after its prune, rewind and masks file) or
  `after_step:<iter>` (after the optimizer step, before validation and saving); `save:<file name>` kills inside
  the atomic save of that file (see `dupru_basicsr.utils.checkpoint.kill_point`);
- `DUPRU_TEST_PAUSE_AT=after_step:<iter>` makes the process print `paused at after_step:<iter>` and sleep (holding
  its experiment lock) at that point until it is killed, so that tests can start a second process beside it;
- `DUPRU_TEST_DUMP_DIR=<folder>`: at every round end each rank writes `rank<r>_iter<it>.pth` there with its
  masks, thresholds, frozen set and weights, so that tests can compare DDP ranks.
"""
import contextlib
import datetime
import logging
import logging.handlers
import math
import os
import os.path as osp
import sys
import time

import dupru_basicsr  # noqa: F401  (applies the compatibility shims and registers DUPruModel)
from dupru_basicsr.compat import patch_basicsr, set_cpu_run
from dupru_basicsr.options import OptionError, check_options, check_pretrained_network, check_resume_options
from dupru_basicsr.utils.checkpoint import ResumeError, atomic_save, kill_point, remove_stale_temp_files
from dupru_basicsr.utils.cli import check_basicsr_command_line, run_command
from dupru_basicsr.utils.log import reset_basicsr_logger

DUMP_ENV = 'DUPRU_TEST_DUMP_DIR'
PAUSE_ENV = 'DUPRU_TEST_PAUSE_AT'


def _pause_point(where, it):
    """Test-only: sleep until killed if `DUPRU_TEST_PAUSE_AT` is `<where>:<it>`; inert when it is unset."""
    if os.environ.get(PAUSE_ENV) == f'{where}:{it}':
        print(f'paused at {where}:{it}', flush=True)
        while True:
            time.sleep(60)


def _epoch_seed(opt, epoch):
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


def _dump_round_state(model, opt, it):
    """Test-only (`DUPRU_TEST_DUMP_DIR`): this rank's pruning state at the end of a round."""
    folder = os.environ.get(DUMP_ENV)
    pruner = getattr(model, 'pruner', None)
    if not folder or pruner is None:
        return
    atomic_save({
        'iter': it,
        'round': model.rounds.round_of(it) + 1,
        'keep_masks': pruner.mask.state_dict(),
        'thresholds': dict(pruner.last_thresholds),
        'frozen': {k: v.cpu() for k, v in pruner.frozen_masks().items()},
        'params': {k: v.detach().cpu().clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()},
    }, osp.join(folder, f'rank{opt["rank"]}_iter{it}.pth'))


def _close_handler(logger, handler):
    logger.removeHandler(handler)
    handler.close()


def _asks_for_cpu(argv):
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


def train_pipeline(root_path, on_iter=None):
    """Train as BasicSR does; `on_iter(current_iter, total_iters)`, if given, is called after every iteration
    (the demo draws its progress bar with it). The experiment folder is locked for the whole call."""
    with contextlib.ExitStack() as cleanup:
        return _train_pipeline(root_path, on_iter, cleanup)


def lock_experiment(opt):
    """Lock `experiments/<name>` for this run (`dupru_basicsr.utils.lock`); returns the lock (None on ranks > 0).

    Rank 0 takes the lock and tells the other ranks whether it got it, so that a refused DDP start stops every
    rank with the same message instead of leaving them waiting for rank 0."""
    from dupru_basicsr.utils.lock import FolderLock, LockError
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


def check_prefetch_mode(opt):
    """datasets.train.prefetch_mode is one BasicSR knows (and `cuda` has pin_memory), before anything is written."""
    dset = opt['datasets']['train']
    mode = dset.get('prefetch_mode')
    if mode not in (None, 'cpu', 'cuda'):
        raise OptionError(f'datasets.train.prefetch_mode is {mode!r}; use cpu or cuda, or remove the key.')
    if mode == 'cuda' and dset.get('pin_memory') is not True:
        raise OptionError('datasets.train.prefetch_mode is cuda, which needs datasets.train.pin_memory: true.')


def _open_log_file(folder, name):
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


def _train_pipeline(root_path, on_iter, cleanup):
    patch_basicsr()
    check_basicsr_command_line(sys.argv[1:])  # a missing or malformed -opt file, --launcher outside its launcher
    set_cpu_run(_asks_for_cpu(sys.argv[1:]))  # DDP of a CPU run uses gloo even on a CUDA machine
    import torch
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
    from basicsr.models import build_model
    from basicsr.train import create_train_val_dataloader, init_tb_loggers, load_resume_state
    from basicsr.utils import (AvgTimer, MessageLogger, get_env_info, get_root_logger, make_exp_dirs, mkdir_and_rename,
                               set_random_seed)
    from basicsr.utils.options import copy_opt_file, dict2str, parse_options

    opt, args = parse_options(root_path, is_train=True)
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True

    # A refused start changes nothing: every check below (options, lock, resume state, data, model, resume) runs
    # before anything is written into experiments/<name>; log lines wait in memory until the log file exists.
    check_options(opt)
    check_prefetch_mode(opt)
    lock = lock_experiment(opt)
    if lock is not None:
        cleanup.callback(lock.release)

    reset_basicsr_logger()
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO)  # console only, until the checks pass
    pending = logging.handlers.MemoryHandler(capacity=sys.maxsize, flushLevel=logging.CRITICAL + 1)
    if opt['rank'] == 0:
        logger.setLevel(logging.INFO)
        logger.addHandler(pending)
        cleanup.callback(_close_handler, logger, pending)  # a refused start drops the lines it kept

    resume_state = load_resume_state(opt)
    check_resume_options(opt, resume_state)  # a changed pruning setting is refused before any write
    check_pretrained_network(opt)  # the user's weights, or those of the state being resumed
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    if opt['dist']:
        logger.info(f"Distributed: {torch.distributed.get_backend()} backend, world size {opt['world_size']}.")
    if resume_state:
        logger.info(f"Resume state: {opt['path']['resume_state']}")

    train_loader, train_sampler, val_loaders, total_epochs, total_iters = create_train_val_dataloader(opt, logger)
    iters_per_epoch = len(train_loader)

    model = build_model(opt)
    if resume_state:
        try:
            model.resume_training(resume_state)
        except (ValueError, KeyError) as e:  # the saved pruning state does not fit these options
            raise ResumeError(f"{opt['path']['resume_state']} cannot be resumed with these options: {e}") from None
        current_iter = resume_state['iter']
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {current_iter}.")
    else:
        current_iter = 0

    # Every check passed: now write.
    stale = []
    if opt['rank'] == 0 and (opt['auto_resume'] or resume_state):
        # temporary files of saves that a kill interrupted (also before an --auto_resume that found no state
        # archives the folder)
        stale = remove_stale_temp_files(opt['path']['models'], opt['path']['training_states'])
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
    if opt['rank'] == 0:
        copy_opt_file(args.opt, opt['path']['experiments_root'])
        file_handler, _ = _open_log_file(opt['path']['log'], opt['name'])
        file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s: %(message)s'))  # BasicSR's format
        file_handler.setLevel(logging.INFO)
        logger.addHandler(file_handler)
        cleanup.callback(_close_handler, logger, file_handler)
        pending.setTarget(file_handler)
        pending.flush()
        _close_handler(logger, pending)
    tb_logger = init_tb_loggers(opt) if opt['rank'] == 0 else None
    for path in stale:
        logger.info(f'Removed {path}, left by an interrupted save.')
    last_saved = current_iter or None
    # With drop_last every epoch has the same number of batches, so (epoch, batch) follows from the iteration.
    start_epoch, skip_batches = divmod(current_iter, iters_per_epoch)
    total_epochs = max(total_epochs, (total_iters - 1) // iters_per_epoch + 1)

    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    if opt['datasets']['train'].get('prefetch_mode') == 'cuda':  # checked by check_prefetch_mode
        prefetcher = CUDAPrefetcher(train_loader, opt)
    else:
        prefetcher = CPUPrefetcher(train_loader)

    def validate(it):
        if opt.get('val') is None:
            return
        for val_loader in val_loaders:
            model.validation(val_loader, it, tb_logger, opt['val']['save_img'])

    is_round_end = getattr(model, 'is_round_end', lambda it: False)
    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    epoch = start_epoch
    for epoch in range(start_epoch, total_epochs + 1):
        if current_iter >= total_iters:
            break
        set_random_seed(_epoch_seed(opt, epoch))
        train_sampler.set_epoch(epoch)
        prefetcher.reset()
        train_data = prefetcher.next()
        if epoch == start_epoch and skip_batches:
            logger.info(f'Replaying {skip_batches} already-consumed batches of epoch {epoch} for an exact resume.')
            for _ in range(skip_batches):
                train_data = prefetcher.next()

        while train_data is not None and current_iter < total_iters:
            data_timer.record()
            current_iter += 1
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            kill_point('after_lr', current_iter)
            model.feed_data(train_data)
            try:
                model.optimize_parameters(current_iter)
                check_finite_loss(model, current_iter, last_saved)
            except FloatingPointError as e:
                logger.error(str(e))
                raise
            kill_point('after_step', current_iter)
            _pause_point('after_step', current_iter)
            if on_iter is not None:
                on_iter(current_iter, total_iters)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter}
                log_vars.update({'lrs': model.get_current_learning_rate()})
                log_vars.update({'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()})
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)

            round_end = is_round_end(current_iter)
            val_now = opt.get('val') is not None and current_iter % opt['val']['val_freq'] == 0
            save_now = current_iter % opt['logger']['save_checkpoint_freq'] == 0 or round_end
            if round_end or val_now or save_now:
                check_finite_weights(model, current_iter, last_saved, logger)
            if round_end:
                _dump_round_state(model, opt, current_iter)
            if round_end or val_now:
                validate(current_iter)
            if save_now:
                logger.info('Saving models and training states.')
                model.save(epoch, current_iter)
                last_saved = current_iter

            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next()

    check_finite_weights(model, current_iter, last_saved, logger)
    consumed_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    logger.info(f'End of training. Time consumed: {consumed_time}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if not is_round_end(total_iters):  # the last round's end was validated already
        validate(current_iter)
    if tb_logger:
        tb_logger.close()
    return model


def main(argv=None):
    """Console script `dupru-train`; `argv` (without the program name) lets tests call it in-process.

    From the command line (`argv` None) a refused start (bad options, a locked experiment, nothing usable to resume)
    or a non-finite loss prints its message without a traceback and exits with status 2 or 1; in-process callers
    get the exception.
    """
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
        return train_pipeline(os.getcwd())

    def run():
        try:
            train_pipeline(os.getcwd())
        except FloatingPointError as e:
            print(f'dupru-train: error: {e}', file=sys.stderr, flush=True)
            return 1

    return run_command('dupru-train', run)  # the console script passes this to sys.exit


if __name__ == '__main__':
    sys.exit(main())
