"""The report's figures: PSNR per round (Fig. 4), PSNR vs pruning rate (Fig. 5), training curves and crops."""
import re
import textwrap

import cv2


DEFAULT_CROP = 96


def _new_figure(width=6.4, height=4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas, without pyplot's global state or backend switching
    return fig


def _save_figure(fig, path):
    fig.tight_layout()
    fig.savefig(path, format='png', bbox_inches='tight')
    return path


def _many_lines(ax, count):
    """Distinct colours for up to 20 lines (matplotlib's default cycle repeats after 10)."""
    if count > 10:
        from cycler import cycler
        from matplotlib import colormaps
        ax.set_prop_cycle(cycler(color=[colormaps['tab20'](i % 20) for i in range(count)]))


def _legend(ax, count):
    """Inside the axes for a few lines, beside them (not over the data) for many."""
    if count > 6:
        ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend()


def _log_percent_axis(ax, values):
    """Log-scaled, decreasing x axis of remaining-weight percentages with plain tick labels (100, 50, 10.7 ...)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    ax.set_xscale('log')
    ticks = []
    for v in sorted({round(v, 3) for v in values if v > 0}, reverse=True):
        if not ticks or v < ticks[-1] / 1.15:  # 10.0 and 9.98 would print on top of each other: one tick
            ticks.append(v)
    ticks.sort()
    if len(ticks) > 10:
        lo, hi = min(ticks), max(ticks)
        ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01) if lo <= t <= hi] or ticks
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:.3g}'))
    ax.invert_xaxis()


SEED_SUFFIX = re.compile(r'^(.*)_s(\d+)$')
SEED_MEANS_FROM = 12  # curves: above this many, runs that differ only in their seed are drawn as one mean curve


def seed_means(round_curves):
    """{recipe: points} with, per round, the mean over the seeds of kept % and PSNR and the spread (min, max) of PSNR,
    for run labels `<recipe>_s<seed>`; None when the labels are not of that form."""
    groups = {}
    for label, points in round_curves.items():
        match = SEED_SUFFIX.match(label)
        if not match:
            return None
        groups.setdefault(match.group(1), []).append(points)
    means = {}
    for recipe, runs in groups.items():
        by_round = {}
        for points in runs:
            for p in points:
                by_round.setdefault(p['round'], []).append(p)
        means[recipe] = [{'round': r, 'kept_percent': sum(p['kept_percent'] for p in ps) / len(ps),
                          'psnr_rgb': sum(p['psnr_rgb'] for p in ps) / len(ps),
                          'low': min(p['psnr_rgb'] for p in ps), 'high': max(p['psnr_rgb'] for p in ps),
                          'seeds': len(ps)} for r, ps in sorted(by_round.items())]
    return means


def plot_round_curves(round_curves, dataset_name, path, levels=None):
    """PSNR of each round's ticket against the remaining body weights, one line per run (seed means with min-max
    bars when many runs differ only in their seed); `levels` ({label: PSNR}) are drawn as horizontal lines (the
    dense stock runs); a run with one ticket (gradual pruning keeps only its final one) is a single star."""
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    grouped = seed_means(round_curves) if len(round_curves) > SEED_MEANS_FROM else None
    curves = grouped or round_curves
    if grouped and levels and all(SEED_SUFFIX.match(label) for label in levels):
        by_recipe = {}
        for label, value in levels.items():
            by_recipe.setdefault(SEED_SUFFIX.match(label).group(1), []).append(value)
        levels = {recipe: sum(values) / len(values) for recipe, values in by_recipe.items()}
    _many_lines(ax, len(curves) + len(levels or {}))
    for label, value in (levels or {}).items():
        ax.axhline(value, linestyle='--', linewidth=1.2, color='black', alpha=0.7)
        ax.annotate(f'{label} (dense) {value:.2f}', xy=(0.99, value), xycoords=('axes fraction', 'data'),
                    ha='right', va='bottom', fontsize='small')
    for label, points in curves.items():
        points = sorted(points, key=lambda p: -p['kept_percent'])
        x, y = [p['kept_percent'] for p in points], [p['psnr_rgb'] for p in points]
        if grouped:
            err = [[p['psnr_rgb'] - p['low'] for p in points], [p['high'] - p['psnr_rgb'] for p in points]]
            ax.errorbar(x, y, yerr=err, marker='o', capsize=3, label=f'{label} (mean of {points[0]["seeds"]} seeds)')
        elif len(points) == 1:
            ax.plot(x, y, marker='*', markersize=13, linestyle='none', label=f'{label} (final ticket only)')
        else:
            ax.plot(x, y, marker='o', label=label)
    _log_percent_axis(ax, [p['kept_percent'] for points in round_curves.values() for p in points])
    ax.ticklabel_format(axis='y', useOffset=False)
    ax.set_xlabel('Remaining body weights (%)')
    ax.set_ylabel(f'PSNR (RGB) on {dataset_name} (dB)')
    ax.set_title('PSNR of each round\'s best ticket vs remaining weights')
    ax.grid(True, alpha=0.3)
    _legend(ax, len(curves))
    return _save_figure(fig, path)


def plot_rate_curves(rate_curves, dataset_name, path):
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for method, points in rate_curves.items():
        points = sorted(points, key=lambda p: p['rate'])
        ax.plot([p['rate'] for p in points], [p['psnr_rgb'] for p in points], marker='o', label=method)
    ax.set_xlabel('Pruning rate per round (%)')
    ax.ticklabel_format(axis='y', useOffset=False)
    ax.set_ylabel(f'PSNR (RGB) on {dataset_name} (dB)')
    ax.set_title('Final model PSNR vs pruning rate')
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_figure(fig, path)


def plot_training_curves(training_curves, path):
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    _many_lines(ax, len(training_curves))
    all_positive = True
    for label, curve in training_curves.items():
        ax.plot(curve['iter'], curve['l_pix'], label=label, linewidth=1)
        all_positive &= all(v > 0 for v in curve['l_pix'])
    if all_positive:
        ax.set_yscale('log')
    ax.set_xlabel('Iteration')
    ax.set_ylabel('l_pix')
    ax.set_title('Training loss (from the train logs)')
    ax.grid(True, alpha=0.3)
    _legend(ax, len(training_curves))
    return _save_figure(fig, path)


def crop_window(height, width, crop_box=None, size=DEFAULT_CROP):
    """(x, y, w, h) inside the image: `crop_box` clamped, or a `size` square around the centre."""
    if crop_box is not None:
        x, y, w, h = (int(v) for v in crop_box)
    else:
        w = h = size
        x, y = (width - min(w, width)) // 2, (height - min(h, height)) // 2
    x, y = min(max(x, 0), max(width - 1, 0)), min(max(y, 0), max(height - 1, 0))
    return x, y, max(1, min(w, width - x)), max(1, min(h, height - y))


def plot_crop_grid(crop_rows, path):
    """One row per chosen image: bicubic, each run, GT, all on the same HR window."""
    ncols = max(len(row['panels']) for row in crop_rows)
    fig = _new_figure(2.2 * ncols, 2.7 * len(crop_rows))
    for r, row in enumerate(crop_rows):
        for c, (title, img_bgr) in enumerate(row['panels']):
            ax = fig.add_subplot(len(crop_rows), ncols, r * ncols + c + 1)
            ax.imshow(cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB), interpolation='nearest')
            # a line for the run, one for its PSNR; long labels wrap instead of running into the next panel
            ax.set_title('\n'.join(textwrap.fill(line, 22) for line in title.split('\n')), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f'{row["dataset"]}/{row["image"]}', fontsize=7)
    return _save_figure(fig, path)


def plot_sparsity_study(table, datasets, baselines, path):
    """PSNR-Y against the share of ALL weights that are zero, one subplot per dataset: one line per recipe (its
    sparsity levels joined: `dupru_gradual_whole_90` and `_95` are one line), at the seed mean with a bar from the
    lowest to the highest seed, and each baseline row of the study drawn as a level. `table`: dupru-study's summary
    rows ({label: {'model_sparsity', '<ds>_psnr_y', '<ds>_psnr_y_seeds', ...}})."""
    fig = _new_figure(5.2 * len(datasets), 4.2)
    lines = {}
    for label in table:
        if label not in baselines:
            lines.setdefault(label.rsplit('_', 1)[0], []).append(label)
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        for recipe, labels in lines.items():
            rows = sorted((table[lb] for lb in labels), key=lambda r: r['model_sparsity'])
            x = [100 * r['model_sparsity'] for r in rows]
            y = [r[f'{ds}_psnr_y'] for r in rows]
            low = [r[f'{ds}_psnr_y'] - min(r[f'{ds}_psnr_y_seeds']) for r in rows]
            high = [max(r[f'{ds}_psnr_y_seeds']) - r[f'{ds}_psnr_y'] for r in rows]
            ax.errorbar(x, y, yerr=[low, high], marker='o', capsize=3, label=recipe)
        for j, base in enumerate(b for b in baselines if b in table):
            ax.axhline(table[base][f'{ds}_psnr_y'], color='0.3', linestyle=('--', ':')[j % 2], linewidth=1,
                       label=base)
        ax.set_xlabel('zero weights, % of all parameters')
        ax.set_ylabel('PSNR-Y (dB), seed mean, bar: min-max')
        ax.set_title(ds)
        ax.ticklabel_format(axis='y', useOffset=False)
        ax.grid(alpha=0.3)
        if i == len(datasets) - 1:
            _legend(ax, len(lines) + len(baselines))
    return _save_figure(fig, path)
