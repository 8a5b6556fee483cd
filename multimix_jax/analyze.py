"""What mixing did to a trained model: `python -m multimix_jax.analyze --workdir=DIR [--workdir=DIR2 ...] [--out=OUT]`.

Reads each run's config.json and latest checkpoint (no retraining), evaluates the whole test split through the
trainer's data-parallel path (all devices, padding masked) and writes `analysis.json`, `report.md` and PNG plots
into `DIR/analysis/` (or OUT when one workdir and --out are given). With several workdirs every run gets its own
`analysis/` and OUT gets the comparison: one table (mean ± sd over runs whose configs differ only in their seed),
overlaid training curves and a grid of projections. Nothing is written anywhere else.

Figures (README, section Analysis, gives definitions and references): top-1/top-5 and NLL (equal to the trainer's
final evaluation), ECE over 15 bins and a reliability diagram, alignment and uniformity of the L2-normalised pooled
embeddings, the intra/inter-class distance ratio, a t-SNE projection with MultiMix interpolations drawn over it,
top-1 error under FGSM and PGD, and the training curves.

    python -m multimix_jax.analyze --workdir=runs/default
    python -m multimix_jax.analyze --workdir=runs/a --workdir=runs/b --out=runs/compare --metrics=accuracy,robustness
    python -m multimix_jax.analyze --time_attacks=resnet50       # attack vs eval time, synthetic batches
"""

import dataclasses
import json
import os
import re
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging

from multimix_jax import configs
from multimix_jax import datasets
from multimix_jax import interpolation
from multimix_jax import models
from multimix_jax import step as step_lib
from multimix_jax.analysis import evaluation
from multimix_jax.analysis import metrics as metrics_lib

METRICS = ('accuracy', 'calibration', 'embedding', 'projection', 'robustness', 'curves')

# L∞ budget of the attacks in pixel units ([0, 1]). Digits have 17 grey levels (steps of 1/16): 0.1 is about 1.6
# of them, the smallest of the budgets used on MNIST (0.1-0.3); the others are the usual 8/255.
DEFAULT_EPS = {'digits': 0.1, 'cifar10': 8 / 255, 'cifar100': 8 / 255, 'tiny_imagenet': 8 / 255,
               'imagenet2012': 8 / 255}

# Config keys that do not change what a run learns: runs differing only in these and `seed` are seeds of one config.
_NOT_THE_CONFIG = frozenset({'seed', 'data_dir', 'log_every_steps', 'eval_every_steps', 'eval_batch_size',
                             'checkpoint_every_steps', 'keep_checkpoints', 'profile'})

# (key in analysis.json, column title, digits) of the comparison table.
TABLE = (('top1', 'top-1 (%)', 2), ('top5', 'top-5 (%)', 2), ('nll', 'NLL', 4), ('ece', 'ECE (%)', 2),
         ('alignment', 'alignment', 4), ('uniformity', 'uniformity', 3), ('intra_inter_ratio', 'intra/inter', 4),
         ('fgsm_error', 'FGSM error (%)', 2), ('pgd_error', 'PGD error (%)', 2))


class AnalysisError(ValueError):
  """A workdir, checkpoint or flag the analysis cannot use; raised before any work, printed as one line."""


@dataclasses.dataclass
class Run:
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  label: str


@dataclasses.dataclass(frozen=True)
class Options:
  metrics: tuple[str, ...] = METRICS
  eps: float | None = None  # None: DEFAULT_EPS of the dataset
  attack: evaluation.AttackSettings = evaluation.AttackSettings()
  attack_examples: int = 0  # 0: the whole split
  tsne_points: int = 2000
  tsne_iterations: int = 1000
  interpolations: int = 200
  data_dir: str | None = None
  eval_batch_size: int = 0  # 0: the run's
  seed: int = 0


# ------------------------------------------------------------------------------------------------ loading


