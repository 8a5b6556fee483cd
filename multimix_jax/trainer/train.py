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

from multimix_jax import configs
from multimix_jax import data
from multimix_jax import models
from multimix_jax.data import catalog
from multimix_jax.data import device_augment
from multimix_jax.trainer import checkpoints as checkpoints_lib
from multimix_jax.trainer import config_checks
from multimix_jax.trainer import errors
from multimix_jax.trainer import methods
from multimix_jax.trainer import optim
from multimix_jax.trainer import step as step_lib
from multimix_jax.trainer import summaries
from multimix_jax.trainer import workdir as workdir_lib

_PROFILE_FROM, _PROFILE_STEPS = 5, 5  # config.profile: trace steps 5 to 10 of the run (after compilation)

RunError = errors.RunError  # a problem the user can fix, told as one `error:` line (trainer/errors.py)
ConfigError = errors.ConfigError  # a config value or workdir that cannot work; raised before any work starts


class NonFiniteError(RunError):
  """The loss or the state (parameters, BatchNorm statistics, optimiser state) became NaN or infinite; the run
  stops before a checkpoint of it is written."""


# Every registry's checks of the keys it defines, config -> one sentence per bad value naming its key; each runs its
# checks that combine several of its keys (a method against the model, vit.* against the model, augmentation
# against the dataset) only once its single values passed.
_REGISTRY_CHECKS = (methods.config_problems, models.config_problems, step_lib.config_problems, optim.config_problems,
                    catalog.config_problems)


def validate_config(config, num_devices, num_processes=1):
  """Raises one ConfigError listing every invalid value of `config` for this many devices.

  Each value is checked as the user gave it first (config_checks.RANGES, then each registry's `config_problems`:
  the methods', the models', the step's, the optimisers' and the augmentation's); a line about a key RANGES already
  refused is left out. The checks that combine values of several registries (multimix.m against the batch and the
  devices, the processes) run only when every value passed, so that one bad value gives one line that names it.
  """
  problems = config_checks.config_problems(config)
  reported = config_checks.reported_keys(problems)
  for registry_problems in _REGISTRY_CHECKS:
    problems += config_checks.unreported(registry_problems(config), reported)
  for name in ('batch_size', 'eval_batch_size'):
    if name not in reported and config[name] % num_devices:
      problems.append(f'{name}={config[name]} must be a positive multiple of the number of devices ({num_devices}).')
  if problems:  # the checks below combine several values: only once each of them is valid
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))

  mm = config.multimix
  b = config.batch_size // num_devices
  b_mix = b * num_devices if mm.scope == 'global' else b
  if not 0 <= mm.m <= b_mix:
    problems.append(f'multimix.m={mm.m} must be in [0, {b_mix}] (0 means the whole batch): the '
                    f"{'global' if mm.scope == 'global' else 'per-device'} batch is {b_mix} "
                    f'(batch_size={config.batch_size} over {num_devices} devices).')
  if num_processes > 1 and (config.batch_size % num_processes or config.eval_batch_size % num_processes):
    problems.append(f'batch_size and eval_batch_size must be multiples of the number of processes ({num_processes}).')
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
  num_steps = optim.num_train_steps(config, steps_per_epoch)
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
  tx, lr_schedule = optim.create_optimizer(config, steps_per_epoch)
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
