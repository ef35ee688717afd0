"""Tests of `dupru-compare` (dupru_basicsr.compare) on tiny MSRResNet runs and tiny datasets, CPU only.

The expensive part (evaluating three runs with their tickets and writing the report) runs once per module; the
tests then check what a user relies on: the numbers are BasicSR's, the outputs parse, the figures exist, the HTML
stands alone, the sparse size helper is lossless, and every bad input fails fast with the offending path named.
"""
import csv
import json
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch
import yaml

import dupru_basicsr  # noqa: F401  (compatibility shims before basicsr)
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.matlab_functions import imresize

from dupru_basicsr.compare import main
from dupru_basicsr.report import CompareError
from dupru_basicsr.report.build import compare
from dupru_basicsr.report.evaluate import compressed_size_bytes, saved_size_bytes
from dupru_basicsr.report.results import MEAN_ROW
from dupru_basicsr.weights.arch import infer_msrresnet_arch

SCALE = 4
ARCH = {'num_feat': 8, 'num_block': 2, 'upscale': SCALE}


# ------------------------------------------------------------------------------------------------ builders
def make_image(rng, size=48):
    """A smooth, textured BGR uint8 image (gradients, a disc, noise): SR of it is neither trivial nor hopeless."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in rng.uniform(0, 3, 3)], axis=2)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < 0.04] *= 0.5
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def write_dataset(root, name, stems, seed, scale=SCALE, size=48):
    rng = np.random.default_rng(seed)
    gt_dir, lr_dir = osp.join(root, name, 'GTmod12'), osp.join(root, name, f'LRbicx{scale}')
    for folder in (gt_dir, lr_dir):
        os.makedirs(folder, exist_ok=True)
    for stem in stems:
        gt = make_image(rng, size)
        lr = imresize(gt.astype(np.float64) / 255., 1 / scale)
        cv2.imwrite(osp.join(gt_dir, f'{stem}.png'), gt)
        cv2.imwrite(osp.join(lr_dir, f'{stem}.png'), np.clip(np.round(lr * 255), 0, 255).astype(np.uint8))
    return gt_dir, lr_dir


def tiny_state(seed, sparsity=0.0, **arch):
    """A random MSRResNet state dict; `sparsity` of each body weight tensor set to zero (smallest magnitudes)."""
    torch.manual_seed(seed)
    state = MSRResNet(**{**ARCH, **arch}).state_dict()
    for name, tensor in state.items():
        if sparsity and name.startswith('body.') and name.endswith('weight'):
            k = int(sparsity * tensor.numel())
            threshold = tensor.abs().flatten().kthvalue(k).values
            tensor[tensor.abs() <= threshold] = 0
    return state


def write_option(path, name, model_type, pruning=None, scale=SCALE, **arch):
    opt = {'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 0,
           'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, **ARCH, **arch}}
    if pruning:
        opt['pruning'] = pruning
    with open(path, 'w') as f:
        f.write('# GENERATE TIME: Mon Jan  1 00:00:00 2024\n# CMD:\n# dupru-train -opt x.yml\n\n')
        yaml.safe_dump(opt, f)


def write_log(path, name, losses):
    with open(path, 'w') as f:
        f.write('2024-01-01 00:00:00,000 INFO: \n  Version Information: ...\n')
        for it, loss in losses:
            f.write(f'2024-01-01 00:00:01,000 INFO: [{name[:5]}..][epoch:  0, iter:{it:8,d}, lr:(2.000e-04,)] '
                    f'[eta: 0:00:10, time (data): 0.100 (0.001)] l_pix: {loss:.4e} \n')
        f.write('2024-01-01 00:00:02,000 INFO: Validation Tiny\n\t # psnr: 25.1234\tBest: 25.1234 @ 1000 iter\n')


def make_experiment(root, name, model_type, seed, pruning=None, sparsity=0.0, tickets=(), ema=False, log=True):
    exp = osp.join(root, name)
    os.makedirs(osp.join(exp, 'models'))
    write_option(osp.join(exp, f'train_{name}.yml'), name, model_type, pruning)
    ckpt = {'params': tiny_state(seed, sparsity)}
    if ema:
        ckpt['params_ema'] = tiny_state(seed + 100, sparsity)
    torch.save(ckpt, osp.join(exp, 'models', 'net_g_latest.pth'))
    for r, kept in enumerate(tickets, start=1):
        ticket = {'params': tiny_state(seed + r, 1 - kept), 'keep_masks': {},
                  'ticket': {'round': r, 'iter': 100 * r, 'dataset': 'Tiny', 'metric': 'psnr', 'value': 20.0 + r,
                             'kept_fraction': kept, 'method': pruning['method']}}
        torch.save(ticket, osp.join(exp, 'models', f'net_g_round{r}_best.pth'))
    if log:
        write_log(osp.join(exp, f'train_{name}_20240101_000000.log'), name,
                  [(it, 0.1 / (1 + it / 500)) for it in (10, 500, 1000, 1500)])
    return exp


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('compare')
    data_root = str(root / 'datasets')
    write_dataset(data_root, 'Tiny', ['baby', 'bird', 'butterfly'], seed=1)
    write_dataset(data_root, 'Tiny2', ['a', 'b'], seed=2)
    exps = str(root / 'experiments')
    stock = make_experiment(exps, 'stock_x4', 'SRModel', seed=10)
    dupru = make_experiment(exps, 'dupru_r50', 'DUPruModel', seed=20, sparsity=0.5, ema=True, tickets=(1.0, 0.5),
                            pruning={'method': 'dupru', 'rate': 50, 'rounds': 2})
    upru = make_experiment(exps, 'upru_r20', 'DUPruModel', seed=30, sparsity=0.2, tickets=(1.0, 0.8), log=False,
                           pruning={'method': 'upru', 'rate': 20, 'rounds': 2})
    out = str(root / 'out')
    results = compare([stock, dupru, upru], datasets=['Tiny', 'Tiny2'], data_root=data_root, out_dir=out,
                      crops=['butterfly'], repeats=1, warmup=0, progress=False)
    return {'root': root, 'data_root': data_root, 'exps': exps, 'stock': stock, 'dupru': dupru, 'upru': upru,
            'out': out, 'results': results}


def basicsr_metrics(state, gt_path, lr_path):
    """SR and metrics computed here independently, the way BasicSR's SRModel validation does."""
    net = MSRResNet(**ARCH)
    net.load_state_dict(state)
    net.eval()
    lr = cv2.imread(lr_path, cv2.IMREAD_COLOR).astype(np.float32) / 255.
    gt = cv2.imread(gt_path, cv2.IMREAD_COLOR)
    with torch.no_grad():
        sr = tensor2img([net(img2tensor(lr, bgr2rgb=True, float32=True).unsqueeze(0))])
    return {'psnr_rgb': calculate_psnr(sr, gt, SCALE), 'ssim_rgb': calculate_ssim(sr, gt, SCALE),
            'psnr_y': calculate_psnr(sr, gt, SCALE, test_y_channel=True),
            'ssim_y': calculate_ssim(sr, gt, SCALE, test_y_channel=True)}


