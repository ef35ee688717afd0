"""Shared fixtures: tiny BasicSR option dicts over test data that the suite makes itself, an in-process trainer,
and the CI rule that a skipped test fails the run."""
import copy
import hashlib
import os
import os.path as osp
import pytest
import yaml

import dupru_basicsr  # noqa: F401  (shims before basicsr)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_DUPRU = osp.join(REPO, 'options', 'train', 'tiny', 'train_MSRResNet_x4_tiny_DUPru.yml')
TEST_DATASETS = ('train', 'val')
# the suite's split of scikit-image's colour photos: small ones, so that every validation is quick
TEST_TRAIN_PHOTOS = ('coffee', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'motorcycle')
TEST_VAL_PHOTOS = ('astronaut', 'chelsea')
# On CI (env CI set, as GitHub Actions and .ci/run do) a skipped test fails the run, unless its skip reason names one
# of these: tests that need CUDA, or that only matter without it, cannot all run on one machine. Data is never a
# reason: the suite makes its own.
ALLOWED_SKIP_REASONS = ('CUDA', )


def devices_under_test():
    """The devices the device-parametrised tests run on: `DUPRU_TEST_DEVICES` (comma-separated, e.g. `cuda` for
    bench/gpu_check.py), else the CPU and, listed always so that a CPU-only run shows what it did not test, CUDA."""
    return [d.strip() for d in os.environ.get('DUPRU_TEST_DEVICES', 'cpu,cuda').split(',') if d.strip()]


def device_params():
    """pytest params for `@pytest.mark.parametrize('device', device_params())`: a CUDA param skips, with a reason
    naming CUDA (allowed on CI), where no CUDA device is present."""
    import torch
    params = []
    for name in devices_under_test():
        marks = [pytest.mark.devices]
        if name.startswith('cuda') and not torch.cuda.is_available():
            marks.append(pytest.mark.skip(reason='needs CUDA (no CUDA device here; bench/gpu_check.py runs it)'))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


_data_root = None  # a session folder (set by _session_data_root); the data is made there on first use
_prepared = {}  # split -> the folders `dupru_basicsr.prepare.prepare` wrote


@pytest.fixture(scope='session', autouse=True)
def _session_data_root(tmp_path_factory):
    global _data_root
    _data_root = tmp_path_factory.mktemp('data')


def _prepared_split(name):
    if name not in TEST_DATASETS:
        raise ValueError(f'unknown test dataset {name!r}; the suite makes {", ".join(TEST_DATASETS)}')
    if not _prepared:
        if _data_root is None:
            raise RuntimeError('the test data is made inside a pytest session (fixture _session_data_root)')
        from dupru_basicsr.demo import prepare_data
        _prepared.update(prepare_data(str(_data_root), progress=False, subimages=False, held_out=TEST_VAL_PHOTOS,
                                      train=TEST_TRAIN_PHOTOS))
    return _prepared[name]


def shared_dataset(name):
    """Folder of test dataset `name`, made once per test session (shared by its tests) from scikit-image's photos
    by the demo's data preparation (`dupru-prepare`, MATLAB-style bicubic x4), in BasicSR's layout `GTmod4/` +
    `LRbicx4/`: 'train' holds 5 whole photos (400x600 to 872x1000), 'val' 2 others (astronaut 512x512,
    chelsea 300x448)."""
    return _prepared_split(name)['out']


def shared_pair(name):
    """(GT folder, x4 LR folder) of test dataset `name` (see shared_dataset)."""
    split = _prepared_split(name)
    return split['gt'], split['lr'][4]


def tiny_options(name, model_type='SRModel', pruning=None, total_iter=6, train_set='train', val_set='val',
                 gt_size=32, batch=2, ema_decay=0.0, save_freq=None, val_freq=None, workers=0, **train_kw):
    """A tiny MSRResNet x4 (16 features, 2 blocks) option dict, training on the session's test data with random
    crops."""
    with open(TINY_DUPRU) as f:
        opt = yaml.safe_load(f)
    opt = copy.deepcopy(opt)
    opt['name'] = name
    opt['model_type'] = model_type
    opt['num_gpu'] = 0
    opt['manual_seed'] = 10
    train = opt['datasets']['train']
    train['dataroot_gt'], train['dataroot_lq'] = shared_pair(train_set)
    train.update(gt_size=gt_size, batch_size_per_gpu=batch, num_worker_per_gpu=workers, dataset_enlarge_ratio=1)
    if val_set:
        val = opt['datasets']['val']
        val['name'] = val_set
        val['dataroot_gt'], val['dataroot_lq'] = shared_pair(val_set)
        opt['val']['val_freq'] = val_freq or total_iter
    else:
        del opt['datasets']['val']
        del opt['val']
    if pruning is None:
        opt.pop('pruning')
    else:
        opt['pruning'].update(pruning)
    opt['train']['total_iter'] = total_iter
    opt['train']['ema_decay'] = ema_decay
    opt['train']['scheduler'] = {'type': 'MultiStepRestartLR', 'milestones': [10**9], 'gamma': 0.5}
    opt['train'].update(train_kw)
    opt['logger']['print_freq'] = 1
    opt['logger']['save_checkpoint_freq'] = save_freq or total_iter
    return opt


