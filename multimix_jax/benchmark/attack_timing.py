"""`--attacks`: what the analysis's robustness figures cost, against the trainer's evaluation, per setting.

Four passes over one synthetic batch of the setting's model and shapes (made on the host, every device, no dataset,
no TensorFlow): the trainer's eval step, the analysis's evaluation pass (features and logits), FGSM and PGD (each
followed by the evaluation of the attacked batch), compiled by the analysis's own functions
(`multimix_jax.analysis.evaluation`). After one call that compiles, each round times every pass once, interleaved
as the training benchmark does; a pass's ratio to the trainer's eval is the geometric mean of the paired round
ratios with its 95% interval (`ratios.paired_ratio`).
"""

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from multimix_jax import models
from multimix_jax.analysis import evaluation
from multimix_jax.benchmark import ratios
from multimix_jax.benchmark.presets import Setting
from multimix_jax.trainer import step as step_lib

PASSES = ('trainer_eval', 'eval', 'fgsm', 'pgd')
_TITLES = {'trainer_eval': "trainer's eval step", 'eval': 'analysis eval pass (features, logits)',
           'fgsm': 'FGSM (one forward + backward, then the eval)', 'pgd': 'PGD-{steps}'}
# The cost of an attack does not depend on its budget: these are the shipped CIFAR values.
_EPS, _STEP_SIZE = 8 / 255, 2 / 255


def time_setting(setting: Setting, *, pgd_steps: int, parallelism: str = 'shard_map', log=print) -> dict:
  """Seconds per global batch of each pass of `PASSES` on `setting` (b per device, every device), JSON-able."""
  dp = step_lib.DataParallel(parallelism)
  model = models.create_model(setting.model, num_classes=setting.num_classes, dtype=step_lib.DTYPES[setting.dtype])
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, *setting.image_shape), jnp.float32))
  state = dp.put_state(step_lib.TrainState(step=np.zeros((), np.int32), params=variables['params'],
                                           batch_stats=variables.get('batch_stats', {}), opt_state=()))
  global_batch = setting.batch_size * len(dp.devices)
  rng = np.random.default_rng(0)
  batch = dp.put_batch({
      'image': rng.standard_normal((global_batch, *setting.image_shape), np.float32),
      'label': rng.integers(0, setting.num_classes, global_batch).astype(np.int32),
      'mask': np.ones(global_batch, bool)})
  channels = setting.image_shape[-1]
  mean, std = (0.5,) * channels, (0.25,) * channels
  key = dp.put_state(np.asarray(jax.random.key_data(jax.random.key(1))))
  budgets = tuple(np.float32(x) for x in (_EPS, _EPS, _STEP_SIZE))
  trainer_eval = dp.eval_step(model=model)
  evaluate = evaluation.evaluate_fn(dp, model)
  fgsm = evaluation.attack_fn(dp, model, mean, std, pgd_steps=pgd_steps, kinds=('fgsm',))
  pgd = evaluation.attack_fn(dp, model, mean, std, pgd_steps=pgd_steps, kinds=('pgd',))
  calls = {
      'trainer_eval': lambda: trainer_eval(state, batch),
      'eval': lambda: evaluate(state, batch),
      'fgsm': lambda: fgsm(state, batch, key, *budgets),
      'pgd': lambda: pgd(state, batch, key, *budgets),
  }
  result = {'setting': setting.to_json(), 'global_batch_size': global_batch, 'num_devices': len(dp.devices),
            'parallelism': parallelism, 'pgd_steps': pgd_steps, 'compile_and_first_call_s': {},
            'seconds_rounds': {name: [] for name in PASSES}}
  log(f'[{setting.model}] compiling the evaluation and the attacks...')
  for name, call in calls.items():
    started = time.perf_counter()
    jax.block_until_ready(call())
    result['compile_and_first_call_s'][name] = time.perf_counter() - started
  for round_index in range(setting.rounds):
    shift = round_index % len(PASSES)
    for name in PASSES[shift:] + PASSES[:shift]:  # each round starts with the next pass
      started = time.perf_counter()
      jax.block_until_ready(calls[name]())
      result['seconds_rounds'][name].append(time.perf_counter() - started)
    log(f'[{setting.model}] round {round_index + 1}/{setting.rounds}: ' +
        ', '.join(f'{name} {t[-1]:.3f} s' for name, t in result['seconds_rounds'].items()))
  rounds = result['seconds_rounds']
  result['seconds'] = {name: statistics.median(t) if t else None for name, t in rounds.items()}
  result['ratio_to_trainer_eval'] = {}
  for name in PASSES[1:]:
    if rounds[name]:
      estimate, lower, upper = ratios.paired_ratio(rounds[name], rounds['trainer_eval'])
      result['ratio_to_trainer_eval'][name] = {'estimate': estimate,
                                               'ci': None if lower is None else [lower, upper]}
  return result


def markdown_report(results: list[dict], environment: dict) -> str:
  """One table per setting: seconds per global batch and the ratio to the trainer's eval step [95% CI]."""
  parts = [f"Environment: {environment['summary']}", '']
  for result in results:
    s = result['setting']
    parts += [f"#### {s['model']}, {'×'.join(map(str, s['image_shape']))}, c = {s['num_classes']}, "
              f"b = {s['batch_size']} per device × {result['num_devices']} {environment['backend']} device(s), "
              f"{s['dtype']}; median of {s['rounds']} interleaved rounds", '',
              '| pass | s per global batch | × trainer eval [95% CI] | compile and first call (s) |',
              '| --- | ---: | ---: | ---: |']
    for name in PASSES:
      seconds = result['seconds'][name]
      ratio = result['ratio_to_trainer_eval'].get(name)
      ratio_text = '—' if ratio is None else ratios.interval_text(ratio['estimate'], ratio['ci'], '.2f')
      parts.append(f"| {_TITLES[name].format(steps=result['pgd_steps'])} | "
                   f"{'n/a' if seconds is None else f'{seconds:.4f}'} | {ratio_text} | "
                   f"{result['compile_and_first_call_s'][name]:.1f} |")
    parts.append('')
  return '\n'.join(parts)
