"""The analysis's per-device functions, mapped over every device like the trainer's steps (`step.DataParallel`).

`evaluate_fn` returns, besides the trainer's own `eval_step` sums, every example's pooled embedding and logits;
`attack_fn` returns every example's prediction under FGSM and PGD. Both are compiled once (the budgets and the PGD
step size are traced arguments) and run with the run's parallelism (`shard_map` under `jax.jit`, or `pmap`). Rows
of padding come back like any other: the caller drops them with the batch's mask. The benchmark's `--attacks` mode
(`multimix_jax.benchmark.attack_timing`) times them on synthetic batches of any model.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from multimix_jax.analysis import attacks
from multimix_jax.trainer import step as step_lib

AXIS = step_lib.AXIS


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


def attack_fn(dp, model, mean, std, *, pgd_steps: int, pgd_random_start: bool = True, kinds=('fgsm', 'pgd')):
  """(state, batch, key data, fgsm_eps, pgd_eps, pgd_step_size) -> the predictions (B,) under each attack of
  `kinds`, over all devices.

  The batch holds normalised images, (pixels − mean) / std per channel; the attacks perturb pixels in [0, 1] and
  normalise again. The budgets and the step size are in pixel units, traced (one compilation for any value);
  `pgd_steps` and `pgd_random_start` are static. `key` is raw key data (replicated); each device folds in its
  index for PGD's random start.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)

  def body(state, batch, key, fgsm_eps, pgd_eps, pgd_step_size):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}

    def logits_fn(pixels):
      return model.apply(variables, (pixels - mean) / std, train=False)[1]

    pixels = jnp.clip(batch['image'] * std + mean, 0.0, 1.0)
    labels = batch['label']
    device_key = jax.random.fold_in(jax.random.wrap_key_data(key), jax.lax.axis_index(AXIS))
    adversarial = {
        'fgsm': lambda: attacks.fgsm(logits_fn, pixels, labels, fgsm_eps),
        'pgd': lambda: attacks.pgd(logits_fn, pixels, labels, pgd_eps, device_key, steps=pgd_steps,
                                   step_size=pgd_step_size, random_start=pgd_random_start),
    }
    return tuple(jnp.argmax(logits_fn(adversarial[kind]()), -1) for kind in kinds)

  return _map(dp, body, ('state', 'batch', 'state', 'scalar', 'scalar', 'scalar'), len(kinds))