# ------------------------------------------------------------------------------------------------ numbers
def test_metrics_equal_direct_basicsr_computation(setup):
    results = setup['results']
    labels = results.labels
    assert labels == ['stock (stock_x4)', 'dupru (dupru_r50)', 'upru (upru_r20)']
    ckpt = torch.load(osp.join(setup['dupru'], 'models', 'net_g_latest.pth'), weights_only=True)
    assert results.models[1]['param_key'] == 'params_ema'  # EMA weights are what SRModel evaluates
    per_image = []
    for stem in ('baby', 'bird', 'butterfly'):
        direct = basicsr_metrics(ckpt['params_ema'], osp.join(setup['data_root'], 'Tiny', 'GTmod12', f'{stem}.png'),
                                 osp.join(setup['data_root'], 'Tiny', 'LRbicx4', f'{stem}.png'))
        for metric, value in direct.items():
            assert results.value('dupru (dupru_r50)', 'Tiny', stem, metric) == pytest.approx(value, abs=1e-9)
        per_image.append(direct['psnr_rgb'])
    assert results.mean('dupru (dupru_r50)', 'Tiny', 'psnr_rgb') == pytest.approx(np.mean(per_image), abs=1e-9)
    # The stock run has no EMA: its plain params are used.
    assert results.models[0]['param_key'] == 'params'
    assert results.models[0]['method'] == 'stock' and results.models[2]['method'] == 'upru'
    assert results.baseline == 'stock (stock_x4)'


