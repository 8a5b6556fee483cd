"""Measured cost of MultiMix against ERM, and of JAX against PyTorch: `python -m multimix_jax.benchmark`.

The paper's claim is "orders of magnitude more loss terms per mini-batch at little additional cost". This command
measures it on synthetic batches made on the device, with the trainer's own compiled step (`DataParallel.train_step`
over every device), so it needs neither TensorFlow nor a dataset:

    python -m multimix_jax.benchmark                      # the 'cpu' preset on a CPU, the 'gpu' preset on a GPU
    python -m multimix_jax.benchmark --preset=gpu         # ResNet-50 and PreActResNet-18, bf16, with PyTorch
    python -m multimix_jax.benchmark --model=small_cnn --batch_size=128 --methods=erm,multimix_n10000
    python -m multimix_jax.benchmark --input              # the TFDS input pipeline alone (imports TensorFlow)

For every method it reports the compile time, the steady-state step time (the median over `rounds` of the mean of
`steps` consecutive steps ended by `block_until_ready`, after `warmup` steps), images/s, the step time as a multiple
of ERM's, XLA's memory figure for the compiled step (`memory_analysis()`, any backend) and the peak device memory
where the backend reports it (GPU, TPU; measured for each method in its own process, since a process's peak cannot
be reset). Methods are timed interleaved: every round runs every method in turn, starting each round with the next
method, so that drifts of the machine's speed fall on all methods alike.

Method names are a METHODS name with optional suffixes: `_n{N}` (MultiMix's n), `_chunk{K}` (Dense MultiMix's
chunk size over n; 0 = all n at once) and `_stage{k}` (the schedule entry of a method with several, e.g.
manifold mixup's stage). MultiMix-style methods run with `multimix.prob = 1`, so their MultiMix branch is what is
timed; manifold mixup is timed at stage 1 unless told otherwise. `--batch_size` is b, per device, as in the paper.
"""

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from multimix_jax import losses
from multimix_jax import methods
from multimix_jax import models
from multimix_jax import step as step_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_REPO, 'configs', 'default.py')

# Per model: (image size, channels, classes) of the shapes it is benchmarked on unless flags say otherwise.
MODEL_SHAPES = {
    'small_cnn': (8, 1, 10),  # digits
    'preact_resnet18': (32, 3, 100),  # CIFAR-100
    'wrn16_8': (32, 3, 100),  # CIFAR-100
    'resnet50': (224, 3, 1000),  # ImageNet
}

# The methods of the issue, at the paper's n (SPEC §5).
ALL_METHODS = ('erm', 'input_mixup', 'manifold_mixup', 'multimix_n1000', 'multimix_n10000', 'dense_multimix_n1000')


# Targets of the issue, checked by the report (tests never time anything).
TARGETS = {'multimix_step': 1.03, 'dense_multimix_step': 1.10, 'dense_multimix_peak_memory': 1.2,
           'resnet50_erm_images_per_s': 3000.0}

_MIB = 2**20


class BenchmarkError(ValueError):
  """A flag value that cannot work (unknown method, a suffix it does not take, a size < 1); the message says why."""


# ------------------------------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Setting:
  """One table: a model on shapes (b per device, H = W = image_size, C, c), a dtype and the methods timed."""
  model: str
  batch_size: int  # b, per device
  image_size: int
  channels: int
  num_classes: int
  dtype: str
  methods: tuple[str, ...]
  steps: int  # consecutive steps per method per round
  rounds: int  # 0: compile and report memory only
  warmup: int
  torch: bool = False  # also time the same model, batch and precision in PyTorch

  @property
  def image_shape(self):
    return (self.image_size, self.image_size, self.channels)


def _preset(name):
  if name == 'cpu':
    # A few minutes on 2 cores: every method on the small CNN; the paper's CIFAR network at a small batch.
    return [
        Setting('small_cnn', 128, 8, 1, 10, 'float32', ALL_METHODS, steps=10, rounds=15, warmup=3),
        Setting('preact_resnet18', 32, 32, 3, 100, 'float32', ('erm', 'multimix_n1000', 'dense_multimix_n1000'),
                steps=1, rounds=7, warmup=1),
    ]
  if name == 'gpu':
    gpu_methods = ALL_METHODS + ('dense_multimix_n10000',)
    return [
        Setting('resnet50', 128, 224, 3, 1000, 'bfloat16', gpu_methods, steps=20, rounds=10, warmup=5, torch=True),
        Setting('preact_resnet18', 128, 32, 3, 100, 'bfloat16', gpu_methods, steps=50, rounds=10, warmup=10,
                torch=True),
    ]
  raise BenchmarkError(f"--preset={name!r} is unknown; choose 'cpu' or 'gpu'.")


