"""`compare()`: the whole report from inputs to files: check every input, evaluate every run, draw, write."""
import datetime
import os
import os.path as osp
import sys
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from basicsr.metrics import calculate_psnr

from dupru_basicsr.data.bicubic import bicubic_resize
from dupru_basicsr.report import CompareError
from dupru_basicsr.report.datasets import resolve_datasets
from dupru_basicsr.report.evaluate import (build_network, evaluate_dataset, evaluate_tickets, mean_metrics,
                                           model_stats, super_resolve, time_models)
from dupru_basicsr.report.figures import (crop_window, plot_crop_grid, plot_rate_curves, plot_round_curves,
                                          plot_training_curves)
from dupru_basicsr.report.results import MEAN_ROW, CompareResults
from dupru_basicsr.report.runs import load_model_entry, parse_train_logs
from dupru_basicsr.report.writers import write_outputs
from dupru_basicsr.utils.devices import check_device


HIGHLIGHT_IMAGES = ('butterfly', 'baby')  # the paper's Table 4 images
NO_CUDA = '--device {device} requested but CUDA is not available here; use --device cpu.'


def _unique_labels(labels):
    seen, unique = {}, []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f'{label} #{seen[label]}')
    return unique


DEFAULT_CROP_IMAGES = 4  # without --crops: one crop row per image of the first dataset, its first 4 images


def _find_crop_targets(datasets, crops):
    if not crops:
        return [(datasets[0].name, img.stem) for img in datasets[0].images[:DEFAULT_CROP_IMAGES]]
    targets = []
    for name in crops:
        match = next(((d.name, img.stem) for d in datasets for img in d.images if img.stem.lower() == name.lower()),
                     None)
        if match is None:
            known = ', '.join(img.stem for d in datasets for img in d.images[:20])
            raise CompareError(f'--crops {name}: no image with that name in the datasets (images: {known}).')
        targets.append(match)
    return targets


@dataclass(frozen=True)
class ReportSettings:
    """How `compare()` evaluates the runs and writes the report: its keyword arguments, with their defaults.

    The runs: `labels` (one per input; default from each run), `arch_opt` (an option file describing .pth inputs),
    `baseline` (the label the difference table compares with; default the stock run), `reuse` (the CompareResults of
    an earlier call on the same datasets: a run it scored, same label and same checkpoint file, keeps those rows
    instead of being evaluated again; only its crop images run). The data: `data_root`, `scale`, `dataset_dirs`.
    Timing: `device`, `repeats` (0 skips it), `warmup`, `time_images` (the first N images of the first dataset;
    default all). The report: `out_dir`, `crops` (image names), `crop_box` (X Y W H), `tickets` (evaluate per-round
    tickets), `progress` (bars), `write` (False: no figures and files).
    """
    data_root: str = 'datasets'
    scale: int = 4
    out_dir: str = 'results/compare'
    labels: Optional[Sequence[str]] = None
    crops: Optional[Sequence[str]] = None
    crop_box: Optional[Sequence[int]] = None
    device: str = 'cpu'
    repeats: int = 5
    warmup: int = 2
    time_images: Optional[int] = None
    dataset_dirs: Optional[Sequence[str]] = None
    arch_opt: Optional[str] = None
    baseline: Optional[str] = None
    tickets: bool = True
    progress: bool = True
    write: bool = True
    reuse: Optional[CompareResults] = None