def check_metrics(names) -> tuple[str, ...]:
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise AnalysisError(f'unknown metric {", ".join(map(repr, unknown))}; choose from {", ".join(METRICS)}.')
  if not names:
    raise AnalysisError(f'no metric asked for; choose from {", ".join(METRICS)}.')
  return tuple(n for n in METRICS if n in names)


def load_run(workdir: str, options: Options = Options()) -> Run:
  """The run in `workdir`: its config and latest checkpoint step, checked against the code's model (no arrays are
  read). Raises AnalysisError when there is no run, no checkpoint, or the checkpoint is not of the config's model."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise AnalysisError(f'{workdir} holds no multimix_jax run (no config.json).')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if options.data_dir:
    config.data_dir = options.data_dir
  if options.eval_batch_size:
    config.eval_batch_size = options.eval_batch_size
  checkpoints = os.path.join(workdir, 'checkpoints')
  step = None
  if os.path.isdir(checkpoints):
    with ocp.CheckpointManager(checkpoints, item_handlers=ocp.StandardCheckpointHandler()) as manager:
      step = manager.latest_step()
      saved = manager.item_metadata(step) if step is not None else None
  if step is None:
    raise AnalysisError(f'{workdir} has no checkpoint (nothing in {checkpoints}); train it first.')
  if config.get('model') not in models.MODELS:
    raise AnalysisError(f'{workdir}: model={config.get("model")!r} in its config.json is not a model of this code '
                        f'({", ".join(sorted(models.MODELS))}).')
  if config.get('dataset') not in datasets.DATASETS:
    raise AnalysisError(f'{workdir}: dataset={config.get("dataset")!r} is not supported.')
  image_shape = datasets.image_shape(config)
  model = _model(config)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, *image_shape), np.float32),
                                               train=False))
  mismatches = []
  for collection in ('params', 'batch_stats'):
    want = _shapes(expected.get(collection, {}))
    have = _shapes(saved[collection] if collection in saved else {})
    for path in sorted(want.keys() | have.keys()):
      if want.get(path) != have.get(path):
        mismatches.append(f'{collection}/{path}: {have.get(path, "absent")} in the checkpoint, '
                          f'{want.get(path, "absent")} in the code')
  if mismatches:
    raise AnalysisError(f'{workdir}: the checkpoint at step {step} is not a {config.model} of this code for its '
                        f'config ({len(mismatches)} arrays differ; first: {mismatches[0]}).')
  if config.eval_batch_size % jax.device_count():
    raise AnalysisError(f'{workdir}: eval_batch_size={config.eval_batch_size} is not a multiple of the '
                        f'{jax.device_count()} devices; pass --eval_batch_size.')
  return Run(workdir=workdir, config=config, step=step, label=_label(workdir))


def _model(config):
  return models.create_model(config.model, num_classes=config.num_classes, dtype=step_lib.DTYPES[config.dtype],
                             **models.config_fields(config))


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(dict(tree) if tree else {})[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape) for path, leaf in flat}


def _label(workdir):
  """runs/sweep/multimix/seed2 -> 'multimix/seed2'; runs/erm -> 'erm'."""
  parts = os.path.normpath(os.path.abspath(workdir)).split(os.sep)
  return '/'.join(parts[-2:]) if re.fullmatch(r'seed_?\d+', parts[-1]) else parts[-1]


def _restore(run):
  """(params, batch_stats) of the run's latest checkpoint, as host arrays."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  with ocp.CheckpointManager(os.path.join(run.workdir, 'checkpoints'),
                             item_handlers=ocp.StandardCheckpointHandler()) as manager:
    restored = manager.restore(run.step)
  return restored['params'], restored.get('batch_stats', {}) or {}


# --------------------------------------------------------------------------------------------- one run