PRESETS = ('cpu', 'gpu')


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A benchmarked method: a METHODS name, MultiMix's n, the dense chunk size and the schedule entry timed."""
  name: str
  base: str
  n: int | None = None
  chunk_size: int | None = None  # None: the run's --chunk_size
  stage: int | None = None


_METHOD_RE = re.compile(r'(?P<base>[a-z0-9_]+?)(?:_n(?P<n>\d+))?(?:_chunk(?P<chunk>\d+))?(?:_stage(?P<stage>\d+))?')
_MULTIMIX_BASES = ('multimix', 'dense_multimix')


def parse_method(name):
  """'dense_multimix_n1000_chunk250' -> MethodSpec; raises BenchmarkError naming the known methods."""
  match = _METHOD_RE.fullmatch(name)
  known = (f'known methods: {", ".join(sorted(methods.METHODS))}, with optional suffixes _n<N> (multimix, '
           'dense_multimix), _chunk<K> (dense_multimix) and _stage<k> (a schedule entry, e.g. manifold_mixup_stage2)')
  if not match or match['base'] not in methods.METHODS:
    raise BenchmarkError(f'unknown method {name!r}; {known}.')
  base = match['base']
  n, chunk, stage = (None if match[g] is None else int(match[g]) for g in ('n', 'chunk', 'stage'))
  if n is not None and (base not in _MULTIMIX_BASES or n < 1):
    raise BenchmarkError(f'method {name!r}: _n<N> (N >= 1) applies to multimix and dense_multimix only.')
  if chunk is not None and base != 'dense_multimix':
    raise BenchmarkError(f'method {name!r}: _chunk<K> applies to dense_multimix only.')
  return MethodSpec(name=name, base=base, n=n, chunk_size=chunk, stage=stage)


