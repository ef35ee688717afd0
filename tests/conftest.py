"""Shared fixtures: tiny BasicSR option dicts over ../shared/datasets, and an in-process trainer."""
import copy
import os
import os.path as osp
import pytest
import yaml

import dupru_basicsr  # noqa: F401  (shims before basicsr)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_DATA = osp.join(osp.dirname(REPO), 'shared', 'datasets')
TINY_DUPRU = osp.join(REPO, 'options', 'train', 'tiny', 'train_MSRResNet_x4_tiny_DUPru.yml')


def shared_dataset(name):
    path = osp.join(SHARED_DATA, name)
    if not osp.isdir(path):
        pytest.skip(f'{path} not available')
    return path


def tiny_options(name, model_type='SRModel', pruning=None, total_iter=6, train_set='Set14', val_set='Set5',
                 gt_size=32, batch=2, ema_decay=0.0, save_freq=None, val_freq=None, workers=0, **train_kw):
    """A tiny MSRResNet x4 (16 features, 2 blocks) option dict, training on ../shared/datasets with random crops."""
    with open(TINY_DUPRU) as f:
        opt = yaml.safe_load(f)
    opt = copy.deepcopy(opt)
    opt['name'] = name
    opt['model_type'] = model_type
    opt['num_gpu'] = 0
    opt['manual_seed'] = 10
    train = opt['datasets']['train']
    train['dataroot_gt'] = osp.join(shared_dataset(train_set), 'GTmod12')
    train['dataroot_lq'] = osp.join(shared_dataset(train_set), 'LRbicx4')
    train.update(gt_size=gt_size, batch_size_per_gpu=batch, num_worker_per_gpu=workers, dataset_enlarge_ratio=1)
    if val_set:
        val = opt['datasets']['val']
        val['name'] = val_set
        val['dataroot_gt'] = osp.join(shared_dataset(val_set), 'GTmod12')
        val['dataroot_lq'] = osp.join(shared_dataset(val_set), 'LRbicx4')
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


def write_options(opt, folder):
    path = osp.join(str(folder), f'{opt["name"]}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


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
