"""Run configs: Python files whose `get_config()` returns an `ml_collections.ConfigDict`.

`python -m multimix_jax.main --config=configs/cifar100_r18.py` loads one by path (the repository's `configs/` is a
link to this folder); they ship inside the package so that an installed copy runs its default from any directory.
Derived configs import the one they change and override a few keys.
"""

import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The file of the config `name` ('default', 'cifar100_r18', ...)."""
  return os.path.join(DIRECTORY, f'{name}.py')


def flatten(tree: dict, prefix: str = '') -> dict:
  """A nested config dict (`config.to_dict()`, a run's config.json) -> {'multimix.alpha': 0.1, ...}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat
