"""The data check before training (dupru_basicsr.plugin): every GT/LR pair of every dataset, not only the first,
is read from its header (sizes agree with the scale, the file is an image and is complete, a training crop fits);
problems are refused as one OptionError naming each file and the fix, before anything is written."""
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest

from conftest import run_in, shared_pair, tiny_options
from dupru_basicsr.plugin.datasets import image_header
from dupru_basicsr.plugin.option_base import OptionError
from dupru_basicsr.plugin.options import check_options


def _opt(tmp_path, **train_kw):
    """Valid tiny options whose train and val folders are copies in tmp_path (free to damage)."""
    opt = tiny_options('check', total_iter=2, **train_kw)
    for phase in ('train', 'val'):
        gt, lq = shared_pair(phase)
        dset = opt['datasets'][phase]
        dset['dataroot_gt'] = str(shutil.copytree(gt, tmp_path / phase / 'gt'))
        dset['dataroot_lq'] = str(shutil.copytree(lq, tmp_path / phase / 'lq'))
    return opt


def _refused(opt, *expected):
    with pytest.raises(OptionError) as info:
        check_options(opt)
    message = str(info.value)
    for text in expected:
        assert text in message, (text, message)
    return message


def test_valid_data_passes(tmp_path):
    check_options(_opt(tmp_path))


def test_wrong_size_lr_image_after_the_first_pair(tmp_path):
    opt = _opt(tmp_path)
    lq = tmp_path / 'val' / 'lq' / 'chelsea.png'  # the second (last) val pair; its GT is 448x300
    img = cv2.imread(str(lq))
    cv2.imwrite(str(lq), img[:-1])
    message = _refused(opt, f'datasets.val: GT image "{tmp_path}/val/gt/chelsea.png" is 448x300 but its LR image '
                       f'"{lq}" is 112x74; with scale 4 the GT must be 448x296.', 'Point dataroot_lq at the x4')
    assert '\n' not in message and 'astronaut' not in message


