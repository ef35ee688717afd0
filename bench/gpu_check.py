"""The CUDA check in one command: what a GPU machine must show, measured in one run, written to docs/results.md.

    python bench/gpu_check.py --device cuda                 # on a CUDA machine, about 5 minutes on an H100/H200
    python bench/gpu_check.py --device cpu --budget tiny --out /tmp/results.md   # the same steps on a CPU (a test)

Steps (each one's output, time and exit status go into the report; a failed step fails the command, the others
still run):
1. the device-parametrised tests (`pytest -m devices`, DUPRU_TEST_DEVICES=<device>): masks, exact zeros under
   Adam/AdamW, frozen values, the fused step's op and launch counts and no host sync, prune/rewind/save/load, a
   DUPru run resumed on the device, two deterministic runs giving the same bits;
2. `bench/bench_pruning.py` at BasicSR's batch 16 of 128x128 GT crops (full MSRResNet x4): step time of DUPru
   against stock, hook time, launches per step;
3. a short demo with the GPU preset (`dupru-demo --budget gpu --iters E --rounds 2`): full MSRResNet, 240 px
   sub-images, 128 px crops, batch 16, every run of the demo, scored on the held-out photos;
4. a short stock and DUPru training (`dupru_basicsr.train`, the GPU preset's options on the demo's data): seconds
   per iteration of each, measured side by side.

Made for a machine lent under a hard time limit per call, so that a slow step loses nothing measured before it:

- every step runs in a child process of its own (steps 1 and 2: pytest and bench_pruning.py; steps 3 and 4: this
  script with `--only-step 3|4`, which runs the step in that process and hands its result back in a JSON file), in
  its own process group, with its stdout and stderr going to files under WORK/logs. A step that runs past its
  timeout has its whole process group killed and is recorded as "not finished: timed out after N s" with what it
  had printed; the next steps still run;
- `--step-timeout SECONDS` (every step) or `--step-timeout N=SECONDS` (step N; repeatable) sets the timeouts (the
  defaults depend on `--budget`: STEPS below); `--total-budget SECONDS` bounds the whole run (default: 540 s for
  `--budget full`, which leaves a 600 s call time to install the wheels and hand the report back; 1500 s for
  `tiny`): a step gets at most what is left of it, and a step that cannot start because it is used up is recorded
  as "not run: total budget of N s used up";
- the report (`--out`) is written atomically (a temporary file in its folder, then `os.replace`) before the first
  step and after every step, with a line naming the step that is running and those still to run, so a kill at any
  moment leaves the steps done so far on disk. SIGTERM, SIGINT or SIGHUP kill the running step's process group,
  record the steps as stopped or not run, write the report and exit with 128 + the signal's number (a SIGKILL of
  this process leaves the report as last written, and the running step's process group to finish on its own);
- the command exits with 0 when every step passed, 1 when one failed, timed out or did not run.

On a machine with the package installed (`pip install -e .`), or with basicsr and its small dependencies on
PYTHONPATH (bench/README.md: the GPU machine's one-call command).
"""
import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import os.path as osp
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.abspath(__file__)
sys.path.insert(0, REPO)  # run from a copy of the repository without installing it

# budget -> bench repeats / batch / GT size, demo iterations per round, training iterations per run
BUDGETS = {
    'full': dict(repeats=15, batch=16, gt_size=128, demo_iters=100, train_iters=200),
    'tiny': dict(repeats=2, batch=1, gt_size=32, demo_iters=1, train_iters=4),
}
# budget -> seconds for the whole run (the lent GPU machine gives a call 600 s, the wheels' install included)
TOTAL_BUDGETS = {'full': 540, 'tiny': 1500}
OUTPUT_TAIL = 6000  # characters of a step's output kept in the report when it fails or times out


class StepTimeout(Exception):
    """A step's child process ran past its timeout and was killed; `output` is what it printed until then."""

    def __init__(self, seconds, output):
        super().__init__(f'timed out after {seconds:.0f} s')
        self.seconds, self.output = seconds, output


class StepFailed(Exception):
    """A step's child process failed: `reason` in words, `output` what it printed."""

    def __init__(self, reason, output):
        super().__init__(reason)
        self.reason, self.output = reason, output


class StepNotRun(Exception):
    """A step that cannot start (what it needs is missing); the message says why."""


class Stopped(BaseException):
    """This process received a stopping signal (SIGTERM, SIGINT, SIGHUP) while it ran."""

    def __init__(self, signame):
        super().__init__(signame)
        self.signame = signame


