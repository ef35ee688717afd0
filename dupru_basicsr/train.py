"""Training entry point: `python -m dupru_basicsr.train -opt options/train/....yml [--auto_resume] [--launcher ...]`.

It is BasicSR's `basicsr.train.train_pipeline` (same options, same experiment layout, same logs), rooted at the
current directory, with what a long pruning run needs on top:

- options are checked before anything is written (`dupru_basicsr.options.check_options`);
- resume is exact: every epoch draws its random numbers from a seed derived from (manual_seed, rank, epoch), and a
  resumed run replays the batches of the interrupted epoch that were already consumed, so an interrupted and
  resumed run ends with the same weights as an uninterrupted one;
- a model may declare round ends (`model.is_round_end(iter)`, DUPruModel does): the pipeline validates and saves
  a checkpoint there, so every round's ticket is kept and resuming never crosses a round boundary twice.
"""
import datetime
import logging
import os
import os.path as osp
import sys
import time

import dupru_basicsr  # noqa: F401  (applies the compatibility shims and registers DUPruModel)
from dupru_basicsr.compat import patch_basicsr
from dupru_basicsr.options import check_options
from dupru_basicsr.utils.log import reset_basicsr_logger


def _epoch_seed(opt, epoch):
    # Distinct per rank and per epoch, and independent of how many iterations ran before (resume-exact).
    return int(opt['manual_seed']) + int(opt['rank']) + 100003 * (epoch + 1)


def train_pipeline(root_path):
    patch_basicsr()
    import torch
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
    from basicsr.models import build_model
    from basicsr.train import create_train_val_dataloader, init_tb_loggers, load_resume_state
    from basicsr.utils import (AvgTimer, MessageLogger, get_env_info, get_root_logger, get_time_str, make_exp_dirs,
                               mkdir_and_rename, set_random_seed)
    from basicsr.utils.options import copy_opt_file, dict2str, parse_options

    opt, args = parse_options(root_path, is_train=True)
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True

    # Refuse bad options before any folder is created or renamed.
    check_options(opt)

    resume_state = load_resume_state(opt)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
    if opt['rank'] == 0:
        copy_opt_file(args.opt, opt['path']['experiments_root'])

    log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    reset_basicsr_logger()
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    tb_logger = init_tb_loggers(opt)

    train_loader, train_sampler, val_loaders, total_epochs, total_iters = create_train_val_dataloader(opt, logger)
    iters_per_epoch = len(train_loader)

    model = build_model(opt)
    if resume_state:
        model.resume_training(resume_state)
        current_iter = resume_state['iter']
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {current_iter}.")
    else:
        current_iter = 0
    # With drop_last every epoch has the same number of batches, so (epoch, batch) follows from the iteration.
    start_epoch, skip_batches = divmod(current_iter, iters_per_epoch)
    total_epochs = max(total_epochs, (total_iters - 1) // iters_per_epoch + 1)

    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    if prefetch_mode is None or prefetch_mode == 'cpu':
        prefetcher = CPUPrefetcher(train_loader)
    elif prefetch_mode == 'cuda':
        prefetcher = CUDAPrefetcher(train_loader, opt)
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('Please set pin_memory=True for CUDAPrefetcher.')
    else:
        raise ValueError(f"Wrong prefetch_mode {prefetch_mode}. Supported ones are: None, 'cuda', 'cpu'.")

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
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
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
            if round_end or val_now:
                validate(current_iter)
            if current_iter % opt['logger']['save_checkpoint_freq'] == 0 or round_end:
                logger.info('Saving models and training states.')
                model.save(epoch, current_iter)

            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next()

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
    """Console script `dupru-train`; `argv` (without the program name) lets tests call it in-process."""
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    return train_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