def default_config():
  """configs/default.py, the trainer's schema (loaded from the source tree, as multimix_jax.main does)."""
  spec = importlib.util.spec_from_file_location('multimix_default_config', _DEFAULT_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def feature_positions(model, image_shape):
  """r, the number of positions of the model's last feature map on images of `image_shape` (no computation)."""
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  (features, _), _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
  return features.shape[1] * features.shape[2]


@dataclasses.dataclass
class Branch:
  """One method made ready to time: its config, the schedule entry it runs and a description of it."""
  spec: MethodSpec
  config: ml_collections.ConfigDict
  loss_fn: Any
  timed: str
  n: int | None
  chunk_size: int | None


def make_branch(spec, setting, *, num_devices, r, chunk_size):
  """The config and loss function of `spec` on `setting`, as the trainer would build them."""
  config = default_config()
  config.model, config.dtype, config.method = setting.model, setting.dtype, spec.base
  config.num_classes, config.image_size = setting.num_classes, setting.image_size
  config.batch_size = setting.batch_size * num_devices
  config.num_train_steps = 10**9  # only the learning-rate schedule reads it
  config.multimix.prob = 1.0  # time the MultiMix branch itself, not the coin flip
  if spec.n is not None:
    config.multimix.n = spec.n
  n, chunk = None, None
  if spec.base in _MULTIMIX_BASES:
    n = config.multimix.n
  if spec.base == 'dense_multimix':
    chunk = spec.chunk_size if spec.chunk_size is not None else chunk_size
    if chunk < 0:
      chunk = losses.dense_chunk_size(n, setting.batch_size, r, setting.num_classes)
    config.multimix.chunk_size = chunk
  schedule = methods.METHODS[spec.base](config)
  if len(schedule) == 1:
    if spec.stage not in (None, 0):
      raise BenchmarkError(f'method {spec.name!r}: {spec.base} has one schedule entry; drop _stage{spec.stage}.')
    entry = 0
  else:
    entry = 1 if spec.stage is None else spec.stage
    if not 0 <= entry < len(schedule):
      raise BenchmarkError(f'method {spec.name!r}: {spec.base} has schedule entries 0..{len(schedule) - 1}.')
  loss_fn = schedule[entry][1]
  if spec.base == 'manifold_mixup':
    timed = f'manifold_mixup at stage {entry} only'
  elif len(schedule) > 1:
    timed = f'{spec.base}, schedule entry {entry} only'
  elif spec.base == 'multimix':
    timed = f'MultiMix branch (prob 1), n = {n}'
  elif spec.base == 'dense_multimix':
    timed = f'Dense MultiMix branch (prob 1), n = {n}, r = {r}, ' + (f'chunks of {chunk}' if chunk else 'unchunked')
  else:
    timed = spec.base
  return Branch(spec=spec, config=config, loss_fn=loss_fn, timed=timed, n=n, chunk_size=chunk)


# ------------------------------------------------------------------------------------------ device helpers


def synthetic_batch(dp, key, b, image_shape, num_classes):
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


def memory_analysis(compiled):
  """XLA's memory figures for one device of a compiled step (bytes), or None where the backend gives none."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not implemented by every backend
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if analysis is None:
    return None
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes', 'temp_size_in_bytes',
            'generated_code_size_in_bytes')
  out = {f: int(getattr(analysis, f, 0) or 0) for f in fields}
  # Live at once during the step: inputs, outputs that do not reuse (donated) inputs, and scratch.
  out['step_bytes'] = (out['argument_size_in_bytes'] + out['output_size_in_bytes'] - out['alias_size_in_bytes'] +
                       out['temp_size_in_bytes'])
  return out


def device_memory_stats():
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
      jitted = dp.train_step(model=model, tx=tx, loss_fn=branch.loss_fn, config=branch.config)
      started = time.perf_counter()
      lowered = jitted.lower(self.state, batch, key)
      lowered_at = time.perf_counter()
      self.compiled = lowered.compile()
      self.lower_s, self.compile_s = lowered_at - started, time.perf_counter() - lowered_at
      self.memory = memory_analysis(self.compiled)
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


def _build(setting, *, parallelism, chunk_size, only=None, log=print):
  """Model, data-parallel wrapper, batch and the compiled methods of `setting` (or of the method `only`)."""
  dp = step_lib.DataParallel(parallelism)
  num_devices = len(dp.devices)
  model = models.create_model(setting.model, num_classes=setting.num_classes, dtype=step_lib.DTYPES[setting.dtype])
  r = feature_positions(model, setting.image_shape)
  specs = [parse_method(m) for m in (setting.methods if only is None else (only,))]
  branches = [make_branch(s, setting, num_devices=num_devices, r=r, chunk_size=chunk_size) for s in specs]
  tx, _ = step_lib.create_optimizer(branches[0].config, steps_per_epoch=1000)
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


# ----------------------------------------------------------------------------------------------- benchmarks


def benchmark_setting(setting, *, parallelism='shard_map', chunk_size=-1, peak_memory=None, log=print):
  """Compiles and times every method of `setting` interleaved; returns the setting's JSON-able result.

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
  failed = {m.branch.spec.name for m in compiled if m.error is not None}
  times = {name: ([] if name in failed else t) for name, t in times.items()}
  erm = times.get('erm')
  rows = []
  for method in compiled:
    name = method.branch.spec.name
    t = times[name]
    row = {
        'method': name,
        'timed': method.branch.timed,
        'n': method.branch.n,
        'chunk_size': method.branch.chunk_size,
        'lower_s': method.lower_s,
        'compile_s': None if method.compile_s is None else method.lower_s + method.compile_s,
        'step_s': statistics.median(t) if t else None,
        'step_s_min': min(t) if t else None,
        'step_s_rounds': t,
        'spread': (float(np.subtract(*np.percentile(t, [75, 25])) / statistics.median(t)) if len(t) > 1 else None),
        'images_per_s': global_batch / statistics.median(t) if t else None,
        'ratio_to_erm': statistics.median(t) / statistics.median(erm) if t and erm else None,
        # The same ratio taken round by round (each round's method against that round's ERM), then the median.
        'paired_ratio_to_erm': statistics.median(a / e for a, e in zip(t, erm)) if t and erm else None,
        'xla_memory': method.memory,
        'peak_memory': (peak_memory or {}).get(name),
        'final_loss': (None if method.metrics is None or method.error else
                       float(np.asarray(jax.device_get(method.metrics['loss'])).reshape(-1)[0])),
        'error': method.error,
    }
    rows.append(row)
  return {'setting': dataclasses.asdict(setting), 'global_batch_size': global_batch, 'r': r,
          'num_devices': len(dp.devices), 'parallelism': parallelism, 'methods': rows}


def measure_peak_memory(setting, method, *, parallelism='shard_map', chunk_size=-1):
  """Peak device memory of training `setting` with `method` alone (run in a fresh process: peaks never reset)."""
  _, _, (compiled,) = _build(setting, parallelism=parallelism, chunk_size=chunk_size, only=method,
                             log=lambda message: print(message, file=sys.stderr))
  compiled.run(max(1, setting.steps))
  if compiled.error is not None:
    return {'error': compiled.error}
  stats = device_memory_stats()
  return None if stats is None else {**stats, 'compile_s': compiled.lower_s + compiled.compile_s}


def _run_worker(request, timeout=3600):
  """Runs `request` in a fresh Python process (`_worker`); returns its JSON answer or {'error': ...}."""
  command = [sys.executable, '-c', 'from multimix_jax import benchmark; benchmark._worker()']
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
  setting = Setting(**{**request['setting'], 'methods': tuple(request['setting']['methods'])})
  if request['kind'] == 'peak':
    answer = measure_peak_memory(setting, request['method'], parallelism=request['parallelism'],
                                 chunk_size=request['chunk_size'])
  elif request['kind'] == 'torch':
    answer = torch_benchmark(setting, compile_model=request['compile'])
  else:
    raise ValueError(f'unknown worker request {request["kind"]!r}')
  sys.stdout.write('\n' + json.dumps(answer) + '\n')


# ---------------------------------------------------------------------------------------------- PyTorch side


def torch_benchmark(setting, *, compile_model=True):
  """ERM images/s of the same model, batch and precision in PyTorch (imported here only).

  torchvision's ResNet-50 or the PreActResNet-18 of SPEC §5 written in PyTorch, channels-last, autocast bfloat16
  when `setting.dtype` is bfloat16, `torch.compile`d, SGD (momentum 0.9, weight decay 1e-4), cross-entropy, on one
  synthetic batch; timed like the JAX side (median over rounds of `steps` steps, after warm-up).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {'error': 'torch is not installed'}
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  # PyTorch's usual fast settings: cuDNN picks its fastest kernels, float32 matmuls may use TF32 (as XLA's do).
  torch.backends.cudnn.benchmark = True
  torch.set_float32_matmul_precision('high')
  net = _torch_model(setting.model, setting.num_classes)
  if net is None:
    return {'error': f'no PyTorch version of {setting.model}'}
  net = net.to(device, memory_format=torch.channels_last).train()
  num_params = sum(p.numel() for p in net.parameters())
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  generator = torch.Generator(device=device).manual_seed(0)
  images = torch.randn(setting.batch_size, setting.channels, setting.image_size, setting.image_size, device=device,
                       generator=generator).contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, setting.num_classes, (setting.batch_size,), device=device, generator=generator)
  forward = torch.compile(net) if compile_model else net
  use_bf16 = setting.dtype == 'bfloat16'

  def run(steps):
    for _ in range(steps):
      optimizer.zero_grad(set_to_none=True)
      with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
        loss = torch.nn.functional.cross_entropy(forward(images), labels)
      loss.backward()
      optimizer.step()
    if device == 'cuda':
      torch.cuda.synchronize()
    return float(loss)

  started = time.perf_counter()
  run(1)  # compiles
  compile_s = time.perf_counter() - started
  run(setting.warmup)
  if device == 'cuda':
    torch.cuda.reset_peak_memory_stats()
  times = []
  for _ in range(setting.rounds):
    started = time.perf_counter()
    loss = run(setting.steps)
    times.append((time.perf_counter() - started) / setting.steps)
  step_s = statistics.median(times) if times else None
  return {
      'torch_version': torch.__version__,
      'device': torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu',
      'compiled': compile_model,
      'num_params': num_params,
      'compile_s': compile_s,
      'step_s': step_s,
      'step_s_rounds': times,
      'images_per_s': setting.batch_size / step_s if step_s else None,
      'peak_bytes': int(torch.cuda.max_memory_allocated()) if device == 'cuda' else None,
      'final_loss': loss if times else None,
  }


def _torch_model(name, num_classes):
  """torchvision's ResNet-50 v1.5, or PreActResNet-18 as in SPEC §5 (AlignMixup's PyTorch definition)."""
  if name == 'resnet50':
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision.models.resnet50(num_classes=num_classes)
  if name != 'preact_resnet18':
    return None
  from torch import nn  # pylint: disable=g-import-not-at-top
  relu = nn.functional.relu

  class PreActBlock(nn.Module):

    def __init__(self, in_planes, planes, stride):
      super().__init__()
      self.bn1, self.bn2 = nn.BatchNorm2d(in_planes), nn.BatchNorm2d(planes)
      self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride, bias=False)
                       if stride != 1 or in_planes != planes else None)

    def forward(self, x):
      out = relu(self.bn1(x))
      shortcut = self.shortcut(out) if self.shortcut is not None else x
      out = self.conv1(out)
      return self.conv2(relu(self.bn2(out))) + shortcut

  class PreActResNet18(nn.Module):

    def __init__(self):
      super().__init__()
      self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
      blocks, in_planes = [], 64
      for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for s in (stride, 1):
          blocks.append(PreActBlock(in_planes, planes, s))
          in_planes = planes
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Linear(512, num_classes)

    def forward(self, x):
      return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

  return PreActResNet18()


# ---------------------------------------------------------------------------------------------------- input


def input_benchmark(datasets, *, batch_size, batches, warmup, mock_examples, data_dir=None, log=print):
  """Images/s of `multimix_jax.data.train_batches` alone, per host (imports TensorFlow, only here).

  `digits` is read for real (built offline in `data_dir` on first use); any other dataset is read under
  `tfds.testing.mock_data` (random examples of the dataset's features, metadata written to a temporary
  directory), so its reading, augmentation and normalisation are measured without downloading it. Mocked
  ImageNet JPEGs are tiny (5 to 49 pixels), so its figure leaves out most of the real decoding cost.
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from multimix_jax import data  # pylint: disable=g-import-not-at-top

  for name in datasets:
    if name not in data.DATASETS:
      raise BenchmarkError(f'--input_datasets: {name!r} is unknown; choose from {", ".join(data.DATASETS)}.')
  rows = []
  for name in datasets:
    spec = data.DATASETS[name]
    config = default_config()
    config.dataset, config.num_classes, config.data_dir = name, spec.num_classes, data_dir
    config.image_size = spec.size or 224
    mocked = name != 'digits'
    with contextlib.ExitStack() as stack:
      if mocked:
        config.data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        _write_mock_metadata(tfds, config.data_dir, name, {'train': mock_examples, spec.eval_split: mock_examples})
        stack.enter_context(tfds.testing.mock_data(num_examples=mock_examples, data_dir=config.data_dir,
                                                   policy=tfds.testing.MockPolicy.USE_FILES))
      started = time.perf_counter()
      stream = data.train_batches(config, local_batch_size=batch_size, seed=0)
      for _ in range(warmup):
        next(stream)
      startup_s = time.perf_counter() - started
      started = time.perf_counter()
      for _ in range(batches):
        batch = next(stream)
      elapsed = time.perf_counter() - started
    row = {'dataset': name, 'source': 'tfds.testing.mock_data' if mocked else 'real (offline)',
           'image_shape': list(batch['image'].shape[1:]), 'batch_size': batch_size, 'batches': batches,
           'startup_s': startup_s, 'images_per_s': batch_size * batches / elapsed}
    log(f'[input] {name}: {row["images_per_s"]:,.0f} images/s')
    rows.append(row)
  return rows


