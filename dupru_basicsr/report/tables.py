"""The report's tables (Tables 2-5 analogues, differences to stock, tickets) as data, for every writer."""
import math


def _fmt(value, digits=4, signed=False):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    if round(value, digits) == 0:
        value = 0.0  # no "-0.0000"
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def _is_best(value, values, digits=4):
    """Best (highest) at the printed precision, so that equal printed numbers never differ in boldness."""
    shown = [round(v, digits) for v in values if v is not None and not math.isnan(v)]
    if len(shown) < 2 or value is None or math.isnan(value) or len(set(shown)) == 1:
        return False
    return round(value, digits) == max(shown)


def _pair_cell(psnr, ssim, psnrs, ssims):
    return [(_fmt(psnr), _is_best(psnr, psnrs)), (_fmt(ssim), _is_best(ssim, ssims))]


def build_tables(results, highlight):
    """The report's tables as data: {title, caption, header, rows: [(cells, highlighted)]}; a cell is a list of
    (text, bold) parts joined by ' / '."""
    labels, datasets = results.labels, [d['name'] for d in results.datasets]
    tables = []
    for channel, name in (('rgb', 'Table 2 analogue: mean PSNR / SSIM (RGB)'),
                          ('y', 'Table 3 analogue: mean PSNR / SSIM (Y channel)')):
        means = {(lb, ds): (results.mean(lb, ds, f'psnr_{channel}'), results.mean(lb, ds, f'ssim_{channel}'))
                 for lb in labels for ds in datasets}
        rows = []
        for lb in labels:
            cells = [[(lb, False)]]
            for ds in datasets:
                psnrs = [means[(other, ds)][0] for other in labels]
                ssims = [means[(other, ds)][1] for other in labels]
                cells.append(_pair_cell(*means[(lb, ds)], psnrs, ssims))
            rows.append((cells, False))
        tables.append({'title': name, 'header': ['Method'] + datasets, 'rows': rows,
                       'caption': f'x{results.settings["scale"]}, crop border {results.settings["scale"]}, '
                                  'BasicSR calculate_psnr / calculate_ssim; best of each column in bold (compared '
                                  'at the printed precision; nothing is bold when all are equal).'})
    if results.baseline:
        header = ['Method'] + [f'{ds} {ch}' for ds in datasets for ch in ('RGB', 'Y')]
        rows = []
        for lb in labels:
            if lb == results.baseline:
                continue
            cells = [[(lb, False)]]
            for ds in datasets:
                for ch in ('rgb', 'y'):
                    d_psnr = results.mean(lb, ds, f'psnr_{ch}') - results.mean(results.baseline, ds, f'psnr_{ch}')
                    d_ssim = results.mean(lb, ds, f'ssim_{ch}') - results.mean(results.baseline, ds, f'ssim_{ch}')
                    cells.append([(_fmt(d_psnr, signed=True), False), (_fmt(d_ssim, signed=True), False)])
            rows.append((cells, False))
        tables.append({'title': f'Difference to the stock run {results.baseline} (ΔPSNR dB / ΔSSIM)',
                       'header': header, 'rows': rows, 'caption': 'Positive = better than the stock run.'})
    for channel, name in (('rgb', 'Table 4 analogue: per-image PSNR / SSIM (RGB)'),
                          ('y', 'Per-image PSNR / SSIM (Y channel)')):
        rows = []
        for ds in results.datasets:
            for stem in ds['images']:
                psnrs = [results.value(lb, ds['name'], stem, f'psnr_{channel}') for lb in labels]
                ssims = [results.value(lb, ds['name'], stem, f'ssim_{channel}') for lb in labels]
                cells = [[(ds['name'], False)], [(stem, False)]]
                cells += [_pair_cell(p, s, psnrs, ssims) for p, s in zip(psnrs, ssims)]
                rows.append((cells, stem.lower() in highlight))
        tables.append({'title': name, 'header': ['Dataset', 'Image'] + labels, 'rows': rows,
                       'caption': f'Highlighted: {", ".join(sorted(highlight))} (when present); best of each row in '
                                  'bold.'})
    rows = []
    for stats in results.model_stats:
        timing = stats.get('timing') or {}
        cells = [[(stats['label'], False)], [(_fmt(timing.get('ms_per_image'), 2), False)],
                 [(_fmt(stats['dense_bytes'] / 1e6, 3), False)], [(f'{stats["params"]:,d}', False)],
                 [(f'{stats["nonzero_params"]:,d}', False)], [(_fmt(100 * stats['body_sparsity'], 2), False)],
                 [(_fmt(100 * stats.get('upsampler_sparsity', 0.0), 2), False)],
                 [(_fmt(100 * (1 - stats['nonzero_params'] / stats['params']), 2), False)],
                 [(_fmt(stats['compressed_bytes'] / 1e6, 3), False)], [(_fmt(stats['compression_ratio'], 2), False)]]
        rows.append((cells, False))
    timing_note = results.settings.get('timing_note', '')
    tables.append({'title': 'Table 5 analogue: inference time and model size',
                   'header': ['Method', 'Time / image (ms, PyTorch dense kernels)',
                              'Dense size (MB)', 'Params', 'Non-zero params',
                              'Body sparsity (%)', 'Upsampler sparsity (%)', 'Model sparsity (%)',
                              'Compressed size (MB)', 'Dense / compressed'],
                   'rows': rows,
                   'caption': f'{timing_note} Dense size: bytes of the fp32 state dict saved with torch.save; '
                              'compressed: dupru-export format (bit-packed non-zero masks + fp32 non-zero values); '
                              'MB = 10^6 bytes. Body sparsity: zeros in body.* weights; upsampler: in upconv*/conv_hr '
                              '(MSRResNet); model: zeros among all parameters. Per-layer sparsity: results.json '
                              '(model_stats[].layer_sparsity).'})
    ticket_rows = []
    for label, points in results.round_curves.items():
        for p in sorted(points, key=lambda q: q['round']):
            ticket_rows.append(([[(label, False)], [(str(p['round']), False)], [(str(p['iter']), False)],
                                 [(_fmt(p['kept_percent'], 2), False)], [(_fmt(p['psnr_rgb']), False)],
                                 [(_fmt(p['psnr_y']), False)]], False))
    if ticket_rows:
        tables.append({'title': 'Per-round tickets (Fig. 4 data)',
                       'header': ['Run', 'Round', 'Iter', 'Kept body weights (%)', 'PSNR RGB', 'PSNR Y'],
                       'rows': ticket_rows,
                       'caption': f'Each round\'s best checkpoint evaluated on {results.datasets[0]["name"]}.'})
    return tables
