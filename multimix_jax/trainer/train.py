"""Training and evaluation: host batches -> global arrays -> train_step(state, batch, key) -> metrics.

`train_and_evaluate(config, workdir)` opens the dataset and checks the config and the workdir before any work,
resumes from the latest checkpoint in the workdir, saves periodically, at the end, on SIGTERM (preemption) and on a
first SIGINT (an interrupt), writes TensorBoard events, the same scalars as JSON lines (`scalars.jsonl`) and, at the
end, `summary.json`. Nothing here imports TensorFlow.
"""

import functools
import hashlib
import json
import os
import signal
import statistics
import threading
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from multimix_jax.trainer import checkpoints as checkpoints_lib
from multimix_jax.trainer import config_checks
from multimix_jax import configs
from multimix_jax import data
from multimix_jax.data import catalog
from multimix_jax.trainer import errors
from multimix_jax.trainer import methods
from multimix_jax import models
from multimix_jax.trainer import step as step_lib
from multimix_jax.trainer import summaries
from multimix_jax.trainer import workdir as workdir_lib
from multimix_jax.data import device_augment
from multimix_jax.models import vit

_PROFILE_FROM, _PROFILE_STEPS = 5, 5  # config.profile: trace steps 5 to 10 of the run (after compilation)

RunError = errors.RunError  # a problem the user can fix, told as one `error:` line (trainer/errors.py)
ConfigError = errors.ConfigError  # a config value or workdir that cannot work; raised before any work starts


class NonFiniteError(RunError):
  """The loss or the state (parameters, BatchNorm statistics, optimiser state) became NaN or infinite; the run
  stops before a checkpoint of it is written."""


