"""Pairwise interpolation: partners, λ, and input (or manifold) mixup.

Every example is mixed with one partner of the batch, x̃ = λ x + (1 − λ) x[partner], and its target likewise;
λ ~ Beta(alpha, alpha) per batch, per pair or per example (`mode`). Pure, jit-able, jax only.
"""

import jax
import jax.numpy as jnp

from multimix_jax.mixing._checks import MIXUP_MODES  # public here: the modes of every pairwise function
from multimix_jax.mixing._checks import as_float, check_alpha, check_batch, check_int, check_mode, check_targets


def random_involution(key, b):
  """int32 (b,) partner with partner[partner[i]] = i: a random perfect matching (one fixed point if b is odd)."""
  order = jax.random.permutation(key, b)
  even = b - b % 2
  swapped = jnp.concatenate([order[:even].reshape(-1, 2)[:, ::-1].reshape(-1), order[even:]])
  return jnp.zeros((b,), jnp.int32).at[order].set(swapped.astype(jnp.int32)), order


def sample_pairing(key, b, alpha, *, mode='batch', lam_key=None):
  """Partner permutation and mixing coefficients of pairwise mixup.

  Args:
    key: PRNG key.
    b: batch size (static int).
    alpha: Beta concentration > 0, scalar; may be traced.
    mode: 'batch' — a random permutation and one lam ~ Beta(alpha, alpha), a scalar; 'elem' — the same permutation
      and one lam per example, (b,); 'pair' — the examples matched two by two (a random involution: perm[perm[i]]
      = i, one example left with itself when b is odd) and one lam per pair, lam[perm[i]] = lam[i], so the two
      members are mirror images λ·x_i + (1 − λ)·x_j and λ·x_j + (1 − λ)·x_i, as timm's 'pair' mode.
    lam_key: PRNG key of the lam draw, instead of one split from `key`. In a data-parallel step, a key shared by
      every device draws one lam for the global batch while `key` (one per device) draws each device's partners.

  Returns:
    (perm int32 (b,), lam float32 () for 'batch' or (b,)): example i mixes as lam_i · x_i + (1 − lam_i) · x_perm[i].
  """
  check_int('b', b)
  check_alpha(alpha)
  check_mode(mode)
  key_perm, key_lam = jax.random.split(key)
  key_lam = key_lam if lam_key is None else lam_key
  if mode == 'batch':
    return jax.random.permutation(key_perm, b), jax.random.beta(key_lam, alpha, alpha)
  if mode == 'elem':
    return jax.random.permutation(key_perm, b), jax.random.beta(key_lam, alpha, alpha, (b,))
  perm, order = random_involution(key_perm, b)
  # Pair k holds order[2k] and order[2k + 1]: both take the pair's draw.
  lam_pairs = jax.random.beta(key_lam, alpha, alpha, ((b + 1) // 2,))
  return perm, jnp.zeros((b,), lam_pairs.dtype).at[order].set(jnp.repeat(lam_pairs, 2)[:b])


def mix_pair(x, perm, lam):
  """lam · x + (1 − lam) · x[perm] for x of shape (b, ...): the hidden-state mixing of manifold mixup.

  lam is a scalar, or (b,) with one coefficient per example (broadcast over x's trailing axes). Apply it with the
  same (perm, lam) to a hidden state and to the targets (b, c).
  """
  lam = jnp.asarray(lam, x.dtype)
  if lam.ndim == 1:
    lam = lam.reshape(lam.shape + (1,) * (x.ndim - 1))
  return lam * x + (1 - lam) * x[perm]


def input_mixup(key, x, y, alpha, *, mode='batch', lam_key=None):
  """Input mixup (Zhang et al. 2018): x (b, ...) and targets y (b, c) mixed with a random partner.

  Returns (x̃, ỹ); lam ~ Beta(alpha, alpha), one for the batch or per pair or example (`mode` and `lam_key`, see
  `sample_pairing`).
  """
  check_targets(y)
  check_batch(x=x, y=y)
  perm, lam = sample_pairing(key, x.shape[0], alpha, mode=mode, lam_key=lam_key)
  return mix_pair(x, perm, lam), mix_pair(as_float(y), perm, lam)


