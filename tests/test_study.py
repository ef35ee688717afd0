"""`dupru-study`: its recipes are an equal-budget comparison, its summary measures every row against the better stock
baseline, and the smoke preset runs end to end (with two worker processes) and resumes without retraining."""
import json
import os
import shutil

import pytest
import torch
import yaml

from dupru_basicsr.experiments import make_options
from dupru_basicsr.pruning import num_to_remove, rate_for_sparsity
from dupru_basicsr.report.results import MEAN_ROW, CompareResults
from dupru_basicsr.study import PRESETS, best_sparse, main, recipes, summarise

from conftest import shared_dataset, shared_pair

DATA = {'train': {'gt_sub': 'gt', 'lr_sub': {4: 'lr'}}, 'val': {'gt': 'vgt', 'lr': {4: 'vlr'}}}


def test_rate_for_sparsity_lands_on_the_target_after_the_prunes():
    for sparsity, prunes in ((0.9, 4), (0.95, 4), (0.3, 1), (0.5, 7)):
        rate = rate_for_sparsity(sparsity, prunes)
        assert (1 - rate / 100)**prunes == pytest.approx(1 - sparsity, rel=1e-12)
    with pytest.raises(ValueError):
        rate_for_sparsity(1.0, 4)


@pytest.mark.parametrize('name', ['cpu-small', 'cpu-medium'])
def test_every_recipe_has_the_same_budget_and_its_target_sparsity(name):
    preset = PRESETS[name]
    total = preset['rounds'] * preset['iters']
    runs = recipes(preset)
    labels = [label for label, *_ in runs]
    assert labels[:3] == ['stock_E', 'stock_TxE_restart', 'stock_TxE_cosine']
    for tag in ('90', '95'):
        assert {f'{r}_{tag}' for r in ('dupru_gradual', 'imp_gradual', 'dupru_lr', 'upru_lr', 'dupru_init',
                                       'upru_init')} <= set(labels)
        blocks = {f'dupru_gradual_whole-1x4_{tag}', f'dupru_gradual_whole-global-1x4_{tag}'}
        assert (blocks <= set(labels)) == (name == 'cpu-medium'), name  # the 1x4 rows beside the element-wise ones
    for label, method, kwargs in runs:
        opt = make_options(method, DATA, preset, label, 0, **kwargs)
        sched = opt['train']['scheduler']
        assert opt['train']['total_iter'] == (preset['iters'] if label == 'stock_E' else total), label
        pruning = opt.get('pruning')
        if label == 'stock_TxE_restart':
            assert sched['periods'] == [preset['iters']] * preset['rounds']
        elif label in ('stock_TxE_cosine', 'stock_E') or 'gradual' in label:
            assert sched['periods'] == [opt['train']['total_iter']], label  # one cosine over the run
        else:
            assert sched['periods'] == [preset['iters']], label  # DUPruModel restarts it every round
        if pruning is None:
            assert label.startswith('stock') and opt['model_type'] == 'SRModel'
            continue
        target = int(label.rsplit('_', 1)[1]) / 100
        assert pruning['method'] == label.split('_')[0]
        block = label.split('-1x')[1].split('_')[0] if '-1x' in label else None
        assert pruning.get('granularity', 'element') == (f'oc_block{block}' if block else 'element'), label
        if 'gradual' in label:
            assert pruning['final_sparsity'] == target and pruning['rewind'] == 'none'
        else:
            # T - 1 prunes of `rate` % of the survivors of a 32x32x3x3 layer: within one weight of the target
            kept = 9216
            for _ in range(preset['rounds'] - 1):
                kept -= num_to_remove(kept, pruning['rate'])
            assert abs(kept - 9216 * (1 - target)) <= preset['rounds'], (label, kept)
            assert pruning['rewind'] == label.split('_')[1] and pruning['rounds'] == preset['rounds']


def _results(psnr_y):
    """A CompareResults with the given mean Y-PSNR per (label, dataset)."""
    rows, stats = [], {}
    for (label, ds), value in psnr_y.items():
        rows.append({'label': label, 'dataset': ds, 'image': MEAN_ROW, 'psnr_y': value, 'psnr_rgb': value - 1,
                     'ssim_y': 0.8})
        zeros = 0 if label.startswith('stock') else 90
        stats[label] = {'label': label, 'body_sparsity': zeros / 100, 'nonzero_params': 130 - zeros, 'params': 130,
                        'compressed_bytes': 1000 - 5 * zeros, 'dense_bytes': 1000}
    return CompareResults(models=[], datasets=[], rows=rows, model_stats=list(stats.values()))


