"""On CI (env CI set) a skipped test fails the run, unless its reason is an allowed one (tests/conftest.py): a clone
without some data, package or file must not report success while tests quietly did not run."""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest

TESTS = '''
import pytest


def test_runs():
    pass


def test_needs_missing_data():
    pytest.skip('../shared/datasets not available')


@pytest.mark.skipif(True, reason='needs CUDA')
def test_needs_cuda():
    pass


@pytest.mark.xfail(reason='a known bug', strict=True)
def test_known_bug():
    assert False
'''


def _pytest(folder, ci, *args):
    env = {k: v for k, v in os.environ.items() if k != 'CI'}
    if ci:
        env['CI'] = 'true'
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rfEs', '-p', 'no:cacheprovider', *args], cwd=folder,
                       env=env, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
def test_skips_fail_on_ci_except_allowed_reasons(tmp_path):
    shutil.copy(osp.join(osp.dirname(osp.abspath(__file__)), 'conftest.py'), tmp_path / 'conftest.py')
    (tmp_path / 'test_cases.py').write_text(TESTS)
    (tmp_path / 'test_optional.py').write_text("import pytest\n\npytest.importorskip('no_such_module_dupru')\n")

    rc, out = _pytest(tmp_path, False)
    assert rc == 0, out
    assert re.search(r'\b1 passed, 3 skipped, 1 xfailed\b', out), out

    rc, out = _pytest(tmp_path, True, 'test_cases.py')
    assert rc == 1, out
    assert re.search(r'\b1 failed, 1 passed, 1 skipped, 1 xfailed\b', out), out
    assert re.search(r'FAILED test_cases.py::test_needs_missing_data\b.*skipped on CI \(../shared/datasets not '
                     r'available\)', out), out
    assert re.search(r'SKIPPED \[1\] test_cases.py:\d+: needs CUDA', out), out

    rc, out = _pytest(tmp_path, True, 'test_optional.py')  # a module skipped whole while it is collected
    assert rc == 2, out
    assert re.search(r'ERROR test_optional.py\b.*skipped on CI \(could not import .no_such_module_dupru.', out), out
