"""Training entry point: `python -m dupru_basicsr.train -opt options/train/....yml [--auto_resume] [--launcher ...]`.

It is BasicSR's `basicsr.train.train_pipeline` (same options, same experiment layout, same logs), rooted at the
current directory, with what a long pruning run needs on top:

- one process per experiment folder: `experiments/<name>` is locked (`plugin.lock`, a flock the OS
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
  the temporary files a killed save left behind (`plugin.resume`, `weights.io`);
- `deterministic: true` (a top-level option) asks for deterministic kernels, no cuDNN autotuning and no TF32, so
  that CUDA runs repeat bit for bit (`dupru_basicsr.utils.devices`); without it CUDA runs follow BasicSR
  (`cudnn.benchmark = True`);
- a non-finite loss or non-finite weights stop the run with a FloatingPointError naming the iteration (and round)
  before anything else is saved, so the last good checkpoint stays the newest one.

The loop below is BasicSR's, step by step, cut into named steps (`_parse_and_check`, `_hold_log`, `_check_resume`,
`_build`, `_open_logs`, `_train` with `_iteration`, `_finish`); the rules it adds at each iteration live in
`dupru_basicsr.plugin.loop`, the lock in `plugin.lock`, the log file in `plugin.run_log` (and the checks in
`plugin.options`, `plugin.resume`). `dupru_basicsr.hooks` is called at named points (after_lr, after_step, round_end)
so that tests can stop or inspect a run there; nothing listens by default.
"""
import contextlib
import dataclasses
import datetime
import io
import logging
import os
import os.path as osp
import sys
import time

import dupru_basicsr  # noqa: F401  (applies the compatibility shims and registers DUPruModel)
from dupru_basicsr.hooks import hooks
from dupru_basicsr.plugin.datasets import check_prefetch_mode
from dupru_basicsr.plugin.lock import lock_experiment
from dupru_basicsr.plugin.log import reset_basicsr_logger
from dupru_basicsr.plugin.loop import check_finite_loss, check_finite_weights, epoch_seed, iteration_end
from dupru_basicsr.plugin.options import check_options, check_pretrained_network
from dupru_basicsr.plugin.pruning_options import check_resume_options
from dupru_basicsr.plugin.resume import ResumeError
from dupru_basicsr.plugin.run_log import close_handler, hold_lines, open_log_file, write_held_lines
from dupru_basicsr.plugin.shims import patch_basicsr, set_cpu_run
from dupru_basicsr.utils.cli import asks_for_cpu, check_basicsr_command_line, run_command
from dupru_basicsr.utils.devices import use_deterministic_algorithms
from dupru_basicsr.weights.io import remove_stale_temp_files


def train_pipeline(root_path, on_iter=None):
    """Train as BasicSR does; `on_iter(current_iter, total_iters)`, if given, is called after every iteration
    (the demo draws its progress bar with it). The experiment folder is locked for the whole call."""
    with contextlib.ExitStack() as cleanup:
        return _train_pipeline(root_path, on_iter, cleanup)


@dataclasses.dataclass
class _Run:
    """What the steps of one training run share, once the data and the model are built."""
    opt: dict
    logger: logging.Logger
    model: object
    train_loader: object
    train_sampler: object
    val_loaders: list
    total_epochs: int
    total_iters: int
    current_iter: int
    last_saved: object = None  # the iteration of the newest checkpoint, None before the first
    on_iter: object = None
    tb_logger: object = None
    start_time: float = 0.0  # when the loop started


def _train_pipeline(root_path, on_iter, cleanup):
    # A refused start changes nothing: every check (options, lock, resume state, data, model, resume) runs before
    # anything is written into experiments/<name>; log lines wait in memory until the log file exists.
    opt, args, held_output = _parse_and_check(root_path)
    lock = lock_experiment(opt)
    if lock is not None:
        cleanup.callback(lock.release)
    logger, pending = _hold_log(opt, cleanup)
    resume_state = _check_resume(opt, logger, held_output)
    run = _build(opt, logger, resume_state, on_iter)
    # Every check passed: now write.
    run.tb_logger = _open_logs(opt, args, logger, pending, resume_state, cleanup)
    _train(run)
    _finish(run)
    return run.model