def validate_config(config, num_devices, num_processes=1):
  """Raises one ConfigError listing every invalid value of `config` for this many devices.

  Each value is checked as the user gave it first (config_checks.RANGES, the registries, the methods' own checks);
  the checks that combine several keys (multimix.m against the batch, a method or confidence against the model)
  run only when every value passed, so that one bad value gives one line that names it.
  """
  problems = config_checks.problems(config)
  reported = config_checks.reported_keys(problems)

  def need(ok, message):
    if not ok:
      problems.append(message)

  mm = config.multimix
  need(config.method in methods.METHODS, f'method={config.method!r} is unknown; choose one of {sorted(methods.METHODS)}.')
  need(config.model in models.MODELS, f'model={config.model!r} is unknown; choose one of {sorted(models.MODELS)}.')
  need(config.dtype in step_lib.DTYPES, f'dtype={config.dtype!r} must be one of {sorted(step_lib.DTYPES)}.')
  need(config.parallelism in step_lib.DataParallel.KINDS,
       f'parallelism={config.parallelism!r} must be one of {step_lib.DataParallel.KINDS}.')
  need(config.schedule in step_lib.SCHEDULES,
       f'schedule={config.schedule!r} is unknown; choose one of {sorted(step_lib.SCHEDULES)}.')
  need(config.optimizer in step_lib.OPTIMIZERS,
       f'optimizer={config.optimizer!r} is unknown; choose one of {sorted(step_lib.OPTIMIZERS)}.')
  need('adam_betas' in reported or (len(config.adam_betas) == 2 and all(0 <= beta < 1 for beta in config.adam_betas)),
       f'adam_betas={tuple(config.adam_betas)} must be (b1, b2) with 0 <= b1, b2 < 1.')
  for name in ('batch_size', 'eval_batch_size'):
    value = config[name]
    need(name in reported or value % num_devices == 0,
         f'{name}={value} must be a positive multiple of the number of devices ({num_devices}).')
  if config.method in methods.METHODS:  # each method checks the hyperparameters it reads
    try:
      methods.METHODS[config.method](config)
    except methods.HyperparameterError as e:
      problems.extend(p for p in e.problems if config_checks.reported_keys([p]).isdisjoint(reported))
  aug = config.augment
  need(aug.resize in data.RESIZE_METHODS, f'augment.resize={aug.resize!r} must be one of {data.RESIZE_METHODS}.')
  for name in ('color_jitter', 'lighting_std'):
    need(f'augment.{name}' in reported or aug[name] is None or aug[name] >= 0,
         f'augment.{name}={aug[name]} must be None (the dataset\'s) or >= 0.')
  need(isinstance(aug.randaugment_layers, int) and aug.randaugment_layers >= 0,
       f'augment.randaugment_layers={aug.randaugment_layers!r} must be an int >= 0 (0: no RandAugment).')
  need('augment.randaugment_magnitude' in reported or 0 <= aug.randaugment_magnitude <= 10,
       f'augment.randaugment_magnitude={aug.randaugment_magnitude} must be in [0, 10].')
  need('augment.randaugment_magnitude_std' in reported or aug.randaugment_magnitude_std >= 0,
       f'augment.randaugment_magnitude_std={aug.randaugment_magnitude_std} must be >= 0.')
  need('augment.random_erasing' in reported or 0 <= aug.random_erasing <= 1,
       f'augment.random_erasing={aug.random_erasing} must be in [0, 1].')
  need(config.vit.pool_norm in vit.POOL_NORMS,
       f'vit.pool_norm={config.vit.pool_norm!r} must be one of {vit.POOL_NORMS}.')
  need('vit.drop_path' in reported or 0 <= config.vit.drop_path < 1,
       f'vit.drop_path={config.vit.drop_path} must be in [0, 1).')
  need(config.num_train_steps > 0 or config.num_epochs > 0 or {'num_train_steps', 'num_epochs'} & reported,
       'set num_epochs > 0 or num_train_steps > 0.')
  need(aug.crop is None or aug.crop in catalog.CROPS, f'augment.crop={aug.crop!r} must be one of {catalog.CROPS}.')
  if problems:  # the checks below combine several values: only once each of them is valid
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))

  b = config.batch_size // num_devices
  b_mix = b * num_devices if mm.scope == 'global' else b
  need(0 <= mm.m <= b_mix, f'multimix.m={mm.m} must be in [0, {b_mix}] (0 means the whole batch): the '
       f"{'global' if mm.scope == 'global' else 'per-device'} batch is {b_mix} "
       f'(batch_size={config.batch_size} over {num_devices} devices).')
  if mm.confidence == 'attention':
    need(getattr(models.MODELS[config.model], 'sows_attention', False),
         f"multimix.confidence='attention' needs a Vision Transformer (model=vit_*), which provides its attention; "
         f"model={config.model!r} does not: choose another confidence.")
  if config.method in methods.NEEDS_ATTENTION:
    need(getattr(models.MODELS[config.model], 'sows_attention', False),
         f'method={config.method!r} needs a Vision Transformer (model=vit_*), which provides its attention; '
         f'model={config.model!r} does not: choose cutmix, or a vit_* model.')
  if config.dataset in catalog.DATASETS and catalog.DATASETS[config.dataset].crop == 'none':
    need(not (aug.randaugment_layers or aug.random_erasing or aug.color_jitter or aug.lighting_std or aug.flip),
         f'dataset={config.dataset!r} is not augmented (its images are not flip-invariant): leave augment.* at '
         'their defaults.')
  if not issubclass(models.MODELS[config.model], vit.ViT):
    need(config.vit.pool_norm == 'tokens' and config.vit.drop_path == 0,
         f'vit.pool_norm and vit.drop_path apply to Vision Transformers (model=vit_*) only; model={config.model!r}: '
         f"leave them at 'tokens' and 0.")
  if num_processes > 1:
    need(config.batch_size % num_processes == 0 and config.eval_batch_size % num_processes == 0,
         f'batch_size and eval_batch_size must be multiples of the number of processes ({num_processes}).')
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


def _config_differences(saved, config):
  saved, current = configs.flatten(saved), configs.flatten(config.to_dict())
  keys = sorted(k for k in saved.keys() | current.keys()
                if k not in configs.RESUMABLE_KEYS and _comparable(saved.get(k)) != _comparable(current.get(k)))
  return [f'{k}: {saved.get(k)!r} in the workdir, {current.get(k)!r} now' for k in keys]


def _comparable(value):
  return list(value) if isinstance(value, (tuple, list)) else value


def check_workdir(config, workdir):
  """Refuses a workdir holding another run or unrelated files, so that nothing of a user's is overwritten."""
  workdir = epath.Path(workdir)
  if (workdir / 'config.json').exists():
    differences = _config_differences(json.loads((workdir / 'config.json').read_text()), config)
    if differences:
      raise ConfigError(f'{workdir} holds a run with another config; resuming it would mix two runs. Choose a new '
                        '--workdir, or rerun with the config saved in its config.json. Differences:\n  ' +
                        '\n  '.join(differences))
  elif workdir.is_dir() and any(p.name != workdir_lib.LOCK for p in workdir.iterdir()):
    raise ConfigError(f'{workdir} is not empty and holds no multimix_jax run (no config.json); choose a new or '
                      'empty --workdir.')


