"""A run's files as the analysis reads them: config.json, the latest checkpoint (checked against the code's model
before any array is read), eval_history.json and the logged train loss; and runs grouped as seeds of one config.

The train loss comes from `scalars.jsonl` (one JSON object per logged step, no TensorFlow needed) when the run
wrote it, else from the TensorBoard events.
"""

import dataclasses
import json
import os
import re

import jax
import ml_collections
import numpy as np

from multimix_jax import configs
from multimix_jax import models
from multimix_jax.analysis.options import AnalysisError, Options, attack_settings, default_attack
from multimix_jax.data import catalog
from multimix_jax.trainer import step as step_lib

SCALARS_FILE = 'scalars.jsonl'


@dataclasses.dataclass
class Run:
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  label: str
  attack_source: str  # where config.attack came from: 'config.json', or the shipped config filled in


def load_run(workdir: str, options: Options = Options()) -> Run:
  """The run in `workdir`: its config and latest checkpoint step, checked against the code's model (no arrays are
  read). Raises AnalysisError when there is no run, no checkpoint, the checkpoint is not of the config's model, or
  the attack settings cannot work."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  if '://' not in workdir:  # Orbax restores from absolute paths only: `--workdir=runs/default` is relative
    workdir = os.path.abspath(workdir)
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
  image_shape = catalog.image_shape(config)
  model = create_model(config)
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
  attack_source = 'config.json'
  if 'attack' not in config:  # written before the attack keys existed: the shipped config of its dataset
    config.attack = default_attack(config.dataset)
    attack_source = f'the shipped {config.dataset} config (config.json has no attack keys)'
  if 'robustness' in options.metrics:
    try:
      attack_settings(config, options)
    except AnalysisError as e:
      raise AnalysisError(f'{workdir}: {e}') from e
  return Run(workdir=workdir, config=config, step=step, label=_label(workdir), attack_source=attack_source)


def create_model(config):
  return models.create_model(config.model, num_classes=config.num_classes, dtype=step_lib.DTYPES[config.dtype],
                             **models.config_fields(config))


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(dict(tree) if tree else {})[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape) for path, leaf in flat}


def _label(workdir):
  """runs/sweep/multimix/seed2 -> 'multimix/seed2'; runs/erm -> 'erm'."""
  parts = os.path.normpath(os.path.abspath(workdir)).split(os.sep)
  return '/'.join(parts[-2:]) if re.fullmatch(r'seed_?\d+', parts[-1]) else parts[-1]


def restore(run: Run):
  """(params, batch_stats) of the run's latest checkpoint, as host arrays."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  with ocp.CheckpointManager(os.path.join(run.workdir, 'checkpoints'),
                             item_handlers=ocp.StandardCheckpointHandler()) as manager:
    restored = manager.restore(run.step)
  return restored['params'], restored.get('batch_stats', {}) or {}


# ------------------------------------------------------------------------------------------------ curves


def curves(workdir: str) -> dict:
  """Eval top-1/NLL against step (eval_history.json) and the logged train loss (`train_scalar`)."""
  path = os.path.join(workdir, 'eval_history.json')
  history = []
  if os.path.isfile(path):
    with open(path) as f:
      history = json.load(f)
  steps, losses, source = train_scalar(workdir, 'train_loss')
  return {'eval_steps': np.array([h['step'] for h in history]), 'top1': np.array([h['top1'] for h in history]),
          'eval_loss': np.array([h['loss'] for h in history]), 'train_steps': steps, 'train_loss': losses,
          'train_source': source}


def train_scalar(workdir: str, name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
  """(steps, values, source) of the scalar `name` the trainer logged, in step order, one value per step.

  The source is `scalars.jsonl` when the run wrote it (no TensorFlow import), else the TensorBoard events, else
  None (nothing logged). A resumed run logs some steps twice: the last value of a step is kept.
  """
  path = os.path.join(workdir, SCALARS_FILE)
  if os.path.isfile(path):
    values, source = _read_scalars_jsonl(path, name), SCALARS_FILE
  elif any(n.startswith('events.out.tfevents') for n in os.listdir(workdir)):
    values, source = _read_tensorboard(workdir, name), 'tensorboard'
  else:
    values, source = {}, None
  steps = sorted(values)
  return np.array(steps, np.int64), np.array([values[s] for s in steps], np.float64), source


def _read_scalars_jsonl(path, name):
  with open(path) as f:
    lines = f.read().splitlines()
  values = {}
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines):  # a run stopped while writing its last line
        break
      raise AnalysisError(f'{path}, line {number}: not JSON ({e}).') from e
    if name in record:
      values[int(record['step'])] = float(record[name])
  return values


def _read_tensorboard(workdir, name):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top

  acc = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.TENSORS: 0,
                                                                   event_accumulator.SCALARS: 0})
  acc.Reload()
  tags = acc.Tags()
  if name in tags.get('tensors', []):
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(name)}
  if name in tags.get('scalars', []):
    return {e.step: e.value for e in acc.Scalars(name)}
  return {}


# ------------------------------------------------------------------------------------------------ seeds


def group_runs(runs: list[Run]) -> list[list[int]]:
  """Indices of `runs` grouped by config, ignoring the keys that do not change training
  (`configs.GROUPING_IGNORED_KEYS`: the seed and bookkeeping); in order."""
  keys, groups = [], []
  for i, run in enumerate(runs):
    flat = {k: v for k, v in configs.flatten(run.config.to_dict()).items()
            if k not in configs.GROUPING_IGNORED_KEYS}
    key = json.dumps(flat, sort_keys=True, default=str)
    if key in keys:
      groups[keys.index(key)].append(i)
    else:
      keys.append(key)
      groups.append([i])
  return groups