def _parse_and_check(root_path):
    """BasicSR's options of this command line, checked; returns (opt, args, BasicSR's prints, held back)."""
    patch_basicsr()
    check_basicsr_command_line(sys.argv[1:])  # a missing or malformed -opt file, --launcher outside its launcher
    set_cpu_run(asks_for_cpu(sys.argv[1:]))  # DDP of a CPU run uses gloo even on a CUDA machine
    import torch
    from basicsr.utils.options import parse_options

    held_output = io.StringIO()  # BasicSR's prints ("Disable distributed.", "Set ... to ..."): after the checks
    try:
        with contextlib.redirect_stdout(held_output):
            opt, args = parse_options(root_path, is_train=True)
    except SystemExit:  # argparse: --help (its text is in held_output) or a usage error (already on stderr)
        print(held_output.getvalue(), end='', flush=True)
        raise
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True  # as BasicSR; `deterministic: true` turns it off (checked below)
    check_options(opt)
    check_prefetch_mode(opt)
    if opt.get('deterministic'):
        use_deterministic_algorithms()
    return opt, args, held_output


def _hold_log(opt, cleanup):
    """BasicSR's logger, on the console only; on rank 0 its lines are also kept for the log file (dropped when the
    start is refused). Returns (logger, the handler keeping them)."""
    from basicsr.utils import get_root_logger
    reset_basicsr_logger()
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO)  # console only, until the checks pass
    pending = None
    if opt['rank'] == 0:
        logger.setLevel(logging.INFO)
        pending = hold_lines(logger)
        cleanup.callback(close_handler, logger, pending)  # a refused start drops the lines it kept
    return logger, pending


def _check_resume(opt, logger, held_output):
    """The training state to resume from (None for a fresh start), checked against the options and the weights;
    then BasicSR's held prints and the start's log lines. Returns the state."""
    import torch
    from basicsr.train import load_resume_state
    from basicsr.utils import get_env_info
    from basicsr.utils.options import dict2str
    with contextlib.redirect_stdout(held_output):
        resume_state = load_resume_state(opt)
    check_resume_options(opt, resume_state)  # a changed pruning setting is refused before any write
    check_pretrained_network(opt)  # the user's weights, or those of the state being resumed
    print(held_output.getvalue(), end='', flush=True)  # a refused start printed nothing but its error
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    if opt['dist']:
        logger.info(f"Distributed: {torch.distributed.get_backend()} backend, world size {opt['world_size']}.")
    if resume_state:
        logger.info(f"Resume state: {opt['path']['resume_state']}")
    return resume_state


def _build(opt, logger, resume_state, on_iter):
    """The data loaders and the model, the model resumed from `resume_state` (ResumeError when it does not fit)."""
    from basicsr.models import build_model
    from basicsr.train import create_train_val_dataloader
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = create_train_val_dataloader(opt, logger)
    model = build_model(opt)
    current_iter = 0
    if resume_state:
        try:
            model.resume_training(resume_state)
        except (ValueError, KeyError) as e:  # the saved pruning state does not fit these options
            raise ResumeError(f"{opt['path']['resume_state']} cannot be resumed with these options: {e}") from None
        current_iter = resume_state['iter']
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {current_iter}.")
    return _Run(opt, logger, model, train_loader, train_sampler, val_loaders, total_epochs, total_iters, current_iter,
                last_saved=current_iter or None, on_iter=on_iter)


def _open_logs(opt, args, logger, pending, resume_state, cleanup):
    """The experiment's folders, its option copy, a new log file (with the held lines) and the tensorboard logger;
    removes the temporary files of interrupted saves first. Returns the tensorboard logger (None on ranks > 0)."""
    from basicsr.train import init_tb_loggers
    from basicsr.utils import make_exp_dirs, mkdir_and_rename
    from basicsr.utils.options import copy_opt_file
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
        file_handler, _ = open_log_file(opt['path']['log'], opt['name'])
        file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s: %(message)s'))  # BasicSR's format
        file_handler.setLevel(logging.INFO)
        logger.addHandler(file_handler)
        cleanup.callback(close_handler, logger, file_handler)
        write_held_lines(logger, pending, file_handler)
    tb_logger = init_tb_loggers(opt) if opt['rank'] == 0 else None
    for path in stale:
        logger.info(f'Removed {path}, left by an interrupted save.')
    return tb_logger


