"""The README's `dupru-prepare` commands write what the shipped option files and `dupru-compare --datasets` read.

The commands are taken from the README (between the prepare-commands markers) and run as written, in a folder
where their input paths hold small images made from scikit-image's photos; then every shipped full-size option file
(train, paper, test) passes dupru-train's option and data checks there (num_gpu set to 0: no GPU here), and
`dupru-compare --datasets Set5 Set14 BSD100` finds the pairs.
"""
import glob
import os
import os.path as osp
import re
import shlex

import cv2
import pytest
import yaml

from conftest import REPO
from dupru_basicsr.plugin.options import check_options
from dupru_basicsr.prepare import main as prepare_main
from dupru_basicsr.report.datasets import gt_folder, resolve_datasets

SHIPPED = sorted(p for p in glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True)
                 if osp.basename(osp.dirname(p)) != 'tiny')


def readme_prepare_commands():
    with open(osp.join(REPO, 'README.md')) as f:
        text = f.read()
    block = re.search(r'<!-- prepare-commands -->(.*?)<!-- /prepare-commands -->', text, re.S).group(1)
    block = re.sub(r'\\\n\s*', ' ', block)  # join continued lines
    return [shlex.split(line.strip())[1:] for line in block.splitlines() if line.strip().startswith('dupru-prepare')]


def _photos(folder, count, size):
    """`count` colour photos from skimage, resized to `size` (w, h) and shifted so that no two are the same."""
    from skimage import data
    os.makedirs(folder, exist_ok=True)
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(count):
        image = cv2.resize(sources[i % len(sources)], size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(osp.join(folder, f'{i:04d}.png'), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """The README's commands, run as written in a folder where each --input holds small photos."""
    root = tmp_path_factory.mktemp('prepared')
    commands = readme_prepare_commands()
    outs = [cmd[cmd.index('--out') + 1] for cmd in commands]
    assert outs == ['datasets/DIV2K', 'datasets/Set5', 'datasets/Set14', 'datasets/BSD100']
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for cmd in commands:
            source = cmd[cmd.index('--input') + 1]
            if 'DIV2K' in source:  # 3 x 6 sub-images of 480 px: more than one batch of 16
                _photos(source, 3, (960, 720))
            else:
                _photos(source, 2, (252, 204))
            assert prepare_main(cmd + ['--workers', '1']) == 0, cmd
    finally:
        os.chdir(cwd)
    return root


def test_the_readme_commands_are_the_documented_ones():
    commands = readme_prepare_commands()
    assert commands[0][:2] == ['--input', 'datasets/DIV2K/DIV2K_train_HR'] and '--subimages' in commands[0]
    assert all(cmd[cmd.index('--scales') + 1:] == ['2', '3', '4'] for cmd in commands[1:])


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: osp.relpath(p, REPO))
def test_every_shipped_option_file_reads_what_the_prepare_commands_wrote(path, prepared, monkeypatch):
    with open(path) as f:
        opt = yaml.safe_load(f)
    opt['num_gpu'] = 0
    opt['is_train'] = osp.sep + 'train' + osp.sep in path
    monkeypatch.chdir(prepared)
    check_options(opt)  # raises OptionError naming the key and the missing folder or file
    if opt['is_train']:
        train = opt['datasets']['train']
        with open(train['meta_info_file']) as f:
            listed = [line.split(' ')[0] for line in f if line.strip()]
        assert len(listed) == 18 and sorted(os.listdir(train['dataroot_gt'])) == sorted(listed)
        sub = cv2.imread(osp.join(train['dataroot_gt'], listed[0]))
        lq = cv2.imread(osp.join(train['dataroot_lq'], listed[0]))
        assert sub.shape == (480, 480, 3) and lq.shape == (120, 120, 3)


def test_compare_finds_the_prepared_test_sets(prepared, monkeypatch):
    monkeypatch.chdir(prepared)
    datasets = resolve_datasets(['Set5', 'Set14', 'BSD100'], 'datasets', 4)
    assert [d.name for d in datasets] == ['Set5', 'Set14', 'BSD100']
    assert all(d.gt_dir.endswith('GTmod12') and len(d.images) == 2 for d in datasets)
    # sets prepared for x4 alone have GTmod4 (not BasicSR's GTmod12): found too
    assert gt_folder(osp.join('datasets', 'DIV2K'), 4).endswith('GTmod4')
    assert resolve_datasets(['DIV2K'], 'datasets', 4)[0].gt_dir == osp.join('datasets', 'DIV2K', 'GTmod4')
    assert gt_folder(osp.join('datasets', 'DIV2K'), 3).endswith('GTmod12')  # none for x3: the name the error gives
