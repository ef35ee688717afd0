"""Refused starts: bad `pruning:` options (and the BasicSR options and data they depend on) stop `dupru-train`
through its real entry point with a message naming the key or file and the fix, before anything is written: a
previous run's experiment folder of the same name is left byte-for-byte as it was, and nothing is archived."""
import copy
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import pytest
import yaml

from conftest import run_in, shared_pair, snapshot_tree as _snapshot, tiny_options, write_options

NAME = 'prev'  # every refused start reuses the name of the previous run, so a start that got through would archive it


@pytest.fixture(scope='module')
def previous_run(tmp_path_factory):
    """A real (short) DUPru training run named NAME: its experiment folder, with checkpoints, states and log."""
    root = tmp_path_factory.mktemp('previous')
    opt = tiny_options(NAME, 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 1, 'rate': 30}, total_iter=2,
                       val_set=None, save_freq=1)
    run_in(root, opt)
    exp = root / 'experiments' / NAME
    assert (exp / 'models' / 'net_g_2.pth').is_file() and (exp / 'training_states' / '2.state').is_file()
    return exp


@pytest.fixture
def workdir(tmp_path, previous_run):
    """tmp_path holding a copy of the previous run under experiments/NAME; yields (tmp_path, snapshot before)."""
    shutil.copytree(previous_run, tmp_path / 'experiments' / NAME)
    before = _snapshot(tmp_path / 'experiments')
    assert any(k.endswith('.pth') for k in before) and any(k.endswith('.state') for k in before)
    return tmp_path, before


def _valid():
    return tiny_options(NAME, 'DUPruModel', pruning={'rounds': 3, 'iters_per_round': 4, 'rate': 30}, total_iter=12,
                        val_freq=4, save_freq=2)


def _assert_untouched(tmp_path, before):
    assert sorted(os.listdir(tmp_path / 'experiments')) == [NAME]  # nothing archived, nothing new
    assert _snapshot(tmp_path / 'experiments') == before  # same files, same bytes
    assert not (tmp_path / 'tb_logger').exists() and not (tmp_path / 'results').exists()


def _refused(workdir, opt, pattern, *extra):
    from dupru_basicsr.plugin.option_base import OptionError
    tmp_path, before = workdir
    with pytest.raises(OptionError, match=pattern) as info:
        run_in(tmp_path, opt, *extra)
    _assert_untouched(tmp_path, before)
    return str(info.value)


def test_control_a_valid_start_does_archive_the_previous_run(workdir):
    """The harness sees a start that gets through: BasicSR renames the old folder to NAME_archived_<time>."""
    tmp_path, before = workdir
    opt = _valid()
    opt['train']['total_iter'] = 2
    opt['pruning'].update(rounds=2, iters_per_round=1)
    run_in(tmp_path, opt)
    names = os.listdir(tmp_path / 'experiments')
    assert NAME in names and any(n.startswith(f'{NAME}_archived_') for n in names)
    with pytest.raises(AssertionError):
        _assert_untouched(tmp_path, before)


def test_unknown_key_did_you_mean(workdir):
    opt = _valid()
    opt['pruning']['rat'] = opt['pruning'].pop('rate')
    _refused(workdir, opt, r'Unknown option pruning\.rat\. Did you mean "rate"\?')


def test_unknown_key_without_close_match_lists_known_keys(workdir):
    opt = _valid()
    opt['pruning']['colour_space'] = 'rgb'
    msg = _refused(workdir, opt, r'Unknown option pruning\.colour_space\. Known keys: method, targets, sparsity, rate')
    assert 'iters_per_round' in msg and 'rewind' in msg


@pytest.mark.parametrize('rate', [0, 100, -5, 150, '10'])
def test_rate_outside_0_100(workdir, rate):
    opt = _valid()
    opt['pruning']['rate'] = rate
    _refused(workdir, opt, rf'pruning\.rate is {re.escape(repr(rate))}; .* strictly between 0 and 100')


