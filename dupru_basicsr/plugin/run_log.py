"""The log of one `dupru-train` run: its lines wait in memory until every check of the start passed (a refused start
writes no log file), then go into a new log file that never overwrites an earlier one."""
import logging
import logging.handlers
import os.path as osp
import sys


def hold_lines(logger):
    """Add to `logger` a handler that keeps every line in memory until `write_held_lines`; returns it."""
    pending = logging.handlers.MemoryHandler(capacity=sys.maxsize, flushLevel=logging.CRITICAL + 1)
    logger.addHandler(pending)
    return pending


def write_held_lines(logger, pending, target):
    """Write the lines `pending` (from `hold_lines`) kept into the handler `target`, and remove `pending`."""
    pending.setTarget(target)
    pending.flush()
    close_handler(logger, pending)


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