def analyze_run(run: Run, options: Options = Options()) -> tuple[dict, dict]:
  """Evaluates `run` and computes the asked figures.

  Returns:
    (figures for analysis.json, arrays for the plots: reliability bins, projection coordinates, curves).
  """
  from multimix_jax import data  # pylint: disable=g-import-not-at-top

  config = run.config
  timings = {}
  started = time.perf_counter()
  try:
    info = data.dataset_info(config)
  except (ValueError, data.DatasetNotFoundError) as e:
    raise AnalysisError(f'{run.workdir}: {e}') from e
  dp = step_lib.DataParallel(config.get('parallelism', 'shard_map'))
  model = _model(config)
  params, batch_stats = _restore(run)
  state = dp.put_state(step_lib.TrainState(step=np.zeros((), np.int32), params=params, batch_stats=batch_stats,
                                           opt_state=()))
  spec = datasets.DATASETS[config.dataset]
  eps = options.eps if options.eps is not None else DEFAULT_EPS[config.dataset]
  attacking = 'robustness' in options.metrics
  evaluate = evaluation.evaluate_fn(dp, model)
  attack = evaluation.attack_fn(dp, model, spec.mean, spec.std, options.attack) if attacking else None
  timings['setup_s'] = time.perf_counter() - started

  started = time.perf_counter()
  totals, outputs, attacked = None, [], []
  for i, batch in enumerate(data.eval_batches(config, local_batch_size=config.eval_batch_size // jax.process_count())):
    global_batch = dp.put_batch(batch)
    pooled, logits, labels, mask, sums = evaluate(state, global_batch)
    sums = dp.metrics(sums)  # the trainer's arithmetic: float32 sums per batch, added as Python floats
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
    outputs.append((pooled, logits, labels, mask))
    seen = sum(int(o[3].sum()) for o in outputs[:-1])
    if attacking and (not options.attack_examples or seen < options.attack_examples):
      batch_key = dp.put_state(np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(options.seed), i))))
      fgsm, pgd = attack(state, global_batch, batch_key, np.float32(eps))
      attacked.append((fgsm, pgd, labels, mask))
  timings['evaluation_and_attacks_s'] = time.perf_counter() - started
  count = int(totals['count'])
  if count != info.num_eval:
    raise RuntimeError(f'evaluation saw {count} examples, the split has {info.num_eval}')
  keep = np.concatenate([o[3] for o in outputs]).astype(bool)
  pooled, logits, labels = (np.concatenate([o[k] for o in outputs])[keep] for k in range(3))

  figures = {'workdir': os.path.abspath(run.workdir), 'label': run.label, 'checkpoint_step': run.step,
             'method': config.get('method'), 'dataset': config.dataset, 'model': config.model,
             'seed': config.get('seed'), 'examples': count, 'devices': jax.device_count(),
             'parallelism': dp.parallelism}
  arrays = {'num_classes': config.num_classes}
  figures['top1'] = 100 * totals['top1'] / count
  figures['top5'] = 100 * totals['top5'] / count
  figures['nll'] = totals['loss'] / count
  started = time.perf_counter()
  if 'calibration' in options.metrics:
    cal = metrics_lib.calibration(metrics_lib.softmax(logits), labels)
    figures['ece'] = 100 * cal['ece']
    figures['calibration_bins'] = cal['bins']
    arrays['calibration'] = cal
  if 'embedding' in options.metrics:
    figures['alignment'] = metrics_lib.alignment(pooled, labels, alpha=2.0)
    pairwise = metrics_lib.pairwise_figures(pooled, labels, t=2.0, seed=options.seed)
    figures['uniformity'] = pairwise['uniformity']
    figures['intra_class_distance'] = pairwise['intra_class_distance']
    figures['inter_class_distance'] = pairwise['inter_class_distance']
    figures['intra_inter_ratio'] = pairwise['intra_inter_ratio']
    figures['pairwise_points'] = pairwise['points']
  timings['figures_s'] = time.perf_counter() - started
  if attacking:
    a_keep = np.concatenate([a[3] for a in attacked]).astype(bool)
    fgsm, pgd, a_labels = (np.concatenate([a[k] for a in attacked])[a_keep] for k in range(3))
    settings = options.attack
    figures.update({
        'eps': eps, 'attack_examples': int(a_keep.sum()),
        'clean_error': 100 * float(np.mean(logits.argmax(-1)[:len(a_labels)] != a_labels)),
        'fgsm_error': 100 * float(np.mean(fgsm != a_labels)), 'pgd_error': 100 * float(np.mean(pgd != a_labels)),
        'pgd': {'steps': settings.steps, 'step_size': settings.step_fraction * eps,
                'random_start': settings.random_start}})
  if 'projection' in options.metrics:
    started = time.perf_counter()
    arrays['projection'] = _projection(pooled, labels, config, options)
    figures['projection'] = {k: v for k, v in arrays['projection'].items() if not isinstance(v, np.ndarray)}
    timings['tsne_s'] = time.perf_counter() - started
  if 'curves' in options.metrics:
    arrays['curves'] = _curves(run.workdir)
    figures['curves'] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in arrays['curves'].items()}
  figures['timings_s'] = timings
  return figures, arrays


def _projection(pooled, labels, config, options):
  """t-SNE (scikit-learn) of the pooled test embeddings and a MultiMix sample of them, fitted on their union."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top  # a dependency of scikit-learn
  from sklearn import manifold  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(options.seed)
  shown = np.sort(rng.choice(len(pooled), min(options.tsne_points, len(pooled)), replace=False))
  b = min(config.batch_size, len(pooled))
  batch = rng.choice(len(pooled), b, replace=False)
  m = min(config.multimix.m or b, b)
  alpha = config.multimix.alpha
  n = options.interpolations
  if n:
    mixed, mixed_targets = interpolation.sample_interpolation(
        jax.random.key(options.seed), pooled[batch], jax.nn.one_hot(labels[batch], config.num_classes), m, alpha,
        n=n)
    mixed, mixed_labels = np.asarray(mixed), np.asarray(mixed_targets).argmax(-1)
  else:
    mixed, mixed_labels = np.zeros((0, pooled.shape[1]), np.float32), np.zeros((0,), int)
  points = np.concatenate([pooled[shown], mixed]).astype(np.float64)
  tsne = manifold.TSNE(n_components=2, perplexity=min(30.0, (len(points) - 1) / 3), init='pca',
                       max_iter=options.tsne_iterations, random_state=options.seed)
  # One OpenMP thread: beside JAX's threads, more oversubscribe a small host (2 cores: 9 s against 70 s).
  with threadpoolctl.threadpool_limits(1):
    xy = tsne.fit_transform(points)
  return {'test_xy': xy[:len(shown)], 'test_labels': labels[shown], 'mixed_xy': xy[len(shown):],
          'mixed_labels': mixed_labels, 'test_points': int(len(shown)), 'interpolations': int(n),
          'interpolation_batch': int(b), 'm': int(m), 'alpha': float(alpha), 'space': 'pooled embedding',
          'tsne': {'perplexity': float(tsne.perplexity), 'init': 'pca', 'iterations': options.tsne_iterations,
                   'random_state': options.seed}}


def _curves(workdir):
  """Eval top-1/NLL against step (eval_history.json) and the logged train loss (TensorBoard events)."""
  path = os.path.join(workdir, 'eval_history.json')
  history = json.load(open(path)) if os.path.isfile(path) else []
  curves = {'eval_steps': np.array([h['step'] for h in history]), 'top1': np.array([h['top1'] for h in history]),
            'eval_loss': np.array([h['loss'] for h in history])}
  steps, losses = [], []
  if any(name.startswith('events.out.tfevents') for name in os.listdir(workdir)):
    from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
    from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top

    acc = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.TENSORS: 0,
                                                                     event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()
    if 'train_loss' in tags.get('tensors', []):
      events = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors('train_loss')}
    elif 'train_loss' in tags.get('scalars', []):
      events = {e.step: e.value for e in acc.Scalars('train_loss')}
    else:
      events = {}
    steps, losses = sorted(events), [events[s] for s in sorted(events)]  # a resumed run logs some steps twice
  curves['train_steps'], curves['train_loss'] = np.array(steps), np.array(losses)
  return curves


# ------------------------------------------------------------------------------------------------ outputs


def _title(figures):
  return (f"{figures['label']}: {figures['method']}, {figures['model']} on {figures['dataset']}, "
          f"step {figures['checkpoint_step']}")


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
                                                 else v for k, v in arrays['curves'].items()}}],
                 f'Training curves: {title}', os.path.join(out, 'curves.png'))
    written.append('curves.png')
  _write_text(os.path.join(out, 'report.md'), _run_report(figures, written))
  _write_text(os.path.join(out, 'analysis.json'), json.dumps(figures, indent=2, default=_json_default))
  return ['analysis.json', 'report.md', *written]


def _run_report(figures, images):
  lines = [f'# Analysis of {figures["label"]}', '', f'{_title(figures)}; {figures["examples"]} test examples on '
           f'{figures["devices"]} device(s) ({figures["parallelism"]}). Definitions: README, section Analysis.', '',
           '| figure | value |', '| --- | ---: |']
  for key, name, digits in TABLE:
    if key in figures:
      lines.append(f'| {name} | {figures[key]:.{digits}f} |')
  if 'eps' in figures:
    pgd = figures['pgd']
    lines += ['', f"Attacks: ε = {figures['eps']:.4g} in pixel units [0, 1] on {figures['attack_examples']} "
              f"examples; PGD: {pgd['steps']} steps of {pgd['step_size']:.4g}, random start: {pgd['random_start']}; "
              f"clean error on them {figures['clean_error']:.2f} %."]
  lines += [''] + [f'![{name}]({name})' for name in images]
  return '\n'.join(lines) + '\n'


def _json_default(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  return str(x)


def _write_text(path, text):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- comparison


def group_runs(runs: list[Run]) -> list[list[int]]:
  """Indices of `runs` grouped by config, ignoring the seed and keys that do not change training; in order."""
  keys, groups = [], []
  for i, run in enumerate(runs):
    flat = {k: v for k, v in configs.flatten(run.config.to_dict()).items() if k not in _NOT_THE_CONFIG}
    key = json.dumps(flat, sort_keys=True, default=str)
    if key in keys:
      groups[keys.index(key)].append(i)
    else:
      keys.append(key)
      groups.append([i])
  return groups


def _group_label(members):
  names = {f['label'].split('/')[0] if re.search(r'/seed_?\d+$', f['label']) else f['label'] for f in members}
  return ' | '.join(sorted(names))


def mean_sd(values):
  """(mean, sample sd or None for one value)."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def compare(all_figures: list[dict], all_arrays: list[dict], runs: list[Run], out: str) -> list[str]:
  """The comparison of several runs into `out`: analysis.json, report.md, curves.png, projections.png."""
  from multimix_jax.analysis import plots  # pylint: disable=g-import-not-at-top

  os.makedirs(out, exist_ok=True)
  groups = group_runs(runs)
  rows = []
  for members in groups:
    figs = [all_figures[i] for i in members]
    row = {'label': _group_label(figs), 'runs': [f['workdir'] for f in figs], 'seeds': [f['seed'] for f in figs],
           'method': figs[0]['method']}
    for key, _, _ in TABLE:
      if all(key in f for f in figs):
        row[key] = dict(zip(('mean', 'sd'), mean_sd([f[key] for f in figs])))
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
  _write_text(os.path.join(out, 'report.md'), comparison_table(rows) + '\n' +
              ''.join(f'![{name}]({name})\n' for name in written))
  _write_text(os.path.join(out, 'analysis.json'), json.dumps(summary, indent=2, default=_json_default))
  return ['analysis.json', 'report.md', *written]


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


