"""What the analysis writes: one run's analysis.json, report.md and PNGs, and the comparison of several runs (one
row per config, mean ± sd over its seeds)."""

import json
import os
import re

import numpy as np

from multimix_jax.analysis import runs as runs_lib

# (key in analysis.json, column title, digits) of the tables.
TABLE = (('top1', 'top-1 (%)', 2), ('top5', 'top-5 (%)', 2), ('nll', 'NLL', 4), ('ece', 'ECE (%)', 2),
         ('alignment', 'alignment', 4), ('uniformity', 'uniformity', 3), ('intra_inter_ratio', 'intra/inter', 4),
         ('fgsm_error', 'FGSM error (%)', 2), ('pgd_error', 'PGD error (%)', 2))


def _title(figures):
  return (f"{figures['label']}: {figures['method']}, {figures['model']} on {figures['dataset']}, "
          f"step {figures['checkpoint_step']}")


def pixels(value: float) -> str:
  """A budget in pixel units: '8/255 (0.03137)' when it is a whole number of 8-bit levels, else '0.1'."""
  levels = value * 255
  if abs(levels - round(levels)) < 1e-6 and round(levels) > 0:
    return f'{round(levels)}/255 ({value:.4g})'
  return f'{value:.4g}'


def attack_text(attack: dict) -> str:
  """The attacks' settings in one sentence (pixel units [0, 1])."""
  start = 'a uniform random start in the ball' if attack['pgd_random_start'] else 'the clean image'
  return (f"FGSM ε = {pixels(attack['fgsm_eps'])}; PGD ε = {pixels(attack['pgd_eps'])}, {attack['pgd_steps']} "
          f"steps of {pixels(attack['pgd_step_size'])} from {start}")


def write_run(figures: dict, arrays: dict, out: str) -> list[str]:
  """analysis.json, report.md and the PNGs of one run into `out`; returns the files written."""
  from multimix_jax.analysis import plots  # pylint: disable=g-import-not-at-top

  os.makedirs(out, exist_ok=True)
  written = []
  title = _title(figures)
  if 'calibration' in arrays:
    plots.reliability(arrays['calibration']['bins'], arrays['calibration']['ece'], title,
                      os.path.join(out, 'reliability.png'))
    written.append('reliability.png')
  if 'projection' in arrays:
    p = arrays['projection']
    plots.projection(p['test_xy'], p['test_labels'], p['mixed_xy'], p['mixed_labels'], arrays['num_classes'],
                     f"{title}\nt-SNE of pooled test embeddings; {p['interpolations']} MultiMix interpolations "
                     f"(m = {p['m']}, α = {p['alpha']:g})", os.path.join(out, 'projection.png'))
    written.append('projection.png')
  if 'curves' in arrays and len(arrays['curves']['eval_steps']):
    plots.curves([{'label': figures['label'], **{k: np.asarray(v)[None] if k not in ('eval_steps', 'train_steps')
                                                 else v for k, v in arrays['curves'].items()
                                                 if k != 'train_source'}}],
                 f'Training curves: {title}', os.path.join(out, 'curves.png'))
    written.append('curves.png')
  write_text(os.path.join(out, 'report.md'), run_report(figures, written))
  write_text(os.path.join(out, 'analysis.json'), json.dumps(figures, indent=2, default=_json_default))
  return ['analysis.json', 'report.md', *written]


def run_report(figures: dict, images: list[str]) -> str:
  lines = [f'# Analysis of {figures["label"]}', '', f'{_title(figures)}; {figures["examples"]} test examples on '
           f'{figures["devices"]} device(s) ({figures["parallelism"]}). Definitions: docs/analysis.md.', '',
           '| figure | value |', '| --- | ---: |']
  for key, name, digits in TABLE:
    if key in figures:
      lines.append(f'| {name} | {figures[key]:.{digits}f} |')
  if 'attack' in figures:
    lines += ['', f"Attacks in pixel units [0, 1], from {figures['attack']['source']}: {attack_text(figures['attack'])}; "
              f"on {figures['attack_examples']} examples, whose clean error is {figures['clean_error']:.2f} %."]
  lines += [''] + [f'![{name}]({name})' for name in images]
  return '\n'.join(lines) + '\n'


def _json_default(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  return str(x)


def write_text(path, text):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- comparison


def _group_label(members):
  names = {f['label'].split('/')[0] if re.search(r'/seed_?\d+$', f['label']) else f['label'] for f in members}
  return ' | '.join(sorted(names))


def mean_sd(values):
  """(mean, sample sd or None for one value)."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def compare(all_figures: list[dict], all_arrays: list[dict], runs: list[runs_lib.Run], out: str) -> list[str]:
  """The comparison of several runs into `out`: analysis.json, report.md, curves.png, projections.png."""
  from multimix_jax.analysis import plots  # pylint: disable=g-import-not-at-top

  os.makedirs(out, exist_ok=True)
  groups = runs_lib.group_runs(runs)
  rows = []
  for members in groups:
    figs = [all_figures[i] for i in members]
    row = {'label': _group_label(figs), 'runs': [f['workdir'] for f in figs], 'seeds': [f['seed'] for f in figs],
           'method': figs[0]['method']}
    for key, _, _ in TABLE:
      if all(key in f for f in figs):
        row[key] = dict(zip(('mean', 'sd'), mean_sd([f[key] for f in figs])))
    if all('attack' in f for f in figs):
      row['attack'] = {k: v for k, v in figs[0]['attack'].items() if k != 'source'}  # one config: one protocol
    rows.append(row)
  labels = [row['label'] for row in rows]
  for label in set(labels):  # two configs under the same name: number them
    if labels.count(label) > 1:
      for k, row in enumerate(r for r in rows if r['label'] == label):
        row['label'] = f'{label} ({k + 1})'
  written = []
  datasets = sorted({f['dataset'] for f in all_figures})
  title = f"{len(runs)} runs, {len(groups)} configs on {', '.join(datasets)}"
  series = []
  for row, members in zip(rows, groups):
    curves = [all_arrays[i].get('curves') for i in members]
    if not all(c is not None and len(c['eval_steps']) for c in curves):
      continue
    series.append({'label': row['label'], **_aligned(curves, 'eval_steps', ('top1', 'eval_loss')),
                   **_aligned(curves, 'train_steps', ('train_loss',))})
  if series:
    plots.curves(series, f'Training curves (mean ± sd over seeds): {title}', os.path.join(out, 'curves.png'))
    written.append('curves.png')
  panels = []
  for i, arrays in enumerate(all_arrays):
    if 'projection' in arrays:
      p = arrays['projection']
      panels.append({**p, 'title': f"{all_figures[i]['label']} ({all_figures[i]['method']})"})
  if panels:
    num_classes = max(a['num_classes'] for a in all_arrays)
    plots.projection_grid(panels, num_classes, f't-SNE of pooled test embeddings with MultiMix interpolations '
                          f'(crosses): {title}', os.path.join(out, 'projections.png'))
    written.append('projections.png')
  summary = {'runs': all_figures, 'groups': rows}
  write_text(os.path.join(out, 'report.md'), comparison_table(rows) + attack_lines(rows) + '\n' +
             ''.join(f'![{name}]({name})\n' for name in written))
  write_text(os.path.join(out, 'analysis.json'), json.dumps(summary, indent=2, default=_json_default))
  return ['analysis.json', 'report.md', *written]


def attack_lines(rows: list[dict]) -> str:
  """The attacks' settings under the table: one line when every row was attacked alike, else one per row."""
  attacked = [row for row in rows if 'attack' in row]
  if not attacked:
    return ''
  texts = [attack_text(row['attack']) for row in attacked]
  if len(set(texts)) == 1:
    return f'\nAttacks in pixel units [0, 1]: {texts[0]}.\n'
  return '\nAttacks in pixel units [0, 1]:\n\n' + ''.join(f"- {row['label']}: {text}.\n"
                                                          for row, text in zip(attacked, texts))


def _aligned(curves, steps_key, keys):
  """Each key's values of every run at the steps all runs have, as (runs, steps) arrays."""
  common = sorted(set.intersection(*(set(np.asarray(c[steps_key]).tolist()) for c in curves)))
  result = {steps_key: np.array(common)}
  for key in keys:
    result[key] = np.array([[dict(zip(np.asarray(c[steps_key]).tolist(), c[key]))[s] for s in common]
                            for c in curves]) if common else np.zeros((len(curves), 0))
  return result


def comparison_table(rows: list[dict]) -> str:
  """A markdown table: one row per config, mean ± sd over its seeds for each figure."""
  columns = [(key, name, digits) for key, name, digits in TABLE if any(key in row for row in rows)]
  lines = ['| run | seeds | ' + ' | '.join(name for _, name, _ in columns) + ' |',
           '| --- | ---: | ' + ' | '.join('---:' for _ in columns) + ' |']
  for row in rows:
    cells = []
    for key, _, digits in columns:
      if key not in row:
        cells.append('')
      elif row[key]['sd'] is None:
        cells.append(f"{row[key]['mean']:.{digits}f}")
      else:
        cells.append(f"{row[key]['mean']:.{digits}f} ± {row[key]['sd']:.{digits}f}")
    lines.append(f"| {row['label']} | {len(row['runs'])} | " + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'
