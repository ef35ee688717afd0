"""Tests of the data preparation CLI (`python -m dupru_basicsr.prepare`).

The MATLAB test is the one that matters for results: LR images made here must agree with MATLAB's (a crop of Set5 and
its MATLAB-made x4 LR ship in tests/data), otherwise PSNR/SSIM would not be comparable with published numbers. The
other tests use small random images in tmp_path, and mostly one worker, so that the file runs in seconds.
"""
import os
import shutil
from os import path as osp

import cv2
import numpy as np
import pytest

import dupru_basicsr  # noqa: F401  (compatibility shims before anything from basicsr)
from dupru_basicsr.data.bicubic import bicubic_resize, float_to_uint8
from dupru_basicsr.data.prepare import PrepareError, crop_positions, prepare
from dupru_basicsr.prepare import main

DATA = osp.join(osp.dirname(osp.abspath(__file__)), 'data')


def write_random_images(folder, sizes, channels=3, seed=0):
    """Random uint8 PNGs `<name>.png` of the given {name: (h, w)}; returns the folder."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name, (h, w) in sizes.items():
        shape = (h, w) if channels == 1 else (h, w, channels)
        assert cv2.imwrite(osp.join(folder, f'{name}.png'), rng.integers(0, 256, shape, dtype=np.uint8))
    return str(folder)


def read(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def snapshot(folder):
    """Every file below `folder` with its size and mtime, to show that a refused run left it untouched."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            stat = os.stat(osp.join(root, name))
            files[osp.relpath(osp.join(root, name), folder)] = (stat.st_size, stat.st_mtime_ns)
    return files


# ---------------------------------------------------------------------------------------------------------------
# Correctness
# ---------------------------------------------------------------------------------------------------------------
def test_lr_matches_matlab_bicubic(tmp_path):
    """A 96x96 crop of Set5's butterfly, downscaled x4 through dupru-prepare, against the same region of Set5's
    MATLAB-made LR image (tests/data/README.md); the outer 2 LR pixels depend on pixels outside the crop."""
    src = tmp_path / 'hr'
    src.mkdir()
    shutil.copy(osp.join(DATA, 'set5_butterfly_crop_GT.png'), src / 'butterfly.png')
    result = prepare(input_dir=str(src), out_dir=str(tmp_path / 'out'), scales=(4, ), workers=1, progress=False)

    assert os.listdir(result['lr'][4]) == ['butterfly.png']
    # 96 divides by 4, so mod-cropping must leave the HR image untouched
    np.testing.assert_array_equal(read(osp.join(result['gt'], 'butterfly.png')), read(src / 'butterfly.png'))
    ours = read(osp.join(result['lr'][4], 'butterfly.png'))
    matlab = read(osp.join(DATA, 'set5_butterfly_crop_LRbicx4_matlab.png'))
    assert ours.shape == matlab.shape == (24, 24, 3)
    diff = np.abs(ours.astype(np.int16) - matlab.astype(np.int16))[2:-2, 2:-2]
    within, exact = np.mean(diff <= 1), np.mean(diff == 0)
    print(f'x4 vs MATLAB, {diff.shape[0]}x{diff.shape[1]} interior: within +-1: {within:.4%}, exact: {exact:.4%}, '
          f'max diff {diff.max()}')
    assert within >= 0.99


def test_bicubic_rounds_halves_up_like_matlab():
    """The one bicubic (LR images and the report's baseline) rounds like MATLAB's im2uint8: halves away from zero
    (2.5 -> 3), not to even as np.round does (2.5 -> 2); below 0 and above 255 clip."""
    halves = (np.arange(255) + 0.5) / 255.  # exactly k + 0.5 after * 255 in float64
    np.testing.assert_array_equal(float_to_uint8(halves), np.arange(1, 256))
    assert not np.array_equal(np.round(halves * 255.), np.arange(1, 256))  # the rounding this replaces differs
    np.testing.assert_array_equal(float_to_uint8(np.array([-0.1, 0.0, 1.0, 1.2])), [0, 0, 255, 255])
    # a constant image stays constant through the float64 resize, both ways
    flat = np.full((24, 20, 3), (10, 128, 250), np.uint8)
    np.testing.assert_array_equal(bicubic_resize(flat, 1 / 4), flat[:6, :5])
    np.testing.assert_array_equal(bicubic_resize(flat[:6, :5], 4), flat)


