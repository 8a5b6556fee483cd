"""Timing the trainer's own compiled step: methods built as the trainer builds them, compiled, timed in rounds.

Every method of a setting is compiled once (`DataParallel.train_step` over every device, on a synthetic batch made
on the devices), warmed up, then timed interleaved: each round runs every method for `steps` consecutive steps ended
by `block_until_ready`, and each round starts with the next method, so that a drift of the machine's speed falls on
all methods alike and each round gives one paired ratio to ERM. Peak device memory, which a process cannot reset, is
measured for each method alone in a fresh process (`call_isolated`).
"""

import functools
import importlib
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from multimix_jax import models
from multimix_jax.benchmark import ratios
from multimix_jax.benchmark.presets import BenchmarkError, MethodSpec, Setting, default_config, parse_method
from multimix_jax.mixing import losses
from multimix_jax.preflight import compile as compile_lib
from multimix_jax.trainer import methods
from multimix_jax.trainer import optim
from multimix_jax.trainer import step as step_lib


def feature_positions(model, image_shape: tuple[int, int, int]) -> int:
  """r, the number of positions of the model's last feature map on images of `image_shape` (no computation)."""
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  (features, _), _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
  return int(np.prod(features.shape[1:-1]))


class TimedBranch(NamedTuple):
  """One method made ready to time: the loss function of the schedule entry timed (one `methods.Branch`'s), and
  what it is."""
  spec: MethodSpec
  loss_fn: Callable[..., Any]
  timed: str  # a description for the table
  loss_name: str  # the loss function's name ('multimix', 'dense_multimix', ...), which the targets are keyed by
  n: int | None
  chunk_size: int | None


