"""The report's files: results.csv, results.json, report.md and the self-contained report.html."""
import base64
import csv
import html
import json
import os.path as osp

from dupru_basicsr.report.results import METRICS
from dupru_basicsr.report.tables import build_tables
from dupru_basicsr.weights.arch import describe_arch


CSV_FIELDS = ('label', 'method', 'dataset', 'image') + METRICS


def _md_cell(parts):
    text = ' / '.join(f'**{t}**' if bold else t for t, bold in parts)
    return text.replace('|', '\\|')


def _html_cell(parts):
    return ' / '.join(f'<b>{html.escape(t)}</b>' if bold else html.escape(t) for t, bold in parts)


def render_markdown(results, tables):
    settings = results.settings
    lines = ['# dupru-compare report', '', f'Generated {settings["generated"]} on {settings["device"]} '
             f'(torch {settings["torch"]}); x{settings["scale"]}; datasets: '
             f'{", ".join(d["name"] for d in results.datasets)}.', '']
    if LEAD_FIGURE in results.figures:  # the report's one-picture answer comes first
        lines += [f'![{FIGURE_TITLES[LEAD_FIGURE]}]({osp.basename(results.figures[LEAD_FIGURE])})', '',
                  f'*{FIGURE_TITLES[LEAD_FIGURE]}*', '']
    lines += ['## Runs', '']
    for m in results.models:
        lines.append(f'- **{m["label"]}**: `{m["checkpoint"]}` ({m["param_key"]}), '
                     f'MSRResNet({describe_arch(m["arch"])})')
    for table in tables:
        lines += ['', f'## {table["title"]}', '', '| ' + ' | '.join(table['header']) + ' |',
                  '|' + '---|' * len(table['header'])]
        for cells, highlighted in table['rows']:
            texts = [_md_cell(c) for c in cells]
            if highlighted:
                texts[1 if len(texts) > 1 else 0] = '★ ' + texts[1 if len(texts) > 1 else 0]
            lines.append('| ' + ' | '.join(texts) + ' |')
        lines += ['', f'*{table["caption"]}*']
    lines += ['', '## Figures', '']
    for key, path in results.figures.items():
        if key == LEAD_FIGURE:
            continue
        lines += [f'![{FIGURE_TITLES[key]}]({osp.basename(path)})', '', f'*{FIGURE_TITLES[key]}*', '']
    if results.notes:
        lines += ['## Notes', ''] + [f'- {n}' for n in results.notes]
    return '\n'.join(lines) + '\n'


LEAD_FIGURE = 'rounds'  # PSNR vs remaining weights opens the report (the paper's Fig. 4)
FIGURE_TITLES = {
    'rounds': 'Fig. 4 analogue: PSNR vs remaining weights, per round',
    'rates': 'Fig. 5 analogue: PSNR vs pruning rate',
    'training': 'Training curves (l_pix vs iteration)',
    'crops': 'Crops: bicubic, each run, GT (PSNR RGB of the whole image)',
}


_HTML_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.2em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.highlight td { background: #fff3c4; }
.caption { font-size: 0.85em; color: #555; margin-bottom: 1.5em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def _html_figure(path, title):
    with open(path, 'rb') as f:
        data = base64.b64encode(f.read()).decode('ascii')
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(title)}</figcaption></figure>')


def render_html(results, tables):
    """Self-contained HTML: the figures are embedded as base64 PNG data URIs; no file or URL is referenced."""
    settings = results.settings
    esc = html.escape
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">', '<title>dupru-compare report</title>',
             f'<style>{_HTML_STYLE}</style></head><body>', '<h1>dupru-compare report</h1>',
             f'<p>Generated {esc(settings["generated"])} on {esc(settings["device"])} '
             f'(torch {esc(settings["torch"])}); '
             f'x{settings["scale"]}; datasets: {esc(", ".join(d["name"] for d in results.datasets))}.</p>']
    if LEAD_FIGURE in results.figures:
        parts.append(_html_figure(results.figures[LEAD_FIGURE], FIGURE_TITLES[LEAD_FIGURE]))
    parts.append('<h2>Runs</h2><ul>')
    for m in results.models:
        parts.append(f'<li><b>{esc(m["label"])}</b>: <code>{esc(m["checkpoint"])}</code> ({esc(m["param_key"])}), '
                     f'MSRResNet({esc(describe_arch(m["arch"]))})</li>')
    parts.append('</ul>')
    for table in tables:
        parts.append(f'<h2>{esc(table["title"])}</h2><table><thead><tr>')
        parts.append(''.join(f'<th>{esc(h)}</th>' for h in table['header']) + '</tr></thead><tbody>')
        for cells, highlighted in table['rows']:
            cls = ' class="highlight"' if highlighted else ''
            parts.append(f'<tr{cls}>' + ''.join(f'<td>{_html_cell(c)}</td>' for c in cells) + '</tr>')
        parts.append(f'</tbody></table><div class="caption">{esc(table["caption"])}</div>')
    parts.append('<h2>Figures</h2>')
    for key, path in results.figures.items():
        if key != LEAD_FIGURE:
            parts.append(_html_figure(path, FIGURE_TITLES[key]))
    if results.notes:
        parts.append('<h2>Notes</h2><ul>' + ''.join(f'<li>{esc(n)}</li>' for n in results.notes) + '</ul>')
    parts.append('</body></html>')
    return '\n'.join(parts) + '\n'


def write_outputs(results, out_dir, highlight):
    """results.csv, results.json, report.md, report.html into `out_dir` (figures are already there)."""
    files = {'csv': osp.join(out_dir, 'results.csv'), 'json': osp.join(out_dir, 'results.json'),
             'markdown': osp.join(out_dir, 'report.md'), 'html': osp.join(out_dir, 'report.html')}
    results.files = files
    with open(files['csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for row in results.rows:
            writer.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v) for k, v in row.items()})
    with open(files['json'], 'w') as f:
        json.dump(results.to_dict(), f, indent=1, allow_nan=False)
    tables = build_tables(results, highlight)
    with open(files['markdown'], 'w', encoding='utf-8') as f:
        f.write(render_markdown(results, tables))
    with open(files['html'], 'w', encoding='utf-8') as f:
        f.write(render_html(results, tables))
    return files
