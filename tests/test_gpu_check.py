"""bench/gpu_check.py, the one command a CUDA machine runs, end to end on the CPU with its tiny budget: every step
runs (device tests, the pruning bench, the GPU preset's demo, stock vs DUPru training speed) and lands in the
report. This is also the test that the demo's GPU preset (full MSRResNet, 240 px sub-images, 128 px crops, batch 16)
trains: it is what `dupru-demo` runs by default on any CUDA machine."""
import os
import os.path as osp
import re
import subprocess
import sys
import pytest
import torch
import yaml

from conftest import REPO

SCRIPT = osp.join(REPO, 'bench', 'gpu_check.py')


def test_gpu_check_runs_every_step_on_the_cpu_and_writes_the_report(tmp_path):
    out, work = tmp_path / 'results.md', tmp_path / 'work'
    result = subprocess.run([sys.executable, SCRIPT, '--device', 'cpu', '--budget', 'tiny', '--out', str(out),
                             '--work', str(work)], capture_output=True, text=True, timeout=1800,
                            env=dict(os.environ, CI='true'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = out.read_text()
    assert report.rstrip().endswith('all steps passed.')
    headers = re.findall(r'^## (.+)$', report, re.M)
    assert headers == ['1. Device tests', '2. Pruning benchmark', '3. Short demo, GPU preset',
                       '4. Stock vs DUPru training speed']
    tests = re.search(r'\*\*(\d+) passed(.*?)\*\*', report)
    assert tests and int(tests.group(1)) >= 30 and 'failed' not in tests.group(2) and 'skipped' not in tests.group(2)
    for step in ('eager', 'compiled'):  # both of our steps, side by side with the peers
        assert re.search(rf'train step, DUPru \(ours, {step} step\) *: +[\d.]+ ms +ratio \d\.\d{{3}}', report), step
    assert 'device cpu, batch 1, GT 32x32' in report
    # the demo ran the GPU preset: the full network, its crops and batch, from 240 px sub-images, every run
    rows = {line.split()[0]: line.split() for line in report.splitlines()
            if line.split() and line.split()[0] in ('stock', 'upru', 'dupru', 'dupru_gradual')}
    assert sorted(rows) == ['dupru', 'dupru_gradual', 'stock', 'upru']
    assert rows['stock'][6] == '1,517,571' and all(rows[k][5] == '90.00%' for k in ('upru', 'dupru'))
    with open(work / 'demo' / 'options' / 'demo_dupru.yml') as f:
        opt = yaml.safe_load(f)
    assert (opt['network_g']['num_feat'], opt['datasets']['train']['gt_size'],
            opt['datasets']['train']['batch_size_per_gpu'], opt['num_gpu']) == (64, 128, 16, 0)
    import cv2
    sub = cv2.imread(str(next((work / 'demo' / 'data' / 'train' / 'GTmod4_sub').iterdir())))
    assert sub.shape[:2] == (240, 240)
    assert re.search(r'stock \d+\.\d{4} s, DUPru \d+\.\d{4} s, ratio \d\.\d{3}', report)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available here: --device cuda is allowed')
def test_gpu_check_refuses_cuda_where_there_is_none(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, '--device', 'cuda', '--out', str(tmp_path / 'r.md')],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith('gpu_check: error: --device cuda: no CUDA device')
    assert not (tmp_path / 'r.md').exists()
