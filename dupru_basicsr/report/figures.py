"""The report's figures: PSNR per round (Fig. 4), PSNR vs pruning rate (Fig. 5), training curves and crops."""
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
    ticks = sorted({round(v, 3) for v in values if v > 0})
    if len(ticks) > 10:
        lo, hi = min(ticks), max(ticks)
        ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01) if lo <= t <= hi] or ticks
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:.3g}'))
    ax.invert_xaxis()


def plot_round_curves(round_curves, dataset_name, path):
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    _many_lines(ax, len(round_curves))
    for label, points in round_curves.items():
        points = sorted(points, key=lambda p: -p['kept_percent'])
        ax.plot([p['kept_percent'] for p in points], [p['psnr_rgb'] for p in points], marker='o', label=label)
    _log_percent_axis(ax, [p['kept_percent'] for points in round_curves.values() for p in points])
    ax.ticklabel_format(axis='y', useOffset=False)
    ax.set_xlabel('Remaining body weights (%)')
    ax.set_ylabel(f'PSNR (RGB) on {dataset_name} (dB)')
    ax.set_title('PSNR of each round\'s best ticket vs remaining weights')
    ax.grid(True, alpha=0.3)
    _legend(ax, len(round_curves))
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
    fig = _new_figure(2.2 * ncols, 2.5 * len(crop_rows))
    for r, row in enumerate(crop_rows):
        for c, (title, img_bgr) in enumerate(row['panels']):
            ax = fig.add_subplot(len(crop_rows), ncols, r * ncols + c + 1)
            ax.imshow(cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB), interpolation='nearest')
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f'{row["dataset"]}/{row["image"]}', fontsize=7)
    return _save_figure(fig, path)
