"""Testing entry point: `python -m dupru_basicsr.test -opt options/test/....yml` (BasicSR's test pipeline, rooted
at the current directory, with the compatibility shims applied and the dataset folders checked first)."""
import os
import sys

import dupru_basicsr  # noqa: F401  (applies the compatibility shims and registers DUPruModel)
from dupru_basicsr.compat import patch_basicsr


def test_pipeline(root_path):
    patch_basicsr()
    import basicsr.test
    import basicsr.utils.options

    from dupru_basicsr.options import check_options
    from dupru_basicsr.utils.log import reset_basicsr_logger

    parse = basicsr.utils.options.parse_options

    def parse_and_check(root, is_train=True):
        opt, args = parse(root, is_train=is_train)
        check_options(opt)
        reset_basicsr_logger()  # so that BasicSR's test pipeline writes this run's log file
        return opt, args

    basicsr.test.parse_options = parse_and_check
    try:
        basicsr.test.test_pipeline(root_path)
    finally:
        basicsr.test.parse_options = parse


def main(argv=None):
    """Console script `dupru-test`; `argv` (without the program name) lets tests call it in-process."""
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
