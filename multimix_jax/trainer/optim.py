"""The optimisers and learning-rate schedules a run names (`config.optimizer`, `config.schedule`), and their checks.

`create_optimizer(config, steps_per_epoch)` returns the optax transformation and its schedule (steps -> learning
rate), which the trainer, the preflight and the benchmark build alike. Adding an optimiser or a schedule is one
function (config, ...) -> optax object and one line in `OPTIMIZERS` or `SCHEDULES`.
"""

import jax
import optax


def _kernels_only(params):
  """True at the weight matrices and convolution kernels ('kernel' leaves); False at biases, normalisation
  parameters and position embeddings, which DeiT's AdamW (timm's weight-decay filter) does not decay."""
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def _piecewise(config, warmup, total, steps_per_epoch):
  """×`lr_decay_factor` at each of `lr_boundaries_epochs`, after a linear warmup of `warmup` steps (if any)."""
  del total
  boundaries = {int(e * steps_per_epoch): config.lr_decay_factor for e in config.lr_boundaries_epochs}
  schedule = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  if warmup:
    schedule = optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), schedule], [warmup])
  return schedule


def _cosine(config, warmup, total, steps_per_epoch):
  """Linear warmup, then cosine decay to 0 at the last step."""
  del steps_per_epoch
  return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total, warmup + 1))


def _sgd(config, schedule, mask):
  """SGD with momentum and L2 weight decay added to the gradient (PyTorch's SGD)."""
  return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=mask),
                     optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))


def _adamw(config, schedule, mask):
  """Adam with decoupled weight decay (PyTorch's AdamW: p -= lr · (adam step + weight_decay · p))."""
  b1, b2 = config.adam_betas
  return optax.adamw(schedule, b1=b1, b2=b2, weight_decay=config.weight_decay, mask=mask)


# `config.schedule` and `config.optimizer` name one of these; any other name is refused.
SCHEDULES = {'piecewise': _piecewise, 'cosine': _cosine}
OPTIMIZERS = {'sgd': _sgd, 'adamw': _adamw}


def _unknown_names(config) -> list[str]:
  """One sentence per name of `config.schedule` and `config.optimizer` that its registry does not hold."""
  return [f'{key}={config[key]!r} is unknown; choose one of {sorted(registry)}.'
          for key, registry in (('schedule', SCHEDULES), ('optimizer', OPTIMIZERS)) if config[key] not in registry]


def config_problems(config) -> list[str]:
  """One sentence per bad value of the keys read here: the optimiser's and the schedule's names, Adam's betas and
  the run's length. The numbers of single keys (learning_rate, momentum, ...) are trainer/config_checks.py's."""
  problems = _unknown_names(config)
  if not (len(config.adam_betas) == 2 and all(0 <= beta < 1 for beta in config.adam_betas)):
    problems.append(f'adam_betas={tuple(config.adam_betas)} must be (b1, b2) with 0 <= b1, b2 < 1.')
  if not (config.num_train_steps > 0 or config.num_epochs > 0):
    problems.append('set num_epochs > 0 or num_train_steps > 0.')
  return problems


def create_optimizer(config, steps_per_epoch):
  """The optimiser `config.optimizer` (OPTIMIZERS) with the lr schedule `config.schedule` (SCHEDULES).

  With `config.weight_decay_kernels_only` only 'kernel' parameters are decayed (DeiT), else every parameter.
  Raises ValueError for a name that neither registry has.
  """
  unknown = _unknown_names(config)
  if unknown:
    raise ValueError(' '.join(unknown))
  warmup = int(config.warmup_epochs * steps_per_epoch)
  schedule = SCHEDULES[config.schedule](config, warmup, num_train_steps(config, steps_per_epoch), steps_per_epoch)
  mask = _kernels_only if config.weight_decay_kernels_only else None
  return OPTIMIZERS[config.optimizer](config, schedule, mask), schedule


def num_train_steps(config, steps_per_epoch):
  """config.num_train_steps when > 0, else num_epochs of `steps_per_epoch` steps."""
  return config.num_train_steps if config.num_train_steps > 0 else int(config.num_epochs * steps_per_epoch)
