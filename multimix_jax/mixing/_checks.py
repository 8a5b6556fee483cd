"""Argument checks shared by the pure functions: each raises one ValueError that names the argument and the fix."""

import jax
import jax.numpy as jnp
import numpy as np


def check_int(name, value, *, low=1, high=None, high_name=None):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f'{name} must be a Python int (it fixes a shape), got {value!r} of type {type(value).__name__}.')
  if value < low or (high is not None and value > high):
    bound = f'in [{low}, {high}] ({high_name} = {high})' if high is not None else f'>= {low}'
    raise ValueError(f'{name} must be {bound}, got {name} = {value}.')


def check_alpha(alpha):
  if jnp.ndim(alpha) != 0:
    raise ValueError(f'alpha must be a scalar, got shape {jnp.shape(alpha)}.')
  try:
    value = float(alpha)
  except jax.errors.ConcretizationTypeError:
    return  # traced: checked where it is drawn (the trainer's config validation)
  if not value > 0:
    raise ValueError(f'alpha must be > 0 (the Dirichlet/Beta concentration), got alpha = {value}.')


def check_rank(name, x, rank, layout):
  if jnp.ndim(x) != rank:
    raise ValueError(f'{name} must have shape {layout}, got shape {jnp.shape(x)}.')


def check_batch(**arrays):
  sizes = {name: jnp.shape(x)[0] for name, x in arrays.items()}
  if len(set(sizes.values())) != 1:
    seen = ', '.join(f'{name}.shape = {jnp.shape(x)}' for name, x in arrays.items())
    raise ValueError(f'{" and ".join(arrays)} must share their leading batch size b; got {seen}.')


def check_targets(Y):
  if jnp.ndim(Y) != 2:
    raise ValueError(f'Y must be one-hot or soft targets of shape (b, c), got shape {jnp.shape(Y)} '
                     '(for integer labels pass jax.nn.one_hot(labels, c)).')


def as_float(x):
  return jnp.asarray(x, jnp.promote_types(jnp.result_type(x), jnp.float32))


# How λ is drawn for the pairwise baselines, as timm's Mixup modes: 'batch' one λ for the batch (the papers'),
# 'pair' one λ per pair of examples that mix with each other, 'elem' one λ per example.
MIXUP_MODES = ('batch', 'pair', 'elem')


def check_mode(mode):
  if mode not in MIXUP_MODES:
    raise ValueError(f'mode must be one of {MIXUP_MODES}, got {mode!r}.')


def first_of_pair(perm):
  """int32 (b,): the member of each pair with the smaller index, whose draws the pair shares (mode 'pair')."""
  return jnp.minimum(jnp.arange(perm.shape[0]), perm)
