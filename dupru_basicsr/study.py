"""Equal-budget quality study: how sparse can MSRResNet get before it loses PSNR?

    python -m dupru_basicsr.study --preset cpu-medium --train-hr datasets/SunHays80/HR --data-root datasets --jobs 2

On the same data, seeds and budget (T rounds x E iterations) it trains
- stock MSRResNet for E iterations, and for T x E iterations twice: with the pruned runs' cosine restarted every E
  iterations, and with one cosine over all T x E (every sparse run is measured against the better of the two),
- at each target body sparsity (default 90 % and 95 %): gradual magnitude pruning (Zhu & Gupta; one cosine) with
  DUPru's eps freeze and without it (`imp`: only pruned weights are held), learning-rate rewinding (Renda et al.)
  with DUPru and UPru freezing, and the paper's rewind-to-init DUPru and UPru; the rewinding recipes prune the same
  share of the survivors in each of the T - 1 round ends, chosen so that they land on the target sparsity,
for the preset's seeds; then one more seed for both T x E stock rows and for the best sparse recipe of each sparsity
(by mean Y-PSNR over the datasets), the rows a conclusion rests on. It evaluates on Set5 and Set14 (RGB and Y) with
the comparison report (which also draws PSNR vs remaining weights per round) and writes `study.md` / `study.json`:
seed means and spreads, body and whole-model sparsity, compressed ticket size and each row's difference to the
better stock baseline. A rerun with the same --out skips finished runs and resumes interrupted ones.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

from dupru_basicsr.experiments import finetune_schedule, gradual_schedule, make_options, train_experiment
from dupru_basicsr.pruning import rate_for_sparsity
from dupru_basicsr.utils.devices import check_device

PRESETS = {
    # tiny MSRResNet (16 features, 2 blocks: the body is 30 % of the weights) on a 2-core CPU
    'cpu-small': dict(num_feat=16, num_block=2, gt_size=48, batch=8, rounds=5, iters=300, lr=1e-3,
                      sparsities=(0.90, 0.95), seeds=(0, 1), extra_seeds=(2, )),
    # MSRResNet with MSRResNet's proportions (32 features, 16 blocks: the body is 77.4 % of the weights) on 2 cores
    'cpu-medium': dict(num_feat=32, num_block=16, gt_size=48, batch=8, rounds=5, iters=500, lr=4e-4,
                       sparsities=(0.90, 0.95), seeds=(0, 1), extra_seeds=(2, )),
    # a few minutes, for checking the pipeline
    'smoke': dict(num_feat=8, num_block=1, gt_size=32, batch=2, rounds=2, iters=4, lr=1e-3, sparsities=(0.5, 0.75),
                  seeds=(0, ), extra_seeds=(1, )),
    # full MSRResNet on a GPU (DIV2K-style data)
    'gpu': dict(num_feat=64, num_block=16, gt_size=128, batch=16, rounds=5, iters=20000, lr=2e-4,
                sparsities=(0.90, 0.95), seeds=(0, 1), extra_seeds=(2, )),
}
STOCK_TXE = ('stock_TxE_restart', 'stock_TxE_cosine')
TARGET_DB = 0.05  # the target: within 0.05 dB Y-PSNR of the better stock baseline on every dataset


class StudyError(ValueError):
    """A bad study input; the message names it and the fix."""


def recipes(preset, finetune=None):
    """(label, method, make_options keyword arguments) of every run of one seed; with `finetune` (F iterations) the
    runs that start from a trained dense network instead (see finetune_recipes)."""
    if finetune is not None:
        return finetune_recipes(preset, finetune)
    runs = [('stock_E', 'stock', dict(total_iter=preset['iters'])), ('stock_TxE_restart', 'stock', {}),
            ('stock_TxE_cosine', 'stock', dict(restarts=False))]
    if preset['rounds'] < 2:
        raise StudyError(f'rounds is {preset["rounds"]}: rewinding recipes need at least 2 rounds.')
    for sparsity in preset['sparsities']:
        tag = f'{100 * sparsity:g}'
        gradual = gradual_schedule(preset['rounds'] * preset['iters'], sparsity)
        rate = rate_for_sparsity(sparsity, preset['rounds'] - 1)
        runs += [(f'dupru_gradual_{tag}', 'dupru', dict(gradual=gradual)),
                 (f'imp_gradual_{tag}', 'imp', dict(gradual=gradual))]
        # the whole network (body + upsampler: every convolution but the first and last), layer and global scope
        runs += [(f'dupru_gradual_whole_{tag}', 'dupru', dict(gradual=gradual, targets='whole')),
                 (f'dupru_gradual_whole-global_{tag}', 'dupru', dict(gradual=gradual, targets='whole', scope='global')),
                 (f'imp_gradual_whole_{tag}', 'imp', dict(gradual=gradual, targets='whole'))]
        for rewind in ('lr', 'init'):
            for method in ('dupru', 'upru'):
                runs.append((f'{method}_{rewind}_{tag}', method, dict(rewind=rewind, rate=rate)))
    return runs


FINETUNE_BASELINES = ('start', 'dense_finetune')


def finetune_recipes(preset, finetune):
    """The pretrained workflow: every run starts from the same trained dense weights ('start', scored as it is) and
    trains F = `finetune` iterations with one cosine from half the preset's LR: `dense_finetune` (no pruning, the
    baseline) and, per target sparsity, gradual pruning while fine-tuning (experiments.finetune_schedule; no
    rewinding) of the whole network (DUPru layer / global scope, IMP) and of the body alone (DUPru)."""
    if finetune < 2:
        raise StudyError(f'--finetune {finetune}: the fine-tune needs at least 2 iterations.')
    common = dict(total_iter=finetune, restarts=False, lr=preset['lr'] / 2)
    runs = [('start', None, {}), ('dense_finetune', 'stock', common)]
    for sparsity in preset['sparsities']:
        tag = f'{100 * sparsity:g}'
        gradual = dict(common, gradual=finetune_schedule(finetune, sparsity))
        runs += [(f'dupru_gradual_whole_{tag}', 'dupru', dict(gradual, targets='whole')),
                 (f'dupru_gradual_whole-global_{tag}', 'dupru', dict(gradual, targets='whole', scope='global')),
                 (f'imp_gradual_whole_{tag}', 'imp', dict(gradual, targets='whole')),
                 (f'dupru_gradual_{tag}', 'dupru', gradual)]
    return runs


def sparsity_of(label):
    """The target sparsity tag of a sparse recipe label ('90' of 'dupru_lr_90'), else None."""
    return None if label.startswith('stock') or label in FINETUNE_BASELINES else label.rsplit('_', 1)[1]


def prepare_study_data(train_hr, out, progress):
    from dupru_basicsr.data.prepare import prepare
    folder = osp.join(out, 'data', 'train')
    if not osp.isfile(osp.join(folder, 'meta_info_GTmod4_sub.txt')):
        prepare(input_dir=train_hr, out_dir=folder, scales=(4, ), subimages=True, crop_size=240, step=240,
                force=True, progress=progress)
    return {'gt_sub': osp.join(folder, 'GTmod4_sub'), 'lr_sub': {4: osp.join(folder, 'LRbicx4_sub')}}


DEFINITION = '.dupru_study.json'  # what the runs in an --out folder were made from


def check_same_study(out, definition):
    """A rerun into `out` may skip the runs it finds only if they were made from the same data, preset, datasets
    and device; otherwise raise StudyError naming what differs (before anything is written)."""
    path = osp.join(out, DEFINITION)
    if osp.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
        now = json.loads(json.dumps(definition))  # tuples as lists, as the file has them
        differ = [k for k in now if earlier.get(k) != now[k]]
        if differ:
            changes = '; '.join(f'{k}: {earlier.get(k)!r} then, {now[k]!r} now' for k in differ)
            raise StudyError(f'--out {out} holds a study made from other settings ({changes}); its runs would be '
                             'reported as this one\'s. Use another --out, or delete that folder to start afresh.')
    elif osp.isdir(osp.join(out, 'experiments')) or osp.isdir(osp.join(out, 'data')):
        raise StudyError(f'--out {out} holds runs or data but no record of what they were made from ({DEFINITION}); '
                         'use another --out, or delete that folder to start afresh.')


def _die_with_parent(parent_pid):
    """Pool initializer: a worker whose parent study process died (SIGKILL, a lost terminal) exits too, instead of
    training on unseen; its checkpoints are complete (atomic writes), so a rerun resumes it."""
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name='die-with-parent', daemon=True).start()


def _train_in_worker(threads, opt, root, label):
    """One run in a worker process of `--jobs N`, with its share of the CPU threads."""
    import torch
    torch.set_num_threads(threads)
    return train_experiment(opt, root, label, progress=False)


def train_runs(planned, root, jobs, progress):
    """Train [(label, opt)] (finished ones are skipped); with jobs > 1 in that many processes, each with
    cpu_count // jobs threads. Returns {label: (experiment folder, seconds or None when skipped)}."""
    done = {}
    if jobs <= 1:
        for label, opt in planned:
            done[label] = train_experiment(opt, root, label, progress)
        return done
    import concurrent.futures
    import multiprocessing
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context('spawn'),
                                                initializer=_die_with_parent, initargs=(os.getpid(), )) as pool:
        futures = {pool.submit(_train_in_worker, threads, opt, root, label): label for label, opt in planned}
        for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
            label = futures[future]
            done[label] = future.result()
            seconds = done[label][1]
            print(f'[{n}/{len(planned)}] {label}: ' + ('already trained' if seconds is None else f'{seconds:.0f} s'),
                  flush=True)
    return {label: done[label] for label, _ in planned}  # in plan order, whichever finished first


