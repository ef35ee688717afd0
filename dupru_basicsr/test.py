"""Testing entry point: `python -m dupru_basicsr.test -opt options/test/....yml [--allow-random-weights]` (BasicSR's
test pipeline, rooted at the current directory, with the compatibility shims applied and the options, the dataset
folders and the weights checked before anything is written).

Without `path.pretrain_network_g` BasicSR would score a randomly initialised network; that is refused unless
`--allow-random-weights` says it is meant (e.g. to time an untrained network).
"""
import contextlib
import io
import os
import sys

import dupru_basicsr  # noqa: F401  (applies the compatibility shims and registers DUPruModel)
from dupru_basicsr.plugin.shims import patch_basicsr

ALLOW_RANDOM = '--allow-random-weights'


def check_weights(opt, allow_random_weights=False):
    """`path.pretrain_network_g` is set (unless random weights are allowed) and loads into network_g."""
    from dupru_basicsr.plugin.option_base import OptionError
    from dupru_basicsr.plugin.options import check_pretrained_network
    if (opt.get('path') or {}).get('pretrain_network_g') is None:
        if allow_random_weights:
            return
        raise OptionError('path.pretrain_network_g is not set, so the network would be scored with random weights; '
                          'set it to the checkpoint to test (e.g. experiments/<name>/models/net_g_latest.pth), or '
                          f'pass {ALLOW_RANDOM} if an untrained network is what you mean to score.')
    check_pretrained_network(opt)


def print_help():
    """BasicSR's options (its parser has no help text of its own) and this command's flag."""
    print(f"""usage: dupru-test -opt OPT [--launcher {{none,pytorch,slurm}}] [--force_yml KEY:SUBKEY=VALUE ...]
                  [{ALLOW_RANDOM}]

{__doc__.strip()}

options:
  -opt OPT               the BasicSR test option file (e.g. options/test/test_MSRResNet_x4_Set5.yml)
  --launcher LAUNCHER    none (default), or pytorch under torchrun / slurm under srun
  --force_yml ...        change options of the file, e.g. path:pretrain_network_g=net.pth name=my_test num_gpu=0
                         (values read as YAML: numbers, strings, true/false, lists such as [a, b])
  {ALLOW_RANDOM}  score the network without path.pretrain_network_g (random weights; e.g. to time it)""")


def test_pipeline(root_path):
    if {'-h', '--help'} & set(sys.argv[1:]):
        print_help()
        return
    allow_random_weights = ALLOW_RANDOM in sys.argv[1:]
    sys.argv = [a for a in sys.argv if a != ALLOW_RANDOM]  # BasicSR's parser does not know the flag
    patch_basicsr()
    import basicsr.test
    import basicsr.utils.options

    from dupru_basicsr.plugin.lock import FolderLock
    from dupru_basicsr.plugin.log import reset_basicsr_logger
    from dupru_basicsr.plugin.options import check_options
    from dupru_basicsr.utils.cli import check_basicsr_command_line

    check_basicsr_command_line(sys.argv[1:], module='dupru_basicsr.test')
    parse = basicsr.utils.options.parse_options

    def parse_and_check(root, is_train=True):
        held_output = io.StringIO()  # BasicSR's "Disable distributed.": printed once the checks passed
        with contextlib.redirect_stdout(held_output):
            opt, args = parse(root, is_train=is_train)
        check_options(opt)
        check_weights(opt, allow_random_weights)
        if opt['rank'] == 0:  # one process per results folder: BasicSR archives results/<name> next
            held_locks.append(FolderLock(opt['path']['results_root']).acquire())
        print(held_output.getvalue(), end='', flush=True)
        reset_basicsr_logger()  # so that BasicSR's test pipeline writes this run's log file
        return opt, args

    held_locks = []
    basicsr.test.parse_options = parse_and_check
    try:
        basicsr.test.test_pipeline(root_path)
    finally:
        basicsr.test.parse_options = parse
        for lock in held_locks:
            lock.release()


def main(argv=None):
    """Console script `dupru-test`; `argv` (without the program name) lets tests call it in-process.

    From the command line (`argv` None) a user error (bad options, missing or unusable weights) prints
    `dupru-test: error: <message>` and exits with status 2; in-process callers get the exception."""
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
        return test_pipeline(os.getcwd())
    from dupru_basicsr.utils.cli import run_command
    return run_command('dupru-test', lambda: test_pipeline(os.getcwd()))


if __name__ == '__main__':
    sys.exit(main())