@pytest.mark.parametrize('damage, expected', [
    (lambda data: b'', 'cannot be read as an image'),
    (lambda data: data[:len(data) // 2], 'is a truncated PNG file (it does not end with the IEND chunk)'),
    (lambda data: data[:16] + bytes([data[16] ^ 1]) + data[17:], 'has a damaged PNG header'),
    (lambda data: b'not an image at all' * 10, 'cannot be read as an image'),
])
def test_unreadable_or_incomplete_later_image(tmp_path, damage, expected):
    opt = _opt(tmp_path)
    path = tmp_path / 'train' / 'gt' / 'rocket.png'  # the last training pair
    path.write_bytes(damage(path.read_bytes()))
    message = _refused(opt, f'datasets.train: "{path}" {expected}', 'replace it or remove the pair')
    assert '\n' not in message


def test_truncated_jpeg(tmp_path):
    gt = np.random.default_rng(0).integers(0, 256, (256, 192, 3), dtype=np.uint8)
    for folder, img in (('gt', gt), ('lq', cv2.resize(gt, (48, 64), interpolation=cv2.INTER_AREA))):
        os.makedirs(tmp_path / folder)
        for name in ('a', 'b'):
            assert cv2.imwrite(str(tmp_path / folder / f'{name}.jpg'), img)
    opt = tiny_options('check', total_iter=2, val_set=None)
    opt['datasets']['train'].update(dataroot_gt=str(tmp_path / 'gt'), dataroot_lq=str(tmp_path / 'lq'))
    check_options(opt)
    path = tmp_path / 'lq' / 'b.jpg'
    path.write_bytes(path.read_bytes()[:-200])  # the pixel data is cut, the header is complete
    _refused(opt, f'"{path}" is a truncated JPEG file')


def test_gt_size_larger_than_a_training_image(tmp_path):
    opt = _opt(tmp_path, gt_size=404)  # coffee.png is 600x400, the other training photos are larger
    message = _refused(opt, f'datasets.train: GT image "{tmp_path}/train/gt/coffee.png" is 600x400, smaller than '
                       'datasets.train.gt_size 404, the training crop; lower gt_size to at most 400 or remove the '
                       'pair.')
    assert '\n' not in message
    opt['datasets']['train']['gt_size'] = 400
    check_options(opt)


def test_many_problems_are_listed_with_a_count(tmp_path):
    for folder, size in (('gt', 48), ('lq', 10)):  # 48 / 4 = 12, not 10
        os.makedirs(tmp_path / folder)
        for i in range(13):
            assert cv2.imwrite(str(tmp_path / folder / f'{i:02d}.png'), np.zeros((size, size, 3), np.uint8))
    opt = tiny_options('check', total_iter=2, val_set=None)
    opt['datasets']['train'].update(dataroot_gt=str(tmp_path / 'gt'), dataroot_lq=str(tmp_path / 'lq'))
    message = _refused(opt, 'datasets.train: 13 problems in 13 GT/LR pairs:\n  GT image', '\n  ... and 3 more')
    assert len(message.splitlines()) == 1 + 10 + 1
    assert f'{tmp_path}/lq/09.png' in message and f'{tmp_path}/lq/10.png' not in message


def test_a_refused_start_writes_nothing(tmp_path):
    opt = _opt(tmp_path / 'data')
    (tmp_path / 'data' / 'val' / 'lq' / 'chelsea.png').write_bytes(b'')
    (tmp_path / 'run').mkdir()
    with pytest.raises(OptionError, match='chelsea.png" cannot be read as an image'):
        run_in(tmp_path / 'run', opt)
    assert os.listdir(tmp_path / 'run') == ['check.yml']  # the option file this test wrote; no experiments/


def test_image_header_sizes_match_opencv(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for ext in ('.png', '.jpg', '.bmp', '.tif', '.webp'):
        path = str(tmp_path / f'img{ext}')
        assert cv2.imwrite(path, img)
        decoded = cv2.imread(path)
        assert image_header(path) == (decoded.shape[1], decoded.shape[0]) == (53, 37), ext
    with pytest.raises(ValueError, match='cannot be read as an image'):
        image_header(str(tmp_path / 'missing.png'))


# ------------------------------------------------------------------------------------------------------- LMDB
@pytest.fixture
def lmdb_opt(tmp_path):
    """Valid tiny options whose training set is a pair of BasicSR LMDBs made by dupru-prepare (x4, 3 images)."""
    from dupru_basicsr.prepare import prepare
    src = tmp_path / 'hr'
    src.mkdir()
    rng = np.random.default_rng(2)
    for name, (h, w) in {'a': (64, 48), 'b': (48, 80), 'c': (40, 40)}.items():
        assert cv2.imwrite(str(src / f'{name}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    result = prepare(input_dir=str(src), out_dir=str(tmp_path / 'out'), scales=(4, ), lmdb=True, workers=1,
                     progress=False)
    opt = tiny_options('check', total_iter=2, val_set=None, gt_size=32)
    opt['datasets']['train'].update(dataroot_gt=result['lmdb']['GTmod4'], dataroot_lq=result['lmdb']['LRbicx4'],
                                    io_backend={'type': 'lmdb'})
    check_options(opt)
    return opt


def _edit_meta(lmdb_path, old, new):
    meta = osp.join(lmdb_path, 'meta_info.txt')
    with open(meta) as f:
        text = f.read()
    assert old in text, text
    with open(meta, 'w') as f:
        f.write(text.replace(old, new))


def test_lmdb_sizes_from_meta_info(lmdb_opt):
    train = lmdb_opt['datasets']['train']
    _edit_meta(train['dataroot_lq'], 'b.png (12,20,3)', 'b.png (12,21,3)')
    _refused(lmdb_opt, f'datasets.train: GT image "{train["dataroot_gt"]}:b" is 80x48 but its LR image '
             f'"{train["dataroot_lq"]}:b" is 21x12; with scale 4 the GT must be 84x48.')


def test_lmdb_gt_size_and_keys(lmdb_opt):
    train = lmdb_opt['datasets']['train']
    train['gt_size'] = 44
    _refused(lmdb_opt, f'GT image "{train["dataroot_gt"]}:c" is 40x40, smaller than datasets.train.gt_size 44')
    train['gt_size'] = 32
    _edit_meta(train['dataroot_lq'], 'c.png', 'd.png')
    _refused(lmdb_opt, 'datasets.train: the LMDBs hold different keys (2 in only one of them, e.g. "c" only in '
             'dataroot_gt)')
    train['dataroot_lq'] = shutil.copytree(train['dataroot_lq'], train['dataroot_lq'][:-len('.lmdb')] + '_copy')
    _refused(lmdb_opt, f'datasets.train.dataroot_lq: "{train["dataroot_lq"]}" does not end with .lmdb')