def summarise(results, runs, datasets, baselines=STOCK_TXE):
    """Per recipe: the seeds it has, mean and spread (max - min over seeds) of each metric, body, upsampler and
    whole-model sparsity, compressed size, and the Y-PSNR difference to the better baseline row (the T x E stock
    rows; in the pretrained workflow the start weights and their dense fine-tune) of each dataset."""
    stats = {s['label']: s for s in results.model_stats}
    table = {}
    for label, *_ in runs:
        seeds = sorted(int(k.rsplit('_s', 1)[1]) for k in stats if k.rsplit('_s', 1)[0] == label)
        if not seeds:
            continue
        runs_stats = [stats[f'{label}_s{s}'] for s in seeds]
        row = {'seeds': seeds,
               'body_sparsity': statistics.mean(s['body_sparsity'] for s in runs_stats),
               'upsampler_sparsity': statistics.mean(s.get('upsampler_sparsity', 0.0) for s in runs_stats),
               'model_sparsity': statistics.mean(1 - s['nonzero_params'] / s['params'] for s in runs_stats),
               'compressed_bytes': statistics.mean(s['compressed_bytes'] for s in runs_stats),
               'dense_bytes': statistics.mean(s['dense_bytes'] for s in runs_stats)}
        for ds in datasets:
            for metric in ('psnr_y', 'psnr_rgb', 'ssim_y'):
                values = [results.mean(f'{label}_s{s}', ds, metric) for s in seeds]
                row[f'{ds}_{metric}'] = statistics.mean(values)
                row[f'{ds}_{metric}_spread'] = max(values) - min(values)
                row[f'{ds}_{metric}_seeds'] = values
        table[label] = row
    best_stock = {ds: max((s for s in baselines if s in table), key=lambda s: table[s][f'{ds}_psnr_y'])
                  for ds in datasets}
    for row in table.values():
        for ds in datasets:
            row[f'{ds}_psnr_y_vs_stock'] = row[f'{ds}_psnr_y'] - table[best_stock[ds]][f'{ds}_psnr_y']
    return table, best_stock


