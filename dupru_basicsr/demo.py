"""The whole product in one command: `dupru-demo` (or `python -m dupru_basicsr.demo`).

1. Prepares data from the colour photos that scikit-image ships (no download): four for training (DIV2K-style
   sub-images), the other four held out for evaluation, with BasicSR's MATLAB-compatible bicubic x4
   (`dupru_basicsr.prepare`).
2. Trains, on the same data with the same budget (T rounds x E iterations) and seed: stock MSRResNet (one cosine
   over all T x E iterations, the better stock schedule in docs/study.md), the paper's recipe (rewind to init, UPru
   and DUPru) and the study's best recipe (gradual magnitude pruning with DUPru freezing), all pruned to the same
   body sparsity (90 %).
3. Evaluates them on the held-out photos and writes the comparison report (`dupru_basicsr.compare`), which opens
   with PSNR against the share of body weights kept.

On a CPU it uses an MSRResNet of 16 features and 16 blocks (the body holds 77 % of the weights, as in MSRResNet) and
5 rounds x 300 iterations per run (the README gives a measured time); with CUDA it uses the full network (64
features, 16 blocks) and a longer schedule. `--budget` picks a preset or sets the iterations per round. Checkpoints
are written atomically, so Ctrl-C leaves complete ones behind; rerunning resumes where it stopped.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
import time

import yaml

# every colour photo scikit-image ships that training does not use is scored
HELD_OUT = ('astronaut', 'chelsea', 'coffee', 'retina')
MARKER = '.dupru_demo'

# name -> network width/depth, training sub-images (`sub_size` px every `sub_step` px) and the random GT crops cut
# from them (`gt_size`, at most `sub_size`), batch, rounds x iterations per round, target body sparsity, lr
PRESETS = {
    'tiny': dict(num_feat=16, num_block=2, sub_size=120, sub_step=60, gt_size=32, batch=2, rounds=2, iters=5,
                 sparsity=0.3, lr=1e-3),
    'cpu': dict(num_feat=16, num_block=16, sub_size=120, sub_step=60, gt_size=48, batch=8, rounds=5, iters=300,
                sparsity=0.9, lr=4e-4),
    # MSRResNet with BasicSR's batch 16 of 128x128 GT crops (BasicSR cuts DIV2K into 480 px sub-images; the photos
    # here are 427 to 1000 px, so 240 px every 120 px)
    'gpu': dict(num_feat=64, num_block=16, sub_size=240, sub_step=120, gt_size=128, batch=16, rounds=5, iters=4000,
                sparsity=0.9, lr=2e-4),
}


def demo_runs(preset):
    """(label, method, make_options keyword arguments) of the demo's runs, all with the same budget."""
    from dupru_basicsr.experiments import gradual_schedule
    from dupru_basicsr.pruning import rate_for_sparsity
    rate = rate_for_sparsity(preset['sparsity'], preset['rounds'] - 1) if preset['rounds'] > 1 else None
    gradual = gradual_schedule(preset['rounds'] * preset['iters'], preset['sparsity'])  # the study's schedule
    runs = [('stock', 'stock', dict(restarts=False))]
    if rate is not None:
        runs += [('upru', 'upru', dict(rewind='init', rate=rate)), ('dupru', 'dupru', dict(rewind='init', rate=rate))]
    return runs + [('dupru_gradual', 'dupru', dict(gradual=gradual))]


def kernel_summary(device):
    """What decides the demo's float results: torch, and the GPU, or the CPU model and the kernels PyTorch picked for
    it (AVX512, AVX2, ...: an AVX2-only CPU rounds differently from an AVX-512 one). The thread count does not."""
    import platform

    import torch
    if device == 'cuda':
        return f'torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}'
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'torch {torch.__version__}, CPU {cpu}, {torch.backends.cpu.get_cpu_capability()} kernels'


def machine_summary(device):
    """What the numbers were measured on: `kernel_summary` and the thread count."""
    import torch
    threads = torch.get_num_threads()
    return f'{kernel_summary(device)}, {threads} thread{"s" if threads != 1 else ""}'


class DemoError(ValueError):
    """A wrong demo option or output folder; the message says what to do."""


