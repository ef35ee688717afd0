"""The sparse deployment path: `dupru-export --mnn` converts a pruned checkpoint to MNN (dense or with MNN's sparse
kernels) whose outputs match PyTorch, and bench/bench_sparse_inference.py measures PyTorch, ONNX Runtime, dense and
sparse MNN side by side. The `mnn` extra is part of the test extra: nothing here skips."""
import builtins
import os
import re
import sys

import numpy as np
import pytest
import torch

from basicsr.archs.srresnet_arch import MSRResNet
from conftest import REPO
from dupru_basicsr.deploy.mnn import MNNRunner
from dupru_basicsr.export import main as export_main

sys.path.insert(0, os.path.join(REPO, 'bench'))
import bench_sparse_inference as bench  # noqa: E402


def _pruned_checkpoint(tmp_path):
    state = bench.pruned_msrresnet(16, 2, (0.9, 'whole', 'element'), seed=1).state_dict()
    path = str(tmp_path / 'net_g_latest.pth')
    torch.save({'params': state}, path)
    return path, state


@pytest.mark.parametrize('dense', [False, True], ids=['sparse-kernels', 'dense-kernels'])
def test_export_mnn_gives_the_networks_outputs(tmp_path, capsys, dense):
    path, state = _pruned_checkpoint(tmp_path)
    out = tmp_path / 'small.mnn'
    assert export_main([path, '--mnn', str(out)] + (['--mnn-dense'] if dense else [])) == 0
    assert out.is_file() and 'MNN (' in capsys.readouterr().out
    net = MSRResNet(num_feat=16, num_block=2, upscale=4).eval()
    net.load_state_dict(state)
    x = np.random.default_rng(1).random((1, 3, 20, 24), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = MNNRunner(str(out), x.shape, threads=1)(x)
    assert got.shape == (1, 3, 80, 96)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_export_mnn_without_the_runtime_says_which_extra_and_writes_nothing(tmp_path, capsys, monkeypatch):
    path, _ = _pruned_checkpoint(tmp_path)
    real_import = builtins.__import__

    def no_mnn(name, *args, **kwargs):
        if name == 'MNN':
            raise ImportError('No module named MNN')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_mnn)
    assert export_main([path, '--out', str(tmp_path / 'small.pth'), '--mnn', str(tmp_path / 'small.mnn')]) == 2
    assert 'pip install "dupru-basicsr[mnn]"' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['net_g_latest.pth']


def test_bench_times_every_row_checks_outputs_and_ends_with_the_speed_up_lines(capsys):
    results = bench.main(['--num-feat', '16', '--num-block', '2', '--size', '16', '--repeats', '3', '--threads', '1'])
    rows = results['rows']
    assert list(rows) == ['dense: PyTorch', 'dense: ONNX Runtime', 'dense: MNN dense (A)',
                          'dense: MNN dense (A, same file)'] + [
        f'{name}: {runtime}' for name in list(bench.NETWORKS)[1:] for runtime in ('PyTorch', 'MNN sparse')]
    for row, r in rows.items():
        assert 0 < r['min'] <= r['median'] <= r['max'] and r['diff'] <= bench.MAX_DIFF, (row, r)
    zeros = results['zeros']
    assert zeros['dense'] == 0 and 0.8 < zeros['element 90 %'] < 0.9 < zeros['1x4 95 %']
    assert results['storage'] == {'1x4 90 %': [], '1x4 95 %': []}  # MNN stored every pruned conv in blocks of 4
    assert results['profile'].get('Convolution', 0) > 0
    out = capsys.readouterr().out
    assert 'A/A (the same MNN file timed twice):' in out
    for level in ('90', '95'):
        assert re.search(rf'^speed-up at {level} % \(1x4 blocks\) vs fastest dense: \d+\.\d\d×$', out, re.M), out