def compare(inputs: Sequence[str], datasets: Sequence[str] = (), *, settings: Optional[ReportSettings] = None,
            **kwargs) -> CompareResults:
    """Evaluate runs (experiment folders or .pth files) on datasets and write the report; see the module docstring.

    The keyword arguments are ReportSettings' fields (or pass `settings`, which they override). Every input is
    checked (checkpoints, architecture, scale, datasets, image sizes) before any network runs, so a mistake fails in
    seconds rather than after an hour of evaluation.
    """
    s = ReportSettings(**kwargs) if settings is None else replace(settings, **kwargs)
    inputs = _input_paths(inputs)
    _check_settings(inputs, s)
    dev = torch.device(check_device(s.device, CompareError, NO_CUDA))
    models = load_runs(inputs, s)
    data = resolve_datasets(datasets, s.data_root, s.scale, s.dataset_dirs)
    crop_targets = _find_crop_targets(data, s.crops)
    _check_crop_box(data, crop_targets, s.crop_box)
    baseline = _choose_baseline(models, s.baseline)

    nets = {m.label: build_network(m.arch, m.state_dict, m.checkpoint, dev) for m in models}  # strict loads first
    notes = _unfinished_notes(models)
    rows, stats_rows, crop_outputs = score_runs(models, nets, data, crop_targets, dev, s)
    timings, timing_note = time_runs(nets, data[0], dev, s)
    for stats in stats_rows:
        stats['timing'] = timings.get(stats['label'])
    del nets
    results = CompareResults(
        models=[m.info() for m in models], datasets=[d.info() for d in data], rows=rows, model_stats=stats_rows,
        baseline=baseline, notes=notes,
        settings={'scale': s.scale, 'crop_border': s.scale, 'device': str(dev), 'torch': torch.__version__,
                  'data_root': s.data_root, 'repeats': s.repeats, 'warmup': s.warmup, 'timing_note': timing_note,
                  'generated': datetime.datetime.now().isoformat(timespec='seconds'),
                  'crops': [list(t) for t in crop_targets], 'crop_box': list(s.crop_box) if s.crop_box else None})
    if baseline is None:
        notes.append('No stock (SRModel) run given: the difference table is omitted (pass a stock experiment or '
                     '--baseline LABEL).')
    add_curves(results, models, data[0], dev, s)
    if s.write:
        write_report(results, models, data, crop_targets, crop_outputs, s)
    return results