def _write_mock_metadata(tfds, data_dir, name, split_sizes):
  """The dataset_info of `name` with these split sizes, which `mock_data(policy=USE_FILES)` reads."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0) for split, size in split_sizes.items()]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


# ---------------------------------------------------------------------------------------------------- report


def _fmt(value, spec='.2f', none='n/a'):
  return none if value is None else format(value, spec)


def _mib(value):
  if value is None:
    return 'n/a'
  return f'{value / _MIB:,.1f}' if value < 100 * _MIB else f'{value / _MIB:,.0f}'


def setting_title(result, backend):
  s = result['setting']
  return (f"{s['model']}, b = {s['batch_size']} per device × {result['num_devices']} {backend} device(s), "
          f"{s['image_size']}×{s['image_size']}×{s['channels']}, c = {s['num_classes']}, r = {result['r']}, "
          f"{s['dtype']}; " + (f"median of {s['rounds']} interleaved rounds × {s['steps']} steps" if s['rounds']
                               else 'compiled only'))


def markdown_setting(result, backend):
  lines = [f'#### {setting_title(result, backend)}', '',
           '| method | timed | compile (s) | step (ms) | spread | images/s | × erm | XLA step memory (MiB) | '
           'peak device memory (MiB) |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for row in result['methods']:
    if row['error'] is not None:
      lines.append(f"| {row['method']} | {row['timed']} | failed: {row['error'][:200]} | | | | | | |")
      continue
    step_ms = None if row['step_s'] is None else 1e3 * row['step_s']
    spread = None if row['spread'] is None else f"{100 * row['spread']:.0f}%"
    xla = row['xla_memory'] and row['xla_memory']['step_bytes']
    peak = row['peak_memory'] and row['peak_memory'].get('peak_bytes_in_use')
    lines.append(f"| {row['method']} | {row['timed']} | {row['compile_s']:.1f} | {_fmt(step_ms)} | "
                 f"{_fmt(spread, 's')} | {_fmt(row['images_per_s'], ',.0f')} | "
                 f"{_fmt(row['ratio_to_erm'], '.3f', '—')} | {_mib(xla)} | {_mib(peak)} |")
  torch_result = result.get('torch')
  if torch_result is not None:
    jax_erm = next((r for r in result['methods'] if r['method'] == 'erm'), None)
    lines += ['', '| framework | ERM images/s | step (ms) | compile (s) |', '| --- | ---: | ---: | ---: |']
    if jax_erm is not None:
      lines.append(f"| JAX (this package) | {_fmt(jax_erm['images_per_s'], ',.0f')} | "
                   f"{_fmt(jax_erm['step_s'] and 1e3 * jax_erm['step_s'])} | {jax_erm['compile_s']:.1f} |")
    if 'error' in torch_result:
      lines.append(f"| PyTorch | {torch_result['error']} | | |")
    else:
      label = f"PyTorch {torch_result['torch_version']}" + (' (torch.compile)' if torch_result['compiled'] else '')
      lines.append(f"| {label} | {_fmt(torch_result['images_per_s'], ',.0f')} | "
                   f"{_fmt(torch_result['step_s'] and 1e3 * torch_result['step_s'])} | "
                   f"{torch_result['compile_s']:.1f} |")
  return '\n'.join(lines)


def check_targets(results, backend):
  """The issue's targets against the measurements: [(target, measured, 'yes' / 'no' / 'n/a')]."""
  checks = []
  for result in results:
    model = result['setting']['model']
    rows = {r['method']: r for r in result['methods']}
    erm = rows.get('erm')
    if erm is None:
      continue
    for name, row in rows.items():
      spec = parse_method(name)
      if spec.base in _MULTIMIX_BASES and row['n'] == 1000 and row['ratio_to_erm'] is not None:
        limit = TARGETS['multimix_step' if spec.base == 'multimix' else 'dense_multimix_step']
        checks.append((f'{model}: {name} step ≤ {limit} × erm', f"{row['ratio_to_erm']:.3f}",
                       'yes' if row['ratio_to_erm'] <= limit else 'no'))
      if spec.base == 'dense_multimix' and row['n'] == 1000:
        limit = TARGETS['dense_multimix_peak_memory']
        peak, erm_peak = (r['peak_memory'] and r['peak_memory'].get('peak_bytes_in_use') for r in (row, erm))
        if peak and erm_peak:
          checks.append((f'{model}: {name} peak device memory ≤ {limit} × erm', f'{peak / erm_peak:.3f}',
                         'yes' if peak / erm_peak <= limit else 'no'))
        elif row['xla_memory'] and erm['xla_memory']:
          ratio = row['xla_memory']['step_bytes'] / erm['xla_memory']['step_bytes']
          checks.append((f'{model}: {name} peak device memory ≤ {limit} × erm',
                         f'{ratio:.3f} (XLA step memory; {backend} reports no peak)', 'n/a'))
    if model == 'resnet50' and backend == 'gpu' and erm['images_per_s']:
      limit, per_gpu = TARGETS['resnet50_erm_images_per_s'], erm['images_per_s'] / result['num_devices']
      checks.append((f'resnet50 ERM > {limit:,.0f} images/s per GPU', f'{per_gpu:,.0f}',
                     'yes' if per_gpu > limit else 'no'))
    torch_result = result.get('torch')
    if torch_result and torch_result.get('images_per_s') and erm['images_per_s']:
      ratio = erm['images_per_s'] / result['num_devices'] / torch_result['images_per_s']
      checks.append((f'{model}: JAX ERM images/s ≥ PyTorch', f'{ratio:.2f} ×', 'yes' if ratio >= 1 else 'no'))
  return checks