def test_model_stats_and_timing(setup):
    stats = {s['label']: s for s in setup['results'].model_stats}
    assert stats['stock (stock_x4)']['body_sparsity'] == 0
    assert stats['dupru (dupru_r50)']['body_sparsity'] == pytest.approx(0.5, abs=0.01)
    assert stats['dupru (dupru_r50)']['nonzero_params'] < stats['stock (stock_x4)']['nonzero_params']
    dense = stats['stock (stock_x4)']['dense_bytes']
    assert stats['dupru (dupru_r50)']['dense_bytes'] == pytest.approx(dense, rel=0.01)  # zeros cost like weights
    for s in stats.values():
        assert s['params'] == sum(v.numel() for v in MSRResNet(**ARCH).state_dict().values())
        assert s['timing']['ms_per_image'] > 0 and s['timing']['images'] == 3


def test_round_and_rate_curves(setup):
    results = setup['results']
    dupru = results.round_curves['dupru (dupru_r50)']
    assert [p['round'] for p in dupru] == [1, 2]
    assert [p['kept_percent'] for p in dupru] == pytest.approx([100.0, 50.0])
    assert all(np.isfinite(p['psnr_rgb']) for p in dupru)
    assert 'stock (stock_x4)' not in results.round_curves
    assert {p['rate'] for curve in results.rate_curves.values() for p in curve} == {20.0, 50.0}
    curve = results.training_curves['stock (stock_x4)']
    assert curve['iter'] == [10, 500, 1000, 1500]  # 'iter:   1,000' is parsed with its thousands separator
    assert curve['l_pix'][0] == pytest.approx(0.1 / 1.02, rel=1e-3)
    assert 'upru (upru_r20)' not in results.training_curves  # no log written for it


# ------------------------------------------------------------------------------------------------ outputs
def test_csv_and_json_rows(setup):
    out = setup['out']
    with open(osp.join(out, 'results.csv')) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * (3 + 1 + 2 + 1)  # runs x (images + mean) per dataset
    assert set(rows[0]) == {'label', 'method', 'dataset', 'image', 'psnr_rgb', 'ssim_rgb', 'psnr_y', 'ssim_y'}
    means = [r for r in rows if r['image'] == MEAN_ROW]
    assert len(means) == 6
    row = next(r for r in means if r['label'] == 'upru (upru_r20)' and r['dataset'] == 'Tiny2')
    assert float(row['psnr_y']) == pytest.approx(setup['results'].mean('upru (upru_r20)', 'Tiny2', 'psnr_y'), abs=1e-5)
    with open(osp.join(out, 'results.json')) as f:
        data = json.load(f)
    assert len(data['rows']) == len(rows)
    assert [m['label'] for m in data['models']] == setup['results'].labels
    assert data['settings']['scale'] == SCALE and len(data['model_stats']) == 3


def test_figures_are_png(setup):
    figures = setup['results'].figures
    assert set(figures) == {'rounds', 'rates', 'training', 'crops'}
    for path in figures.values():
        with open(path, 'rb') as f:
            content = f.read()
        assert content[:8] == b'\x89PNG\r\n\x1a\n' and len(content) > 2000, path


