"""The README's main job: `dupru-demo` end to end with a tiny budget."""
import math
import os.path as osp
import pytest
import torch
import yaml

from dupru_basicsr.demo import HELD_OUT, PRESETS, DemoError, main, run_demo
from dupru_basicsr.pruning import num_to_remove
from dupru_basicsr.report.results import MEAN_ROW


@pytest.mark.slow
def test_demo_tiny_budget_end_to_end(tmp_path, capsys):
    out = tmp_path / 'demo'
    results, table = run_demo(str(out), budget='tiny', progress=False)
    printed = capsys.readouterr().out
    assert table in printed and 'report.html' in printed
    kernels = f'{torch.backends.cpu.get_cpu_capability()} kernels'
    assert f'Ran on: torch {torch.__version__}, CPU ' in printed and f'{kernels}, {torch.get_num_threads()} threads' \
        in printed
    assert table.splitlines()[-1].startswith(f'measured on: torch {torch.__version__}, CPU ')
    assert table.splitlines()[-1].endswith(f', {kernels}, seed 0')
    rows = [line.split() for line in table.splitlines()[2:-1]]  # (the last line: what it was measured on)
    assert [r[0] for r in rows] == ['stock', 'upru', 'dupru', 'dupru_gradual']
    for r in rows:
        assert all(math.isfinite(float(v)) for v in r[1:5])  # PSNR/SSIM RGB and Y
        assert float(r[1]) > 20 and 0 < float(r[2]) < 1
    # every pruned run lands on the configured body sparsity: 2 rounds -> one prune of 30 % of each 2304-weight layer,
    # and the gradual run's final step prunes each layer to 30 %
    stats = {s['label']: s for s in results.model_stats}
    expected = num_to_remove(2304, 30) / 2304
    for label in ('upru', 'dupru', 'dupru_gradual'):
        assert stats[label]['body_sparsity'] == pytest.approx(expected, abs=1e-12), label
    assert stats['stock']['body_sparsity'] < 0.01
    assert f'{100 * expected:13.2f}%' in table
    # the scored images are every colour photo training does not use, and no training photo
    val = sorted(p.stem for p in (out / 'data' / 'source' / 'val').iterdir())
    train = sorted(p.stem for p in (out / 'data' / 'source' / 'train').iterdir())
    assert val == sorted(HELD_OUT) and not set(val) & set(train) and len(val) + len(train) == 8
    assert {r['image'] for r in results.rows if r['image'] != MEAN_ROW} == set(val)
    # all runs had the same budget; stock ran one cosine over it
    for label in ('stock', 'upru', 'dupru', 'dupru_gradual'):
        with open(out / 'options' / f'demo_{label}.yml') as f:
            opt = yaml.safe_load(f)
        assert opt['train']['total_iter'] == 10, label
    with open(out / 'options' / 'demo_stock.yml') as f:
        assert yaml.safe_load(f)['train']['scheduler']['periods'] == [10]
    with open(out / 'report' / 'report.md', encoding='utf-8') as f:
        md = f.read()
    assert md.index('fig4_psnr_vs_kept.png') < md.index('## Runs')
    for name in ('report.html', 'report.md', 'results.csv', 'results.json'):
        assert osp.getsize(out / 'report' / name) > 0
    for method in ('stock', 'upru', 'dupru', 'dupru_gradual'):
        assert osp.isfile(out / 'experiments' / f'demo_{method}' / 'models' / 'net_g_latest.pth')


def test_demo_refuses_a_foreign_folder_and_bad_budget(tmp_path, capsys):
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('precious')
    assert main(['--out', str(foreign), '--budget', 'tiny', '--no-progress']) == 2
    assert 'not made by dupru-demo' in capsys.readouterr().err
    assert (foreign / 'keep.txt').read_text() == 'precious' and len(list(foreign.iterdir())) == 1
    with pytest.raises(DemoError, match='--budget'):
        run_demo(str(tmp_path / 'x'), budget='huge')


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_every_preset_prepares_data_its_options_accept(tmp_path, preset):
    """The options a preset trains with pass dupru-train's checks on the data the demo prepares for it (the gpu
    preset once asked for 128 px crops from 120 px sub-images, which failed on every CUDA machine at once)."""
    from dupru_basicsr.experiments import make_options
    from dupru_basicsr.plugin.options import check_options
    settings = PRESETS[preset]
    assert settings['gt_size'] <= settings['sub_size']
    data = run_demo(str(tmp_path / preset), budget=preset, device='cpu', progress=False, prepare_only=True)
    for device_gpus in (0, 1):  # the CPU's options, and the CUDA branch's (one GPU, data workers)
        opt = make_options('dupru', data, dict(settings, rate=50), f'demo_{preset}', device_gpus)
        opt.update(is_train=True, dist=False, rank=0, world_size=1)
        if device_gpus:
            assert opt['num_gpu'] == 1 and opt['datasets']['train']['num_worker_per_gpu'] > 0
            continue  # checking num_gpu: 1 needs a GPU; the datasets are the CPU options' ones
        check_options(opt)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available here: --device cuda is allowed')
