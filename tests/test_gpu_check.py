"""bench/gpu_check.py, the one command a CUDA machine runs.

The end-to-end test (slow) runs it on the CPU with its tiny budget: every step runs (device tests, the pruning bench,
the GPU preset's demo, stock vs DUPru training speed) and lands in the report, and the demo trains the GPU preset's
sizes (full MSRResNet, 240 px sub-images, 128 px crops, batch 16: what `dupru-demo` runs by default on any CUDA
machine). It runs them with `num_gpu: 0`, because BasicSR puts a model with `num_gpu >= 1` on `cuda` and there is no
CPU stand-in for that. What only a GPU checks (bench/README.md, "What the CPU run does not check"): the CUDA
tensors themselves (masks, hooks and the threshold search on `cuda`, the deterministic sort in place of
`kthvalue`), the compiled step's Triton code (the CPU compiles C++), BasicSR's `CUDAPrefetcher`, CUDA resume
(optimizer state moved back to the GPU), DDP with `device_ids` and NCCL, and every timing.

The other tests run the runner in-process with small steps: the report written after every step, per-step
timeouts, the total budget, a failed or not-run step, SIGTERM."""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml

from conftest import REPO

SCRIPT = osp.join(REPO, 'bench', 'gpu_check.py')


@pytest.mark.slow
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
def test_gpu_check_refuses_cuda_where_there_is_none(tmp_path, capsys):
    code = _gpu_check().main(['--device', 'cuda', '--out', str(tmp_path / 'r.md')])
    assert code == 2 and capsys.readouterr().err.startswith('gpu_check: error: --device cuda: no CUDA device')
    assert not (tmp_path / 'r.md').exists()


# --- the runner itself, in-process with small steps (fast): the report after every step, timeouts, budget, signals

def _gpu_check():
    import importlib.util
    spec = importlib.util.spec_from_file_location('gpu_check_under_test', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sleeper(gc, seconds, name):
    """A step whose child prints a line, then sleeps `seconds`."""

    def fn(ctx, timeout):
        code = f'import time; print("{name} started", flush=True); time.sleep({seconds}); print("{name} done")'
        returncode, out, err = gc.run_child([sys.executable, '-c', code], timeout, ctx.log(name))
        return f'{name}: {out.strip()}\n', returncode != 0

    return fn


def _run(gc, tmp_path, steps, *args):
    out = tmp_path / 'results.md'
    code = gc.main(['--device', 'cpu', '--budget', 'tiny', '--out', str(out), '--work', str(tmp_path / 'work'),
                    *args], steps=steps)
    return code, out.read_text()


def test_the_report_is_on_disk_after_every_step_and_names_the_running_one(tmp_path, capsys):
    gc = _gpu_check()
    seen = []

    def looks(ctx, timeout):  # what a kill at this moment would leave: the report as written before this step
        seen.append((tmp_path / 'results.md').read_text())
        return 'looked\n', False

    steps = [gc.Step('1. first', _sleeper(gc, 0, 'first')), gc.Step('2. look', looks), gc.Step('3. last', looks)]
    code, report = _run(gc, tmp_path, steps)
    assert code == 0 and report.rstrip().endswith('all steps passed.')
    assert '## 1. first\n\nfirst: first started\nfirst done' in seen[0] and '## 2. look' not in seen[0]
    assert 'Running: 2. look (timeout 900 s). Still to run: 3. last.' in seen[0]
    assert '## 2. look\n\nlooked' in seen[1] and 'Running: 3. last' in seen[1] and 'Still to run: none.' in seen[1]
    assert re.findall(r'^## (.+)$', report, re.M) == ['1. first', '2. look', '3. last'] and 'Running:' not in report
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]  # written through a temporary, then replaced


def test_a_step_past_its_timeout_is_killed_listed_as_not_finished_and_the_next_steps_run(tmp_path, capsys):
    gc = _gpu_check()
    steps = [gc.Step('1. slow', _sleeper(gc, 60, 'slow')), gc.Step('2. quick', _sleeper(gc, 0, 'quick'))]
    start = time.monotonic()
    code, report = _run(gc, tmp_path, steps, '--step-timeout', '1=2')
    assert time.monotonic() - start < 30  # not the 60 s the child asked for
    assert code == 1 and report.rstrip().endswith('FAILED.')
    section = report.split('## 1. slow')[1].split('## 2.')[0]
    assert 'not finished: timed out after 2 s' in section and 'slow started' in section  # what it printed survives
    assert 'slow done' not in section
    assert '## 2. quick\n\nquick: quick started\nquick done' in report
    assert 'Step timeouts 1: 2 s, 2: 900 s' in report
    assert 'gpu_check: 1. slow: timed out' in capsys.readouterr().out


def test_the_total_budget_cuts_the_step_and_lists_what_did_not_run(tmp_path, capsys):
    gc = _gpu_check()
    steps = [gc.Step('1. slow', _sleeper(gc, 60, 'slow')), gc.Step('2. never', _sleeper(gc, 0, 'never'))]
    code, report = _run(gc, tmp_path, steps, '--total-budget', '2')
    assert code == 1
    assert 'not finished: timed out after 2 s (what was left of the total budget of 2 s)' in report
    assert '## 2. never\n\nnot run: total budget of 2 s used up.' in report and 'never started' not in report


def test_a_failed_step_and_a_step_whose_input_is_missing_are_recorded_and_the_rest_run(tmp_path, capsys):
    gc = _gpu_check()

    def breaks(ctx, timeout):
        raise ValueError('broken on purpose')

    def needs(ctx, timeout):
        raise gc.StepNotRun('it needs what step 1 makes')

    steps = [gc.Step('1. breaks', breaks), gc.Step('2. needs', needs), gc.Step('3. fine', _sleeper(gc, 0, 'fine'))]
    code, report = _run(gc, tmp_path, steps)
    assert code == 1
    assert 'FAILED after 0 s:' in report and 'ValueError: broken on purpose' in report
    assert '## 2. needs\n\nnot run: it needs what step 1 makes.' in report and 'fine: fine started' in report


def test_sigterm_kills_the_running_step_writes_the_report_and_exits_128_plus_15(tmp_path, capsys):
    gc = _gpu_check()

    def terminated(ctx, timeout):
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            return _sleeper(gc, 60, 'child')(ctx, timeout)
        finally:
            timer.cancel()

    steps = [gc.Step('1. terminated', terminated), gc.Step('2. after', _sleeper(gc, 0, 'after'))]
    start = time.monotonic()
    code, report = _run(gc, tmp_path, steps)
    assert code == 128 + signal.SIGTERM and time.monotonic() - start < 30
    assert 'not finished: gpu_check was stopped by SIGTERM' in report
    assert '## 2. after\n\nnot run: gpu_check was stopped by SIGTERM.' in report and report.rstrip().endswith('FAILED.')
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler before is back


@pytest.mark.parametrize('value', ['0', '-3', 'abc', '0=5', '2=x'])
def test_bad_timeouts_are_usage_errors(value, capsys):
    gc = _gpu_check()
    flag = '--total-budget' if '=' not in value and value != '0' else '--step-timeout'
    with pytest.raises(SystemExit) as e:
        gc.main(['--device', 'cpu', flag, value])
    assert e.value.code == 2 and value in capsys.readouterr().err