def markdown_report(report):
  backend = report['environment']['backend']
  parts = [f"Environment: {report['environment']['summary']}", '']
  for result in report['settings']:
    parts += [markdown_setting(result, backend), '']
  checks = check_targets(report['settings'], backend)
  if checks:
    parts += ['#### Targets', '', '| target | measured | met |', '| --- | --- | --- |']
    parts += [f'| {t} | {m} | {ok} |' for t, m, ok in checks]
    parts.append('')
  if report.get('input'):
    parts += ['#### Input pipeline (per host)', '',
              '| dataset | source | image shape | batch | images/s | start-up (s) |',
              '| --- | --- | --- | ---: | ---: | ---: |']
    parts += [f"| {r['dataset']} | {r['source']} | {'×'.join(map(str, r['image_shape']))} | {r['batch_size']} | "
              f"{r['images_per_s']:,.0f} | {r['startup_s']:.1f} |" for r in report['input']]
    parts.append('')
  return '\n'.join(parts)


def environment():
  devices = jax.devices()
  env = {
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'num_devices': len(devices),
      'jax_version': jax.__version__,
      'python': platform.python_version(),
      'cpu_count': os.cpu_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'prng_impl': jax.config.jax_default_prng_impl,
      'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
      'command': ' '.join(['python -m multimix_jax.benchmark', *sys.argv[1:]]),
  }
  env['summary'] = (f"{env['num_devices']} × {env['device_kind']} ({env['backend']}), {env['cpu_count']} CPU cores, "
                    f"jax {env['jax_version']}, Python {env['python']}")
  return env


