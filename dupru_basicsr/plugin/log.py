"""BasicSR logging helpers."""
import logging


def reset_basicsr_logger():
    """Forget BasicSR's root logger set-up so that the next `get_root_logger(log_file=...)` writes that file.

    BasicSR initialises its logger once per process and ignores later `log_file`s, so a second run in the same
    process (the demo trains three models, tests train many) would otherwise log nowhere on disk.
    """
    from basicsr.utils import logger as basicsr_logger
    log = logging.getLogger('basicsr')
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)
    basicsr_logger.initialized_logger.pop('basicsr', None)