def _input_paths(inputs):
    """The inputs as a list of path strings (one path may be given alone)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return [str(p) for p in inputs]


def _check_settings(inputs, s):
    """CompareError for settings that cannot work, before anything is read."""
    if not inputs:
        raise CompareError('Nothing to compare: pass experiment folders or .pth checkpoints.')
    if s.scale not in (2, 3, 4):
        raise CompareError(f'--scale {s.scale}: MSRResNet supports x2, x3 and x4.')
    if s.repeats < 0 or s.warmup < 0:
        raise CompareError('--repeats and --warmup must be >= 0.')
    if s.labels is not None and len(s.labels) != len(inputs):
        raise CompareError(f'--labels gives {len(s.labels)} label(s) for {len(inputs)} input(s).')
    crop_box = s.crop_box
    if crop_box is not None and (len(crop_box) != 4 or min(crop_box[2:]) < 1):
        raise CompareError(f'--crop-box {crop_box}: expected X Y W H with W, H >= 1 (HR pixels).')
    if s.write and osp.exists(s.out_dir) and not osp.isdir(s.out_dir):
        raise CompareError(f'--out {s.out_dir} is a file; give a folder for the report (it is created if missing).')


def load_runs(inputs, s):
    """The ModelEntry of every input, each under its own label (`s.labels`, else its own; repeats numbered)."""
    models = [load_model_entry(p, s.scale, s.arch_opt) for p in inputs]
    for model, label in zip(models, _unique_labels(s.labels or [m.label for m in models])):
        model.label = label
    return models


def _image(data, ds_name, stem):
    """The ImagePair `stem` of dataset `ds_name`."""
    return next(img for d in data if d.name == ds_name for img in d.images if img.stem == stem)


def _check_crop_box(data, crop_targets, crop_box):
    """CompareError when the corner of `crop_box` lies outside a crop target image."""
    if crop_box is None:
        return
    for ds_name, stem in crop_targets:
        height, width = _image(data, ds_name, stem).gt.shape[:2]
        x, y, w, h = crop_box
        if not (0 <= x < width and 0 <= y < height):
            raise CompareError(f'--crop-box {x} {y} {w} {h}: the corner ({x}, {y}) is outside {ds_name}/{stem}, '
                               f'which is {width}x{height} HR pixels; give X < {width} and Y < {height}.')


def _choose_baseline(models, baseline):
    """The label the difference table compares with: `baseline` (checked), else the first stock run, else None."""
    if baseline is None:
        return next((m.label for m in models if m.method == 'stock'), None)
    if baseline not in [m.label for m in models]:
        raise CompareError(f'--baseline {baseline!r} is not one of the run labels: {[m.label for m in models]}.')
    return baseline


def _unfinished_notes(models):
    """A note (also printed to stderr now) for every run scored at a checkpoint before its end."""
    notes = []
    for model in models:
        if model.unfinished:
            note = (f'{model.label}: unfinished run ({model.exp_dir} has no models/net_g_latest.pth); scored at its '
                    f'newest checkpoint, {model.unfinished}. Resume it with --auto_resume to compare finished runs.')
            notes.append(note)
            print(f'note: {note}', file=sys.stderr, flush=True)
    return notes


def score_runs(models, nets, data, crop_targets, dev, s):
    """(rows, model statistics, crop outputs) of every run: per-image and MEAN_ROW rows on every dataset, and its SR
    images of the crop targets ({(dataset, image, label): SR}); a run `s.reuse` scored keeps those rows (only its
    crop images run)."""
    rows, stats_rows, crop_outputs = [], [], {}
    for model in models:
        net = nets[model.label]
        reused = _reused_rows(model, data, s.reuse)
        if reused is not None:
            rows += reused
            for ds_name, stem in crop_targets:
                crop_outputs[(ds_name, stem, model.label)] = super_resolve(net, _image(data, ds_name, stem).lr, dev)
        else:
            for ds in data:
                rows += _score_dataset(net, model, ds, crop_targets, crop_outputs, dev, s)
        stats_rows.append({'label': model.label, 'method': model.method, **model_stats(model.state_dict)})
    return rows, stats_rows, crop_outputs


def _reused_rows(model, data, reuse):
    """Copies of the rows of this run in `reuse` when it scored the same checkpoint under the same label on every
    dataset of `data`; None otherwise (the run is evaluated)."""
    scored = {m['label']: m['checkpoint'] for m in reuse.models} if reuse is not None else {}
    if scored.get(model.label) != model.checkpoint or not all(
            any(r['label'] == model.label and r['dataset'] == ds.name and r['image'] == MEAN_ROW for r in reuse.rows)
            for ds in data):
        return None
    return [dict(r) for r in reuse.rows if r['label'] == model.label and r['dataset'] in {ds.name for ds in data}]


def _score_dataset(net, model, ds, crop_targets, crop_outputs, dev, s):
    """The per-image rows and the MEAN_ROW row of one run on one dataset; its SR images of the crop targets go into
    `crop_outputs`."""
    keep = {stem for name, stem in crop_targets if name == ds.name}

    def on_output(image, sr):
        if image.stem in keep:
            crop_outputs[(ds.name, image.stem, model.label)] = sr

    per_image = evaluate_dataset(net, ds, s.scale, dev, f'{model.label} / {ds.name}', s.progress, on_output)
    base = {'label': model.label, 'method': model.method, 'dataset': ds.name}
    return [{**base, **r} for r in per_image] + [{**base, 'image': MEAN_ROW, **mean_metrics(per_image)}]


def time_runs(nets, first, dev, s):
    """({label: timing}, the note saying how it was measured) of every network on the first dataset's images (the
    first `s.time_images` of them, default all); ({}, a note that it was skipped) with `s.repeats` = 0."""
    timed_images = first.images[:s.time_images] if s.time_images else first.images
    timings = time_models(nets, timed_images, dev, s.repeats, s.warmup) if s.repeats else {}
    threads = f', {torch.get_num_threads()} threads' if dev.type == 'cpu' else ''
    timing_note = (f'Time: network forward only, PyTorch eager with its dense convolution kernels (a zero weight costs '
                   f'as much as any other; sparse kernels: bench/bench_sparse_inference.py) on {dev}{threads}; '
                   f'per image {s.warmup} warm-up run(s), then the median '
                   f'of {s.repeats} runs with the networks interleaved; mean over {len(timed_images)} image(s) of '
                   f'{first.name}.' if s.repeats else 'Timing skipped (repeats = 0).')
    return timings, timing_note


def add_curves(results, models, first, dev, s):
    """The curves' data on the first dataset: each pruned run's per-round tickets (Fig. 4; with `s.tickets`), the
    final PSNR of pruned runs against their pruning rate (Fig. 5) and the training loss from the logs."""
    notes = results.notes
    if s.tickets:
        for model in models:
            if model.tickets:
                points, ticket_notes = evaluate_tickets(model, first, s.scale, dev, s.progress)
                notes += ticket_notes
                if points:
                    results.round_curves[model.label] = points
    pruned = [m for m in models if m.rate is not None]
    if len({m.rate for m in pruned}) >= 2:
        for m in pruned:
            results.rate_curves.setdefault(m.method, []).append(
                {'label': m.label, 'rate': m.rate, 'psnr_rgb': results.mean(m.label, first.name, 'psnr_rgb'),
                 'psnr_y': results.mean(m.label, first.name, 'psnr_y')})
    else:
        notes.append('Fig. 5 analogue (PSNR vs pruning rate) skipped: it needs pruned runs with at least two '
                     'different pruning.rate values.')
    for m in models:
        if m.logs:
            curve = parse_train_logs(m.logs)
            if curve['iter']:
                results.training_curves[m.label] = curve


def write_report(results, models, data, crop_targets, crop_outputs, s):
    """The figures, the crop grid and the report files (write_outputs) into `s.out_dir`."""
    os.makedirs(s.out_dir, exist_ok=True)
    draw_curves(results, models, data[0].name, s.out_dir)
    crop_rows = _crop_rows(results, models, data, crop_targets, crop_outputs, s)
    results.settings['crop_windows'] = {f'{r["dataset"]}/{r["image"]}': r['box'] for r in crop_rows}
    results.figures['crops'] = plot_crop_grid(crop_rows, osp.join(s.out_dir, 'crops.png'))
    highlight = set(HIGHLIGHT_IMAGES) | {stem.lower() for _, stem in crop_targets if s.crops}
    write_outputs(results, s.out_dir, highlight)


def draw_curves(results, models, first_name, out_dir):
    """Fig. 4 and Fig. 5 analogues and the training curves of `results`, each where it has data (else a note)."""
    if results.round_curves:
        levels = {m.label: results.mean(m.label, first_name, 'psnr_rgb') for m in models if m.method == 'stock'}
        results.figures['rounds'] = plot_round_curves(results.round_curves, first_name,
                                                      osp.join(out_dir, 'fig4_psnr_vs_kept.png'), levels)
    else:
        results.notes.append('Fig. 4 analogue skipped: no per-round tickets (models/net_g_round{r}_best.pth) found.')
    if results.rate_curves:
        results.figures['rates'] = plot_rate_curves(results.rate_curves, first_name,
                                                    osp.join(out_dir, 'fig5_psnr_vs_rate.png'))
    if results.training_curves:
        results.figures['training'] = plot_training_curves(results.training_curves,
                                                           osp.join(out_dir, 'training_curves.png'))
    else:
        results.notes.append('Training curves skipped: no l_pix lines in any train_*.log of the given experiment '
                             'folders.')


def _crop_rows(results, models, data, crop_targets, crop_outputs, s):
    """One crop grid row per crop target: bicubic, each run and GT on the same HR window, titled with their PSNR."""
    crop_rows = []
    for ds_name, stem in crop_targets:
        image = _image(data, ds_name, stem)
        x, y, w, h = crop_window(*image.gt.shape[:2], s.crop_box)

        def cut(img, x=x, y=y, w=w, h=h):
            return img[y:y + h, x:x + w]

        bicubic = bicubic_resize(image.lr, s.scale)
        panels = [(f'Bicubic\n{calculate_psnr(bicubic, image.gt, s.scale):.2f} dB', cut(bicubic))]
        for model in models:
            value = results.value(model.label, ds_name, stem, 'psnr_rgb')
            panels.append((f'{model.label}\n{value:.2f} dB', cut(crop_outputs[(ds_name, stem, model.label)])))
        panels.append(('GT', cut(image.gt)))
        crop_rows.append({'dataset': ds_name, 'image': stem, 'box': [x, y, w, h], 'panels': panels})
    return crop_rows