@pytest.mark.parametrize('rounds', [0, -1])
def test_rounds_below_one(workdir, rounds):
    opt = _valid()
    opt['pruning']['rounds'] = rounds
    _refused(workdir, opt, rf'pruning\.rounds is {rounds}; it must be an integer >= 1')


def test_rounds_disagreeing_with_schedule(workdir):
    opt = _valid()
    opt['pruning'].update(rounds=2, schedule=[4, 4, 4])
    del opt['pruning']['iters_per_round']
    _refused(workdir, opt, r'pruning\.rounds is 2 but pruning\.schedule lists 3 rounds; remove rounds')


def test_negative_eps(workdir):
    opt = _valid()
    opt['pruning']['eps'] = -1e-6
    _refused(workdir, opt, r'pruning\.eps is -1e-06; it must be a finite number >= 0')


def test_eps_written_as_yaml_text_names_the_fix(workdir):
    # PyYAML reads 1e-5 (no dot) as a string; the refusal says why and how to write it
    opt = _valid()
    opt['pruning']['eps'] = '1e-5'
    msg = _refused(workdir, opt, r"pruning\.eps is '1e-5'; it must be a finite number >= 0")
    assert "'1e-5' was read as text" in msg and '1.0e-5' in msg and '!!float1e-5' in msg
    assert yaml.safe_load('eps: 1e-5')['eps'] == '1e-5' and yaml.safe_load('eps: 1.0e-5')['eps'] == 1e-5


def test_target_pattern_matching_nothing(workdir):
    opt = _valid()
    opt['pruning']['targets'] = ['body.*.weight', 'body.*.wieght']
    msg = _refused(workdir, opt, r'pruning\.targets: Pruning target pattern "body\.\*\.wieght" matches no parameter')
    assert 'body.0.conv1.weight' in msg  # shows how parameters are named


def test_total_iter_inconsistent_with_schedule(workdir):
    opt = _valid()
    opt['train']['total_iter'] = 10
    _refused(workdir, opt, r'train\.total_iter is 10 but rounds \(3\) x iters_per_round \(4\) = 12; set '
             r'train\.total_iter: 12')


def test_total_iter_inconsistent_with_explicit_schedule(workdir):
    opt = _valid()
    opt['pruning'].pop('iters_per_round')
    opt['pruning'].pop('rounds')
    opt['pruning']['schedule'] = [2, 4, 4]
    _refused(workdir, opt, r'train\.total_iter is 12 but the sum of pruning\.schedule \(\[2, 4, 4\]\) = 10')


@pytest.mark.parametrize('k, first', [(4, 4), (9, 4)])
def test_rewind_iter_beyond_first_round(workdir, k, first):
    opt = _valid()
    opt['pruning']['rewind'] = f'iter_{k}'
    _refused(workdir, opt, rf'pruning\.rewind is iter_{k}, but the first round has only {first} iterations; use '
             rf'k < {first}')


def test_rewind_unknown_value(workdir):
    opt = _valid()
    opt['pruning']['rewind'] = 'iter_x'
    _refused(workdir, opt, r'pruning\.rewind is "iter_x"; use init, iter_<k>')


def test_cosine_periods_shorter_than_a_round(workdir):
    opt = _valid()
    opt['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [3], 'restart_weights': [1],
                                 'eta_min': 1e-5}
    _refused(workdir, opt, r'train\.scheduler\.periods sum to 3, but .* longest round has 4 iterations')


def test_cosine_periods_shorter_than_training_for_srmodel(workdir):
    opt = _valid()
    opt['model_type'] = 'SRModel'
    del opt['pruning']
    opt['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [4], 'restart_weights': [1],
                                 'eta_min': 1e-5}
    _refused(workdir, opt, r'train\.scheduler\.periods sum to 4, less than train\.total_iter \(12\)')


def test_scale_differs_from_network(workdir):
    opt = _valid()
    opt['network_g']['upscale'] = 2
    _refused(workdir, opt, r'^scale is 4 but network_g upscales by 2; make them equal\.$')