def test_reports_are_self_contained_and_complete(setup):
    with open(osp.join(setup['out'], 'report.html'), encoding='utf-8') as f:
        page = f.read()
    refs = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', page, flags=re.IGNORECASE)
    assert refs and all(ref.startswith('data:') for ref in refs), refs
    assert 'url(' not in page and '@import' not in page
    assert page.count('data:image/png;base64,') == 4
    for title in ('Table 2 analogue', 'Table 3 analogue', 'Table 4 analogue', 'Table 5 analogue',
                  'Difference to the stock run stock (stock_x4)', 'Per-round tickets'):
        assert title in page
    assert re.search(r'<tr class="highlight"><td>Tiny</td><td>butterfly</td>', page)
    assert re.search(r'<tr class="highlight"><td>Tiny</td><td>baby</td>', page)
    assert '<b>' in page
    with open(osp.join(setup['out'], 'report.md'), encoding='utf-8') as f:
        md = f.read()
    assert '| Method | Tiny | Tiny2 |' in md and '★ butterfly' in md and '**' in md
    assert '](fig4_psnr_vs_kept.png)' in md
    # the PSNR-vs-kept-weights figure opens both reports (before the run list), once
    assert md.index('](fig4_psnr_vs_kept.png)') < md.index('## Runs') and md.count('fig4_psnr_vs_kept.png') == 1
    assert page.index('<img alt="Fig. 4 analogue') < page.index('<h2>Runs</h2>')


def test_compressed_size_helper_round_trip():
    torch.manual_seed(0)
    state = {}
    for i in range(4):
        weight = torch.randn(64, 64, 3, 3)
        weight[torch.rand_like(weight) < 0.9] = 0
        state[f'body.{i}.conv1.weight'] = weight
    state['conv_first.bias'] = torch.randn(64)
    state['steps'] = torch.tensor(7)  # a non-floating buffer is kept as is
    dense = saved_size_bytes(state)
    compressed = compressed_size_bytes(state)
    assert compressed < 0.3 * dense
    from dupru_basicsr.weights.compressed import compress_state_dict, decompress_state_dict
    restored = decompress_state_dict(compress_state_dict(state))
    assert list(restored) == list(state)
    for name, tensor in state.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name
    dense_state = {'w': torch.randn(10, 10)}  # no zeros: still exact
    assert torch.equal(decompress_state_dict(compress_state_dict(dense_state))['w'], dense_state['w'])


def test_infer_arch_from_state_dict_all_scales():
    for upscale in (2, 3, 4):
        arch = infer_msrresnet_arch(tiny_state(0, upscale=upscale, num_block=3), 'x.pth')
        assert arch == {'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 3, 'upscale': upscale}


def test_main_with_single_checkpoint_and_dataset_dirs(setup, tmp_path, capsys):
    ckpt = str(tmp_path / 'my_model.pth')
    torch.save({'params': tiny_state(5)}, ckpt)
    gt_dir = osp.join(setup['data_root'], 'Tiny2', 'GTmod12')
    lr_dir = osp.join(setup['data_root'], 'Tiny2', 'LRbicx4')
    out = str(tmp_path / 'out')
    code = main([ckpt, '--dataset-dirs', f'Pairs={gt_dir}:{lr_dir}', '--out', out, '--repeats', '0',
                 '--no-progress', '--labels', 'mine', '--crop-box', '4', '4', '20', '16'])
    assert code == 0
    printed = capsys.readouterr().out
    assert 'Pairs (2 images)' in printed and 'mine' in printed
    with open(osp.join(out, 'results.json')) as f:
        data = json.load(f)
    assert data['models'][0]['arch']['num_feat'] == 8 and data['models'][0]['param_key'] == 'params'
    # one crop row per image (the first 4 of the first dataset), all at the given box
    assert data['baseline'] is None and data['settings']['crop_windows'] == {'Pairs/a': [4, 4, 20, 16],
                                                                             'Pairs/b': [4, 4, 20, 16]}
    assert osp.getsize(osp.join(out, 'report.html')) > 0 and osp.isfile(osp.join(out, 'crops.png'))


# ------------------------------------------------------------------------------------------------ errors
def _raises(match_path, *args, **kwargs):
    with pytest.raises(CompareError) as info:
        compare(*args, progress=False, write=False, repeats=0, **kwargs)
    assert match_path in str(info.value), str(info.value)
    return str(info.value)


def test_error_experiment_without_checkpoint(setup, tmp_path):
    exp = tmp_path / 'empty_run'
    (exp / 'models').mkdir(parents=True)
    write_option(str(exp / 'x.yml'), 'empty_run', 'SRModel')
    message = _raises(str(exp), [str(exp)], datasets=['Tiny'], data_root=setup['data_root'])
    assert 'No checkpoint' in message


def test_error_other_architecture(setup, tmp_path):
    ckpt = str(tmp_path / 'edsr_like.pth')
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 3, 3))
    torch.save({'params': net.state_dict()}, ckpt)
    message = _raises(ckpt, [ckpt], datasets=['Tiny'], data_root=setup['data_root'])
    assert 'not an MSRResNet' in message
    # An option file that disagrees with its checkpoint fails on the strict load, before anything is evaluated.
    exp = tmp_path / 'wrong_yml'
    (exp / 'models').mkdir(parents=True)
    write_option(str(exp / 'x.yml'), 'wrong_yml', 'SRModel', num_feat=16)
    torch.save({'params': tiny_state(0)}, str(exp / 'models' / 'net_g_latest.pth'))
    message = _raises(str(exp / 'models' / 'net_g_latest.pth'), [setup['stock'], str(exp)], datasets=['Tiny'],
                      data_root=setup['data_root'])
    assert 'does not fit MSRResNet' in message


