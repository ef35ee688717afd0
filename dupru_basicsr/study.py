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
from dataclasses import dataclass
from typing import Optional, Sequence

from dupru_basicsr.experiments import finetune_schedule, gradual_schedule, make_options, train_experiment
from dupru_basicsr.pruning import rate_for_sparsity
from dupru_basicsr.utils.devices import check_device

PRESETS = {
    # tiny MSRResNet (16 features, 2 blocks: the body is 30 % of the weights) on a 2-core CPU
    'cpu-small': dict(num_feat=16, num_block=2, gt_size=48, batch=8, rounds=5, iters=300, lr=1e-3,
                      sparsities=(0.90, 0.95), seeds=(0, 1), extra_seeds=(2, )),
    # MSRResNet with MSRResNet's proportions (32 features, 16 blocks: the body is 77.4 % of the weights) on 2 cores
    # (blocks: the whole-network rows also pruned in 1 x N output-channel blocks, block_recipes)
    'cpu-medium': dict(num_feat=32, num_block=16, gt_size=48, batch=8, rounds=5, iters=500, lr=4e-4,
                       sparsities=(0.90, 0.95), seeds=(0, 1), extra_seeds=(2, ), blocks=(4, )),
    # a few minutes, for checking the pipeline
    'smoke': dict(num_feat=8, num_block=1, gt_size=32, batch=2, rounds=2, iters=4, lr=1e-3, sparsities=(0.5, 0.75),
                  seeds=(0, ), extra_seeds=(1, )),
    # full MSRResNet on a GPU (DIV2K-style data)
    'gpu': dict(num_feat=64, num_block=16, gt_size=128, batch=16, rounds=5, iters=20000, lr=2e-4,
                sparsities=(0.90, 0.95), seeds=(0, 1), extra_seeds=(2, ), blocks=(4, )),
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
        runs += block_recipes(preset, tag, dict(gradual=gradual))
        for rewind in ('lr', 'init'):
            for method in ('dupru', 'upru'):
                runs.append((f'{method}_{rewind}_{tag}', method, dict(rewind=rewind, rate=rate)))
    return runs


def block_recipes(preset, tag, gradual):
    """The whole-network gradual DUPru rows (layer and global scope) pruned in blocks of N output channels
    (`granularity: oc_block<N>`, MNN's fast sparse kernel) for every N of the preset's `blocks`: labelled
    `dupru_gradual_whole-1x<N>_<tag>` and `dupru_gradual_whole-global-1x<N>_<tag>`, beside the element-wise rows."""
    runs = []
    for block in preset.get('blocks', ()):
        common = dict(gradual, targets='whole', granularity=f'oc_block{block}')
        runs += [(f'dupru_gradual_whole-1x{block}_{tag}', 'dupru', common),
                 (f'dupru_gradual_whole-global-1x{block}_{tag}', 'dupru', dict(common, scope='global'))]
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
        runs += block_recipes(preset, tag, gradual)
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
    study = resolve_study(preset_name, train_hr, data_root, datasets, out, seeds, progress, jobs, extra_seeds, iters,
                          only, device, from_trained, finetune)
    record_definition(study)
    t0 = time.time()
    data = study_data(study)
    done = train_seeds(study, data, study.seeds, [label for label, *_ in study.runs])
    decisive, first_pass = add_decisive_seeds(study, data, done)
    train_seconds = {k: v[1] for k, v in done.items() if v[1] is not None}
    # the runs of the first pass keep its rows: only the extra seeds' runs (and every run's tickets) are scored now
    results = evaluate_runs(study, done, out_dir=osp.join(study.out, 'report' + study.suffix),
                            baseline=f'{study.baselines[-1]}_s{study.seeds[0]}', reuse=first_pass)
    table, best_stock = summarise(results, study.runs, study.datasets, study.baselines)
    write_study_files(study, table, best_stock, decisive, train_seconds, t0)
    return table


@dataclass
class Study:
    """One study's inputs, checked and resolved by resolve_study: what the steps of run_study share."""
    preset_name: str
    preset: dict  # the preset, with E = --iters where given
    seeds: tuple
    extra_seeds: tuple
    runs: list  # (label, method, make_options keyword arguments) of every recipe trained or scored
    baselines: tuple  # the rows every other row is measured against
    datasets: Sequence[str]
    data_root: str
    train_hr: str
    out: str  # absolute
    suffix: str  # '', '_E<iters>' or '_from-<recipe>_F<finetune>': names the study's files and report
    prefix: str  # of the experiment names
    starts: dict  # {seed: the experiment whose final weights the seed's runs start from} (pretrained workflow)
    from_trained: Optional[str]
    finetune: int
    device: str
    jobs: int
    progress: bool


def resolve_study(preset_name, train_hr, data_root, datasets, out, seeds, progress, jobs, extra_seeds, iters, only,
                  device, from_trained, finetune):
    """The Study that run_study's arguments describe; every input is checked (a StudyError names it and the fix)
    before anything is written."""
    device = check_device(device, StudyError)
    preset = _preset_with_iters(preset_name, iters)
    seeds, extra_seeds = _seed_lists(preset, seeds, extra_seeds)
    if jobs < 1:
        raise StudyError(f'--jobs {jobs}: must be >= 1.')
    runs, baselines = _study_runs(preset, preset_name, only, from_trained, finetune)
    _check_study_paths(out, datasets, data_root, train_hr)
    out = osp.abspath(out)
    # runs with another E (or fine-tunes) are other experiments: they get their own names (a rerun must not take one
    # for the other), and their own study_<suffix>.md; the definition (data, network, device) is shared
    suffix = ('' if iters is None else f'_E{iters}') if from_trained is None else f'_from-{from_trained}_F{finetune}'
    starts = {} if from_trained is None else _trained_starts(out, preset_name, from_trained, seeds + extra_seeds)
    return Study(preset_name=preset_name, preset=preset, seeds=seeds, extra_seeds=extra_seeds, runs=runs,
                 baselines=baselines, datasets=datasets, data_root=data_root, train_hr=train_hr, out=out,
                 suffix=suffix, prefix=f'study_{preset_name}{suffix}', starts=starts, from_trained=from_trained,
                 finetune=finetune, device=device, jobs=jobs, progress=progress)


def _preset_with_iters(preset_name, iters):
    """A copy of preset `preset_name`, with E = `iters` when given."""
    preset = dict(PRESETS[preset_name])
    if iters is not None:
        if iters < 1:
            raise StudyError(f'--iters {iters}: the iterations per round E must be >= 1.')
        preset['iters'] = iters  # the gradual schedule follows the budget (experiments.gradual_schedule)
    return preset


def _seed_lists(preset, seeds, extra_seeds):
    """(seeds, extra seeds) as tuples, the preset's where not given; at least one seed, no extra seed among them."""
    seeds = tuple(preset['seeds'] if seeds is None else seeds)
    extra_seeds = tuple(preset['extra_seeds'] if extra_seeds is None else extra_seeds)
    if not seeds or set(seeds) & set(extra_seeds):
        raise StudyError(f'--seeds {list(seeds)} / --extra-seeds {list(extra_seeds)}: give at least one seed, and '
                         'extra seeds that are not among the seeds.')
    from dupru_basicsr.plugin.training_values import MAX_SEED
    odd = [seed for seed in seeds + extra_seeds if not 0 <= seed <= MAX_SEED]
    if odd:
        raise StudyError(f'--seeds / --extra-seeds {odd[0]}: a seed is an integer from 0 to {MAX_SEED} (BasicSR '
                         'seeds numpy with it).')
    return seeds, extra_seeds


def _study_runs(preset, preset_name, only, from_trained, finetune):
    """(runs, baseline labels): the recipes (the fine-tunes with `from_trained`), only those `only` names and the
    baseline rows when it is given."""
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
    return runs, baselines


def _check_study_paths(out, datasets, data_root, train_hr):
    """StudyError unless `out` can be a folder, every dataset is in BasicSR layout under `data_root` and `train_hr`
    exists."""
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


def _trained_starts(out, preset_name, from_trained, seeds):
    """{seed: the experiment folder of recipe `from_trained` of that seed in `out`}; StudyError for one that has not
    finished."""
    starts = {}
    for seed in seeds:
        starts[seed] = osp.join(out, 'experiments', f'study_{preset_name}_{from_trained}_s{seed}')
        path = osp.join(starts[seed], 'models', 'net_g_latest.pth')
        if not osp.isfile(path):
            raise StudyError(f'--from-trained {from_trained}: {path} does not exist; train it first with the same '
                             f'--out and preset (dupru-study --preset {preset_name} --out {out} --recipes '
                             f'{from_trained} --seeds {seed}), or leave seed {seed} out.')
    return starts


def record_definition(study):
    """Check that the runs in the study's --out were made from the same definition (check_same_study), then create
    the folder and write the definition into it."""
    settings = {k: v for k, v in study.preset.items() if k != 'iters'}  # E only names runs (see Study.suffix)
    definition = {'preset': study.preset_name, 'settings': settings, 'train_hr': osp.abspath(study.train_hr),
                  'data_root': osp.abspath(study.data_root), 'datasets': list(study.datasets), 'device': study.device}
    check_same_study(study.out, definition)
    os.makedirs(study.out, exist_ok=True)
    with open(osp.join(study.out, DEFINITION), 'w') as f:
        json.dump(definition, f, indent=1)


def study_data(study):
    """The runs' data: the training set (prepared into <out>/data once) and the held-out val set for tickets, the
    first evaluation set."""
    train = prepare_study_data(study.train_hr, study.out, study.progress)
    first = study.datasets[0]
    val = {'gt': osp.join(study.data_root, first, 'GTmod12'), 'lr': {4: osp.join(study.data_root, first, 'LRbicx4')}}
    return {'train': train, 'val': val}


def plan_runs(study, data, labels_seeds):
    """[(run label, option dict)] of the (recipe label, seed) pairs; 'start' is scored, not trained, and left out."""
    gpus = 1 if study.device == 'cuda' else 0
    planned = []
    for label, seed in labels_seeds:
        method, kwargs = next((m, kw) for name, m, kw in study.runs if name == label)
        if method is None:  # 'start': scored, not trained
            continue
        if study.from_trained is not None:
            kwargs = dict(kwargs, pretrained=osp.join(study.starts[seed], 'models', 'net_g_latest.pth'))
        opt = make_options(method, data, study.preset, f'{study.prefix}_{label}_s{seed}', gpus, seed=seed, **kwargs)
        opt['datasets']['val']['name'] = study.datasets[0]
        planned.append((f'{label}_s{seed}', opt))
    return planned


def train_seeds(study, data, seeds, labels):
    """Train recipes `labels` for every one of `seeds` (finished runs are skipped): {run label: (experiment folder,
    seconds or None)}, with the pretrained workflow's start weights of those seeds as runs 'start_s<seed>'."""
    done = train_runs(plan_runs(study, data, [(label, seed) for seed in seeds for label in labels]), study.out,
                      study.jobs, study.progress)
    if study.from_trained is not None:
        done.update({f'start_s{seed}': (study.starts[seed], None) for seed in seeds})
    return done


def evaluate_runs(study, done, **kwargs):
    """The comparison report (report.build.compare; `kwargs` are its settings) of the runs in `done`, untimed."""
    from dupru_basicsr.report.build import compare
    labels = list(done)
    return compare([done[k][0] for k in labels], datasets=list(study.datasets), data_root=study.data_root,
                   labels=labels, repeats=0, progress=study.progress, device=study.device, **kwargs)


def add_decisive_seeds(study, data, done):
    """(decisive recipe labels, first-pass results): with extra seeds, the rows a conclusion rests on (the baseline
    rows and the best sparse recipe per level, by a first evaluation) are trained for them too and added to `done`;
    ([], None) without extra seeds."""
    if not study.extra_seeds:
        return [], None
    first_pass = evaluate_runs(study, done, tickets=False, write=False)
    first, _ = summarise(first_pass, study.runs, study.datasets, study.baselines)
    decisive = list(study.baselines) + list(best_sparse(first, study.datasets).values())
    done.update(train_seeds(study, data, study.extra_seeds, decisive))
    return decisive, first_pass


def write_study_files(study, table, best_stock, decisive, train_seconds, t0):
    """study<suffix>.md, .json and .png into the study's --out, and the summary printed; `t0`: when it started."""
    from dupru_basicsr.report.figures import plot_sparsity_study
    out, suffix, from_trained = study.out, study.suffix, study.from_trained
    markdown = format_markdown(table, best_stock, decisive, study.datasets, study.preset, train_seconds,
                               study.extra_seeds, time.time() - t0, study.finetune if from_trained else None,
                               from_trained)
    figure = plot_sparsity_study(table, list(study.datasets), study.baselines, osp.join(out, f'study{suffix}.png'))
    markdown += f'\nFigure: {osp.basename(figure)} (PSNR-Y against the zero share of all weights).\n'
    with open(osp.join(out, f'study{suffix}.md'), 'w') as f:
        f.write(markdown)
    with open(osp.join(out, f'study{suffix}.json'), 'w') as f:
        json.dump({'preset': study.preset_name, 'settings': study.preset, 'seeds': list(study.seeds),
                   'extra_seeds': list(study.extra_seeds), 'decisive': decisive, 'best_stock': best_stock,
                   'table': table, 'jobs': study.jobs, 'device': study.device, 'from_trained': from_trained,
                   'finetune': study.finetune if from_trained else None, 'train_hr': osp.abspath(study.train_hr),
                   'data_root': osp.abspath(study.data_root), 'train_seconds': train_seconds,
                   'total_seconds': time.time() - t0}, f, indent=1, default=str)
    print(markdown)
    print(f'Report: {osp.join(out, "report" + suffix, "report.html")}\nTotal time: {time.time() - t0:.0f} s')


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