def test_summary_measures_each_dataset_against_its_better_stock_row():
    labels = ('stock_E', 'stock_TxE_restart', 'stock_TxE_cosine', 'dupru_lr_90', 'dupru_gradual_90')
    runs = [(label, None, None) for label in labels]
    values = {
        'stock_E': (29.0, 27.0), 'stock_TxE_restart': ((30.0, 30.2), (28.0, 28.0)),
        'stock_TxE_cosine': ((30.1, 30.1), (27.9, 27.9)), 'dupru_lr_90': ((30.0, 30.0), (27.95, 27.95)),
        'dupru_gradual_90': ((30.2, 30.1), (27.6, 27.7))}
    psnr = {}
    for label, (a, b) in values.items():
        for seed in ((0, ) if label == 'stock_E' else (0, 1)):
            psnr[(f'{label}_s{seed}', 'A')] = a if isinstance(a, float) else a[seed]
            psnr[(f'{label}_s{seed}', 'B')] = b if isinstance(b, float) else b[seed]
    table, best_stock = summarise(_results(psnr), runs, ['A', 'B'])
    # A: restart 30.1 = cosine 30.1 (either), B: restart 28.0 beats cosine 27.9
    assert best_stock['B'] == 'stock_TxE_restart'
    assert table['stock_TxE_restart']['A_psnr_y'] == pytest.approx(30.1)
    assert table['stock_TxE_restart']['A_psnr_y_spread'] == pytest.approx(0.2)
    assert table['dupru_lr_90']['B_psnr_y_vs_stock'] == pytest.approx(-0.05)
    assert table['dupru_gradual_90']['A_psnr_y_vs_stock'] == pytest.approx(0.05)
    assert table['dupru_gradual_90']['B_psnr_y_vs_stock'] == pytest.approx(-0.35)
    assert table['stock_E']['seeds'] == [0] and table['dupru_lr_90']['seeds'] == [0, 1]
    assert table['dupru_lr_90']['body_sparsity'] == pytest.approx(0.9)
    assert table['dupru_lr_90']['model_sparsity'] == pytest.approx(90 / 130)
    # best by mean Y-PSNR over the datasets: lr (30.0 + 27.95) beats gradual (30.15 + 27.65)
    assert best_sparse(table, ['A', 'B']) == {'90': 'dupru_lr_90'}


@pytest.mark.slow
def test_smoke_study_end_to_end_resumes_without_training_again(tmp_path, capsys, monkeypatch):
    data_root = tmp_path / 'sets'
    gt, lr = shared_pair('val')
    shutil.copytree(gt, data_root / 'Held' / 'GTmod12')
    shutil.copytree(lr, data_root / 'Held' / 'LRbicx4')
    out = tmp_path / 'study'
    argv = ['--preset', 'smoke', '--train-hr', os.path.join(shared_dataset('train'), 'GTmod4'), '--data-root',
            str(data_root), '--datasets', 'Held', '--out', str(out), '--jobs', '2', '--no-progress', '--device', 'cpu']
    from dupru_basicsr.report import build
    evaluated_on, compare = [], build.compare

    def recording_compare(*args, **kwargs):
        evaluated_on.append(kwargs.get('device'))
        return compare(*args, **kwargs)

    scored, evaluate_dataset = [], build.evaluate_dataset

    def counting_evaluate_dataset(net, ds, *args, **kwargs):
        scored.append(ds.name)
        return evaluate_dataset(net, ds, *args, **kwargs)

    monkeypatch.setattr(build, 'compare', recording_compare)
    monkeypatch.setattr(build, 'evaluate_dataset', counting_evaluate_dataset)
    assert main(argv) == 0
    assert evaluated_on == ['cpu', 'cpu']  # where the runs trained (the first pass picks the decisive rows)
    assert len(scored) == 21 + 4  # every run scored once: the final pass keeps the first pass's rows
    with open(out / 'study.json') as f:
        first = json.load(f)
    assert first['device'] == 'cpu'
    table = first['table']
    assert first['best_stock']['Held'] in ('stock_TxE_restart', 'stock_TxE_cosine')
    assert table[first['best_stock']['Held']]['Held_psnr_y_vs_stock'] == 0
    # seeds: 0 for all; the extra seed 1 for both T x E stock rows and the best sparse recipe of each level
    assert first['decisive'][:2] == ['stock_TxE_restart', 'stock_TxE_cosine'] and len(first['decisive']) == 4
    for label, row in table.items():
        assert row['seeds'] == ([0, 1] if label in first['decisive'] else [0]), label
        if not label.startswith('stock'):
            target = int(label.rsplit('_', 1)[1]) / 100
            if 'global' not in label:  # layer scope: every target layer at the target
                assert row['body_sparsity'] == pytest.approx(target, abs=0.01), label
            assert 0 < row['model_sparsity'] < target
            assert row['compressed_bytes'] < row['dense_bytes']
            # the whole-network recipes prune the upsampler too, the others leave it dense
            assert (row['upsampler_sparsity'] > 0.3) == ('whole' in label), label
    assert len(first['train_seconds']) == 21 + 4
    md = (out / 'study.md').read_text()
    assert '| dupru_gradual_75 |' in md and 'Δ vs better stock' in md and '% target: best recipe' in md
    assert (out / 'report' / 'report.html').is_file()
    assert (out / 'study.png').stat().st_size > 10000 and 'Figure: study.png' in md
    # a rerun trains nothing and gives the same table
    stamps = {p: p.stat().st_mtime_ns for p in (out / 'experiments').rglob('net_g_latest.pth')}
    assert len(stamps) == 25
    assert main(argv) == 0
    with open(out / 'study.json') as f:
        second = json.load(f)
    assert second['train_seconds'] == {} and second['table'] == table
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # the pretrained workflow in the same folder: every run starts from the seed's stock_TxE_cosine weights
    finetune = argv + ['--from-trained', 'stock_TxE_cosine', '--finetune', '6', '--seeds', '0', '--extra-seeds',
                       '--recipes', 'dense_finetune', 'dupru_gradual_whole_50']
    assert main(finetune + ['--seeds', '0', '7']) == 2  # seed 7 has no trained start: refused, nothing written
    err = capsys.readouterr().err
    assert 'study_smoke_stock_TxE_cosine_s7' in err and '--recipes stock_TxE_cosine --seeds 7' in err
    assert main(finetune) == 0
    with open(out / 'study_from-stock_TxE_cosine_F6.json') as f:
        tuned = json.load(f)
    assert sorted(tuned['table']) == ['dense_finetune', 'dupru_gradual_whole_50', 'start']
    start = str(out / 'experiments' / 'study_smoke_stock_TxE_cosine_s0' / 'models' / 'net_g_latest.pth')
    for label in ('dense_finetune', 'dupru_gradual_whole_50'):
        with open(out / 'options' / f'study_smoke_from-stock_TxE_cosine_F6_{label}_s0.yml') as f:
            opt = yaml.safe_load(f)
        assert opt['path']['pretrain_network_g'] == start and opt['train']['total_iter'] == 6
        assert opt['train']['optim_g']['lr'] == PRESETS['smoke']['lr'] / 2
    assert opt['pruning']['rewind'] == 'none' and opt['pruning']['targets'] == 'whole'
    # 'start' is the trained run itself, scored as it is: its row is the stock row of the first study
    assert tuned['table']['start']['Held_psnr_y'] == table['stock_TxE_cosine']['Held_psnr_y_seeds'][0]
    assert 'Δ vs better dense' in (out / 'study_from-stock_TxE_cosine_F6.md').read_text()
    assert (out / 'study_from-stock_TxE_cosine_F6.png').stat().st_size > 10000  # PSNR vs sparsity figure
    with open(out / 'study.json') as f:
        assert json.load(f)['table'] == table  # the first study's files are its own