def _workdir_state(workdir):
  """(latest checkpoint step or -1, sha256 of config.json or b'') as this host sees `workdir`."""
  steps = [int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit()] \
      if (workdir / 'checkpoints').is_dir() else []
  config = (workdir / 'config.json').read_bytes() if (workdir / 'config.json').exists() else None
  return max(steps, default=-1), hashlib.sha256(config).digest() if config is not None else bytes(32)


def check_shared_workdir(workdir, attempts=3):
  """Every process compares its view of `workdir` (latest checkpoint step, config.json) with process 0's, after
  process 0 wrote config.json, so that hosts which do not share the workdir stop before training instead of
  resuming from different steps. Raises ConfigError on every process when the views differ."""
  for attempt in range(attempts):  # a network filesystem may show process 0's write a moment late
    multihost_utils.sync_global_devices('multimix_jax: workdir state')
    step, digest = _workdir_state(workdir)
    local = np.concatenate([[step], np.frombuffer(digest, dtype=np.int32)]).astype(np.int32)
    views = np.asarray(multihost_utils.process_allgather(local))  # (processes, 9), the same on every process
    differ = [p for p in range(len(views)) if not np.array_equal(views[p], views[0])]
    if not differ:
      return
    if attempt + 1 < attempts:
      time.sleep(2)
  def describe(view):
    config = 'no config.json' if not view[1:].any() else f'config.json {bytes(view[1:].tobytes())[:4].hex()}...'
    return f'latest checkpoint step {view[0] if view[0] >= 0 else "none"}, {config}'
  raise ConfigError(
      f'the workdir must be shared by all hosts: {workdir} looks different to process {differ[0]} '
      f'({describe(views[differ[0]])}) than to process 0 ({describe(views[0])}). Put it on a filesystem that every '
      'host mounts at the same path (NFS, Lustre, or gs://... on Cloud TPUs).')


