"""The preflight of a run: every step it would compile, compiled for a target it does not have.

`python -m multimix_jax.main --config=configs/imagenet_r50.py --compile_for=v5e-32` compiles each branch of the
method's mixing schedule and the eval step at the config's global batch spread over the target's chips, on the
target's (multi-host) topology, with no dataset and no accelerator, and prints one table (`roofline.markdown`). It
fails, with one message saying what to change, when a step does not fit in a chip's memory.
"""

import functools
import re
import time

from multimix_jax import models
from multimix_jax.data import catalog
from multimix_jax.data import device_augment
from multimix_jax.preflight import compile as compile_lib
from multimix_jax.preflight import hardware
from multimix_jax.preflight import roofline
from multimix_jax.trainer import methods
from multimix_jax.trainer import optim
from multimix_jax.trainer import step as step_lib

# The learning-rate schedule's boundaries are constants of the compiled step, not shapes: any epoch length gives
# the same program size. The preflight needs no dataset, so it uses this one.
_STEPS_PER_EPOCH = 1000


class DoesNotFit(RuntimeError):
  """A step of the run needs more memory per chip than the target has; the message says what to change.
  args: (message, the preflight's result with its table)."""


class StepFailed(RuntimeError):
  """A step did not compile for the target for another reason (the compiler's message); args as DoesNotFit's."""


def branch_name(branch: methods.Branch) -> str:
  """'multimix (p = 0.5)', 'manifold_mixup stage 2 (p = 0.33)': a schedule entry as the table names it."""
  fn = branch.loss_fn
  keywords = fn.keywords if isinstance(fn, functools.partial) else {}
  name = getattr(fn.func if isinstance(fn, functools.partial) else fn, '__name__', 'loss')
  if 'stage' in keywords:
    name += f' stage {keywords["stage"]}'
  return f'train: {name} (p = {branch.probability:.2g})'


def compile_branches(config, target: hardware.Target, branches, *, with_eval=False, log=print) -> list[dict]:
  """The train steps of `branches` (schedule entries built from `config`), and the eval step if asked, compiled for
  `target` as the trainer would build them from `config`: per-chip rows (`roofline.chip_row`)."""
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top  # its device augmentation
  from multimix_jax.data import sources  # pylint: disable=g-import-not-at-top  # TFDS: only for a run's dataset
  sources.fill_config(config)  # a named dataset from its table; any other from its data
  image_shape = catalog.image_shape(config)
  augment = train.device_augmentation(config)
  dp = step_lib.DataParallel('shard_map', devices=target.devices())
  model = models.create_model(config.model, num_classes=config.num_classes, dtype=step_lib.DTYPES[config.dtype],
                              bn_axis_name=step_lib.AXIS if config.sync_batch_stats else None,
                              **models.config_fields(config))
  tx, _ = optim.create_optimizer(config, _STEPS_PER_EPOCH)
  count_on_cpu = target.chip.platform != 'tpu'
  costs = []
  for branch in branches:
    name = branch_name(branch)
    log(f'[{target.name}] compiling {name}...')
    costs.append(compile_lib.compile_train_step(name, dp, model=model, tx=tx, loss_fn=branch.loss_fn,
                                                image_shape=image_shape, global_batch=config.batch_size,
                                                count_on_cpu=count_on_cpu,
                                                augment=functools.partial(device_augment.train_images,
                                                                          augment=augment)))
  if with_eval:
    log(f'[{target.name}] compiling eval...')
    costs.append(compile_lib.compile_eval_step(
        'eval', dp, model=model, tx=tx, image_shape=image_shape, global_batch=config.eval_batch_size,
        count_on_cpu=count_on_cpu, normalise=functools.partial(device_augment.eval_images, augment=augment)))
  return [roofline.chip_row(cost, target, config.dtype) for cost in costs]


def preflight(config, target_name: str, log=print) -> dict:
  """Compiles every step of the run `config` for `target_name`; returns {'target', 'rows', 'markdown', 'fits'}.

  Raises hardware.TargetError for an unknown target, ValueError (one message listing every problem) for a config
  that cannot run on that many chips, DoesNotFit when a step needs more memory than a chip has, and StepFailed
  when the target's compiler fails on a step for another reason.
  """
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top  # its validate_config
  target = hardware.resolve(target_name)
  train.validate_config(config, target.num_devices, target.hosts)
  started = time.perf_counter()
  rows = compile_branches(config, target, methods.METHODS[config.method](config), with_eval=True, log=log)
  parallelism = '' if config.parallelism == 'shard_map' else ' (compiled with shard_map: pmap maps the same step)'
  title = (f'{config.model} {config.method}, batch {config.batch_size} ({config.batch_size // target.chips} a chip), '
           f'{config.dtype}, on {target.name}{parallelism}')
  result = {'target': target.describe(), 'rows': rows, 'markdown': roofline.markdown(rows, target, title, config.dtype),
            'compile_s': time.perf_counter() - started, 'fits': all(row['fits'] for row in rows)}
  failed = [row for row in rows if row['error'] and row['fits'] is not False]
  too_big = [row for row in rows if row['fits'] is False]
  if too_big:  # said first: what does not fit, and by how much; then the steps the compiler could not build
    raise DoesNotFit(_advice(too_big, config, target) + ''.join(f' {_not_built(row, target)}' for row in failed),
                     result)
  if failed:
    raise StepFailed(f'{failed[0]["step"]} did not compile for {target.name}: {failed[0]["error"]}', result)
  return result


def _not_built(row, target) -> str:
  """One sentence for a step the target's compiler failed on (not for its size)."""
  error = ' '.join((row['error'] or '').split())
  error = error[:200] + ('...' if len(error) > 200 else '')
  if re.search(r'cuda|device', error, re.IGNORECASE):
    return (f'{row["step"]} was not built: its compiler for {target.name} needs a device this machine does not have '
            f'({error}).')
  return f'{row["step"]} did not compile for {target.name} ({error}).'


def _advice(rows, config, target) -> str:
  """What to change when `rows` do not fit: each such step, its bytes against the chip's, and the keys that shrink
  them."""
  usable = rows[0]['usable_hbm_bytes'] / 2**30

  def need(row):
    if row['total_bytes'] is not None:
      return (f'{row["step"]} needs {row["total_bytes"] / 2**30:.2f} GiB per chip '
              f'({row["total_bytes"] / 2**30 - usable:.2f} GiB more than fits)')
    refusal = re.search(r'RESOURCE_EXHAUSTED: (.*?)(?:\.(?: |$)|$)', row['error'] or '')  # the compiler's sizes
    return f'{row["step"]} cannot fit ({refusal[1] if refusal else "the compiler refused it"})'

  fixes = [f'lower --config.batch_size (now {config.batch_size}, {config.batch_size // target.chips} per chip) or '
           'use a larger slice']
  if config.dtype == 'float32':
    fixes.append('compute in --config.dtype=bfloat16')
  if config.method == 'dense_multimix':
    fixes.append(f'chunk the dense loss with a smaller --config.multimix.chunk_size (now {config.multimix.chunk_size})')
  return (', '.join(need(row) for row in rows) + f' on {target.name}, which has {usable:.2f} GiB usable per chip: '
          + '; '.join(fixes) + '.')
