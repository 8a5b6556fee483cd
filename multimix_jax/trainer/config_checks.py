"""The range of every numeric config key a user sets that no registry checks, checked as the user typed it.

`train.validate_config` runs `config_problems(config)` first: each message names the key and the value given (e.g.
`batch_size=-4 must be ...`), and checks derived from several keys (multimix.m against the batch) run only once
every value they read passed. A float that is NaN or infinite is refused for every key: none has a use for one.
The registries check the keys they define, in the same style: the methods their hyperparameters (multimix.*,
alignmixup.*, mixup_alpha, ...; trainer/methods/), `models.config_problems` the model keys,
`data.catalog.config_problems` the augmentation keys, `optim.config_problems` the optimiser's and schedule's names.
"""

import math
import numbers
import re

from multimix_jax import configs


def _is_int(value):
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


# key -> (what the value must be, the test). batch_size and eval_batch_size also depend on the devices (train.py).
RANGES = {
    'num_classes': ('an int >= 2, or None (the data\'s)', lambda v: v is None or (_is_int(v) and v >= 2)),
    'image_size': ('an int >= 1, or None (the data\'s)', lambda v: v is None or (_is_int(v) and v >= 1)),
    'input_threads': ('an int >= 0 (0: one per CPU core)', lambda v: _is_int(v) and v >= 0),
    'augment.padding': ('an int >= 0, or None (the dataset\'s)', lambda v: v is None or (_is_int(v) and v >= 0)),
    'batch_size': ('an int >= 1', lambda v: _is_int(v) and v >= 1),
    'eval_batch_size': ('an int >= 1', lambda v: _is_int(v) and v >= 1),
    'num_epochs': ('a number >= 0', lambda v: _number(v) and v >= 0),
    'num_train_steps': ('an int: -1 or 0 (use num_epochs) or a number of steps', lambda v: _is_int(v) and v >= -1),
    'learning_rate': ('a number > 0', lambda v: _number(v) and v > 0),
    'momentum': ('in [0, 1)', lambda v: _number(v) and 0 <= v < 1),
    'weight_decay': ('a number >= 0', lambda v: _number(v) and v >= 0),
    'lr_boundaries_epochs': ('a tuple of numbers >= 0', lambda v: all(_number(x) and x >= 0 for x in v)),
    'lr_decay_factor': ('a number > 0', lambda v: _number(v) and v > 0),
    'warmup_epochs': ('a number >= 0', lambda v: _number(v) and v >= 0),
    'seed': ('an int >= 0', lambda v: _is_int(v) and v >= 0),
    'log_every_steps': ('an int >= 1', lambda v: _is_int(v) and v >= 1),
    'eval_every_steps': ('an int >= 0 (0: once per epoch)', lambda v: _is_int(v) and v >= 0),
    'checkpoint_every_steps': ('an int >= 0 (0: once per epoch)', lambda v: _is_int(v) and v >= 0),
    'keep_checkpoints': ('an int >= 1, or None (keep all)', lambda v: v is None or (_is_int(v) and v >= 1)),
    'multimix.m': ('an int >= 0 (0: the whole batch)', lambda v: _is_int(v) and v >= 0),
    'attack.fgsm_eps': ('a number >= 0', lambda v: _number(v) and v >= 0),
    'attack.pgd_eps': ('a number >= 0', lambda v: _number(v) and v >= 0),
    'attack.pgd_steps': ('an int >= 0', lambda v: _is_int(v) and v >= 0),
    'attack.pgd_step_size': ('a number >= 0', lambda v: _number(v) and v >= 0),
}


def _not_finite(value):
  values = value if isinstance(value, (tuple, list)) else (value,)
  return any(isinstance(x, float) and not math.isfinite(x) for x in values)


def config_problems(config) -> list[str]:
  """One message per key of `config` whose value is out of range or not finite: 'KEY=VALUE must be ...'."""
  flat = configs.flatten(config.to_dict())
  found = {}
  for key, value in flat.items():
    if _not_finite(value):
      found[key] = f'{key}={value!r} must be a finite number.'
  for key, (rule, ok) in RANGES.items():
    if key in flat and key not in found:
      try:
        valid = ok(flat[key])
      except TypeError:  # a value of another type (a string where a number belongs)
        valid = False
      if not valid:
        found[key] = f'{key}={flat[key]!r} must be {rule}.'
  return list(found.values())


def reported_keys(messages):
  """The keys that `messages` ('KEY=VALUE must be ...') are about."""
  return {message.split('=', 1)[0] for message in messages if '=' in message}


def unreported(messages, reported):
  """The messages that name none of the keys `reported`: a value already refused is not refused again by another
  check that reads it (as 'multimix.alpha=nan must be > 0.' after 'multimix.alpha=nan must be a finite number.',
  or 'set num_epochs > 0 or ...' after 'num_epochs=-1 must be ...')."""
  return [message for message in messages
          if not any(re.search(rf'(?<![\w.]){re.escape(key)}(?!\w|\.\w)', message) for key in reported)]