def prepare_data(data_dir, progress=True, subimages=True, held_out=HELD_OUT, train=None, sub_size=120, sub_step=60):
    """skimage photos -> <data_dir>/{train,val}/{GTmod4,LRbicx4}: `held_out` photos in val, `train` (default: all
    the others) in train, also as `sub_size` px sub-images every `sub_step` px when `subimages` (the test suite
    trains on the whole photos and does without them, and picks its own smaller split)."""
    import cv2

    from dupru_basicsr.data.prepare import load_skimage_photos, prepare
    photos = load_skimage_photos()
    held_out = [n for n in held_out if n in photos]
    train = [n for n in photos if n not in held_out and (train is None or n in train)]
    if len(held_out) < 1 or len(train) < 2:
        raise DemoError(f'scikit-image provides too few photos offline ({sorted(photos)}); use dupru-prepare on '
                        'your own images and the options in options/train/tiny instead.')
    folders = {}
    for split, names in (('train', train), ('val', held_out)):
        source = osp.join(data_dir, 'source', split)
        os.makedirs(source, exist_ok=True)
        for name in names:
            cv2.imwrite(osp.join(source, f'{name}.png'), cv2.cvtColor(photos[name], cv2.COLOR_RGB2BGR))
        folders[split] = prepare(
            input_dir=source,
            out_dir=osp.join(data_dir, split),
            scales=(4, ),
            subimages=subimages and split == 'train',
            crop_size=sub_size,
            step=sub_step,
            force=True,
            progress=progress)
    return folders


def format_table(results, dataset, measured_on=None):
    """The demo's summary table: one row per method, every number a rerun on the same machine repeats exactly (the
    inference times, which vary from run to run, are in `format_timing`), and a last line `measured on: ...`
    (`kernel_summary` and the seed) when `measured_on` is given."""
    stats = {s['label']: s for s in results.model_stats}
    header = (f'{"method":14s} {"PSNR-RGB":>9s} {"SSIM-RGB":>9s} {"PSNR-Y":>8s} {"SSIM-Y":>8s} {"body sparsity":>14s} '
              f'{"non-zero params":>16s}')
    lines = [header, '-' * len(header)]
    for label in results.labels:
        s = stats[label]
        lines.append(f'{label:14s} {results.mean(label, dataset, "psnr_rgb"):9.4f} '
                     f'{results.mean(label, dataset, "ssim_rgb"):9.4f} {results.mean(label, dataset, "psnr_y"):8.4f} '
                     f'{results.mean(label, dataset, "ssim_y"):8.4f} {100 * s["body_sparsity"]:13.2f}% '
                     f'{s["nonzero_params"]:16,d}')
    if measured_on:
        lines.append(f'{MEASURED_ON}{measured_on}')
    return '\n'.join(lines)


def format_timing(results):
    """Inference time per image of each run (varies from run to run and machine to machine)."""
    times = [(s['label'], (s.get('timing') or {}).get('ms_per_image')) for s in results.model_stats]
    return 'Inference ms/image (PyTorch, dense kernels: zeros cost as much as weights): ' + ', '.join(
        f'{label} {"n/a" if ms is None else f"{ms:.1f}"}' for label, ms in times)


TABLE_BEGIN, TABLE_END = '<!-- demo-table -->', '<!-- /demo-table -->'