def test_error_other_scale(setup, tmp_path):
    ckpt = str(tmp_path / 'x2.pth')
    torch.save({'params': tiny_state(0, upscale=2)}, ckpt)
    assert 'x2' in _raises(ckpt, [ckpt], datasets=['Tiny'], data_root=setup['data_root'])
    exp = tmp_path / 'x2_run'
    (exp / 'models').mkdir(parents=True)
    write_option(str(exp / 'x2.yml'), 'x2_run', 'SRModel', scale=2, upscale=2)
    torch.save({'params': tiny_state(0, upscale=2)}, str(exp / 'models' / 'net_g_1000.pth'))
    _raises(str(exp), [str(exp)], datasets=['Tiny'], data_root=setup['data_root'])


def test_error_gt_lr_size_mismatch(setup, tmp_path):
    gt_dir, lr_dir = write_dataset(str(tmp_path), 'Bad', ['ok', 'wrong'], seed=3)
    cv2.imwrite(osp.join(lr_dir, 'wrong.png'), np.zeros((10, 12, 3), np.uint8))
    message = _raises('wrong', [setup['stock']], datasets=['Bad'], data_root=str(tmp_path))
    assert osp.join(lr_dir, 'wrong.png') in message and 'mismatch' in message


def test_error_missing_dataset_folder(setup, tmp_path):
    missing = osp.join(str(tmp_path), 'Set14', 'GTmod12')
    message = _raises(missing, [setup['stock']], datasets=['Set14'], data_root=str(tmp_path))
    assert 'dupru-prepare' in message


def test_main_reports_errors_with_exit_code_2(setup, tmp_path, capsys):
    missing = str(tmp_path / 'nowhere')
    assert main([setup['stock'], '--datasets', 'Tiny', '--data-root', missing, '--no-progress']) == 2
    assert osp.join(missing, 'Tiny', 'GTmod12') in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ real images
def test_photos_highlight_chosen_images(setup, tmp_path):
    """Real photos (the test session's held-out scikit-image photos, made by dupru-prepare), two of them highlighted."""
    from conftest import shared_pair
    gt_dir, lr_dir = shared_pair('val')
    results = compare([setup['stock'], setup['dupru']], dataset_dirs=[f'photos={gt_dir}:{lr_dir}'],
                      out_dir=str(tmp_path), crops=['astronaut', 'chelsea'], repeats=0, tickets=False, progress=False)
    assert len(results.datasets[0]['images']) == len(os.listdir(gt_dir)) == 2
    assert set(results.settings['crop_windows']) == {'photos/astronaut', 'photos/chelsea'}
    assert results.settings['crop_windows']['photos/astronaut'][2:] == [96, 96]
    psnr = results.mean('stock (stock_x4)', 'photos', 'psnr_rgb')
    assert 15 < psnr < 40  # a random tiny network stays close to its bilinear skip connection
    with open(osp.join(str(tmp_path), 'report.html'), encoding='utf-8') as f:
        page = f.read()
    assert page.count('<tr class="highlight">') == 2 * 2  # both photos, in the RGB and Y per-image tables


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available here')
def test_error_cuda_requested_without_cuda(setup):
    with pytest.raises(CompareError, match='CUDA is not available'):
        compare([setup['stock']], datasets=['Tiny'], data_root=setup['data_root'], device='cuda', write=False)