# ------------------------------------------------------------------------------------------------- driver


def analyze(workdirs: list[str], out: str | None = None, options: Options = Options()) -> dict:
  """Checks every workdir first, then analyses each run and, with several, compares them. Returns
  {'runs': [figures], 'outputs': {directory: [files]}}."""
  if not workdirs:
    raise AnalysisError('give at least one --workdir.')
  options = dataclasses.replace(options, metrics=check_metrics(options.metrics))
  if len(workdirs) > 1 and not out:
    raise AnalysisError('several workdirs are compared into --out: give --out=DIR.')
  if options.eps is not None and not 0 < options.eps <= 1:
    raise AnalysisError(f'--eps={options.eps} must be in (0, 1] (pixel units).')
  if options.tsne_iterations < 250:
    raise AnalysisError(f'--tsne_iterations={options.tsne_iterations} must be >= 250 (scikit-learn).')
  if options.attack.steps < 1:
    raise AnalysisError(f'--pgd_steps={options.attack.steps} must be >= 1.')
  runs = [load_run(w, options) for w in workdirs]
  for run in runs:
    if options.eps is None and run.config.dataset not in DEFAULT_EPS:
      raise AnalysisError(f'{run.workdir}: no default ε for {run.config.dataset}; pass --eps.')
  outputs, all_figures, all_arrays = {}, [], []
  for run in runs:
    logging.info('Analysing %s (step %d).', run.workdir, run.step)
    figures, arrays = analyze_run(run, options)
    run_out = out if out and len(runs) == 1 else os.path.join(run.workdir, 'analysis')
    if jax.process_index() == 0:
      outputs[run_out] = write_run(figures, arrays, run_out)
    all_figures.append(figures)
    all_arrays.append(arrays)
  if len(runs) > 1 and jax.process_index() == 0:
    outputs[out] = compare(all_figures, all_arrays, runs, out)
  return {'runs': all_figures, 'outputs': outputs}


