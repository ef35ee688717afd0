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

The loop below is BasicSR's, step by step; what it adds lives in `dupru_basicsr.plugin.loop` (and the checks in
`plugin.options`, `plugin.resume`). `dupru_basicsr.hooks` is called at named points (after_lr, after_step, round_end)
so that tests can stop or inspect a run there; nothing listens by default.
"""
import contextlib
import datetime
import io
import logging
import logging.handlers
import os
import os.path as osp
import sys
import time

import dupru_basicsr  # noqa: F401  (applies the compatibility shims and registers DUPruModel)
from dupru_basicsr.hooks import hooks
from dupru_basicsr.plugin.datasets import check_prefetch_mode
from dupru_basicsr.plugin.log import reset_basicsr_logger
from dupru_basicsr.plugin.loop import (asks_for_cpu, check_finite_loss, check_finite_weights, close_handler,
                                       epoch_seed, iteration_end, lock_experiment, open_log_file)
from dupru_basicsr.plugin.options import check_options, check_pretrained_network
from dupru_basicsr.plugin.pruning_options import check_resume_options
from dupru_basicsr.plugin.resume import ResumeError
from dupru_basicsr.plugin.shims import patch_basicsr, set_cpu_run
from dupru_basicsr.utils.cli import check_basicsr_command_line, run_command
from dupru_basicsr.utils.devices import use_deterministic_algorithms
from dupru_basicsr.weights.io import remove_stale_temp_files


def train_pipeline(root_path, on_iter=None):
    """Train as BasicSR does; `on_iter(current_iter, total_iters)`, if given, is called after every iteration
    (the demo draws its progress bar with it). The experiment folder is locked for the whole call."""
    with contextlib.ExitStack() as cleanup:
        return _train_pipeline(root_path, on_iter, cleanup)


def _train_pipeline(root_path, on_iter, cleanup):
    patch_basicsr()
    check_basicsr_command_line(sys.argv[1:])  # a missing or malformed -opt file, --launcher outside its launcher
    set_cpu_run(asks_for_cpu(sys.argv[1:]))  # DDP of a CPU run uses gloo even on a CUDA machine
    import torch
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
    from basicsr.models import build_model
    from basicsr.train import create_train_val_dataloader, init_tb_loggers, load_resume_state
    from basicsr.utils import (AvgTimer, MessageLogger, get_env_info, get_root_logger, make_exp_dirs, mkdir_and_rename,
                               set_random_seed)
    from basicsr.utils.options import copy_opt_file, dict2str, parse_options

    held_output = io.StringIO()  # BasicSR's prints ("Disable distributed.", "Set ... to ..."): after the checks
    try:
        with contextlib.redirect_stdout(held_output):
            opt, args = parse_options(root_path, is_train=True)
    except SystemExit:  # argparse: --help (its text is in held_output) or a usage error (already on stderr)
        print(held_output.getvalue(), end='', flush=True)
        raise
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True  # as BasicSR; `deterministic: true` turns it off (checked below)

    # A refused start changes nothing: every check below (options, lock, resume state, data, model, resume) runs
    # before anything is written into experiments/<name>; log lines wait in memory until the log file exists.
    check_options(opt)
    check_prefetch_mode(opt)
    if opt.get('deterministic'):
        use_deterministic_algorithms()
    lock = lock_experiment(opt)
    if lock is not None:
        cleanup.callback(lock.release)

    reset_basicsr_logger()
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO)  # console only, until the checks pass
    pending = logging.handlers.MemoryHandler(capacity=sys.maxsize, flushLevel=logging.CRITICAL + 1)
    if opt['rank'] == 0:
        logger.setLevel(logging.INFO)
        logger.addHandler(pending)
        cleanup.callback(close_handler, logger, pending)  # a refused start drops the lines it kept

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
        file_handler, _ = open_log_file(opt['path']['log'], opt['name'])
        file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s: %(message)s'))  # BasicSR's format
        file_handler.setLevel(logging.INFO)
        logger.addHandler(file_handler)
        cleanup.callback(close_handler, logger, file_handler)
        pending.setTarget(file_handler)
        pending.flush()
        close_handler(logger, pending)
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

    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    epoch = start_epoch
    for epoch in range(start_epoch, total_epochs + 1):
        if current_iter >= total_iters:
            break
        set_random_seed(epoch_seed(opt, epoch))
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
            hooks('after_lr', iter=current_iter, model=model, opt=opt)
            model.feed_data(train_data)
            try:
                model.optimize_parameters(current_iter)
                check_finite_loss(model, current_iter, last_saved)
            except FloatingPointError as e:
                logger.error(str(e))
                raise
            hooks('after_step', iter=current_iter, model=model, opt=opt)
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

            round_end, val_now, save_now = iteration_end(model, opt, current_iter)
            if round_end or val_now or save_now:
                check_finite_weights(model, current_iter, last_saved, logger)
            if round_end:
                hooks('round_end', iter=current_iter, model=model, opt=opt)
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
    if not iteration_end(model, opt, total_iters)[0]:  # the last round's end was validated already
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

    return run_command('dupru-train', run,  # the console script passes this to sys.exit
                       interrupted='checkpoints already saved are complete; continue with --auto_resume')


if __name__ == '__main__':
    sys.exit(main())