def train_until_killed(monkeypatch, run_train, opt, kill_at):
    """Train `opt` with `run_train` and stop it, as a kill would, with a KeyboardInterrupt at iteration `kill_at`
    (before that iteration's step); DUPruModel's step is put back afterwards."""
    from dupru_basicsr.plugin.model import DUPruModel
    original = DUPruModel.optimize_parameters

    def crash(self, current_iter):
        if current_iter == kill_at:
            raise KeyboardInterrupt('simulated kill')
        original(self, current_iter)

    monkeypatch.setattr(DUPruModel, 'optimize_parameters', crash)
    with pytest.raises(KeyboardInterrupt):
        run_train(opt)
    monkeypatch.setattr(DUPruModel, 'optimize_parameters', original)


def record_calls_in_steps(monkeypatch, owner, name):
    """Wrap `owner.name` (e.g. Pruner.apply_mask) so that every call appends whether it came from inside a training
    step (DUPruModel.optimize_parameters); returns that list."""
    from dupru_basicsr.plugin.model import DUPruModel
    calls, in_step = [], []
    method, optimize = getattr(owner, name), DUPruModel.optimize_parameters

    def recorded(self, *args, **kwargs):
        calls.append(bool(in_step))
        return method(self, *args, **kwargs)

    def optimize_parameters(self, current_iter):
        in_step.append(current_iter)
        try:
            optimize(self, current_iter)
        finally:
            in_step.pop()

    monkeypatch.setattr(owner, name, recorded)
    monkeypatch.setattr(DUPruModel, 'optimize_parameters', optimize_parameters)
    return calls


def snapshot_tree(root):
    """{relative path: sha256} of every file (hidden ones included) and folder under `root` (folders: None); two
    equal snapshots show that a refused start changed nothing."""
    snap = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            snap[osp.relpath(osp.join(folder, d), root)] = None
        for f in files:
            path = osp.join(folder, f)
            with open(path, 'rb') as fh:
                snap[osp.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return snap


def write_options(opt, folder):
    path = osp.join(str(folder), f'{opt["name"]}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


class CliResult:
    """What a command run by `run_cli` left: like subprocess.CompletedProcess (returncode, stdout, stderr)."""

    def __init__(self, args, returncode, stdout, stderr):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr


_LAUNCHER_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')


def run_cli(module, args, cwd, **env):
    """`python -m dupru_basicsr.<module> args` in `cwd`, in this process: the module's `main()` called as its console
    script calls it (no argv: it reads sys.argv, prints a user error as one `<prog>: error:` line and returns the
    exit status), with its stdout and stderr captured; `env` is added to the environment and the launcher's variables
    are removed, as a fresh shell has them. Cheaper than a child process by the 3-6 s of importing torch and BasicSR;
    what the process adds (the console script's exit, signals, kills, a second holder of a lock) is tested with real
    processes. The global state a command may change (cwd, argv, environment, warning filters, torch's deterministic
    mode and threads, BasicSR's logger) is put back."""
    import contextlib
    import importlib
    import io
    import logging
    import sys
    import warnings

    import torch
    main = importlib.import_module(f'dupru_basicsr.{module}').main
    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    cwd_before, argv_before = os.getcwd(), list(sys.argv)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    for key in _LAUNCHER_ENV:
        os.environ.pop(key, None)
    os.environ.update({k: str(v) for k, v in env.items()})
    os.chdir(str(cwd))
    sys.argv = [f'dupru-{module}', *[str(a) for a in args]]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main()
            except SystemExit as e:  # argparse (--help, a usage error) and sys.exit
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
    finally:
        os.chdir(cwd_before)
        sys.argv = argv_before
        os.environ.clear()
        os.environ.update(saved_env)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        basicsr_logger = logging.getLogger('basicsr')
        for handler in list(basicsr_logger.handlers):  # they write to the captured streams
            if isinstance(handler, logging.StreamHandler) and getattr(handler, 'stream', None) in (out, err):
                basicsr_logger.removeHandler(handler)
    return CliResult([module, *args], 0 if code is None else code, out.getvalue(), err.getvalue())


def run_in(folder, opt, *extra):
    """`dupru_basicsr.train.main` in-process on `opt`, with the current directory at `folder`; returns the model."""
    import sys

    from dupru_basicsr.train import main
    cwd, argv = os.getcwd(), list(sys.argv)
    os.chdir(folder)
    try:
        return main(['-opt', write_options(opt, folder), *extra])
    finally:
        os.chdir(cwd)
        sys.argv = argv


@pytest.fixture
def run_train(tmp_path):
    """Train in-process with the current directory at tmp_path; returns (model, experiment folder)."""

    def run(opt, *extra):
        return run_in(tmp_path, opt, *extra), osp.join(str(tmp_path), 'experiments', opt['name'])

    return run


@pytest.fixture(autouse=True)
def _restore_argv(monkeypatch):
    import sys
    monkeypatch.setattr(sys, 'argv', list(sys.argv))
    monkeypatch.setenv('PYTHONHASHSEED', os.environ.get('PYTHONHASHSEED', '0'))


def _disallowed_skip(report):
    """The reason of a skip that fails a CI run, else None."""
    if not (os.environ.get('CI') and report.skipped) or hasattr(report, 'wasxfail'):
        return None
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason[len('Skipped: '):] if reason.startswith('Skipped: ') else reason
    return None if any(allowed in reason for allowed in ALLOWED_SKIP_REASONS) else reason


def _fail_skip(report, reason):
    report.outcome = 'failed'
    report.longrepr = (f'skipped on CI ({reason}): CI runs every test; only skips whose reason names one of '
                       f'{list(ALLOWED_SKIP_REASONS)} are allowed (see tests/conftest.py)')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    reason = _disallowed_skip(report)
    if reason is not None:
        _fail_skip(report, reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()  # a module-level pytest.skip / importorskip
    reason = _disallowed_skip(report)
    if reason is not None:
        _fail_skip(report, reason)