def test_scale_differs_from_data_names_the_files(workdir, tmp_path):
    """The data check: the val set's LR folder holds x2 data (astronaut.png, 512x512) while the options say x4."""
    import cv2
    gt_root = shared_pair('val')[0]
    lq_root = tmp_path / 'val_LRx2'
    lq_root.mkdir()
    for name in sorted(os.listdir(gt_root)):
        img = cv2.imread(osp.join(gt_root, name))
        cv2.imwrite(str(lq_root / name), cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2)))
    opt = _valid()
    opt['datasets']['val']['dataroot_lq'] = str(lq_root)
    msg = _refused(workdir, opt, r'datasets\.val: 2 problems in 2 GT/LR pairs:\n  GT image ".*/val/GTmod4/'
                   r'astronaut\.png" is 512x512 but its LR image ".*/val_LRx2/astronaut\.png" is 256x256; with scale 4 '
                   r'the GT must be 1024x1024\.')
    assert 'Point dataroot_lq at the x4 LR images' in msg and '/val_LRx2/chelsea.png" is 224x150' in msg


def test_scale_differs_from_data_when_options_agree(workdir):
    """scale 2 and a x2 network agree, but the training LR folder holds x4 images."""
    opt = _valid()
    opt['scale'] = 2
    opt['network_g']['upscale'] = 2
    msg = _refused(workdir, opt, r'datasets\.train: 5 problems in 5 GT/LR pairs:\n  GT image ".*/train/GTmod4/'
                   r'coffee\.png" is 600x400 but its LR image ".*/train/LRbicx4/coffee\.png" is 150x100; with scale 2 '
                   r'the GT must be 300x200')
    assert msg.count('with scale 2 the GT must be') == 5


@pytest.mark.parametrize('root_key', ['dataroot_gt', 'dataroot_lq'])
def test_missing_dataset_folder(workdir, root_key):
    opt = _valid()
    opt['datasets']['train'][root_key] = 'datasets/not_prepared/x4'
    _refused(workdir, opt, rf'datasets\.train\.{root_key}: "datasets/not_prepared/x4" does not exist\. Prepare the '
             r'data')


def test_dataset_folder_not_set(workdir):
    opt = _valid()
    opt['datasets']['val']['dataroot_lq'] = None
    _refused(workdir, opt, r'datasets\.val\.dataroot_lq is not set; PairedImageDataset needs')


def test_empty_dataset_folder(workdir, tmp_path):
    (tmp_path / 'empty_gt').mkdir()
    (tmp_path / 'empty_lq').mkdir()
    opt = _valid()
    opt['datasets']['train'].update(dataroot_gt=str(tmp_path / 'empty_gt'), dataroot_lq=str(tmp_path / 'empty_lq'))
    _refused(workdir, opt, r'datasets\.train\.dataroot_gt: ".*empty_gt" has no images')


def test_lr_file_missing_for_a_gt_file(workdir, tmp_path):
    lq = tmp_path / 'lq'
    shutil.copytree(shared_pair('train')[1], lq)
    os.rename(lq / 'rocket.png', lq / 'rocket_x4.png')
    opt = _valid()
    opt['datasets']['train']['dataroot_lq'] = str(lq)
    _refused(workdir, opt, r'datasets\.train: GT image ".*/rocket\.png" has no LR image "rocket\.png" in dataroot_lq '
             r'".*"; fix dataroot_lq or filename_tmpl')


def test_gt_and_lr_counts_differ(workdir, tmp_path):
    lq = tmp_path / 'lq'
    shutil.copytree(shared_pair('train')[1], lq)
    os.remove(lq / 'rocket.png')
    opt = _valid()
    opt['datasets']['train']['dataroot_lq'] = str(lq)
    _refused(workdir, opt, r'datasets\.train: dataroot_gt ".*" has 5 files but dataroot_lq ".*" has 4')


