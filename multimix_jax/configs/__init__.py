"""Run configs: Python files whose `get_config()` returns an `ml_collections.ConfigDict`.

`python -m multimix_jax.main --config=configs/cifar100_r18.py` loads one by path (the repository's `configs/` is a
link to this folder); they ship inside the package so that an installed copy runs its default from any directory.
Derived configs import the one they change and override a few keys.
"""

import importlib
import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
NAMES = tuple(sorted(f[:-3] for f in os.listdir(DIRECTORY) if f.endswith('.py') and f != '__init__.py'))


def path(name: str) -> str:
  """The file of the config `name` ('default', 'cifar100_r18', ...)."""
  return os.path.join(DIRECTORY, f'{name}.py')


def load(name: str):
  """A fresh `get_config()` of the config `name` (the ConfigDict that `--config=configs/<name>.py` starts from)."""
  if name not in NAMES:
    raise ValueError(f'no config named {name!r}; the configs are {", ".join(NAMES)}.')
  return importlib.import_module(f'{__name__}.{name}').get_config()


def flatten(tree: dict, prefix: str = '') -> dict:
  """A nested config dict (`config.to_dict()`, a run's config.json) -> {'multimix.alpha': 0.1, ...}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


# Config keys that do not change what a run learns, in groups by why they may differ. `train.check_workdir` lets a
# resumed run change RESUMABLE_KEYS; the analysis groups runs whose configs differ only in GROUPING_IGNORED_KEYS as
# seeds of one config.

# Where the data are read from and how often the run logs, evaluates and saves: bookkeeping. A resumed run may
# change them (the data mounted elsewhere, fewer checkpoints), and two runs differing only in them learned alike.
BOOKKEEPING_KEYS = frozenset({'data_dir', 'input_threads', 'log_every_steps', 'eval_every_steps', 'eval_batch_size',
                              'checkpoint_every_steps', 'keep_checkpoints', 'profile'})
# How long to train: a resumed run may be extended from its last checkpoint. Runs of different lengths are not
# seeds of one config, so the analysis keeps them apart.
LENGTH_KEYS = frozenset({'num_epochs', 'num_train_steps'})
# The robustness protocol, read by the analysis after training and never by training: a run may be resumed (or
# re-analysed) under other attack settings. Runs attacked differently are not averaged together.
ATTACK_KEYS = frozenset({'attack.fgsm_eps', 'attack.pgd_eps', 'attack.pgd_steps', 'attack.pgd_step_size',
                         'attack.pgd_random_start'})

RESUMABLE_KEYS = BOOKKEEPING_KEYS | LENGTH_KEYS | ATTACK_KEYS
# The seed is never resumable (another seed is another run), but it is what tells repetitions of one config apart.
GROUPING_IGNORED_KEYS = BOOKKEEPING_KEYS | {'seed'}
