"""The README's main job: `dupru-demo` end to end with a tiny budget."""
import math
import os.path as osp
import pytest
import yaml

from dupru_basicsr.demo import HELD_OUT, DemoError, main, run_demo
from dupru_basicsr.pruning import num_to_remove
from dupru_basicsr.report.results import MEAN_ROW


def test_demo_tiny_budget_end_to_end(tmp_path, capsys):
    out = tmp_path / 'demo'
    results, table = run_demo(str(out), budget='tiny', progress=False)
    printed = capsys.readouterr().out
    assert table in printed and 'report.html' in printed
    rows = [line.split() for line in table.splitlines()[2:]]
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