def test_device_cuda_without_cuda_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / 'demo'
    assert main(['--out', str(out), '--device', 'cuda', '--budget', 'tiny', '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.startswith('dupru-demo: error: --device cuda: no CUDA device is visible here') and 'num_gpu' not in err
    assert not out.exists()


TINY_TABLE = osp.join(osp.dirname(osp.abspath(__file__)), 'data', 'demo_tiny_table.md')


@pytest.mark.slow
def test_check_mode_reproduces_the_committed_tiny_table_and_update_rewrites_a_quoted_one(tmp_path, capsys):
    """The README's demo table is checked by `dupru-demo --check README.md` (too slow for CI); CI runs the same
    check on the tiny budget against tests/data/demo_tiny_table.md."""
    out = tmp_path / 'demo'
    argv = ['--budget', 'tiny', '--device', 'cpu', '--no-progress', '--out', str(out)]
    assert main(argv + ['--check', TINY_TABLE]) == 0, capsys.readouterr().err
    assert 'agrees with this run' in capsys.readouterr().out  # exactly, or within the tolerance on another CPU
    # this machine's own table, quoted: one digit off fails the exact check; --update puts it back
    quoted = tmp_path / 'quoted.md'
    quoted.write_text('# quoted\n<!-- demo-table -->\n<!-- /demo-table -->\n')
    assert main(argv + ['--update', str(quoted)]) == 0
    text = quoted.read_text()
    stock = next(line for line in text.splitlines() if line.startswith('stock '))
    psnr = stock.split()[1]
    nudged = f'{float(psnr) + 0.0001:.4f}'
    quoted.write_text(text.replace(stock, stock.replace(psnr, nudged, 1)))
    assert main(argv + ['--check', str(quoted)]) == 1  # a rerun of the finished demo: scores only
    err = capsys.readouterr().err
    assert 'differs from this run' in err and 'compared exactly (the same torch, CPU and kernels' in err
    assert f'-stock            {nudged}' in err and f'+stock            {psnr}' in err
    assert main(argv + ['--update', str(quoted)]) == 0
    assert quoted.read_text() == text
    (tmp_path / 'plain.md').write_text('no table here\n')
    assert main(argv + ['--check', str(tmp_path / 'plain.md')]) == 2
    assert 'has no <!-- demo-table --> ... <!-- /demo-table --> block' in capsys.readouterr().err


QUOTED = '''method          PSNR-RGB  SSIM-RGB   PSNR-Y   SSIM-Y  body sparsity  non-zero params
------------------------------------------------------------------------------------
stock            29.8976    0.8097  31.4165   0.8351          0.00%           31,043
dupru            29.8526    0.8073  31.3887   0.8351         29.99%           28,278
measured on: torch 2.14.1, CPU Some Xeon, AVX512 kernels, seed 0'''
TOLERANCE = dict(psnr=0.0002, ssim=0.0002, sparsity=0.02, nonzero=2)


def _quote(tmp_path, table):
    path = tmp_path / 'quoted.md'
    path.write_text(f'# demo\n\n<!-- demo-table -->\n```\n{table}\n```\n<!-- /demo-table -->\n')
    return str(path)


def test_check_is_exact_on_the_machine_the_table_names_and_within_the_tolerance_elsewhere(tmp_path, capsys):
    from dupru_basicsr.demo import check_table
    path = _quote(tmp_path, QUOTED)
    assert check_table(path, QUOTED, TOLERANCE) == 0
    assert 'compared exactly (the same torch, CPU and kernels' in capsys.readouterr().out
    nudged = QUOTED.replace('31.3887', '31.3888')
    # the same machine: one digit off fails, tolerance or not
    assert check_table(path, nudged, TOLERANCE) == 1
    err = capsys.readouterr().err
    assert 'compared exactly' in err and '+dupru            29.8526    0.8073  31.3888' in err
    # another CPU's kernels: within the tolerance passes and says so, beyond it fails naming the cell
    elsewhere = nudged.replace('AVX512 kernels', 'AVX2 kernels').replace('Some Xeon', 'Some EPYC')
    assert check_table(path, elsewhere, TOLERANCE) == 0
    out = capsys.readouterr().out
    assert 'within the tolerance measured for this budget (PSNR 0.0002 dB' in out
    assert 'measured on torch 2.14.1, CPU Some Xeon, AVX512 kernels, seed 0, this run on torch 2.14.1, CPU Some ' \
        'EPYC, AVX2 kernels, seed 0' in out
    assert check_table(path, elsewhere.replace('31.3888', '31.3890').replace('28,278', '28,281'), TOLERANCE) == 1
    err = capsys.readouterr().err
    assert 'dupru PSNR-Y: 31.389 vs 31.3887 quoted (|difference| 0.0003 > 0.0002)' in err
    assert 'dupru non-zero params: 28281 vs 28278 quoted (|difference| 3 > 2)' in err
    assert 'stock' not in err.split('\n---')[0]  # stock's row is within the tolerance
    # no measured spread for the budget (e.g. --iters given): exact, and it says why
    assert check_table(path, elsewhere, None) == 1
    assert 'no measured spread for this budget, so no tolerance' in capsys.readouterr().err


def test_check_refuses_a_seed_other_than_the_quoted_tables_before_training(tmp_path, capsys):
    path = _quote(tmp_path, QUOTED)
    out = tmp_path / 'demo'
    assert main(['--budget', 'tiny', '--device', 'cpu', '--seed', '1', '--out', str(out), '--check', path]) == 2
    assert "the table there is seed 0's; pass --seed 0 to check it" in capsys.readouterr().err
    assert not out.exists()
