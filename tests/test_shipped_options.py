"""Every option file shipped in options/ is valid: pruning sections parse, iterations add up, targets exist."""
import glob
import os.path as osp
import pytest
import yaml

from conftest import REPO
from dupru_basicsr.plugin.pruning_options import PruningConfig, check_pruning_options

TRAIN = sorted(glob.glob(osp.join(REPO, 'options', 'train', '**', '*.yml'), recursive=True))
TEST = sorted(glob.glob(osp.join(REPO, 'options', 'test', '**', '*.yml'), recursive=True))


def test_option_set_is_complete():
    names = {osp.relpath(p, osp.join(REPO, 'options')) for p in TRAIN + TEST}
    for required in ('train/train_MSRResNet_x4.yml', 'train/train_MSRResNet_x4_UPru.yml',
                     'train/train_MSRResNet_x4_DUPru.yml', 'train/paper/train_MSRResNet_x4_paper_stock.yml',
                     'train/paper/train_MSRResNet_x4_paper_UPru.yml', 'train/paper/train_MSRResNet_x4_paper_DUPru.yml',
                     'test/test_MSRResNet_x4_Set5.yml', 'test/test_MSRResNet_x4_Set14.yml',
                     'test/test_MSRResNet_x4_BSD100.yml', 'train/tiny/train_MSRResNet_x4_tiny_stock.yml',
                     'train/tiny/train_MSRResNet_x4_tiny_UPru.yml', 'train/tiny/train_MSRResNet_x4_tiny_DUPru.yml',
                     'test/tiny/test_MSRResNet_x4_tiny.yml'):
        assert required in names


@pytest.mark.parametrize('path', TRAIN, ids=lambda p: osp.relpath(p, REPO))
def test_train_options_are_consistent(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    assert opt['network_g']['upscale'] == opt['scale'] == 4
    if opt['model_type'] == 'DUPruModel':
        cfg = check_pruning_options(opt)
        assert isinstance(cfg, PruningConfig) and cfg.method in ('dupru', 'upru')
        assert 'UPru' in path if cfg.method == 'upru' else 'DUPru' in path
    else:
        assert opt['model_type'] == 'SRModel' and 'pruning' not in opt


def test_paper_options_follow_the_paper():
    for path in glob.glob(osp.join(REPO, 'options', 'train', 'paper', '*.yml')):
        with open(path) as f:
            opt = yaml.safe_load(f)
        assert opt['datasets']['train']['gt_size'] == 96
        assert opt['train']['optim_g'] == {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.999],
                                           'eps': 1e-9}
        assert opt['train']['pixel_opt']['type'] == 'MSELoss'
        assert opt['train']['total_iter'] == 25 * 40000


@pytest.mark.parametrize('path', TRAIN + TEST, ids=lambda p: osp.relpath(p, REPO))
def test_num_gpu_is_a_number_as_in_basicsr(path):
    """`auto` on a machine with several GPUs and no launcher means DataParallel with batch and workers multiplied
    by the GPU count: a different recipe from the file's. One GPU (torchrun for several), or the CPU for tiny."""
    with open(path) as f:
        opt = yaml.safe_load(f)
    assert opt['num_gpu'] == (0 if osp.basename(osp.dirname(path)) == 'tiny' else 1)


@pytest.mark.parametrize('path', TEST, ids=lambda p: osp.relpath(p, REPO))
def test_test_options_report_rgb_and_y(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    metrics = opt['val']['metrics']
    assert {(m['type'], m['test_y_channel'], m['crop_border']) for m in metrics.values()} == {
        ('calculate_psnr', False, 4), ('calculate_ssim', False, 4), ('calculate_psnr', True, 4),
        ('calculate_ssim', True, 4)}


def test_the_best_measured_recipe_ships_at_full_size():
    """train_MSRResNet_x4_DUPru_gradual_whole.yml is the study's dupru_gradual_whole-global_90 recipe at BasicSR's
    1M iterations: gradual DUPru of the whole network, global scope, 90 %, the study's ramp, one cosine."""
    from dupru_basicsr.experiments import gradual_schedule
    with open(osp.join(REPO, 'options', 'train', 'train_MSRResNet_x4_DUPru_gradual_whole.yml')) as f:
        opt = yaml.safe_load(f)
    cfg = check_pruning_options(opt)
    assert (cfg.method, cfg.targets, cfg.scope, cfg.schedule) == ('dupru', 'whole', 'global', 'gradual')
    assert cfg.gradual == gradual_schedule(opt['train']['total_iter'], 0.9)
    assert opt['train']['scheduler']['periods'] == [opt['train']['total_iter']]
    assert cfg.resolve_targets('MSRResNet') == ['body.*.weight', 'upconv1.weight', 'upconv2.weight', 'conv_hr.weight']


def test_the_speed_recipe_is_the_best_recipe_in_1x4_blocks():
    """train_MSRResNet_x4_DUPru_gradual_whole_1x4.yml differs from the best measured recipe only in its name and in
    pruning.granularity: oc_block4 (what `dupru-export --mnn-block 4` stores for MNN's fast kernel)."""
    folder = osp.join(REPO, 'options', 'train')
    with open(osp.join(folder, 'train_MSRResNet_x4_DUPru_gradual_whole.yml')) as f:
        best = yaml.safe_load(f)
    with open(osp.join(folder, 'train_MSRResNet_x4_DUPru_gradual_whole_1x4.yml')) as f:
        fast = yaml.safe_load(f)
    assert fast['pruning'].pop('granularity') == 'oc_block4'
    assert fast.pop('name') != best.pop('name')
    assert fast == best
    fast['pruning']['granularity'] = 'oc_block4'
    assert check_pruning_options(dict(fast, name='x')).granularity == 'oc_block4'
