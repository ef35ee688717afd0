"""The README's main job: `dupru-demo` end to end with a tiny budget."""
import math
import os.path as osp
import pytest

from dupru_basicsr.demo import DemoError, main, run_demo
from dupru_basicsr.pruning import num_to_remove


def test_demo_tiny_budget_end_to_end(tmp_path, capsys):
    out = tmp_path / 'demo'
    results, table = run_demo(str(out), budget='tiny', progress=False)
    printed = capsys.readouterr().out
    assert table in printed and 'report.html' in printed
    rows = [line.split() for line in table.splitlines()[2:]]
    assert [r[0] for r in rows] == ['stock', 'upru', 'dupru']
    for r in rows:
        assert all(math.isfinite(float(v)) for v in r[1:5])  # PSNR/SSIM RGB and Y
        assert float(r[1]) > 20 and 0 < float(r[2]) < 1
    # DUPru's body sparsity is the configured one: 2 rounds at 30 % -> one prune of each 2304-weight layer
    stats = {s['label']: s for s in results.model_stats}
    expected = num_to_remove(2304, 30) / 2304
    assert stats['dupru']['body_sparsity'] == pytest.approx(expected, abs=1e-12)
    assert stats['upru']['body_sparsity'] == pytest.approx(expected, abs=1e-12)
    assert stats['stock']['body_sparsity'] < 0.01
    assert f'{100 * expected:13.2f}%' in table
    for name in ('report.html', 'report.md', 'results.csv', 'results.json'):
        assert osp.getsize(out / 'report' / name) > 0
    for method in ('stock', 'upru', 'dupru'):
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