def best_sparse(table, datasets):
    """{sparsity tag: the sparse recipe with the highest mean Y-PSNR over the datasets}."""
    best = {}
    for label, row in table.items():
        tag = sparsity_of(label)
        if tag is None:
            continue
        score = statistics.mean(row[f'{ds}_psnr_y'] for ds in datasets)
        if tag not in best or score > best[tag][1]:
            best[tag] = (label, score)
    return {tag: label for tag, (label, _) in best.items()}


def format_markdown(table, best_stock, decisive, datasets, preset, train_seconds, extra_seeds, wall_seconds,
                    finetune=None, from_trained=None):
    baseline_word = 'better stock' if finetune is None else 'better dense'
    head = ['recipe', 'seeds', 'body sparsity', 'upsampler sparsity', 'model sparsity', 'ticket (KB)']
    for ds in datasets:
        head += [f'{ds} PSNR-Y (spread)', f'{ds} Δ vs {baseline_word}', f'{ds} PSNR-RGB', f'{ds} SSIM-Y']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for label, row in table.items():
        cells = [label, len(row['seeds']), f'{100 * row["body_sparsity"]:.2f}%',
                 f'{100 * row["upsampler_sparsity"]:.2f}%', f'{100 * row["model_sparsity"]:.2f}%',
                 f'{row["compressed_bytes"] / 1e3:.1f}']
        for ds in datasets:
            cells += [f'{row[f"{ds}_psnr_y"]:.4f} ({row[f"{ds}_psnr_y_spread"]:.4f})',
                      f'{row[f"{ds}_psnr_y_vs_stock"]:+.4f}', f'{row[f"{ds}_psnr_rgb"]:.4f}',
                      f'{row[f"{ds}_ssim_y"]:.4f}']
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    total = preset['rounds'] * preset['iters']
    dense = next(iter(table.values()))['dense_bytes']
    net = f'MSRResNet x4, {preset["num_feat"]} features / {preset["num_block"]} blocks'
    if finetune is None:
        budget = (f'budget T = {preset["rounds"]} rounds x E = {preset["iters"]} iterations = {total} (stock_E: '
                  f'{preset["iters"]}); batch {preset["batch"]}, {preset["gt_size"]}² GT crops, Adam lr '
                  f'{preset["lr"]:g}')
        baseline_text = 'the better T x E stock row'
    else:
        budget = (f'every run starts from the seed\'s {from_trained} weights ("start", scored as they are) and '
                  f'trains F = {finetune} iterations, one cosine from Adam lr {preset["lr"] / 2:g}; gradual pruning '
                  f'from iteration 1 to {finetune_schedule(finetune, 0.9)["end_iter"]}, no rewinding; batch '
                  f'{preset["batch"]}, {preset["gt_size"]}² GT crops')
        baseline_text = 'the better of start and dense_finetune'
    lines += ['', f'{net}; {budget}. Means over the seeds; spread = max - min over the seeds. Δ: mean Y-PSNR minus '
              f'that of {baseline_text} on the same dataset ({", ".join(f"{ds}: {s}" for ds, s in best_stock.items())}'
              f'). Ticket: dupru-export size of the final weights (dense: {dense / 1e3:.1f} KB). Sparsity: zeros in '
              'the body.* weights, in upconv1/upconv2/conv_hr, and among all parameters.', '']
    if decisive:
        lines.append(f'Seed(s) {", ".join(map(str, extra_seeds))} added for {", ".join(decisive)} (the baseline rows '
                     'and the best sparse recipe of each sparsity, picked by mean Y-PSNR of the first seeds on '
                     'these same test sets).')
    for tag in sorted({sparsity_of(label) for label in table} - {None}, key=float):
        label = best_sparse(table, datasets).get(tag)
        row = table[label]
        deltas = {ds: row[f'{ds}_psnr_y_vs_stock'] for ds in datasets}
        worst = min(deltas.values())
        verdict = (f'within {TARGET_DB} dB of the {baseline_word} row' if worst >= -TARGET_DB else
                   f'misses {TARGET_DB} dB of the {baseline_word} row by {-worst - TARGET_DB:.4f} dB')
        lines.append(f'- {tag} % target: best recipe {label} ({100 * row["body_sparsity"]:.2f} % of the body, '
                     f'{100 * row["model_sparsity"]:.2f} % of all weights): Δ ' +
                     ', '.join(f'{ds} {d:+.4f} dB' for ds, d in deltas.items()) +
                     f'; {verdict}.')
    lines.append(f'- This invocation: {wall_seconds / 60:.1f} min wall clock, {len(train_seconds)} runs trained '
                 f'({sum(train_seconds.values()) / 60:.1f} min summed over the runs; runs finished earlier were '
                 'skipped).')
    return '\n'.join(lines) + '\n'


