"""The analysis's per-device functions, mapped over every device like the trainer's steps (`step.DataParallel`).

`evaluate_fn` returns, besides the trainer's own `eval_step` sums, every example's pooled embedding and logits;
`attack_fn` returns every example's prediction under FGSM and PGD. Both are compiled once (ε and the PGD step size
are traced arguments) and run with the run's parallelism (`shard_map` under `jax.jit`, or `pmap`). Rows of padding
come back like any other: the caller drops them with the batch's mask. `time_attacks` times them on synthetic
batches of any model (no dataset, no TensorFlow).
"""

import dataclasses
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from multimix_jax import models
from multimix_jax import step as step_lib
from multimix_jax.analysis import attacks

AXIS = step_lib.AXIS


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """PGD's fixed settings; ε itself is an argument of the compiled function."""
  steps: int = 10
  step_fraction: float = 0.25  # step size = step_fraction · ε (2/255 at ε = 8/255, as in Madry et al.)
  random_start: bool = True


def _map(dp, body, args, num_per_example_out, replicated_out=()):
  """jit(shard_map) or pmap of `body`, whose arguments are `args`: 'state' (placed by dp.put_state), 'batch'
  (dp.put_batch) or 'scalar' (a host number). Outputs: `num_per_example_out` per-example arrays (to host, padding
  included), then the replicated ones (to host)."""
  mapped = dp.map(body, in_specs=tuple(P(AXIS) if a == 'batch' else P() for a in args),
                  out_specs=(P(AXIS),) * num_per_example_out + tuple(P() for _ in replicated_out),
                  pmap_in_axes=tuple(None if a == 'scalar' else 0 for a in args))

  def run(*values):
    outputs = mapped(*values)
    per_example = [_to_host(x, dp) for x in outputs[:num_per_example_out]]
    replicated = list(outputs[num_per_example_out:])
    return (*per_example, *replicated)

  return run


def _to_host(x, dp):
  """A per-example output (global, or (devices, b, ...) under pmap) -> numpy (examples, ...) in batch order."""
  if jax.process_count() > 1:
    x = multihost_utils.process_allgather(x, tiled=True)
  x = np.asarray(x)
  return x.reshape(-1, *x.shape[2:]) if dp.parallelism == 'pmap' else x


def evaluate_fn(dp, model):
  """(state, batch) -> (pooled (B, d), logits (B, c), labels (B,), mask (B,), eval_step's sums), over all devices.

  `state` needs `params` and `batch_stats` (a step.TrainState, replicated with dp.put_state); `batch` as
  dp.put_batch of data.eval_batches. The sums are exactly the trainer's evaluation of the batch.
  """

  def body(state, batch):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    features, logits = model.apply(variables, batch['image'], train=False)
    pooled = features.astype(jnp.float32).mean(axis=(1, 2))
    return (pooled, logits.astype(jnp.float32), batch['label'], batch['mask'],
            step_lib.eval_step(state, batch, model=model))

  return _map(dp, body, ('state', 'batch'), 4, replicated_out=('sums',))


def attack_fn(dp, model, mean, std, settings: AttackSettings = AttackSettings(), kinds=('fgsm', 'pgd')):
  """(state, batch, key data, ε) -> the predictions (B,) under each attack of `kinds`, over all devices.

  The batch holds normalised images, (pixels − mean) / std per channel; the attacks perturb pixels in [0, 1] and
  normalise again. `key` is raw key data (replicated); each device folds in its index for PGD's random start.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)

  def body(state, batch, key, eps):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}

    def logits_fn(pixels):
      return model.apply(variables, (pixels - mean) / std, train=False)[1]

    pixels = jnp.clip(batch['image'] * std + mean, 0.0, 1.0)
    labels = batch['label']
    device_key = jax.random.fold_in(jax.random.wrap_key_data(key), jax.lax.axis_index(AXIS))
    adversarial = {
        'fgsm': lambda: attacks.fgsm(logits_fn, pixels, labels, eps),
        'pgd': lambda: attacks.pgd(logits_fn, pixels, labels, eps, device_key, steps=settings.steps,
                                   step_size=settings.step_fraction * eps, random_start=settings.random_start),
    }
    return tuple(jnp.argmax(logits_fn(adversarial[kind]()), -1) for kind in kinds)

  return _map(dp, body, ('state', 'batch', 'state', 'scalar'), len(kinds))


def time_attacks(model_name: str, *, image_size: int, channels: int, num_classes: int, batch_size: int,
                 dtype: str = 'float32', eps: float = 8 / 255, settings: AttackSettings = AttackSettings(),
                 rounds: int = 5, parallelism: str = 'shard_map') -> dict:
  """Seconds per global batch of an evaluation pass, FGSM and PGD on synthetic data (no dataset, no TensorFlow).

  `batch_size` is per device; every device is used. Each figure is the median over `rounds` of one call ended by
  block_until_ready, after one call that compiles; the compile times are reported too.
  """
  dp = step_lib.DataParallel(parallelism)
  model = models.create_model(model_name, num_classes=num_classes, dtype=step_lib.DTYPES[dtype])
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, channels), jnp.float32))
  state = dp.put_state(step_lib.TrainState(step=np.zeros((), np.int32), params=variables['params'],
                                           batch_stats=variables.get('batch_stats', {}), opt_state=()))
  global_batch = batch_size * len(dp.devices)
  rng = np.random.default_rng(0)
  batch = dp.put_batch({
      'image': rng.standard_normal((global_batch, image_size, image_size, channels), np.float32),
      'label': rng.integers(0, num_classes, global_batch).astype(np.int32),
      'mask': np.ones(global_batch, bool)})
  mean, std = (0.5,) * channels, (0.25,) * channels
  key = dp.put_state(np.asarray(jax.random.key_data(jax.random.key(1))))
  trainer_eval = dp.eval_step(model=model)
  evaluate = evaluate_fn(dp, model)
  fgsm = attack_fn(dp, model, mean, std, settings, kinds=('fgsm',))
  pgd = attack_fn(dp, model, mean, std, settings, kinds=('pgd',))
  eps = np.float32(eps)
  calls = {
      'trainer_eval': lambda: trainer_eval(state, batch),
      'eval': lambda: evaluate(state, batch),
      'fgsm': lambda: fgsm(state, batch, key, eps),
      'pgd': lambda: pgd(state, batch, key, eps),
  }
  result = {'model': model_name, 'image_shape': [image_size, image_size, channels], 'num_classes': num_classes,
            'batch_size_per_device': batch_size, 'devices': len(dp.devices), 'platform': jax.devices()[0].platform,
            'dtype': dtype, 'pgd_steps': settings.steps, 'seconds': {}, 'compile_and_first_call_s': {}}
  for name, call in calls.items():
    started = time.perf_counter()
    jax.block_until_ready(call())
    result['compile_and_first_call_s'][name] = time.perf_counter() - started
  for name, call in calls.items():
    times = []
    for _ in range(rounds):
      started = time.perf_counter()
      jax.block_until_ready(call())
      times.append(time.perf_counter() - started)
    result['seconds'][name] = statistics.median(times)
  result['ratio_to_trainer_eval'] = {k: v / result['seconds']['trainer_eval'] for k, v in result['seconds'].items()}
  return result