def test_unknown_recipe_and_bad_iters_are_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / 'study'
    base = ['--preset', 'smoke', '--train-hr', str(tmp_path), '--data-root', str(tmp_path), '--datasets', '.',
            '--out', str(out)]
    assert main(base + ['--recipes', 'dupru_gradual_50', 'dupru_magic_50']) == 2
    err = capsys.readouterr().err
    assert err.startswith('dupru-study: error: --recipes dupru_magic_50: not a recipe') and 'imp_gradual_75' in err
    assert main(base + ['--iters', '0']) == 2
    assert '--iters 0' in capsys.readouterr().err
    if not torch.cuda.is_available():  # the branch a CUDA machine takes, asked for where there is none
        assert main(base + ['--device', 'cuda']) == 2
        assert capsys.readouterr().err.startswith('dupru-study: error: --device cuda: no CUDA device is visible')
    assert not out.exists()


@pytest.mark.slow
def test_gpu_preset_trains_and_evaluates_on_the_cpu_with_a_small_budget(tmp_path):
    """The branch a CUDA machine takes (the full network, 240 px sub-images, 128 px crops, batch 16), selected on a
    CPU with --preset gpu --device cpu and one iteration per round."""
    data_root = tmp_path / 'sets'
    gt, lr = shared_pair('val')
    shutil.copytree(gt, data_root / 'Held' / 'GTmod12')
    shutil.copytree(lr, data_root / 'Held' / 'LRbicx4')
    out = tmp_path / 'study'
    assert main(['--preset', 'gpu', '--device', 'cpu', '--iters', '1', '--seeds', '0', '--extra-seeds',
                 '--recipes', 'dupru_gradual_90', '--train-hr', os.path.join(shared_dataset('train'), 'GTmod4'),
                 '--data-root', str(data_root), '--datasets', 'Held', '--out', str(out), '--no-progress']) == 0
    assert not (out / 'study.json').exists()  # runs with another E are another study's rows: their own files
    with open(out / 'study_E1.json') as f:
        study = json.load(f)
    assert study['device'] == 'cpu' and sorted(study['table']) == ['dupru_gradual_90', 'stock_TxE_cosine',
                                                                   'stock_TxE_restart']
    assert study['table']['dupru_gradual_90']['body_sparsity'] == pytest.approx(0.9, abs=1e-4)
    with open(out / 'options' / 'study_gpu_E1_dupru_gradual_90_s0.yml') as f:
        opt = yaml.safe_load(f)
    assert (opt['network_g']['num_feat'], opt['datasets']['train']['gt_size'],
            opt['datasets']['train']['batch_size_per_gpu'], opt['num_gpu']) == (64, 128, 16, 0)