def table_block(path):
    """The demo table quoted in the Markdown file `path`, between its <!-- demo-table --> markers (a ``` block)."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise DemoError(f'{path} has no {TABLE_BEGIN} ... {TABLE_END} block holding the demo table.')
    inner = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    return '\n'.join(line for line in inner.strip().splitlines() if not line.startswith('```'))


MEASURED_ON = 'measured on: '
# The largest difference --check accepts, per preset, between the quoted table and a run whose torch, CPU model or
# CPU kernels differ from the quoted table's (on the same ones it compares exactly). Taken from the measured spread
# (docs/demo_spread.md, `python bench/demo_spread.py`): twice the largest difference the kernels alone made (AVX-512
# vs AVX2, same seed), and at least 2 units of the last printed digit. PSNR in dB (RGB and Y), SSIM, body sparsity in
# percentage points, non-zero parameters as a count.
CHECK_TOLERANCE = {
    'tiny': dict(psnr=0.0002, ssim=0.0002, sparsity=0.02, nonzero=2),  # kernels alone: <= 0.0001 dB, SSIM 0
    'cpu': dict(psnr=0.36, ssim=0.0096, sparsity=0.02, nonzero=2),  # kernels alone: <= 0.179 dB, SSIM 0.0048
}
COLUMNS = (('PSNR-RGB', 'psnr'), ('SSIM-RGB', 'ssim'), ('PSNR-Y', 'psnr'), ('SSIM-Y', 'ssim'),
           ('body sparsity', 'sparsity'), ('non-zero params', 'nonzero'))


def split_table(text):
    """(the table's lines without its `measured on:` line, what that line says or None)."""
    lines = text.splitlines()
    measured = [line[len(MEASURED_ON):] for line in lines if line.startswith(MEASURED_ON)]
    return [line for line in lines if not line.startswith(MEASURED_ON)], (measured[0] if measured else None)


def table_rows(lines):
    """{method: [6 numbers]} of a demo table's rows (the lines after the header and its rule)."""
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == 7:
            rows[parts[0]] = [float(p.rstrip('%').replace(',', '')) for p in parts[1:]]
    return rows


def quoted_seed(path):
    """The seed the table quoted in `path` names on its `measured on:` line (None when it names none)."""
    import re
    found = re.search(r'seed (\d+)$', split_table(table_block(path))[1] or '')
    return int(found.group(1)) if found else None


def check_table(path, table, tolerance=None):
    """0 when the table quoted in `path` agrees with `table`, else 1 after printing both (the check mode, --check).

    Exactly when both were measured on the same torch, CPU model and kernels (their `measured on:` lines match) or
    when no `tolerance` is known for the preset; else every number within `tolerance` (CHECK_TOLERANCE). It says
    which of the two it did."""
    quoted_lines, quoted_on = split_table(table_block(path))
    lines, measured_on = split_table(table)
    if quoted_on == measured_on or tolerance is None:
        why = ('the same torch, CPU and kernels' if quoted_on == measured_on else
               'no measured spread for this budget, so no tolerance')
        how = f'compared exactly ({why}; this run: {measured_on})'
        failures = [] if quoted_lines == lines else ['the rows differ']
    else:
        how = (f'compared within the tolerance measured for this budget (PSNR {tolerance["psnr"]} dB, SSIM '
               f'{tolerance["ssim"]}, body sparsity {tolerance["sparsity"]} points, non-zero params '
               f'{tolerance["nonzero"]}): the quoted table was measured on {quoted_on or "(it does not say)"}, this '
               f'run on {measured_on}')
        quoted_rows, rows = table_rows(quoted_lines), table_rows(lines)
        failures = [] if list(quoted_rows) == list(rows) else [
            f'methods {", ".join(quoted_rows)} quoted, {", ".join(rows)} in this run']
        for method in quoted_rows if not failures else ():
            for (column, kind), quoted_value, value in zip(COLUMNS, quoted_rows[method], rows[method]):
                if abs(quoted_value - value) > tolerance[kind] + 1e-9:
                    failures.append(f'{method} {column}: {value:g} vs {quoted_value:g} quoted '
                                    f'(|difference| {abs(quoted_value - value):.4g} > {tolerance[kind]})')
    if not failures:
        print(f'\ndupru-demo --check: the table in {path} agrees with this run\'s, {how}.')
        return 0
    import difflib
    diff = '\n'.join(difflib.unified_diff(table_block(path).splitlines(), table.splitlines(), f'{path} (quoted)',
                                          'this run', lineterm=''))
    print(f'\ndupru-demo --check: the table in {path} differs from this run\'s, {how}:\n' + '\n'.join(failures) +
          f'\n{diff}', file=sys.stderr)
    return 1


def update_table(path, table, report_dir=None):
    """Put `table` between the markers of `path` (--update) and, when `report_dir` is given and a docs/ folder is
    beside `path`, copy the report's PSNR-vs-kept and crops figures there (demo_fig4_psnr_vs_kept.png,
    demo_crops.png)."""
    import shutil
    table_block(path)  # the markers exist
    with open(path, encoding='utf-8') as f:
        text = f.read()
    head, rest = text.split(TABLE_BEGIN, 1)
    tail = rest.split(TABLE_END, 1)[1]
    with open(path, 'w', encoding='utf-8') as f:
        f.write(f'{head}{TABLE_BEGIN}\n```\n{table}\n```\n{TABLE_END}{tail}')
    docs = osp.join(osp.dirname(osp.abspath(path)), 'docs')
    if report_dir is not None and osp.isdir(docs):  # the README's figures (a file elsewhere quotes the table only)
        for name, target in (('fig4_psnr_vs_kept.png', 'demo_fig4_psnr_vs_kept.png'), ('crops.png', 'demo_crops.png')):
            shutil.copyfile(osp.join(report_dir, name), osp.join(docs, target))
            print(f'Copied {osp.join(report_dir, name)} to {osp.join(docs, target)}.')
    print(f'Updated the demo table in {path}.')


def choose_preset(budget=None, rounds=None, iters=None, cuda=False):
    """The demo's settings: preset `budget` (a name, or a number of iterations per round with the device's preset:
    gpu with CUDA, else cpu), with `rounds` and `iters` overriding the preset's."""
    if budget is None:
        budget = 'gpu' if cuda else 'cpu'
    if str(budget) in PRESETS:
        preset = dict(PRESETS[str(budget)])
    else:
        try:
            budget_iters = int(budget)
        except ValueError:
            raise DemoError(f'--budget {budget!r}: use one of {", ".join(PRESETS)} or a number of iterations per '
                            'round (e.g. --budget 200).') from None
        if budget_iters < 1:
            raise DemoError(f'--budget {budget_iters}: the iterations per round must be >= 1.')
        preset = dict(PRESETS['gpu' if cuda else 'cpu'], iters=budget_iters)
    for flag, value in (('--rounds', rounds), ('--iters', iters)):
        if value is not None:
            if value < 1:
                raise DemoError(f'{flag} {value}: must be >= 1.')
            preset[flag[2:]] = value
    return preset


def run_demo(out='dupru_demo', budget=None, rounds=None, device=None, force=False, progress=True,
             prepare_only=False, iters=None, seed=0):
    """Prepare, train the three methods (every run with BasicSR's `manual_seed: seed`), compare. Returns
    (CompareResults, table text), or the prepared folders when `prepare_only`."""
    from dupru_basicsr.experiments import check_device, make_options, train_experiment
    from dupru_basicsr.report.build import compare
    device = check_device(device, DemoError)
    cuda = device == 'cuda'
    preset = choose_preset(budget, rounds, iters, cuda)

    out = osp.abspath(out)
    if osp.exists(out) and not osp.isdir(out):
        raise DemoError(f'--out {out} is a file; give a folder (it is created if missing).')
    if osp.isdir(out) and os.listdir(out) and not osp.exists(osp.join(out, MARKER)) and not force:
        raise DemoError(f'--out {out} exists and was not made by dupru-demo; choose another folder or pass --force.')
    settings_path = osp.join(out, MARKER)
    settings = {'preset': preset, 'cuda': cuda}
    if seed != 0:  # (a demo folder made before --seed existed holds seed 0 and no key)
        settings['seed'] = seed
    resume = False
    if osp.exists(settings_path):
        with open(settings_path) as f:
            earlier = yaml.safe_load(f) or {}
        resume = earlier == settings  # same settings: continue the earlier (interrupted) demo
        if not resume and not force:
            before = dict(earlier.get('preset') or {}, cuda=earlier.get('cuda'), seed=earlier.get('seed', 0))
            now = dict(preset, cuda=cuda, seed=seed)
            changes = ', '.join(f'{k} {before.get(k)!r} -> {now.get(k)!r}' for k in now if before.get(k) != now[k])
            raise DemoError(f'--out {out} holds a demo with other settings ({changes}); its runs would not match this '
                            'one. Choose another --out, or pass --force to replace that demo.')
    os.makedirs(out, exist_ok=True)
    if not resume:
        import shutil
        for sub in ('experiments', 'options', 'report', 'data'):
            shutil.rmtree(osp.join(out, sub), ignore_errors=True)
    with open(settings_path, 'w') as f:
        yaml.safe_dump(settings, f)

    t0 = time.time()
    print(f'dupru-demo: {"CUDA" if cuda else "CPU"}, MSRResNet x4 {preset["num_feat"]} features / '
          f'{preset["num_block"]} blocks, {preset["rounds"]} rounds x {preset["iters"]} iterations, pruned runs '
          f'to {100 * preset["sparsity"]:g}% body sparsity, seed {seed}, output in {out}', flush=True)
    data = prepare_data(osp.join(out, 'data'), progress=progress, sub_size=preset['sub_size'],
                        sub_step=preset['sub_step'])
    if prepare_only:
        print(f'Prepared {osp.join(out, "data")}: train/ (sub-images) and val/ (held-out), x4.')
        return data
    gpus = 1 if cuda else 0
    runs = demo_runs(preset)
    if preset['rounds'] < 2:
        print('Note: with --rounds 1 there is no round boundary to prune at, so the rewinding runs (upru, dupru) are '
              'left out; stock and gradual DUPru train.', flush=True)
    exps = [train_experiment(make_options(method, data, preset, f'demo_{label}', gpus, seed=seed, **kwargs), out,
                             label, progress)[0] for label, method, kwargs in runs]
    results = compare(exps, dataset_dirs=[f'heldout={data["val"]["gt"]}:{data["val"]["lr"][4]}'],
                      out_dir=osp.join(out, 'report'), labels=[label for label, *_ in runs],
                      device=device, repeats=3, warmup=1, progress=progress)
    table = format_table(results, 'heldout', f'{kernel_summary(device)}, seed {seed}')
    held_out = ', '.join(n for n in HELD_OUT if osp.isfile(osp.join(out, 'data', 'source', 'val', f'{n}.png')))
    print(f'\nHeld-out images: {held_out} (x4, metrics on RGB and Y with a 4-pixel border crop)\n')
    print(table)
    print(f'\n{format_timing(results)}')
    print(f'Ran on: {machine_summary(device)}')
    print(f'Experiments: {osp.join(out, "experiments")}\nReport:      {osp.join(out, "report", "report.html")}'
          f'\nTotal time:  {time.time() - t0:.0f} s')
    return results, table


def check_tolerance(args):
    """CHECK_TOLERANCE of the preset the arguments ran as it is (None with --rounds/--iters or a number as --budget:
    no spread was measured for those)."""
    if args.rounds is not None or args.iters is not None:
        return None
    budget = args.budget
    if budget is None:
        import torch
        budget = 'gpu' if args.device == 'cuda' or (args.device is None and torch.cuda.is_available()) else 'cpu'
    return CHECK_TOLERANCE.get(budget)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='dupru-demo', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=None,
                        help='output folder (default: ./dupru_demo; with --check a new temporary folder)')
    parser.add_argument('--budget', default=None,
                        help=f'preset ({", ".join(PRESETS)}; default: gpu with CUDA, else cpu) or iterations per round')
    parser.add_argument('--rounds', type=int, default=None, help='number of rounds T (default: from the preset)')
    parser.add_argument('--iters', type=int, default=None,
                        help="iterations per round E of the chosen preset (default: the preset's), e.g. "
                        '--budget gpu --device cpu --iters 1 --rounds 2 to run the GPU preset briefly on a CPU')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=None, help='default: cuda when available')
    parser.add_argument('--seed', type=int, default=0,
                        help='manual_seed of every run (default 0, the seed of the quoted tables); other seeds show '
                        'how much of a difference between the methods is noise')
    parser.add_argument('--force', action='store_true',
                        help='use --out even if it holds other files, or a demo with other settings (replaced)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--prepare-only', action='store_true',
                        help='only prepare the data (for the option files in options/train/tiny)')
    quoted = parser.add_mutually_exclusive_group()
    quoted.add_argument('--check', metavar='FILE.md',
                        help='train from scratch and fail (exit 1) unless the table printed is the one quoted in '
                        f'FILE.md between {TABLE_BEGIN} and {TABLE_END} (e.g. README.md, with no other option)')
    quoted.add_argument('--update', metavar='FILE.md',
                        help='write the table printed into FILE.md (between the same markers) and copy the report\'s '
                        'PSNR-vs-kept and crops figures to docs/demo_*.png beside it')
    args = parser.parse_args(argv)
    from dupru_basicsr.report import CompareError
    from dupru_basicsr.utils.cli import run_command

    def run():
        quoted_file = args.check or args.update
        if quoted_file:
            if args.prepare_only:
                raise DemoError('--prepare-only trains nothing: it prints no table to check or update.')
            table_block(quoted_file)  # the file and its markers, before any training
        from dupru_basicsr.plugin.training_values import MAX_SEED
        if not 0 <= args.seed <= MAX_SEED:
            raise DemoError(f'--seed {args.seed}: give an integer from 0 to {MAX_SEED} (BasicSR seeds numpy with it).')
        if args.check and quoted_seed(args.check) not in (None, args.seed):
            raise DemoError(f'--check {args.check}: the table there is seed {quoted_seed(args.check)}\'s; pass '
                            f'--seed {quoted_seed(args.check)} to check it.')
        out = args.out or (tempfile.mkdtemp(prefix='dupru_demo_check_') if args.check else 'dupru_demo')
        done = run_demo(out, args.budget, args.rounds, args.device, args.force, not args.no_progress,
                        args.prepare_only, args.iters, args.seed)
        if args.check:
            return check_table(args.check, done[1], check_tolerance(args))
        if args.update:
            update_table(args.update, done[1], osp.join(out, 'report'))

    return run_command('dupru-demo', run, (DemoError, CompareError),
                       interrupted='completed checkpoints are kept; run the same command again to continue')


if __name__ == '__main__':
    sys.exit(main())