@dataclasses.dataclass
class Context:
    """What the steps share: the device, the budget, the work folder and what earlier steps left for later ones."""
    device: str
    budget_name: str
    work: str
    results: dict = dataclasses.field(default_factory=dict)

    @property
    def budget(self):
        return BUDGETS[self.budget_name]

    def log(self, name):
        """The path (without .out / .err) of a step's output files."""
        return osp.join(self.work, 'logs', name)


@dataclasses.dataclass
class Step:
    """One step of the check: `fn(ctx, timeout)` returns (the report section's text after its header, failed); it
    runs its work in child processes (`run_child`) that it gives at most `timeout` seconds. `timeouts`: the default
    timeout for each budget."""
    title: str
    fn: object
    timeouts: dict = dataclasses.field(default_factory=lambda: {'full': 300, 'tiny': 900})


def _read(path):
    try:
        with open(path, errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def _kill_group(proc):
    """Kill `proc`'s process group (the child and whatever it started) and reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_child(cmd, timeout, log, env=None):
    """Run `cmd` (cwd: the repository) in a process group of its own, its stdout and stderr written to `log`.out and
    `log`.err as it goes (so what it printed survives a kill), at most `timeout` seconds. Returns (exit status,
    stdout, stderr); past the timeout the whole group is killed and StepTimeout carries what it had printed. The
    group is killed after a normal exit too, so nothing it left running overlaps the next step."""
    os.makedirs(osp.dirname(log), exist_ok=True)
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED='1')
    with open(log + '.out', 'w') as out, open(log + '.err', 'w') as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise StepTimeout(timeout, _read(log + '.out') + _read(log + '.err')) from None
        finally:
            _kill_group(proc)  # also on Stopped / KeyboardInterrupt while it waited
    return returncode, _read(log + '.out'), _read(log + '.err')


def run_step_in_child(ctx, number, timeout):
    """Run step `number`'s in-process work (`--only-step`) in a child process of this script; returns its result."""
    result = osp.join(ctx.work, 'logs', f'step{number}_result.json')
    with contextlib.suppress(FileNotFoundError):
        os.remove(result)
    cmd = [sys.executable, SCRIPT, '--only-step', str(number), '--device', ctx.device, '--budget', ctx.budget_name,
           '--work', ctx.work, '--result', result]
    returncode, out, err = run_child(cmd, timeout, ctx.log(f'step{number}'))
    if returncode != 0 or not osp.isfile(result):
        raise StepFailed(f'`python bench/gpu_check.py --only-step {number}` exited with status {returncode}',
                         out + err)
    with open(result) as f:
        return json.load(f)


# --- the steps -------------------------------------------------------------------------------------------------

def step_tests(ctx, timeout):
    start = time.time()
    env = dict(os.environ, DUPRU_TEST_DEVICES=ctx.device)
    cmd = [sys.executable, '-m', 'pytest', '-q', '-m', 'devices', '-p', 'no:cacheprovider', '-rs', 'tests']
    returncode, out, err = run_child(cmd, timeout, ctx.log('step1_tests'), env)
    out = out + err
    summary = next((line for line in reversed(out.splitlines()) if re.search(r'\d+ (passed|failed|error)', line)),
                   '(no pytest summary)').strip('= ')
    failed = returncode != 0 or 'skipped' in summary  # on the device asked for, nothing may skip
    command = f'DUPRU_TEST_DEVICES={ctx.device} python -m pytest -q -m devices tests'
    body = f'`{command}`: **{summary}** ({time.time() - start:.0f} s).\n'
    if failed:
        body += f'\n```\n{out[-OUTPUT_TAIL:]}\n```\n'
    return body, failed


def step_bench(ctx, timeout):
    start = time.time()
    budget = ctx.budget
    cmd = [sys.executable, osp.join('bench', 'bench_pruning.py'), '--device', ctx.device, '--batch',
           str(budget['batch']), '--gt-size', str(budget['gt_size']), '--repeats', str(budget['repeats'])]
    returncode, out, err = run_child(cmd, timeout, ctx.log('step2_bench'))
    if returncode == 0:
        out = '\n'.join(line for line in out.splitlines() if not line.startswith('USDT:'))
    else:
        out = out + err
    return f'`python {" ".join(cmd[1:])}` ({time.time() - start:.0f} s):\n\n```\n{out.strip()}\n```\n', returncode != 0


def step_demo(ctx, timeout):
    result = run_step_in_child(ctx, 3, timeout)
    ctx.results['demo_out'] = result['demo_out']
    return (f'`{result["command"]}` ({result["seconds"]:.0f} s; {ctx.budget["demo_iters"]} iterations per round: a '
            f'check that every branch runs, not a quality result):\n\n```\n{result["table"]}\n```\n'), False


def step_training(ctx, timeout):
    if not ctx.results.get('demo_out'):
        raise StepNotRun("it trains on the short demo's data, and step 3 did not finish")
    result = run_step_in_child(ctx, 4, timeout)
    per_iter = result['per_iter']
    return (f'{ctx.budget["train_iters"]} iterations each of `dupru_basicsr.train` with the GPU preset (MSRResNet '
            f'64x16, batch 16, 128 px crops) on the demo\'s data, no validation ({result["seconds"]:.0f} s): median '
            f'seconds per iteration (the first fifth left out): stock {per_iter["stock"]:.4f} s, DUPru '
            f'{per_iter["dupru"]:.4f} s, ratio {per_iter["dupru"] / per_iter["stock"]:.3f}.\n'), False


STEPS = [
    Step('1. Device tests', step_tests, {'full': 200, 'tiny': 900}),
    Step('2. Pruning benchmark', step_bench, {'full': 150, 'tiny': 900}),
    Step('3. Short demo, GPU preset', step_demo, {'full': 240, 'tiny': 900}),
    Step('4. Stock vs DUPru training speed', step_training, {'full': 150, 'tiny': 900}),
]


# --- the in-process work of steps 3 and 4 (run by `--only-step 3|4` in a child process) ------------------------

def run_short_demo(device, budget, work):
    from dupru_basicsr.demo import run_demo
    out = osp.join(work, 'demo')
    start = time.time()
    _, table = run_demo(out, budget='gpu', rounds=2, iters=budget['demo_iters'], device=device, progress=False)
    command = f'dupru-demo --budget gpu --device {device} --iters {budget["demo_iters"]} --rounds 2 --out DIR'
    return command, table, time.time() - start, out


def run_short_training(device, budget, demo_out):
    """Stock (one cosine) and DUPru (2 rounds, 90 % of the body pruned at the round boundary, rewind to W0) with
    the GPU preset on the demo's data: median seconds per iteration of each, the first fifth of the iterations
    (start-up, cuDNN autotuning) left out."""
    from dupru_basicsr.demo import PRESETS
    from dupru_basicsr.experiments import make_options, train_experiment
    from dupru_basicsr.pruning import rate_for_sparsity
    from dupru_basicsr.utils.devices import synchronize
    half = max(1, budget['train_iters'] // 2)
    preset = dict(PRESETS['gpu'], rounds=2, iters=half)  # DUPru: 2 rounds (one prune); stock: one cosine over both
    data = {'train': {'gt_sub': osp.join(demo_out, 'data', 'train', 'GTmod4_sub'),
                      'lr_sub': {4: osp.join(demo_out, 'data', 'train', 'LRbicx4_sub')}},
            'val': {'gt': osp.join(demo_out, 'data', 'val', 'GTmod4'),
                    'lr': {4: osp.join(demo_out, 'data', 'val', 'LRbicx4')}}}
    root = osp.join(demo_out, 'speed')
    gpus = 1 if device == 'cuda' else 0
    per_iter = {}
    for label, method, kwargs in (('stock', 'stock', dict(restarts=False)),
                                  ('dupru', 'dupru', dict(rate=rate_for_sparsity(0.9, 1), rewind='init'))):
        opt = make_options(method, data, preset, f'speed_{label}', gpus, **kwargs)
        opt.pop('val')
        opt['datasets'].pop('val')
        opt['logger']['save_checkpoint_freq'] = 2 * half
        stamps = []

        def on_iter(it, total):
            synchronize(device)
            stamps.append(time.perf_counter())

        train_experiment(opt, root, label, progress=False, on_iter=on_iter)
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        per_iter[label] = statistics.median(steps[len(steps) // 5:]) if steps else float('nan')
    return per_iter


def only_step(args):
    """`--only-step N`: step N's in-process work in this process, its result written to `--result` (JSON)."""
    budget = BUDGETS[args.budget]
    start = time.time()
    if args.only_step == 3:
        command, table, seconds, demo_out = run_short_demo(args.device, budget, args.work)
        result = dict(command=command, table=table, seconds=seconds, demo_out=demo_out)
    else:
        result = dict(per_iter=run_short_training(args.device, budget, osp.join(args.work, 'demo')))
        result['seconds'] = time.time() - start
    write_atomically(args.result, json.dumps(result))
    return 0


# --- the report and the run ------------------------------------------------------------------------------------

def machine(device):
    import platform

    import torch
    if device == 'cuda':
        return (f'{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}, Python '
                f'{platform.python_version()}')
    return (f'CPU {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch '
            f'{torch.__version__}, Python {platform.python_version()}')


def write_atomically(path, text):
    """Write `text` to `path` through a temporary file in the same folder and `os.replace` (the package's
    atomic_write: a reader, or a kill, sees the old file or the new one, never a part; the mode a plain write gives)."""
    from dupru_basicsr.weights.io import atomic_write_bytes
    atomic_write_bytes(text.encode(), path)


class Report:
    """The report's head and the sections of the steps done so far, written to `path` whenever asked."""

    def __init__(self, path, head):
        self.path, self.head, self.sections = path, list(head), []

    def add(self, title, body):
        self.sections.append(f'## {title}\n\n{body}')

    def write(self, last_line):
        text = '\n'.join(self.head + self.sections + [last_line])
        write_atomically(self.path, text)
        return text


def progress_line(steps, running, timeout, elapsed):
    rest = '; '.join(step.title for step in steps[running + 1:]) or 'none'
    return (f'Not finished yet ({elapsed:.0f} s so far). Running: {steps[running].title} (timeout {timeout:.0f} s). '
            f'Still to run: {rest}.\n')


def run_steps(steps, ctx, report, timeouts, total_budget):
    """Run `steps` in order, each with its timeout (cut to what is left of `total_budget`), the report written
    before each step and after the last. Returns (failed, the signal's name when a signal stopped the run)."""
    t0 = time.monotonic()
    failed, stopped = False, None
    for i, step in enumerate(steps):
        if stopped:
            report.add(step.title, f'not run: gpu_check was stopped by {stopped}.\n')
            continue
        left = total_budget - (time.monotonic() - t0)
        if left < 1:
            report.add(step.title, f'not run: total budget of {total_budget:.0f} s used up.\n')
            failed = True
            print(f'gpu_check: {step.title}: not run (total budget used up)', flush=True)
            continue
        timeout = min(timeouts[i], left)
        start = time.monotonic()
        try:
            report.write(progress_line(steps, i, timeout, start - t0))
            body, step_failed = step.fn(ctx, timeout)
            status = 'FAILED' if step_failed else 'done'
        except StepTimeout as e:
            cut = f' (what was left of the total budget of {total_budget:.0f} s)' if timeout < timeouts[i] else ''
            body = (f'not finished: timed out after {e.seconds:.0f} s{cut}; what it printed until then (the last '
                    f'{OUTPUT_TAIL} characters):\n\n```\n{e.output[-OUTPUT_TAIL:].strip() or "(nothing)"}\n```\n')
            step_failed, status = True, 'timed out'
        except StepNotRun as e:
            body, step_failed, status = f'not run: {e}.\n', True, 'not run'
        except StepFailed as e:
            body = (f'FAILED after {time.monotonic() - start:.0f} s: {e.reason}:\n\n'
                    f'```\n{e.output[-OUTPUT_TAIL:].strip()}\n```\n')
            step_failed, status = True, 'FAILED'
        except Exception:  # noqa: BLE001 - record it, run the other steps, fail at the end
            body = f'FAILED after {time.monotonic() - start:.0f} s:\n\n```\n{traceback.format_exc()}```\n'
            step_failed, status = True, 'FAILED'
        except (Stopped, KeyboardInterrupt) as e:
            stopped = e.signame if isinstance(e, Stopped) else 'SIGINT'
            body = f'not finished: gpu_check was stopped by {stopped} after {time.monotonic() - start:.0f} s.\n'
            step_failed, status = True, f'stopped by {stopped}'
        failed |= step_failed
        report.add(step.title, body)
        print(f'gpu_check: {step.title}: {status} ({time.monotonic() - start:.0f} s)', flush=True)
    return failed or bool(stopped), stopped


def parse_step_timeout(text):
    """`SECONDS` (every step) or `N=SECONDS` (step N) -> (N or None, seconds)."""
    number, _, seconds = text.rpartition('=')
    try:
        number = int(number) if number else None
        seconds = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: give SECONDS or N=SECONDS (step N)') from None
    if seconds <= 0 or (number is not None and number < 1):
        raise argparse.ArgumentTypeError(f'{text!r}: the seconds must be > 0 and N a step number (1, 2, ...)')
    return number, seconds


def positive_seconds(text):
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number of seconds') from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f'{text!r}: the seconds must be > 0')
    return seconds


def step_timeouts(steps, budget_name, given):
    """Each step's timeout: its default for the budget, overridden by `--step-timeout` values (later ones win)."""
    timeouts = [step.timeouts.get(budget_name, 900) for step in steps]
    for number, seconds in given or ():
        if number is None:
            timeouts = [seconds] * len(steps)
        else:
            timeouts[number - 1] = seconds
    return timeouts


@contextlib.contextmanager
def stopping_signals():
    """SIGTERM, SIGINT and SIGHUP raise Stopped in the main thread while inside (so the running step's process
    group is killed and the report written); the handlers before are restored afterwards. A second signal during the
    final write gets the default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [name for name in ('SIGTERM', 'SIGINT', 'SIGHUP') if hasattr(signal, name)]
    previous = {name: signal.getsignal(getattr(signal, name)) for name in names}

    def stop(signum, frame):
        for name in names:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        raise Stopped(signal.Signals(signum).name)

    for name in names:
        signal.signal(getattr(signal, name), stop)
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def main(argv=None, steps=None):
    """The command; `steps` (default STEPS) is the list of Step to run (tests pass small ones)."""
    steps = STEPS if steps is None else steps
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    parser.add_argument('--budget', choices=sorted(BUDGETS), default='full')
    parser.add_argument('--out', default=osp.join(REPO, 'docs', 'results.md'), help='the report (Markdown)')
    parser.add_argument('--work', default=None, help='folder for the demo and training runs and the steps\' output '
                        '(default: a temporary one)')
    parser.add_argument('--step-timeout', type=parse_step_timeout, action='append', metavar='[N=]SECONDS',
                        help='timeout of every step, or of step N (repeatable); default per budget: '
                        + '; '.join(f'{b}: ' + ', '.join(f'{s.timeouts[b]:g}' for s in STEPS) + ' s'
                                    for b in sorted(BUDGETS)))
    parser.add_argument('--total-budget', type=positive_seconds, default=None, metavar='SECONDS',
                        help='seconds for all steps together; default: ' + ', '.join(
                            f'{b}: {s} s' for b, s in sorted(TOTAL_BUDGETS.items())))
    parser.add_argument('--only-step', type=int, choices=[3, 4], default=None,
                        help='(used by the check itself) run step 3 or 4 in this process, result to --result')
    parser.add_argument('--result', default=None, help='(with --only-step) the JSON file its result goes to')
    args = parser.parse_args(argv)
    if args.only_step is not None:
        if not (args.work and args.result):
            parser.error('--only-step needs --work and --result')
        return only_step(args)
    for number, _ in args.step_timeout or ():
        if number is not None and number > len(steps):
            parser.error(f'--step-timeout {number}=...: there are {len(steps)} steps')
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: error: --device cuda: no CUDA device is visible here; --device cpu runs the same steps on '
              'the CPU.', file=sys.stderr)
        return 2
    timeouts = step_timeouts(steps, args.budget, args.step_timeout)
    total_budget = args.total_budget or TOTAL_BUDGETS[args.budget]
    work = osp.abspath(args.work or tempfile.mkdtemp(prefix='gpu_check_'))
    ctx = Context(args.device, args.budget, work)
    t0 = time.time()
    limits = ', '.join(f'{i + 1}: {t:.0f} s' for i, t in enumerate(timeouts))
    report = Report(args.out, [
        f'# Results of `python bench/gpu_check.py --device {args.device} --budget {args.budget}`\n',
        f'Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine(args.device)}; every number below '
        'is this run\'s output (one run).\n',
        f'Step timeouts {limits}; total budget {total_budget:.0f} s. Each step\'s output: {ctx.log("")}*.\n'])
    with stopping_signals():
        try:
            failed, stopped = run_steps(steps, ctx, report, timeouts, total_budget)
        except Stopped as e:  # between steps (while the report was written)
            failed, stopped = True, e.signame
        text = report.write(f'Total: {time.time() - t0:.0f} s; {"FAILED" if failed else "all steps passed"}.\n')
    print(text)
    if stopped:
        return 128 + getattr(signal, stopped)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