class _Preemption:
  """Turns SIGTERM (preemption) and a first SIGINT (Ctrl-C, a notebook's interrupt) into a request to save and stop
  after the current step (all processes at the same step). A second SIGINT raises KeyboardInterrupt at once."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None  # the name of the signal that asked to stop
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested == 'SIGINT':
      raise KeyboardInterrupt  # the second interrupt: stop now, without waiting for the step
    name = signal.Signals(signum).name
    logging.warning('%s received: saving a checkpoint after this step, then stopping%s.', name,
                    ' (interrupt again to stop at once, without saving)' if name == 'SIGINT' else '')
    self.requested = self.requested or name

  def reached(self, step):
    if jax.process_count() > 1:  # jax.distributed's preemption service syncs every process on one step
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested is not None


def _write_json(path, obj):
  """Process 0 writes `obj` to `path` (an epath.Path: local or gs://) atomically where the filesystem can."""
  if jax.process_index() == 0:
    tmp = path.parent / (path.name + '.tmp')
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _dataset_info(config):
  """data.dataset_info, which fills the config keys left to the data; a problem with the data is a ConfigError."""
  try:
    return data.dataset_info(config)
  except (data.DataError, data.DatasetError, data.DatasetNotFoundError) as e:  # data that cannot work as they are
    raise ConfigError(str(e)) from e
  except ValueError as e:  # a config value the data contradict
    raise ConfigError(f'Invalid config: {e}') from e


def device_augmentation(config) -> device_augment.DeviceAugment:
  """The normalisation and augmentation that the step applies on the device, from the (resolved) config."""
  aug = config.augment
  return device_augment.DeviceAugment(
      mean=tuple(aug.mean), std=tuple(aug.std), color_jitter=aug.color_jitter, lighting_std=aug.lighting_std,
      randaugment_layers=aug.randaugment_layers, randaugment_magnitude=aug.randaugment_magnitude,
      randaugment_magnitude_std=aug.randaugment_magnitude_std, random_erasing=aug.random_erasing)


def _profile(start, workdir):
  """Starts (or stops) a trace of the run's steps for TensorBoard's profile tab, in `workdir`."""
  if start:
    jax.profiler.start_trace(str(workdir))
  else:
    jax.profiler.stop_trace()


def evaluate(dp, eval_step, state, config, info):
  """Top-1 and top-5 accuracy (%) and cross-entropy over every example of the evaluation split."""
  local_batch = config.eval_batch_size // jax.process_count()
  totals = None
  for batch in data.eval_batches(config, local_batch_size=local_batch):
    sums = dp.metrics(eval_step(state, dp.put_batch(batch)))
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
  count = int(totals['count'])
  if count != info.num_eval:
    raise RuntimeError(f'evaluation saw {count} examples, the split has {info.num_eval}')
  return {'top1': 100 * totals['top1'] / count, 'top5': 100 * totals['top5'] / count,
          'loss': totals['loss'] / count, 'count': count}


def _check_finite(fetched, last_saved, workdir):
  """Raises NonFiniteError at the first fetched step whose loss or state is not finite."""
  for step, metrics in fetched:
    if metrics['finite'] < 1.0:
      resume = (f'the last good checkpoint is step {last_saved} in {workdir / "checkpoints"}' if last_saved else
                'no checkpoint was written')
      raise NonFiniteError(
          f'the loss or the model\'s state (parameters, BatchNorm statistics or optimiser state) became NaN or '
          f'infinite at step {step} (loss {metrics["loss"]}); the run '
          f'stopped and {resume}. Lower learning_rate, or check the data and the method\'s hyperparameters.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates `config` in `workdir`, resuming from its latest checkpoint that restores; returns the
  summary. The run claims the workdir for its lifetime (one trainer per workdir); a rerun of a finished run only says
  so; a failed read or write of the workdir (full disk, read-only, permissions) is one StorageError."""
  workdir = epath.Path(workdir if '://' in str(workdir) else os.path.abspath(workdir))  # gs:// stays as it is
  validate_config(config, jax.device_count(), jax.process_count())
  info = _dataset_info(config)  # fills num_classes, image_size and augment.* from the data: before the comparison
  check_workdir(config, workdir)
  claim = workdir_lib.claim_run(workdir)  # before anything in the workdir is touched
  try:
    steps = checkpoints_lib.committed_steps(workdir / 'checkpoints')
    finished = workdir_lib.finished_summary(config, workdir, steps[0] if steps else 0)
    if finished:
      logging.warning('%s holds this run, finished at step %d (summary.json): nothing to do; every file is left as '
                      'it was.', workdir, finished['steps'])
      return finished
    return _train_and_evaluate(config, workdir, info)
  except errors.ConfigError:  # refused (e.g. a config value that does not fit the dataset): leave no trace
    claim.undo()
    raise
  except errors.RunError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (an OSError, or Orbax's, TensorStore's or TF's for one)
    error = workdir_lib.storage_error(e, workdir, workdir_lib.newest_step(workdir / 'checkpoints'))
    if error is None:
      raise
    raise error from e
  finally:
    claim.release()


def _train_and_evaluate(config, workdir, info):
  """train_and_evaluate's work, in a workdir checked and claimed, on the dataset `info` describes."""
  steps_per_epoch = info.num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f'batch_size={config.batch_size} is larger than the training split ({info.num_train}).')
  num_steps = step_lib.num_train_steps(config, steps_per_epoch)
  eval_every = config.eval_every_steps or steps_per_epoch
  checkpoint_every = config.checkpoint_every_steps or steps_per_epoch

  if jax.process_count() > 1:  # every process checks the workdir before process 0 writes to it
    multihost_utils.sync_global_devices('multimix_jax: workdir checked')
  workdir.mkdir(parents=True, exist_ok=True)
  _write_json(workdir / 'config.json', config.to_dict())
  if info.class_names:
    _write_json(workdir / 'classes.json', list(info.class_names))
  if jax.process_count() > 1:
    check_shared_workdir(workdir)
  dp = step_lib.DataParallel(config.parallelism)
  model = models.create_model(config.model, num_classes=config.num_classes, dtype=step_lib.DTYPES[config.dtype],
                              bn_axis_name=step_lib.AXIS if config.sync_batch_stats else None,
                              **models.config_fields(config))
  tx, lr_schedule = step_lib.create_optimizer(config, steps_per_epoch)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  host_state = jax.device_get(step_lib.create_train_state(init_key, model, tx, info.image_shape))

  # The newest step that restores; a damaged newer one is reported and moved aside (trainer/checkpoints.py).
  start_step, host_state = checkpoints_lib.restore_newest(workdir / 'checkpoints', host_state)
  if start_step:
    logging.info('Resumed from the checkpoint at step %d.', start_step)
  checkpoints = ocp.CheckpointManager(
      workdir / 'checkpoints',
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True))
  state = dp.put_state(host_state)
  key = dp.put_state(jax.random.key_data(train_key))

  history_path = workdir / 'eval_history.json'
  history = []
  if history_path.exists():  # evaluations after the restored checkpoint are done again
    history = [h for h in json.loads(history_path.read_text()) if h['step'] <= start_step]

  schedule = methods.METHODS[config.method](config)
  probabilities = np.array([branch.probability for branch in schedule])
  augment = device_augmentation(config)
  train_steps = [dp.train_step(model=model, tx=tx, loss_fn=branch.loss_fn,
                               augment=functools.partial(device_augment.train_images, augment=augment))
                 for branch in schedule]
  eval_step = dp.eval_step(model=model, normalise=functools.partial(device_augment.eval_images, augment=augment))

  writer = summaries.Writer(workdir, write_files=jax.process_index() == 0)
  if start_step == 0:
    writer.write_hparams(configs.flatten(config.to_dict()))
  progress = summaries.Progress(start_step, num_steps)
  profiling = config.profile and jax.process_index() == 0

  train_iter = data.train_batches(config, local_batch_size=config.batch_size // jax.process_count(),
                                  seed=config.seed, start_step=start_step)
  logging.info('Training %s/%s with %s on %s for %d steps (%d per epoch) from step %d on %d devices.',
               config.model, config.dataset, config.method, jax.devices()[0].platform, num_steps, steps_per_epoch,
               start_step, jax.device_count())
  started = time.time()
  step, pending, fetched, preempted = start_step, [], [], False
  last_saved = start_step or None
  try:
    with _Preemption() as preemption:
      while step < num_steps:
        # The host picks the step's mixing branch from (seed, step): the same on every process and on resume.
        branch = np.random.default_rng([config.seed, step]).choice(len(schedule), p=probabilities)
        state, metrics = train_steps[branch](state, dp.put_batch(next(train_iter)), key)
        step += 1
        pending.append((step, metrics))
        if profiling and step - start_step in (_PROFILE_FROM, _PROFILE_FROM + _PROFILE_STEPS):
          _profile(step - start_step == _PROFILE_FROM, workdir)
        preempted = preemption.reached(step)
        logging_now = step % config.log_every_steps == 0 or step == num_steps
        evaluating = step % eval_every == 0 or step == num_steps
        saving = step % checkpoint_every == 0 or step == num_steps or preempted
        if logging_now or evaluating or saving:  # metrics reach the host here only: no sync on other steps
          new = [(s, dp.metrics(m)) for s, m in pending]
          _check_finite(new, last_saved, workdir)
          fetched, pending = fetched + new, []
        if logging_now:
          summary = {f'train_{k}': np.mean([m[k] for _, m in fetched]) for k in ('loss', 'accuracy')}
          summary['learning_rate'] = float(lr_schedule(step - 1))
          summary.update(progress(step))
          writer.write_scalars(step, summary)
          fetched = []
        if evaluating:
          result = evaluate(dp, eval_step, state, config, info)
          writer.write_scalars(step, {f'eval_{k}': v for k, v in result.items() if k != 'count'})
          history.append({'step': step, **result})
          _write_json(history_path, history)
        if saving:
          checkpoints.save(step, args=ocp.args.StandardSave(dp.get_state(state)))
          last_saved = step
        if preempted:
          logging.warning('%s: checkpoint saved at step %d; rerun the same command to resume.',
                          'Interrupted' if preemption.requested == 'SIGINT' else 'Preempted', step)
          break
  finally:  # a save still in flight completes, also when the run stops on an error
    try:
      checkpoints.wait_until_finished()
      checkpoints.close()
    finally:
      writer.close()

  top1 = [h['top1'] for h in history]
  summary = {
      'final_top1': top1[-1] if top1 else None,
      'median_last10_top1': statistics.median(top1[-10:]) if top1 else None,
      'best_top1_over_training': max(top1) if top1 else None,  # flatters: report final and median
      'final_top5': history[-1]['top5'] if history else None,
      'steps': step,
      'num_train_steps': num_steps,
      'preempted': preempted,
      'resumed_from_step': start_step,
      'wall_time_s': time.time() - started,
      'num_devices': jax.device_count(),
      'config': config.to_dict(),
  }
  if not preempted:
    _write_json(workdir / 'summary.json', summary)
  return summary