def run_study(preset_name='cpu-small', train_hr='datasets/SunHays80/HR', data_root='datasets',
              datasets=('Set5', 'Set14'), out='results/study', seeds=None, progress=True, jobs=1, extra_seeds=None,
              iters=None, only=None, device=None, from_trained=None, finetune=1000):
    """Train and evaluate the study (see the module docstring). `iters` overrides the preset's E (the gradual
    schedule scales with it); `only` keeps these recipe labels (and the baseline rows: both T x E stock rows, unless
    `only` names one of them); `device` ('cpu' or 'cuda'; default: CUDA where present) is where the runs train and
    are evaluated. `from_trained` (a recipe label of this study, e.g. stock_TxE_cosine): the pretrained workflow,
    every run starts from that run's final weights of the same seed in the same --out and trains `finetune`
    iterations (finetune_recipes). Runs with another E or F get their own names and their own study_*.md."""
    from dupru_basicsr.report.build import compare
    device = check_device(device, StudyError)
    preset = dict(PRESETS[preset_name])
    if iters is not None:
        if iters < 1:
            raise StudyError(f'--iters {iters}: the iterations per round E must be >= 1.')
        preset['iters'] = iters  # the gradual schedule follows the budget (experiments.gradual_schedule)
    seeds = tuple(preset['seeds'] if seeds is None else seeds)
    extra_seeds = tuple(preset['extra_seeds'] if extra_seeds is None else extra_seeds)
    if not seeds or set(seeds) & set(extra_seeds):
        raise StudyError(f'--seeds {list(seeds)} / --extra-seeds {list(extra_seeds)}: give at least one seed, and '
                         'extra seeds that are not among the seeds.')
    if jobs < 1:
        raise StudyError(f'--jobs {jobs}: must be >= 1.')
    trained_labels = [label for label, *_ in recipes(preset)]
    if from_trained is not None and from_trained not in trained_labels:
        raise StudyError(f'--from-trained {from_trained}: not a recipe of preset {preset_name} (recipes: '
                         f'{", ".join(trained_labels)}).')
    runs = recipes(preset, finetune if from_trained is not None else None)
    baselines = STOCK_TXE if from_trained is None else FINETUNE_BASELINES
    if only:
        unknown = sorted(set(only) - {label for label, *_ in runs})
        if unknown:
            raise StudyError(f'--recipes {" ".join(unknown)}: not a recipe of preset {preset_name} (recipes: '
                             f'{", ".join(label for label, *_ in runs)}).')
        named = set(only) & set(baselines)
        baselines = tuple(b for b in baselines if b in named) if named and from_trained is None else baselines
        runs = [r for r in runs if r[0] in set(only) | set(baselines)]
    if osp.exists(out) and not osp.isdir(out):
        raise StudyError(f'--out {out} is a file; give a folder (it is created if missing).')
    from dupru_basicsr.utils.cli import plain_name_problem
    for ds in datasets:
        problem = plain_name_problem(ds)
        if problem:
            raise StudyError(f'--datasets {ds}: a dataset name is a folder directly under --data-root, and {problem}; '
                             'give its name (e.g. Set5).')
        for sub in ('', 'GTmod12', 'LRbicx4'):
            if not osp.isdir(osp.join(data_root, ds, sub)):
                raise StudyError(f'{osp.join(data_root, ds, sub)} does not exist; pass --data-root with '
                                 f'{"/".join(datasets)} in BasicSR layout (GTmod12, LRbicx4), e.g. made by '
                                 'dupru-prepare.')
    if not osp.isdir(train_hr):
        raise StudyError(f'--train-hr {train_hr} does not exist; point it at a folder of HR images.')
    out = osp.abspath(out)
    base_prefix = f'study_{preset_name}'
    # runs with another E (or fine-tunes) are other experiments: they get their own names (a rerun must not take one
    # for the other), and their own study_<suffix>.md; the definition (data, network, device) is shared
    suffix = ('' if iters is None else f'_E{iters}') if from_trained is None else f'_from-{from_trained}_F{finetune}'
    prefix = base_prefix + suffix
    starts = {}
    if from_trained is not None:
        for seed in seeds + extra_seeds:
            starts[seed] = osp.join(out, 'experiments', f'{base_prefix}_{from_trained}_s{seed}')
            path = osp.join(starts[seed], 'models', 'net_g_latest.pth')
            if not osp.isfile(path):
                raise StudyError(f'--from-trained {from_trained}: {path} does not exist; train it first with the same '
                                 f'--out and preset (dupru-study --preset {preset_name} --out {out} --recipes '
                                 f'{from_trained} --seeds {seed}), or leave seed {seed} out.')
    settings = {k: v for k, v in preset.items() if k != 'iters'}  # E only names runs (see prefix)
    definition = {'preset': preset_name, 'settings': settings, 'train_hr': osp.abspath(train_hr),
                  'data_root': osp.abspath(data_root), 'datasets': list(datasets), 'device': device}
    check_same_study(out, definition)
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, DEFINITION), 'w') as f:
        json.dump(definition, f, indent=1)
    t0 = time.time()
    train = prepare_study_data(train_hr, out, progress)
    # the held-out val set for tickets: the first evaluation set
    val = {'gt': osp.join(data_root, datasets[0], 'GTmod12'), 'lr': {4: osp.join(data_root, datasets[0], 'LRbicx4')}}
    data = {'train': train, 'val': val}
    gpus = 1 if device == 'cuda' else 0

    def plan(labels_seeds):
        planned = []
        for label, seed in labels_seeds:
            method, kwargs = next((m, kw) for name, m, kw in runs if name == label)
            if method is None:  # 'start': scored, not trained
                continue
            if from_trained is not None:
                kwargs = dict(kwargs, pretrained=osp.join(starts[seed], 'models', 'net_g_latest.pth'))
            opt = make_options(method, data, preset, f'{prefix}_{label}_s{seed}', gpus, seed=seed, **kwargs)
            opt['datasets']['val']['name'] = datasets[0]
            planned.append((f'{label}_s{seed}', opt))
        return planned

    def with_starts(done, run_seeds):
        if from_trained is not None:
            done.update({f'start_s{seed}': (starts[seed], None) for seed in run_seeds})
        return done

    def evaluate(done, **kwargs):
        labels = list(done)
        return compare([done[k][0] for k in labels], datasets=list(datasets), data_root=data_root, labels=labels,
                       repeats=0, progress=progress, device=device, **kwargs)

    done = with_starts(train_runs(plan([(label, seed) for seed in seeds for label, *_ in runs]), out, jobs, progress),
                       seeds)
    decisive, first_pass = [], None
    if extra_seeds:
        # the rows a conclusion rests on get more seeds: the baseline rows and the best sparse recipe per level
        first_pass = evaluate(done, tickets=False, write=False)
        first, _ = summarise(first_pass, runs, datasets, baselines)
        decisive = list(baselines) + list(best_sparse(first, datasets).values())
        done.update(with_starts(train_runs(plan([(label, seed) for seed in extra_seeds for label in decisive]), out,
                                           jobs, progress), extra_seeds))
    train_seconds = {k: v[1] for k, v in done.items() if v[1] is not None}
    # the runs of the first pass keep its rows: only the extra seeds' runs (and every run's tickets) are scored now
    results = evaluate(done, out_dir=osp.join(out, 'report' + suffix), baseline=f'{baselines[-1]}_s{seeds[0]}',
                       reuse=first_pass)
    table, best_stock = summarise(results, runs, datasets, baselines)
    markdown = format_markdown(table, best_stock, decisive, datasets, preset, train_seconds, extra_seeds,
                               time.time() - t0, finetune if from_trained else None, from_trained)
    from dupru_basicsr.report.figures import plot_sparsity_study
    figure = plot_sparsity_study(table, list(datasets), baselines, osp.join(out, f'study{suffix}.png'))
    markdown += f'\nFigure: {osp.basename(figure)} (PSNR-Y against the zero share of all weights).\n'
    with open(osp.join(out, f'study{suffix}.md'), 'w') as f:
        f.write(markdown)
    with open(osp.join(out, f'study{suffix}.json'), 'w') as f:
        json.dump({'preset': preset_name, 'settings': preset, 'seeds': list(seeds), 'extra_seeds': list(extra_seeds),
                   'decisive': decisive, 'best_stock': best_stock, 'table': table, 'jobs': jobs, 'device': device,
                   'from_trained': from_trained, 'finetune': finetune if from_trained else None,
                   'train_hr': osp.abspath(train_hr), 'data_root': osp.abspath(data_root),
                   'train_seconds': train_seconds, 'total_seconds': time.time() - t0}, f, indent=1, default=str)
    print(markdown)
    print(f'Report: {osp.join(out, "report" + suffix, "report.html")}\nTotal time: {time.time() - t0:.0f} s')
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(prog='dupru-study', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu-small')
    parser.add_argument('--train-hr', default='datasets/SunHays80/HR', help='folder of HR training images')
    parser.add_argument('--data-root', default='datasets', help='folder with the evaluation sets (BasicSR layout)')
    parser.add_argument('--datasets', nargs='+', default=['Set5', 'Set14'])
    parser.add_argument('--seeds', nargs='+', type=int, default=None, help="every recipe's seeds (default: preset)")
    parser.add_argument('--extra-seeds', nargs='*', type=int, default=None,
                        help='more seeds for the stock T x E rows and the best sparse recipes (default: preset; '
                        'give none to skip)')
    parser.add_argument('--iters', type=int, default=None,
                        help="iterations per round E (default: the preset's; the budget is T x E)")
    parser.add_argument('--recipes', nargs='+', default=None,
                        help='only these recipes, and the baseline rows (both T x E stock rows unless one is named '
                        'here; with --from-trained: start and dense_finetune)')
    parser.add_argument('--from-trained', default=None, metavar='RECIPE',
                        help='the pretrained workflow: start every run from this recipe\'s trained weights (same seed, '
                        'same --out, e.g. stock_TxE_cosine) and fine-tune --finetune iterations while pruning')
    parser.add_argument('--finetune', type=int, default=1000, help='F: fine-tune iterations with --from-trained')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs trained at once, each with cpu_count // jobs threads (2 is faster on 2 cores)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=None,
                        help='where the runs train and are evaluated (default: cuda when available)')
    parser.add_argument('--out', default='results/study')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    from dupru_basicsr.data.prepare import PrepareError
    from dupru_basicsr.report import CompareError
    from dupru_basicsr.utils.cli import run_command

    def run():
        run_study(args.preset, args.train_hr, args.data_root, args.datasets, args.out, args.seeds,
                  not args.no_progress, args.jobs, args.extra_seeds, args.iters, args.recipes, args.device,
                  args.from_trained, args.finetune)

    return run_command('dupru-study', run, (StudyError, CompareError, PrepareError))


if __name__ == '__main__':
    sys.exit(main())