def test_timing_waits_for_the_models_device_not_the_current_one(monkeypatch):
    """With --device cuda:1 the timer must synchronise cuda:1: torch.cuda.synchronize() alone waits for the current
    device (cuda:0), and the times would count launches only. Run on the CPU with the input placement stubbed."""
    from types import SimpleNamespace

    from dupru_basicsr.report import evaluate
    synced = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: synced.append(device))
    monkeypatch.setattr(evaluate, 'image_to_input', lambda lr, device: torch.zeros(1, 3, 4, 4))
    net = torch.nn.Conv2d(3, 3, 1)
    evaluate.time_models({'a': net}, [SimpleNamespace(lr=None)], torch.device('cuda', 1), repeats=2, warmup=1)
    assert synced and all(d == torch.device('cuda', 1) for d in synced), synced
    synced.clear()
    evaluate.time_models({'a': net}, [SimpleNamespace(lr=None)], torch.device('cpu'), repeats=2, warmup=1)
    assert synced == []


def test_fig4_ticks_apart_stock_level_single_points_and_seed_means(tmp_path):
    """Tick labels never print on top of each other (10.0 and 9.98 % once rendered as "919"), stock is drawn as a
    level, a one-ticket (gradual) run is one star, and many seeded runs become seed means with min-max bars."""
    from matplotlib.figure import Figure

    from dupru_basicsr.report.figures import _log_percent_axis, plot_round_curves, seed_means
    ax = Figure().add_subplot(1, 1, 1)
    _log_percent_axis(ax, [100, 56.2, 31.6, 17.8, 10.0, 9.98])
    assert [round(t, 3) for t in ax.get_xticks()] == [10.0, 17.8, 31.6, 56.2, 100]

    def run(kept, psnr, rnd=1):
        return {'round': rnd, 'kept_percent': kept, 'psnr_rgb': psnr}

    curves = {'dupru': [run(100, 30.0, 1), run(10.0, 30.4, 2)], 'dupru_gradual': [run(9.98, 31.5)]}
    path = plot_round_curves(curves, 'heldout', str(tmp_path / 'fig.png'), levels={'stock': 31.8})
    assert osp.getsize(path) > 0
    seeded = {f'{r}_s{s}': [run(100, 30 + s, 1), run(10, 29 + s, 2)] for r in ('a', 'b') for s in range(3)}
    means = seed_means(seeded)
    assert sorted(means) == ['a', 'b'] and means['a'][1] == {'round': 2, 'kept_percent': 10, 'psnr_rgb': 30.0,
                                                             'low': 29, 'high': 31, 'seeds': 3}
    assert seed_means({'no_seed_label': []}) is None
    many = {f'{r}_s{s}': [run(100, 30 + s, 1), run(10, 29 + s, 2)] for r in 'abcde' for s in range(3)}
    assert osp.getsize(plot_round_curves(many, 'Set5', str(tmp_path / 'many.png'),
                                         levels={'stock_s0': 31.0, 'stock_s1': 31.2})) > 0


def test_crops_default_to_one_row_per_image_of_the_first_dataset():
    from types import SimpleNamespace

    from dupru_basicsr.report.build import DEFAULT_CROP_IMAGES, _find_crop_targets
    images = [SimpleNamespace(stem=f'img{i}') for i in range(6)]
    data = [SimpleNamespace(name='first', images=images), SimpleNamespace(name='second', images=images[:1])]
    assert _find_crop_targets(data, None) == [('first', f'img{i}') for i in range(DEFAULT_CROP_IMAGES)]
    assert _find_crop_targets(data, ['IMG5']) == [('first', 'img5')]