# ------------------------------------------------------------------------------------------------------- CLI


def _parser():
  parser = argparse.ArgumentParser(prog='python -m multimix_jax.benchmark', description=__doc__.split('\n\n')[0])
  parser.add_argument('--preset', choices=PRESETS,
                      help="named settings (default: 'cpu' on a CPU backend, else 'gpu')")
  parser.add_argument('--model', choices=sorted(models.MODELS), help='benchmark one model instead of a preset')
  parser.add_argument('--batch_size', type=int, help='b, per device (default 128, the paper\'s)')
  parser.add_argument('--image_size', type=int, help="H = W (default: the model's dataset, e.g. 224 for resnet50)")
  parser.add_argument('--channels', type=int, help="C (default: 1 for small_cnn, else 3)")
  parser.add_argument('--num_classes', type=int, help="c (default: 10 small_cnn, 100 CIFAR models, 1000 resnet50)")
  parser.add_argument('--dtype', choices=sorted(step_lib.DTYPES), help='compute dtype (default float32)')
  parser.add_argument('--methods', help=f'comma-separated, e.g. erm,multimix_n1000,dense_multimix_n1000_chunk250 '
                      f'(default with --model: {",".join(ALL_METHODS)})')
  parser.add_argument('--steps', type=int, help='consecutive steps per method per round (default 10)')
  parser.add_argument('--rounds', type=int, help='interleaved rounds (default 10); 0 compiles and reports memory only')
  parser.add_argument('--warmup', type=int, help='steps per method after compiling, untimed (default 3)')
  parser.add_argument('--chunk_size', type=int, default=-1,
                      help=f'Dense MultiMix chunk over n: -1 automatic (largest array <= {losses.DENSE_CHUNK_ELEMENTS:,} '
                      'elements), 0 all n at once, K > 0 chunks of K (a _chunk<K> method suffix overrides)')
  parser.add_argument('--parallelism', choices=('shard_map', 'pmap'), default='shard_map')
  parser.add_argument('--prng_impl', choices=('threefry2x32', 'rbg', 'unsafe_rbg'),
                      help="JAX's PRNG for every key (default: JAX's, threefry2x32, as the trainer); rbg may be "
                      'cheaper where sampling MultiMix\'s weights shows in the step')
  parser.add_argument('--torch', action=argparse.BooleanOptionalAction, default=None,
                      help='also time PyTorch on the same model, batch and precision (default: on with the gpu preset)')
  parser.add_argument('--torch_compile', action=argparse.BooleanOptionalAction, default=True,
                      help='torch.compile the PyTorch model')
  parser.add_argument('--peak_memory', action=argparse.BooleanOptionalAction, default=None,
                      help='measure each method\'s peak device memory in its own process (default: where the '
                      'backend reports memory, i.e. not on CPU)')
  parser.add_argument('--json', default='benchmark.json', help="where to write the results ('' to skip)")
  parser.add_argument('--input', action='store_true', help='benchmark the TFDS input pipeline instead')
  parser.add_argument('--input_datasets', default='digits,cifar10', help='with --input: datasets, comma-separated')
  parser.add_argument('--input_batches', type=int, default=200, help='with --input: batches timed')
  parser.add_argument('--mock_examples', type=int, default=2048, help='with --input: examples of a mocked dataset')
  parser.add_argument('--data_dir', help='with --input: TFDS data_dir (digits is built there on first use)')
  return parser


