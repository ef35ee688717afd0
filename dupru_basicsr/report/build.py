"""`compare()`: the whole report from inputs to files: check every input, evaluate every run, draw, write."""
import datetime
import os
import os.path as osp
import sys
from typing import Sequence

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


def compare(inputs: Sequence[str], datasets: Sequence[str] = (), data_root='datasets', scale=4,
            out_dir='results/compare', labels=None, crops=None, crop_box=None, device='cpu', repeats=5, warmup=2,
            time_images=None, dataset_dirs=None, arch_opt=None, baseline=None, tickets=True, progress=True,
            write=True, reuse=None) -> CompareResults:
    """Evaluate runs (experiment folders or .pth files) on datasets and write the report; see the module docstring.

    Every input is checked (checkpoints, architecture, scale, datasets, image sizes) before any network runs, so a
    mistake fails in seconds rather than after an hour of evaluation. `write=False` skips figures and files.
    `time_images` limits timing to the first N images of the first dataset (default all); `repeats=0` skips it.
    `reuse`: the CompareResults of an earlier call on the same datasets; a run it scored (same label, same
    checkpoint file) keeps those rows instead of being evaluated again (only its crop images run).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise CompareError('Nothing to compare: pass experiment folders or .pth checkpoints.')
    if scale not in (2, 3, 4):
        raise CompareError(f'--scale {scale}: MSRResNet supports x2, x3 and x4.')
    if repeats < 0 or warmup < 0:
        raise CompareError('--repeats and --warmup must be >= 0.')
    if labels is not None and len(labels) != len(inputs):
        raise CompareError(f'--labels gives {len(labels)} label(s) for {len(inputs)} input(s).')
    if crop_box is not None and (len(crop_box) != 4 or min(crop_box[2:]) < 1):
        raise CompareError(f'--crop-box {crop_box}: expected X Y W H with W, H >= 1 (HR pixels).')
    if write and osp.exists(out_dir) and not osp.isdir(out_dir):
        raise CompareError(f'--out {out_dir} is a file; give a folder for the report (it is created if missing).')
    dev = torch.device(check_device(device, CompareError, NO_CUDA))

    models = [load_model_entry(p, scale, arch_opt) for p in inputs]
    for model, label in zip(models, _unique_labels(labels or [m.label for m in models])):
        model.label = label
    data = resolve_datasets(datasets, data_root, scale, dataset_dirs)
    crop_targets = _find_crop_targets(data, crops)
    if crop_box is not None:
        for ds_name, stem in crop_targets:
            image = next(img for d in data if d.name == ds_name for img in d.images if img.stem == stem)
            height, width = image.gt.shape[:2]
            x, y, w, h = crop_box
            if not (0 <= x < width and 0 <= y < height):
                raise CompareError(f'--crop-box {x} {y} {w} {h}: the corner ({x}, {y}) is outside {ds_name}/{stem}, '
                                   f'which is {width}x{height} HR pixels; give X < {width} and Y < {height}.')
    if baseline is None:
        baseline = next((m.label for m in models if m.method == 'stock'), None)
    elif baseline not in [m.label for m in models]:
        raise CompareError(f'--baseline {baseline!r} is not one of the run labels: {[m.label for m in models]}.')

    nets = {m.label: build_network(m.arch, m.state_dict, m.checkpoint, dev) for m in models}  # strict loads first
    notes, rows, stats_rows, crop_outputs = [], [], [], {}
    for model in models:
        if model.unfinished:
            note = (f'{model.label}: unfinished run ({model.exp_dir} has no models/net_g_latest.pth); scored at its '
                    f'newest checkpoint, {model.unfinished}. Resume it with --auto_resume to compare finished runs.')
            notes.append(note)
            print(f'note: {note}', file=sys.stderr, flush=True)
    first = data[0]
    timed_images = first.images[:time_images] if time_images else first.images
    scored = {m['label']: m['checkpoint'] for m in reuse.models} if reuse is not None else {}
    for model in models:
        net = nets[model.label]
        if scored.get(model.label) == model.checkpoint and all(
                any(r['label'] == model.label and r['dataset'] == ds.name and r['image'] == MEAN_ROW
                    for r in reuse.rows) for ds in data):
            rows += [dict(r) for r in reuse.rows if r['label'] == model.label and r['dataset'] in
                     {ds.name for ds in data}]
            for ds_name, stem in crop_targets:
                image = next(img for d in data if d.name == ds_name for img in d.images if img.stem == stem)
                crop_outputs[(ds_name, stem, model.label)] = super_resolve(net, image.lr, dev)
            stats_rows.append({'label': model.label, 'method': model.method, **model_stats(model.state_dict)})
            continue
        for ds in data:
            keep = {stem for name, stem in crop_targets if name == ds.name}

            def on_output(image, sr, ds=ds, keep=keep, label=model.label):
                if image.stem in keep:
                    crop_outputs[(ds.name, image.stem, label)] = sr

            per_image = evaluate_dataset(net, ds, scale, dev, f'{model.label} / {ds.name}', progress, on_output)
            base = {'label': model.label, 'method': model.method, 'dataset': ds.name}
            rows += [{**base, **r} for r in per_image]
            rows.append({**base, 'image': MEAN_ROW, **mean_metrics(per_image)})
        stats_rows.append({'label': model.label, 'method': model.method, **model_stats(model.state_dict)})
    timings = time_models(nets, timed_images, dev, repeats, warmup) if repeats else {}
    for stats in stats_rows:
        stats['timing'] = timings.get(stats['label'])
    del nets
    threads = f', {torch.get_num_threads()} threads' if dev.type == 'cpu' else ''
    timing_note = (f'Time: network forward only, PyTorch eager with its dense convolution kernels (a zero weight costs '
                   f'as much as any other; sparse kernels: bench/bench_sparse_inference.py) on {dev}{threads}; '
                   f'per image {warmup} warm-up run(s), then the median '
                   f'of {repeats} runs with the networks interleaved; mean over {len(timed_images)} image(s) of '
                   f'{first.name}.' if repeats else 'Timing skipped (repeats = 0).')
    results = CompareResults(
        models=[m.info() for m in models], datasets=[d.info() for d in data], rows=rows, model_stats=stats_rows,
        baseline=baseline, notes=notes,
        settings={'scale': scale, 'crop_border': scale, 'device': str(dev), 'torch': torch.__version__,
                  'data_root': data_root, 'repeats': repeats, 'warmup': warmup, 'timing_note': timing_note,
                  'generated': datetime.datetime.now().isoformat(timespec='seconds'),
                  'crops': [list(t) for t in crop_targets], 'crop_box': list(crop_box) if crop_box else None})
    if baseline is None:
        notes.append('No stock (SRModel) run given: the difference table is omitted (pass a stock experiment or '
                     '--baseline LABEL).')

    # Fig. 4 data: each pruned run's per-round tickets on the first dataset.
    if tickets:
        for model in models:
            if model.tickets:
                points, ticket_notes = evaluate_tickets(model, first, scale, dev, progress)
                notes += ticket_notes
                if points:
                    results.round_curves[model.label] = points
    # Fig. 5 data: final PSNR of pruned runs against their pruning rate.
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
    if not write:
        return results

    os.makedirs(out_dir, exist_ok=True)
    if results.round_curves:
        levels = {m.label: results.mean(m.label, first.name, 'psnr_rgb') for m in models if m.method == 'stock'}
        results.figures['rounds'] = plot_round_curves(results.round_curves, first.name,
                                                      osp.join(out_dir, 'fig4_psnr_vs_kept.png'), levels)
    else:
        notes.append('Fig. 4 analogue skipped: no per-round tickets (models/net_g_round{r}_best.pth) found.')
    if results.rate_curves:
        results.figures['rates'] = plot_rate_curves(results.rate_curves, first.name,
                                                    osp.join(out_dir, 'fig5_psnr_vs_rate.png'))
    if results.training_curves:
        results.figures['training'] = plot_training_curves(results.training_curves,
                                                           osp.join(out_dir, 'training_curves.png'))
    else:
        notes.append('Training curves skipped: no l_pix lines in any train_*.log of the given experiment folders.')
    crop_rows = []
    for ds_name, stem in crop_targets:
        ds = next(d for d in data if d.name == ds_name)
        image = next(img for img in ds.images if img.stem == stem)
        x, y, w, h = crop_window(*image.gt.shape[:2], crop_box)

        def cut(img, x=x, y=y, w=w, h=h):
            return img[y:y + h, x:x + w]

        bicubic = bicubic_resize(image.lr, scale)
        panels = [(f'Bicubic\n{calculate_psnr(bicubic, image.gt, scale):.2f} dB', cut(bicubic))]
        for model in models:
            value = results.value(model.label, ds_name, stem, 'psnr_rgb')
            panels.append((f'{model.label}\n{value:.2f} dB', cut(crop_outputs[(ds_name, stem, model.label)])))
        panels.append(('GT', cut(image.gt)))
        crop_rows.append({'dataset': ds_name, 'image': stem, 'box': [x, y, w, h], 'panels': panels})
    results.settings['crop_windows'] = {f'{r["dataset"]}/{r["image"]}': r['box'] for r in crop_rows}
    results.figures['crops'] = plot_crop_grid(crop_rows, osp.join(out_dir, 'crops.png'))
    highlight = set(HIGHLIGHT_IMAGES) | {stem.lower() for _, stem in crop_targets if crops}
    write_outputs(results, out_dir, highlight)
    return results