def _train(run):
    """BasicSR's epoch loop, from `run.current_iter` to the last iteration; a resumed run replays the batches of its
    epoch that were consumed already."""
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
    from basicsr.utils import AvgTimer, MessageLogger, set_random_seed
    opt, logger = run.opt, run.logger
    iters_per_epoch = len(run.train_loader)
    # With drop_last every epoch has the same number of batches, so (epoch, batch) follows from the iteration.
    start_epoch, skip_batches = divmod(run.current_iter, iters_per_epoch)
    total_epochs = max(run.total_epochs, (run.total_iters - 1) // iters_per_epoch + 1)
    msg_logger = MessageLogger(opt, run.current_iter, run.tb_logger)
    if opt['datasets']['train'].get('prefetch_mode') == 'cuda':  # checked by check_prefetch_mode
        prefetcher = CUDAPrefetcher(run.train_loader, opt)
    else:
        prefetcher = CPUPrefetcher(run.train_loader)

    logger.info(f'Start training from epoch: {start_epoch}, iter: {run.current_iter}')
    timers = AvgTimer(), AvgTimer()  # data, iteration
    run.start_time = time.time()
    for epoch in range(start_epoch, total_epochs + 1):
        if run.current_iter >= run.total_iters:
            break
        set_random_seed(epoch_seed(opt, epoch))
        run.train_sampler.set_epoch(epoch)
        prefetcher.reset()
        train_data = prefetcher.next()
        if epoch == start_epoch and skip_batches:
            logger.info(f'Replaying {skip_batches} already-consumed batches of epoch {epoch} for an exact resume.')
            for _ in range(skip_batches):
                train_data = prefetcher.next()
        while train_data is not None and run.current_iter < run.total_iters:
            _iteration(run, epoch, train_data, msg_logger, timers)
            train_data = prefetcher.next()


def _iteration(run, epoch, train_data, msg_logger, timers):
    """One iteration: learning rate, step, log, and at its end the finite-weights check, validation and save."""
    opt, model, logger = run.opt, run.model, run.logger
    data_timer, iter_timer = timers
    data_timer.record()
    run.current_iter += 1
    current_iter = run.current_iter
    model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
    hooks('after_lr', iter=current_iter, model=model, opt=opt)
    model.feed_data(train_data)
    try:
        model.optimize_parameters(current_iter)
        check_finite_loss(model, current_iter, run.last_saved)
    except FloatingPointError as e:
        logger.error(str(e))
        raise
    hooks('after_step', iter=current_iter, model=model, opt=opt)
    if run.on_iter is not None:
        run.on_iter(current_iter, run.total_iters)
    iter_timer.record()
    if current_iter == 1:
        msg_logger.reset_start_time()
    if current_iter % opt['logger']['print_freq'] == 0:
        log_vars = {'epoch': epoch, 'iter': current_iter}
        log_vars.update({'lrs': model.get_current_learning_rate()})
        log_vars.update({'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()})
        log_vars.update(model.get_current_log())
        msg_logger(log_vars)

    round_end, val_now, save_now = iteration_end(model, opt, current_iter)
    if round_end or val_now or save_now:
        check_finite_weights(model, current_iter, run.last_saved, logger)
    if round_end:
        hooks('round_end', iter=current_iter, model=model, opt=opt)
    if round_end or val_now:
        _validate(run, current_iter)
    if save_now:
        logger.info('Saving models and training states.')
        model.save(epoch, current_iter)
        run.last_saved = current_iter
    data_timer.start()
    iter_timer.start()


def _validate(run, it):
    if run.opt.get('val') is None:
        return
    for val_loader in run.val_loaders:
        run.model.validation(val_loader, it, run.tb_logger, run.opt['val']['save_img'])


def _finish(run):
    """The last checks and saves: finite weights, the latest model, a last validation (unless the last round's end
    was validated already)."""
    model, logger = run.model, run.logger
    check_finite_weights(model, run.current_iter, run.last_saved, logger)
    consumed_time = str(datetime.timedelta(seconds=int(time.time() - run.start_time)))
    logger.info(f'End of training. Time consumed: {consumed_time}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if not iteration_end(model, run.opt, run.total_iters)[0]:  # the last round's end was validated already
        _validate(run, run.current_iter)
    if run.tb_logger:
        run.tb_logger.close()


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

    return run_command('dupru-train', run,  # the console script passes this to sys.exit
                       interrupted='checkpoints already saved are complete; continue with --auto_resume')


if __name__ == '__main__':
    sys.exit(main())