_WORKDIRS = flags.DEFINE_multi_string('workdir', None, 'A run directory (repeat to compare several).')
_OUT = flags.DEFINE_string('out', None, 'Output directory: required with several workdirs (the comparison); with '
                           'one, replaces WORKDIR/analysis.')
_METRICS = flags.DEFINE_list('metrics', list(METRICS), f'Figures to compute, from {", ".join(METRICS)}; '
                             'accuracy is always computed.')
_EPS = flags.DEFINE_float('eps', None, 'L∞ budget of FGSM and PGD in pixel units [0, 1]; default per dataset: '
                          + ', '.join(f'{k} {v:.4g}' for k, v in DEFAULT_EPS.items()) + '.')
_PGD_STEPS = flags.DEFINE_integer('pgd_steps', 10, 'PGD: number of steps.')
_PGD_STEP_FRACTION = flags.DEFINE_float('pgd_step_fraction', 0.25, 'PGD: step size as a fraction of eps.')
_PGD_RANDOM_START = flags.DEFINE_bool('pgd_random_start', True, 'PGD: start at a uniform point of the eps-ball.')
_ATTACK_EXAMPLES = flags.DEFINE_integer('attack_examples', 0, 'Attack the first batches covering this many test '
                                        'examples (0: all).')
_TSNE_POINTS = flags.DEFINE_integer('tsne_points', 2000, 'Test embeddings in the t-SNE (a seeded random subset).')
_TSNE_ITERATIONS = flags.DEFINE_integer('tsne_iterations', 1000, 't-SNE optimisation steps (at least 250).')
_INTERPOLATIONS = flags.DEFINE_integer('interpolations', 200, 'MultiMix interpolations drawn over the t-SNE.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, "TFDS data_dir; default: the run's.")
_EVAL_BATCH_SIZE = flags.DEFINE_integer('eval_batch_size', 0, "Global evaluation batch; 0: the run's.")
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the subsets, the interpolations, t-SNE and PGD starts.')
_TIME_ATTACKS = flags.DEFINE_string('time_attacks', None, 'Instead of analysing runs: time an eval pass, FGSM and '
                                    'PGD on synthetic batches of this model (e.g. resnet50) at its benchmark shape.')
_TIME_BATCH_SIZE = flags.DEFINE_integer('time_batch_size', 128, '--time_attacks: batch per device.')
_TIME_DTYPE = flags.DEFINE_string('time_dtype', 'float32', '--time_attacks: compute dtype (float32, bfloat16).')
_TIME_ROUNDS = flags.DEFINE_integer('time_rounds', 5, '--time_attacks: timed calls of each (median).')


# (H, W, C) and classes a model is timed at when it does not state its own `example_input`/`example_classes`.
_TIMING_SHAPES = {'small_cnn': ((8, 8, 1), 10), 'preact_resnet18': ((32, 32, 3), 100),
                  'wrn16_8': ((32, 32, 3), 100), 'resnet50': ((224, 224, 3), 1000)}


def _time_attacks_main():
  name = _TIME_ATTACKS.value
  if name not in models.MODELS or _TIME_DTYPE.value not in step_lib.DTYPES:
    raise AnalysisError(f'--time_attacks={name!r} must be one of {", ".join(models.MODELS)} and '
                        f'--time_dtype one of {", ".join(step_lib.DTYPES)}.')
  default_shape, default_classes = _TIMING_SHAPES.get(name, ((224, 224, 3), 1000))
  (size, _, channels) = getattr(models.MODELS[name], 'example_input', default_shape)
  classes = getattr(models.MODELS[name], 'example_classes', default_classes)
  result = evaluation.time_attacks(
      name, image_size=size, channels=channels, num_classes=classes, batch_size=_TIME_BATCH_SIZE.value,
      dtype=_TIME_DTYPE.value, eps=_EPS.value or 8 / 255, rounds=_TIME_ROUNDS.value,
      settings=evaluation.AttackSettings(_PGD_STEPS.value, _PGD_STEP_FRACTION.value, _PGD_RANDOM_START.value))
  print(f"{name} {size}×{size}×{channels}, c = {classes}, b = {result['batch_size_per_device']} per device × "
        f"{result['devices']} {result['platform']} device(s), {result['dtype']}, PGD-{result['pgd_steps']}")
  print('| pass | s per global batch | × trainer eval |\n| --- | ---: | ---: |')
  for key, seconds in result['seconds'].items():
    print(f"| {key} | {seconds:.4f} | {result['ratio_to_trainer_eval'][key]:.1f} |")
  print(json.dumps(result))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    if _TIME_ATTACKS.value:
      _time_attacks_main()
      return
    options = Options(
        metrics=tuple(_METRICS.value), eps=_EPS.value,
        attack=evaluation.AttackSettings(_PGD_STEPS.value, _PGD_STEP_FRACTION.value, _PGD_RANDOM_START.value),
        attack_examples=_ATTACK_EXAMPLES.value, tsne_points=_TSNE_POINTS.value,
        tsne_iterations=_TSNE_ITERATIONS.value, interpolations=_INTERPOLATIONS.value,
        data_dir=_DATA_DIR.value, eval_batch_size=_EVAL_BATCH_SIZE.value, seed=_SEED.value)
    result = analyze(_WORKDIRS.value or [], _OUT.value, options)
  except AnalysisError as e:
    sys.exit(f'error: {e}')
  for directory, files in result['outputs'].items():
    print(f'{directory}: {", ".join(files)}')
  for figures in result['runs']:
    print(f"{figures['label']}: " + ', '.join(f'{name} {figures[key]:.{digits}f}' for key, name, digits in TABLE
                                              if key in figures))


if __name__ == '__main__':
  app.run(main)
