"""The sparse deployment path: `dupru-export --mnn` converts a pruned checkpoint to MNN (dense or with MNN's sparse
kernels) whose outputs match PyTorch, and bench/bench_sparse_inference.py measures PyTorch, ONNX Runtime, dense and
sparse MNN side by side. The `mnn` extra is part of the test extra: nothing here skips."""
import builtins
import os
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
    state = bench.masked_msrresnet(16, 2, 0.9, 'whole', seed=1)
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


def test_bench_measures_every_runtime_side_by_side_on_a_tiny_network(tmp_path, capsys):
    path, _ = _pruned_checkpoint(tmp_path)
    results = bench.main(['--num-feat', '16', '--num-block', '2', '--size', '16', '--repeats', '2', '--threads', '1'])
    assert list(results) == ['dense', 'body 90 %', 'whole 90 %', 'whole 95 %']
    assert results['dense']['zeros'] == 0
    # 16 features, 2 blocks: the body is a small share of the conv weights, the whole network nearly all of them
    assert 0.1 < results['body 90 %']['zeros'] < 0.4 < 0.8 < results['whole 90 %']['zeros'] < 0.9
    for row in results.values():
        for runtime in bench.RUNTIMES:
            assert row[runtime] > 0 and row[f'diff_{runtime}'] < 1e-4, (runtime, row)
    table = capsys.readouterr().out
    assert '| whole 95 % |' in table and 'MNN sparse (ms)' in table
    # a checkpoint (e.g. a study ticket) instead of the synthetic networks
    results = bench.main(['--checkpoints', path, '--size', '16', '--repeats', '1', '--threads', '1'])
    assert len(results) == 1 and next(iter(results.values()))['zeros'] > 0.8