def test_mod_crop_lr_sizes_and_channel_order(tmp_path):
    sizes = {'odd': (101, 77), 'wide': (50, 131), 'exact': (48, 72)}
    src = write_random_images(tmp_path / 'hr', sizes)
    # a constant image with different B, G, R values shows the channel order survives (bicubic keeps constants)
    assert cv2.imwrite(str(tmp_path / 'hr' / 'colour.png'), np.full((40, 52, 3), (10, 128, 250), np.uint8))
    sizes['colour'] = (40, 52)
    result = prepare(input_dir=src, out_dir=str(tmp_path / 'out'), scales=(2, 3, 4), workers=1, progress=False)

    assert osp.basename(result['gt']) == 'GTmod12'
    assert sorted(osp.basename(p) for p in result['lr'].values()) == ['LRbicx2', 'LRbicx3', 'LRbicx4']
    assert result['num_images'] == 4
    for name, (h, w) in sizes.items():
        gt = read(osp.join(result['gt'], f'{name}.png'))
        assert gt.shape == (h - h % 12, w - w % 12, 3)
        np.testing.assert_array_equal(gt, read(osp.join(src, f'{name}.png'))[:gt.shape[0], :gt.shape[1]])
        for scale in (2, 3, 4):
            lr = read(osp.join(result['lr'][scale], f'{name}.png'))
            assert lr.shape == (gt.shape[0] // scale, gt.shape[1] // scale, 3)
    for scale in (2, 3, 4):
        lr = read(osp.join(result['lr'][scale], 'colour.png'))
        assert (lr.reshape(-1, 3) == (10, 128, 250)).all()


def test_single_scale_folder_names(tmp_path):
    src = write_random_images(tmp_path / 'hr', {'img': (37, 41)})
    result = prepare(input_dir=src, out_dir=str(tmp_path / 'out'), scales=3, workers=1, progress=False)
    assert sorted(os.listdir(tmp_path / 'out')) == ['GTmod3', 'LRbicx3']
    assert read(osp.join(result['gt'], 'img.png')).shape == (36, 39, 3)
    assert read(osp.join(result['lr'][3], 'img.png')).shape == (12, 13, 3)


def test_crop_positions_follow_basicsr():
    assert crop_positions(120, 48, 24, 0) == [0, 24, 48, 72]
    assert crop_positions(132, 48, 24, 0) == [0, 24, 48, 72, 84]  # 12 px left over > thresh: border crop added
    assert crop_positions(132, 48, 24, 12) == [0, 24, 48, 72]  # 12 px left over, not > 12: dropped
    assert crop_positions(48, 48, 24, 0) == [0]
    with pytest.raises(ValueError):
        crop_positions(40, 48, 24, 0)


@pytest.mark.parametrize('thresh_size, counts', [(0, {'a': 20, 'b': 2}), (12, {'a': 16, 'b': 1})])
def test_subimages_counts_alignment_and_meta_info(tmp_path, thresh_size, counts):
    # after mod-crop to 4: a is 120x132 (4 x 5 crops of 48, step 24), b is 48x60 (1 x 2)
    src = write_random_images(tmp_path / 'hr', {'a': (120, 132), 'b': (50, 61)})
    out = tmp_path / 'out'
    result = prepare(input_dir=src, out_dir=str(out), scales=(2, 4), subimages=True, crop_size=48, step=24,
                     thresh_size=thresh_size, workers=1, progress=False)
    assert result['num_subimages'] == sum(counts.values())

    expected_names = sorted(f'{n}_s{i:03d}.png' for n, count in counts.items() for i in range(1, count + 1))
    for folder, size in ((result['gt_sub'], 48), (result['lr_sub'][2], 24), (result['lr_sub'][4], 12)):
        assert sorted(os.listdir(folder)) == expected_names
        meta_path = out / f'meta_info_{osp.basename(folder)}.txt'
        assert result['meta_info'][osp.basename(folder)] == str(meta_path)
        assert meta_path.read_text().splitlines() == [f'{n} ({size},{size},3)' for n in expected_names]
        for name in expected_names:
            assert read(osp.join(folder, name)).shape == (size, size, 3)
    assert sorted(p.name for p in out.iterdir()) == sorted([
        'GTmod4', 'LRbicx2', 'LRbicx4', 'GTmod4_sub', 'LRbicx2_sub', 'LRbicx4_sub', 'meta_info_GTmod4_sub.txt',
        'meta_info_LRbicx2_sub.txt', 'meta_info_LRbicx4_sub.txt'
    ])

    # row-major numbering, and every LR sub-image is exactly the matching region of the full LR image
    gt, lr4 = read(osp.join(result['gt'], 'a.png')), read(osp.join(result['lr'][4], 'a.png'))
    columns = 5 if thresh_size == 0 else 4
    top, left = 24, 24  # second row, second column
    index = columns + 2
    np.testing.assert_array_equal(read(osp.join(result['gt_sub'], f'a_s{index:03d}.png')),
                                  gt[top:top + 48, left:left + 48])
    np.testing.assert_array_equal(read(osp.join(result['lr_sub'][4], f'a_s{index:03d}.png')),
                                  lr4[top // 4:top // 4 + 12, left // 4:left // 4 + 12])
    if thresh_size == 0:  # the border-aligned crop of the last column
        np.testing.assert_array_equal(read(osp.join(result['gt_sub'], 'a_s005.png')), gt[0:48, 84:132])


def test_skimage_source(tmp_path):
    import skimage.data

    out = tmp_path / 'out'
    result = prepare(skimage=True, out_dir=str(out), scales=(4, ), workers=2, progress=False)
    sources = sorted(os.listdir(result['source']))
    assert len(sources) >= 5, sources
    assert sorted(os.listdir(result['gt'])) == sources == sorted(os.listdir(result['lr'][4]))
    for name in sources:
        assert read(osp.join(result['source'], name)).ndim == 3
        assert read(osp.join(result['source'], name)).shape[2] == 3
    # PNGs are stored BGR by OpenCV: reading back and flipping must give scikit-image's RGB array
    astronaut = read(osp.join(result['source'], 'astronaut.png'))
    np.testing.assert_array_equal(astronaut[:, :, ::-1], skimage.data.astronaut())


def test_convert_accepts_grayscale_rgba_and_16bit(tmp_path):
    src = tmp_path / 'hr'
    write_random_images(src, {'gray': (24, 28)}, channels=1, seed=1)
    write_random_images(src, {'rgba': (24, 28)}, channels=4, seed=2)
    deep = np.random.default_rng(3).integers(0, 65536, (24, 28, 3), dtype=np.uint16)
    assert cv2.imwrite(str(src / 'deep.png'), deep)
    result = prepare(input_dir=str(src), out_dir=str(tmp_path / 'out'), scales=(4, ), convert=True, workers=1,
                     progress=False)
    gray = read(osp.join(result['gt'], 'gray.png'))
    assert gray.shape == (24, 28, 3)
    assert (gray[:, :, 0] == gray[:, :, 1]).all() and (gray[:, :, 1] == gray[:, :, 2]).all()
    np.testing.assert_array_equal(read(osp.join(result['gt'], 'rgba.png')), read(src / 'rgba.png')[:, :, :3])
    converted = read(osp.join(result['gt'], 'deep.png'))
    assert converted.dtype == np.uint8 and converted.shape == (24, 28, 3)
    np.testing.assert_array_equal(converted, np.floor(deep / 257. + 0.5).astype(np.uint8))


def test_lmdb_output(tmp_path):
    lmdb = pytest.importorskip('lmdb')
    src = write_random_images(tmp_path / 'hr', {'a': (96, 100), 'b': (60, 72), 'c': (49, 50)})
    result = prepare(input_dir=src, out_dir=str(tmp_path / 'out'), scales=(2, ), subimages=True, crop_size=48,
                     step=24, lmdb=True, workers=2, progress=False)
    assert sorted(result['lmdb']) == ['GTmod2', 'GTmod2_sub', 'LRbicx2', 'LRbicx2_sub']
    for folder_name, lmdb_path in result['lmdb'].items():
        assert lmdb_path == str(tmp_path / 'out' / f'{folder_name}.lmdb')
        files = sorted(os.listdir(tmp_path / 'out' / folder_name))
        env = lmdb.open(lmdb_path, readonly=True, lock=False, readahead=False)
        try:
            assert env.stat()['entries'] == len(files)
            with env.begin() as txn:
                keys = sorted(key.decode('ascii') for key, _ in txn.cursor())
                assert keys == [osp.splitext(f)[0] for f in files]
                stored = cv2.imdecode(np.frombuffer(txn.get(keys[0].encode('ascii')), np.uint8), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(stored, read(tmp_path / 'out' / folder_name / files[0]))
        finally:
            env.close()
        meta = (tmp_path / 'out' / f'{folder_name}.lmdb' / 'meta_info.txt').read_text().splitlines()
        assert len(meta) == len(files)
        h, w, c = read(tmp_path / 'out' / folder_name / files[0]).shape
        assert meta[0] == f'{files[0]} ({h},{w},{c}) 1'  # BasicSR: name, shape, PNG compression level


def test_cli_summary_and_help(tmp_path, capsys):
    src = write_random_images(tmp_path / 'hr', {'x': (40, 40), 'y': (44, 48)})
    out = tmp_path / 'out'
    assert main(['--input', src, '--out', str(out), '--scales', '2', '4', '--workers', '1']) == 0
    stdout = capsys.readouterr().out
    assert 'Prepared 2 image(s)' in stdout
    assert str(out / 'GTmod4') in stdout and str(out / 'LRbicx2') in stdout
    assert main(['--help']) == 0
    assert '--subimages' in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# Rejections: exit code 2, a message naming the file / option, nothing written
# ---------------------------------------------------------------------------------------------------------------
def _corrupt_png(folder):
    (folder / 'broken.png').write_bytes(b'definitely not a png')


def _truncated_jpeg(folder):
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode('.jpg', img)[1].tobytes()
    (folder / 'truncated.jpg').write_bytes(data[:len(data) // 2])


def _grayscale(folder):
    write_random_images(folder, {'gray': (64, 64)}, channels=1)


def _rgba(folder):
    write_random_images(folder, {'rgba': (64, 64)}, channels=4)


def _deep(folder):
    assert cv2.imwrite(str(folder / 'deep.png'), np.zeros((64, 64, 3), np.uint16))


def _small_for_crop(folder):
    write_random_images(folder, {'small': (40, 100)})


def _smaller_than_scale(folder):
    write_random_images(folder, {'tiny': (3, 30)})


def _one_pixel_lr(folder):
    write_random_images(folder, {'thin': (6, 30)})  # 4 rows after mod-crop: a 1-row x4 LR image


def _too_small_to_evaluate(folder):
    write_random_images(folder, {'photo10': (10, 10)})  # would be a 2x2 x4 LR image: SSIM has nothing left


def _duplicate_name(folder):
    write_random_images(folder, {'good': (64, 64)})
    (folder / 'good.bmp').write_bytes((folder / 'good.png').read_bytes())


BAD_IMAGE_CASES = {
    'corrupt': (_corrupt_png, [], ['broken.png', 'corrupt']),
    'truncated-jpeg': (_truncated_jpeg, [], ['truncated.jpg', 'corrupt']),
    'grayscale': (_grayscale, [], ['gray.png', 'grayscale', 'RGB', '--convert']),
    'rgba': (_rgba, [], ['rgba.png', 'RGBA', '--convert']),
    '16-bit': (_deep, [], ['deep.png', '16-bit', '--convert']),
    'smaller-than-crop': (_small_for_crop, ['--subimages', '--crop-size', '48', '--step', '24'],
                          ['small.png', '40x100', '--crop-size 48']),
    'smaller-than-scale': (_smaller_than_scale, ['--scales', '4'], ['tiny.png', '3x30', '--scales']),
    'one-pixel-lr': (_one_pixel_lr, ['--scales', '4'], ['thin.png', '6x30 (4x28 after mod-crop', 'x4', '--scales']),
    'too-small-to-evaluate': (_too_small_to_evaluate, ['--scales', '4'],
                              ['photo10.png', '10x10 (8x8 after mod-crop to a multiple of 4) is too small to evaluate '
                               'at x4: every side must keep at least 19 pixels', '--scales']),
    'duplicate-name': (_duplicate_name, [], ['good.bmp', 'good.png', 'rename']),
}


@pytest.mark.parametrize('case', sorted(BAD_IMAGE_CASES))
def test_bad_image_is_refused_and_nothing_written(tmp_path, capsys, case):
    make_bad, extra_args, expected = BAD_IMAGE_CASES[case]
    src = tmp_path / 'hr'
    write_random_images(src, {'fine1': (64, 64), 'fine2': (72, 60)})  # good images alongside the bad one
    make_bad(src)
    out = tmp_path / 'out'
    assert main(['--input', str(src), '--out', str(out), '--workers', '1'] + extra_args) == 2
    stderr = capsys.readouterr().err
    for text in expected:
        assert text in stderr, (text, stderr)
    assert 'fine1' not in stderr
    assert not out.exists()


@pytest.mark.parametrize('scale, smallest_refused, smallest_accepted', [(2, 14, 16), (3, 15, 18), (4, 16, 20)])
def test_smallest_usable_image(tmp_path, capsys, scale, smallest_refused, smallest_accepted):
    """At least 4 LR pixels a side, and room for BasicSR's SSIM (crop `scale` border pixels, then an 11x11 window):
    every small image is named in one error (exit 2); the smallest accepted size is evaluated with a finite SSIM."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    src = write_random_images(tmp_path / 'hr', {'a': (smallest_refused, 40), 'b': (40, smallest_refused),
                                                'ok': (smallest_accepted, smallest_accepted)})
    assert main(['--input', src, '--out', str(tmp_path / 'out'), '--scales', str(scale), '--workers', '1']) == 2
    error = capsys.readouterr().err.partition('dupru-prepare: error: ')[2]  # after the progress bar
    assert error.count('\n') == 3 and '2 problem(s)' in error and 'a.png' in error and 'b.png' in error, error
    assert not (tmp_path / 'out').exists()

    os.remove(osp.join(src, 'a.png'))
    os.remove(osp.join(src, 'b.png'))
    result = prepare(input_dir=src, out_dir=str(tmp_path / 'out'), scales=(scale, ), workers=1, progress=False)
    gt = read(osp.join(result['gt'], 'ok.png'))
    lr = read(osp.join(result['lr'][scale], 'ok.png'))
    up = cv2.resize(lr, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_CUBIC)
    assert np.isfinite(calculate_ssim(up, gt, crop_border=scale, test_y_channel=True))
    assert np.isfinite(calculate_psnr(up, gt, crop_border=scale, test_y_channel=True))


def test_option_and_folder_rejections(tmp_path, capsys):
    src = write_random_images(tmp_path / 'hr', {'img': (64, 64)})
    out = tmp_path / 'out'

    def refused(args, *expected):
        before = snapshot(tmp_path)
        assert main(args + ['--workers', '1']) == 2, args
        stderr = capsys.readouterr().err
        for text in expected:
            assert text in stderr, (text, stderr)
        assert snapshot(tmp_path) == before, args
        assert not out.exists()

    refused(['--input', str(tmp_path / 'missing'), '--out', str(out)], str(tmp_path / 'missing'), 'does not exist')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    refused(['--input', str(tmp_path / 'empty'), '--out', str(out)], str(tmp_path / 'empty'), 'no images')
    refused(['--input', src, '--out', src], f'--out {src}', 'outside the input folder')
    refused(['--input', src, '--out', osp.join(src, 'prepared')], osp.join(src, 'prepared'), 'inside --input')
    refused(['--input', src, '--out', str(out), '--scales', '3', '--subimages', '--crop-size', '100', '--step', '48'],
            '--crop-size 100', 'not divisible', 'scale(s) 3', 'multiple of 3')
    refused(['--input', src, '--out', str(out), '--scales', '2', '3', '--subimages', '--crop-size', '48', '--step',
             '20'], '--step 20', 'scale(s) 3', 'multiple of 6')
    refused(['--input', src, '--out', str(out), '--scales', '1'], '--scales 1', '>= 2')
    # the HR images inside a folder that this run would write (and --force delete)
    nested = write_random_images(tmp_path / 'data' / 'GTmod4', {'img': (64, 64)})
    refused(['--input', nested, '--out', str(tmp_path / 'data'), '--force'], f'--input {nested}', 'is inside')
    # argparse usage errors also return 2 instead of raising SystemExit
    assert main(['--out', str(out)]) == 2
    assert main(['--input', src, '--skimage', '--out', str(out)]) == 2
    capsys.readouterr()
    assert not out.exists()


def test_python_api_raises_prepare_error(tmp_path):
    with pytest.raises(PrepareError, match='--crop-size 50'):
        prepare(input_dir=str(tmp_path), out_dir=str(tmp_path / 'out'), scales=(4, ), subimages=True, crop_size=50)
    with pytest.raises(ValueError, match='no input'):
        prepare(out_dir=str(tmp_path / 'out'))


def test_existing_output_needs_force(tmp_path, capsys):
    src = write_random_images(tmp_path / 'hr', {'img': (64, 64)})
    out = tmp_path / 'out'
    args = ['--input', src, '--out', str(out), '--scales', '4', '--workers', '1']
    assert main(args) == 0
    (out / 'GTmod4' / 'stale.png').write_bytes(b'left over from an earlier run')
    (out / 'notes.txt').write_text('not ours: must survive --force')
    before = snapshot(out)
    capsys.readouterr()

    assert main(args) == 2
    stderr = capsys.readouterr().err
    assert str(out / 'GTmod4') in stderr and str(out / 'LRbicx4') in stderr and '--force' in stderr
    assert snapshot(out) == before

    write_random_images(tmp_path / 'hr', {'img': (80, 80)}, seed=5)  # new content must replace the old
    assert main(args + ['--force']) == 0
    assert sorted(os.listdir(out / 'GTmod4')) == ['img.png']
    assert read(out / 'GTmod4' / 'img.png').shape == (80, 80, 3)
    assert read(out / 'LRbicx4' / 'img.png').shape == (20, 20, 3)
    assert (out / 'notes.txt').read_text() == 'not ours: must survive --force'