def settings_from_args(args, backend):
  """The settings the flags ask for; raises BenchmarkError on any value that cannot work.

  With --model, one setting from the flags. Without, a preset (default: 'cpu' on a CPU, else 'gpu'), of which
  --methods, --steps, --rounds, --warmup and --torch override the values given; its shapes are fixed.
  """
  for name in ('batch_size', 'steps', 'image_size', 'channels', 'num_classes'):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise BenchmarkError(f'--{name}={value} must be >= 1.')
  for name in ('rounds', 'warmup'):
    if getattr(args, name) is not None and getattr(args, name) < 0:
      raise BenchmarkError(f'--{name}={getattr(args, name)} must be >= 0.')
  if args.chunk_size < -1:
    raise BenchmarkError(f'--chunk_size={args.chunk_size} must be -1 (automatic), 0 (no chunks) or positive.')
  if args.model is not None and args.preset is not None:
    raise BenchmarkError('--preset and --model exclude each other: a preset names its own models.')
  method_names = None
  if args.methods is not None:
    method_names = tuple(m.strip() for m in args.methods.split(',') if m.strip())
    if not method_names:
      raise BenchmarkError('--methods is empty.')
  overrides = {k: getattr(args, k) for k in ('steps', 'rounds', 'warmup') if getattr(args, k) is not None}
  if method_names:
    overrides['methods'] = method_names
  if args.model is None:
    shaped = [f'--{k}' for k in ('batch_size', 'image_size', 'channels', 'num_classes', 'dtype')
              if getattr(args, k) is not None]
    if shaped:
      raise BenchmarkError(f'{", ".join(shaped)} need --model: a preset fixes its own shapes and dtype.')
    settings = [dataclasses.replace(s, **overrides) for s in _preset(args.preset or
                                                                      ('cpu' if backend == 'cpu' else 'gpu'))]
  else:
    size, channels, classes = MODEL_SHAPES[args.model]
    settings = [Setting(args.model, args.batch_size or 128, args.image_size or size, args.channels or channels,
                        args.num_classes or classes, args.dtype or 'float32', method_names or ALL_METHODS,
                        steps=overrides.get('steps', 10), rounds=overrides.get('rounds', 10),
                        warmup=overrides.get('warmup', 3))]
  # PyTorch runs where asked, or by default with the gpu preset on a GPU (elsewhere it would time a CPU).
  settings = [dataclasses.replace(s, torch=s.torch and backend == 'gpu' if args.torch is None else args.torch)
              for s in settings]
  for setting in settings:
    for name in setting.methods:
      parse_method(name)
    if len(set(setting.methods)) != len(setting.methods):
      raise BenchmarkError(f'--methods lists a method twice: {",".join(setting.methods)}.')
    if setting.num_classes < 2:
      raise BenchmarkError(f'--num_classes={setting.num_classes} must be >= 2.')
  return settings