def _default_entry(schedule) -> int:
  """The schedule entry timed without _stage: the most probable one; among equals, the middle one (manifold mixup:
  stage 1 of 0..2), which is the most representative of their costs."""
  top = max(branch.probability for branch in schedule)
  candidates = [i for i, branch in enumerate(schedule) if branch.probability == top]
  return candidates[(len(candidates) - 1) // 2]


def make_branch(spec: MethodSpec, setting: Setting, *, num_devices: int, r: int, chunk_size: int) -> TimedBranch:
  """The loss function of `spec` on `setting`, built by `methods.METHODS` from the trainer's default config.

  MultiMix-style methods are built with `multimix.prob = 1`, so their MultiMix branch is what is timed (training
  alternates it with input mixup, which costs what ERM does). Suffixes are checked against the built loss
  function's own hyperparameters, so any method of METHODS works here unchanged.
  """
  if spec.base in methods.NEEDS_ATTENTION and not models.sows_attention(setting.model):
    raise BenchmarkError(f'method {spec.name!r} needs the attention of a Vision Transformer (--model=vit_*); '
                         f'{setting.model} has none.')
  config = default_config()
  config.model, config.dtype, config.method = setting.model, setting.dtype, spec.base
  config.num_classes, config.image_size = setting.num_classes, setting.image_shape[0]
  config.batch_size = setting.batch_size * num_devices
  config.num_train_steps = 10**9  # only the learning-rate schedule reads it
  config.multimix.prob = 1.0
  if spec.n is not None:
    config.multimix.n = spec.n
  config.multimix.chunk_size = spec.chunk_size if spec.chunk_size is not None else chunk_size
  if spec.confidence is not None:
    config.multimix.confidence = spec.confidence
  schedule = methods.METHODS[spec.base](config)
  if spec.stage is None:
    entry = _default_entry(schedule)
  elif len(schedule) == 1 and spec.stage != 0:
    raise BenchmarkError(f'method {spec.name!r}: {spec.base} has one schedule entry; drop _stage{spec.stage}.')
  elif not 0 <= spec.stage < len(schedule):
    raise BenchmarkError(f'method {spec.name!r}: {spec.base} has schedule entries 0..{len(schedule) - 1}.')
  else:
    entry = spec.stage
  loss_fn = schedule[entry].loss_fn
  keywords = loss_fn.keywords if isinstance(loss_fn, functools.partial) else {}
  loss_name = getattr(loss_fn.func if isinstance(loss_fn, functools.partial) else loss_fn, '__name__', spec.base)
  if spec.n is not None and 'n' not in keywords:
    raise BenchmarkError(f'method {spec.name!r}: the loss timed ({loss_name}) takes no n; drop _n{spec.n}.')
  if spec.chunk_size is not None and 'chunk_size' not in keywords:
    raise BenchmarkError(f'method {spec.name!r}: the loss timed ({loss_name}) takes no chunk size; '
                         f'drop _chunk{spec.chunk_size}.')
  if spec.confidence is not None and 'confidence' not in keywords:
    raise BenchmarkError(f'method {spec.name!r}: the loss timed ({loss_name}) takes no confidence; '
                         f'drop _conf_{spec.confidence}.')
  n, chunk = keywords.get('n'), keywords.get('chunk_size')
  if chunk is not None and chunk < 0 and n is not None:
    chunk = losses.dense_chunk_size(n, setting.batch_size, r, setting.num_classes)  # what the loss will choose
  parts = [loss_name]
  if len(schedule) > 1:
    parts.append(f'schedule entry {entry} of {len(schedule)} only')
  if 'stage' in keywords:
    parts.append(f'stage {keywords["stage"]}')
  if spec.confidence is not None:
    parts.append(f'{spec.confidence} confidence')
  if n is not None:
    parts.append(f'n = {n}')
  if chunk is not None:
    parts.append(f'r = {r}, ' + (f'chunks of {chunk}' if 0 < chunk < n else 'unchunked'))
  return TimedBranch(spec=spec, loss_fn=loss_fn, timed=', '.join(parts), loss_name=loss_name, n=n, chunk_size=chunk)


def check_setting(setting: Setting, *, chunk_size: int, num_devices: int) -> None:
  """Builds every branch of `setting` (no compilation): raises BenchmarkError before any work is timed."""
  model = models.create_model(setting.model, num_classes=setting.num_classes, dtype=step_lib.DTYPES[setting.dtype])
  r = feature_positions(model, setting.image_shape)
  for name in setting.methods:
    make_branch(parse_method(name), setting, num_devices=num_devices, r=r, chunk_size=chunk_size)


# ------------------------------------------------------------------------------------------------ device helpers


def synthetic_batch(dp, key, b: int, image_shape, num_classes: int) -> dict:
  """{'image': float32 (b per device, H, W, C) ~ N(0, 1), 'label': int32 uniform}, made on the devices.

  Laid out as the step takes it: a global array sharded on the data axis (shard_map), or (devices, b, ...) (pmap).
  """

  def make(key, size):
    key_image, key_label = jax.random.split(key)
    return {'image': jax.random.normal(key_image, (size, *image_shape), jnp.float32),
            'label': jax.random.randint(key_label, (size,), 0, num_classes, jnp.int32)}

  if dp.parallelism == 'pmap':
    keys = jax.random.split(key, dp.num_local_devices)
    return jax.pmap(functools.partial(make, size=b), devices=dp.devices)(keys)
  sharding = NamedSharding(dp.mesh, P(step_lib.AXIS))
  return jax.jit(functools.partial(make, size=b * len(dp.devices)), out_shardings=sharding)(key)


def device_memory_stats() -> dict | None:
  """{'peak_bytes_in_use', 'bytes_in_use'}, the maxima over local devices, or None (CPU reports none)."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  if not stats or any(s is None for s in stats):
    return None
  return {k: max(int(s.get(k, 0)) for s in stats) for k in ('peak_bytes_in_use', 'bytes_in_use')}


class _Method:
  """A branch compiled for this setting, with its own state; a failure (out of memory...) is kept, not raised."""

  def __init__(self, branch, dp, model, tx, host_state, batch, key):
    self.branch = branch
    self.batch, self.key = batch, key
    self.compiled, self.memory, self.metrics, self.error = None, None, None, None
    self.lower_s = self.compile_s = None
    try:
      self.state = dp.put_state(host_state)  # fresh buffers: each method donates its own
      jitted = dp.train_step(model=model, tx=tx, loss_fn=branch.loss_fn)
      started = time.perf_counter()
      lowered = jitted.lower(self.state, batch, key)
      lowered_at = time.perf_counter()
      self.compiled = lowered.compile()
      self.lower_s, self.compile_s = lowered_at - started, time.perf_counter() - lowered_at
      self.memory = compile_lib.memory_analysis(self.compiled)
    except Exception as e:  # pylint: disable=broad-except  # reported in its row; the other methods go on
      self._fail(e)

  def _fail(self, error):
    message = ' '.join(str(error).split())
    self.error = f'{type(error).__name__}: {message[:300]}{"..." if len(message) > 300 else ""}'
    self.state = self.compiled = None

  def run(self, steps):
    if self.error is not None:
      return
    try:
      for _ in range(steps):
        self.state, self.metrics = self.compiled(self.state, self.batch, self.key)
      jax.block_until_ready((self.state, self.metrics))
    except Exception as e:  # pylint: disable=broad-except
      self._fail(e)


def optimizer():
  """The trainer's default optimiser (SGD with momentum), as every benchmarked step uses it."""
  config = default_config()
  config.num_train_steps = 10**9  # only the learning-rate schedule reads it
  return optim.create_optimizer(config, steps_per_epoch=1000)[0]


def _build(setting, *, parallelism, chunk_size, only=None, log=print):
  """Data-parallel wrapper, r and the compiled methods of `setting` (or of the method `only`), warmed up."""
  dp = step_lib.DataParallel(parallelism)
  model = models.create_model(setting.model, num_classes=setting.num_classes, dtype=step_lib.DTYPES[setting.dtype])
  r = feature_positions(model, setting.image_shape)
  names = setting.methods if only is None else (only,)
  branches = [make_branch(parse_method(m), setting, num_devices=len(dp.devices), r=r, chunk_size=chunk_size)
              for m in names]
  tx = optimizer()
  init_key, data_key, train_key = jax.random.split(jax.random.key(0), 3)
  host_state = jax.device_get(step_lib.create_train_state(init_key, model, tx, setting.image_shape))
  batch = synthetic_batch(dp, data_key, setting.batch_size, setting.image_shape, setting.num_classes)
  key = dp.put_state(jax.random.key_data(train_key))
  compiled = []
  for branch in branches:
    method = _Method(branch, dp, model, tx, host_state, batch, key)
    if setting.rounds:  # rounds = 0: compile and report memory only
      method.run(setting.warmup)
    if method.error is not None:
      log(f'[{setting.model}] {branch.spec.name} failed: {method.error}')
    compiled.append(method)
  return dp, r, compiled


def benchmark_setting(setting: Setting, *, parallelism: str = 'shard_map', chunk_size: int = -1,
                      peak_memory: dict | None = None, log=print) -> dict:
  """Compiles and times every method of `setting` interleaved; returns the setting's JSON-able result.

  Each row holds the per-round step times (`step_s_rounds`, seconds per step, one per round, every method timed in
  every round) and their median; `ratios.add_ratios` adds the ratios to ERM with their confidence intervals.
  `peak_memory`: per-method peak device memory from isolated processes (measured before, passed in), or None.
  """
  log(f'[{setting.model}] compiling {len(setting.methods)} methods...')
  dp, r, compiled = _build(setting, parallelism=parallelism, chunk_size=chunk_size, log=log)
  times = {m.branch.spec.name: [] for m in compiled}
  for round_index in range(setting.rounds):
    shift = round_index % len(compiled)
    for method in compiled[shift:] + compiled[:shift]:  # each round starts with the next method
      if method.error is None:
        started = time.perf_counter()
        method.run(setting.steps)
        times[method.branch.spec.name].append((time.perf_counter() - started) / setting.steps)
    log(f'[{setting.model}] round {round_index + 1}/{setting.rounds}: ' +
        ', '.join(f'{name} {1e3 * t[-1]:.1f} ms' for name, t in times.items() if t))

  global_batch = setting.batch_size * len(dp.devices)
  rows = []
  for method in compiled:
    name = method.branch.spec.name
    t = [] if method.error is not None else times[name]  # a method that failed mid-way has no usable rounds
    rows.append({
        'method': name,
        'timed': method.branch.timed,
        'loss': method.branch.loss_name,
        'n': method.branch.n,
        'chunk_size': method.branch.chunk_size,
        'lower_s': method.lower_s,
        'compile_s': None if method.compile_s is None else method.lower_s + method.compile_s,
        'step_s': statistics.median(t) if t else None,
        'step_s_rounds': t,
        'images_per_s': global_batch / statistics.median(t) if t else None,
        'xla_memory': method.memory,
        'peak_memory': (peak_memory or {}).get(name),
        'final_loss': (None if method.metrics is None or method.error else
                       float(np.asarray(jax.device_get(method.metrics['loss'])).reshape(-1)[0])),
        'error': method.error,
    })
  result = {'setting': setting.to_json(), 'global_batch_size': global_batch, 'r': r,
            'num_devices': len(dp.devices), 'parallelism': parallelism, 'methods': rows}
  return ratios.add_ratios(result)


def measure_peak_memory(setting: dict, method: str, parallelism: str, chunk_size: int) -> dict | None:
  """Peak device memory of training `setting` with `method` alone (call it in a fresh process: peaks never reset)."""
  setting = Setting.from_json(setting)
  _, _, (compiled,) = _build(setting, parallelism=parallelism, chunk_size=chunk_size, only=method,
                             log=lambda message: print(message, file=sys.stderr))
  compiled.run(max(1, setting.steps))
  if compiled.error is not None:
    return {'error': compiled.error}
  stats = device_memory_stats()
  return None if stats is None else {**stats, 'compile_s': compiled.lower_s + compiled.compile_s}


# ------------------------------------------------------------------------------------------ isolated processes


def call_isolated(module: str, function: str, kwargs: dict, *, prng_impl: str | None = None,
                  timeout: float = 3600) -> Any:
  """`multimix_jax.benchmark.<module>.<function>(**kwargs)` in a fresh Python process; its JSON answer or
  {'error': ...} (a crash, a timeout: the run goes on and the table says so)."""
  command = [sys.executable, '-c', 'from multimix_jax.benchmark import timing; timing._worker()']
  request = {'module': module, 'function': function, 'kwargs': kwargs, 'prng_impl': prng_impl}
  try:
    done = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True, timeout=timeout,
                          check=False)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout} s'}
  lines = done.stdout.strip().splitlines()
  if done.returncode != 0 or not lines:
    tail = (done.stderr.strip().splitlines() or ['no output'])[-1]
    return {'error': f'exit {done.returncode}: {tail}'}
  return json.loads(lines[-1])


def _worker():
  """Entry of the isolated processes: reads one request (JSON) on stdin, prints its answer (JSON) last."""
  request = json.loads(sys.stdin.read())
  if request.get('prng_impl'):
    jax.config.update('jax_default_prng_impl', request['prng_impl'])
  module = importlib.import_module(f'multimix_jax.benchmark.{request["module"]}')
  answer = getattr(module, request['function'])(**request['kwargs'])
  sys.stdout.write('\n' + json.dumps(answer) + '\n')