def test_gt_size_not_a_multiple_of_scale(workdir):
    opt = _valid()
    opt['datasets']['train']['gt_size'] = 30
    _refused(workdir, opt, r'datasets\.train\.gt_size is 30; it must be a positive multiple of scale \(4\)')


def test_batch_larger_than_dataset(workdir):
    opt = _valid()
    opt['datasets']['train']['batch_size_per_gpu'] = 6  # the training set has 5 images, enlarge ratio 1
    _refused(workdir, opt, r'datasets\.train: 5 images x dataset_enlarge_ratio 1 give fewer samples than one batch '
             r'\(6\)')


def test_pruning_section_with_a_model_that_ignores_it(workdir):
    opt = _valid()
    opt['model_type'] = 'SRModel'
    _refused(workdir, opt, r'pruning: is given but model_type is SRModel, which ignores it; set model_type: '
             r'DUPruModel')


def test_pruning_section_not_a_mapping(workdir):
    opt = _valid()
    opt['pruning'] = 10
    _refused(workdir, opt, r'pruning is 10; it must be a mapping')


def test_unknown_model_type(workdir):
    opt = _valid()
    opt['model_type'] = 'DUPrunModel'
    _refused(workdir, opt, r'model_type is "DUPrunModel", which is not registered in BasicSR\. Did you mean '
             r'"DUPruModel"\?')


def test_unknown_network_argument(workdir):
    opt = _valid()
    opt['network_g']['num_blocks'] = 2
    _refused(workdir, opt, r"network_g: MSRResNet cannot be built from these options .*'num_blocks'")


@pytest.mark.parametrize('key, value', [('save_checkpoint_freq', 0), ('print_freq', None)])
def test_logger_frequencies(workdir, key, value):
    opt = _valid()
    opt['logger'][key] = value
    _refused(workdir, opt, rf'logger\.{key} is {value}; set it to a number of iterations >= 1')


def test_more_gpus_than_the_machine_has(workdir):
    import torch
    opt = _valid()
    opt['num_gpu'] = torch.cuda.device_count() + 1
    _refused(workdir, opt, rf'num_gpu is {opt["num_gpu"]} but this machine has \d+ CUDA device\(s\); set num_gpu: '
             r'0 for the CPU \(or --force_yml num_gpu=0\)')


def test_num_gpu_auto_on_several_gpus_warns_of_dataparallel(monkeypatch):
    """BasicSR turns `auto` into DataParallel over every GPU (batch and workers multiplied) when no launcher is used.
    Pretended here: two CUDA devices."""
    import warnings

    import torch

    from dupru_basicsr.plugin.option_base import OptionWarning
    from dupru_basicsr.plugin.options import _check_devices
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    for opt, expected in (({'num_gpu': 'auto', 'dist': False}, 1), ({'num_gpu': 'auto', 'dist': True}, 0),
                          ({'num_gpu': 1, 'dist': False}, 0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            _check_devices(opt)
        messages = [str(w.message) for w in caught if issubclass(w.category, OptionWarning)]
        assert len(messages) == expected, (opt, messages)
        assert all('DataParallel over all of them and multiplies the batch size and workers by 2' in m and
                   'Set num_gpu: 1' in m for m in messages)


def test_refused_with_auto_resume_too(workdir):
    """--auto_resume on an existing experiment: the options are still checked before any resume or write."""
    opt = _valid()
    opt['pruning']['rate'] = 0
    _refused(workdir, opt, r'pruning\.rate is 0', '--auto_resume')


@pytest.mark.slow
def test_cli_subprocess_prints_the_error_without_traceback(workdir):
    tmp_path, before = workdir
    opt = copy.deepcopy(_valid())
    opt['pruning']['iters_per_rond'] = 4
    yml = write_options(opt, tmp_path)
    r = subprocess.run([sys.executable, '-m', 'dupru_basicsr.train', '-opt', yml], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert 'dupru-train: error: Unknown option pruning.iters_per_rond. Did you mean "iters_per_round"?' in r.stderr
    assert 'Traceback' not in r.stderr
    _assert_untouched(tmp_path, before)