def run(args, log=print):
  """Runs what `args` asks; returns the report (also written to args.json when set)."""
  if args.prng_impl:
    jax.config.update('jax_default_prng_impl', args.prng_impl)
  report = {'environment': environment(), 'settings': [], 'input': None}
  backend = report['environment']['backend']
  if args.input:
    datasets = [d.strip() for d in args.input_datasets.split(',') if d.strip()]
    if args.input_batches < 1 or args.mock_examples < 1 or (args.batch_size is not None and args.batch_size < 1):
      raise BenchmarkError('--input_batches, --mock_examples and --batch_size must be >= 1.')
    report['input'] = input_benchmark(datasets, batch_size=args.batch_size or 128, batches=args.input_batches,
                                      warmup=5, mock_examples=args.mock_examples, data_dir=args.data_dir, log=log)
  else:
    settings = settings_from_args(args, backend)
    peak = args.peak_memory if args.peak_memory is not None else device_memory_stats() is not None
    # Isolated processes first, while this one holds (almost) no device memory.
    extra = []
    for setting in settings:
      extra.append({'torch': None, 'peak': None})
      common = {'setting': dataclasses.asdict(setting), 'parallelism': args.parallelism, 'chunk_size': args.chunk_size,
                'prng_impl': args.prng_impl}
      if setting.torch:
        log(f'[{setting.model}] PyTorch...')
        extra[-1]['torch'] = (_run_worker({**common, 'kind': 'torch', 'compile': args.torch_compile})
                               if importlib.util.find_spec('torch') else {'error': 'torch is not installed'})
      if peak:
        extra[-1]['peak'] = {}
        for method in setting.methods:
          log(f'[{setting.model}] peak memory of {method} (own process)...')
          extra[-1]['peak'][method] = _run_worker({**common, 'kind': 'peak', 'method': method})
    for setting, isolated in zip(settings, extra):
      result = benchmark_setting(setting, parallelism=args.parallelism, chunk_size=args.chunk_size,
                                 peak_memory=isolated['peak'], log=log)
      result['torch'] = isolated['torch']
      report['settings'].append(result)
  report['markdown'] = markdown_report(report)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(report, f, indent=2)
  return report


def main(argv=None):
  parser = _parser()
  args = parser.parse_args(argv)
  # JAX would otherwise take 75% of a GPU's memory at start, leaving too little to the isolated processes (PyTorch,
  # peak memory) run beside it. Set the variable yourself to override.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  try:
    report = run(args, log=lambda message: print(message, file=sys.stderr, flush=True))
  except BenchmarkError as e:
    parser.error(str(e))
  print(report['markdown'])
  if args.json:
    print(f'Results written to {args.json}', file=sys.stderr)
  return report


if __name__ == '__main__':
  main()
