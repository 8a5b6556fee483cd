"""MultiMix and Dense MultiMix: the interpolation matrix Λ, interpolated embeddings and targets, confidence maps.

Notation follows the paper: b examples in a mini-batch, tuples of m of them, n interpolated examples,
Dirichlet concentration alpha, embeddings of width d at r spatial positions, c classes. Every function here is
pure and jit-able, holds no state and needs only jax. Shapes (b, m, n, r, ...) are static Python ints; `alpha`
may be traced (drawn per step inside a jitted step).

Because a linear classifier is affine and every interpolation row sums to one, interpolating logits equals
classifying interpolated embeddings: pass logits as `Z` to mix at the cost of O(n·b·c).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from multimix_jax.mixing._checks import as_float, check_alpha, check_batch, check_int, check_rank, check_targets


Array = Any

CONFIDENCE_KINDS = ('gap', 'gap_relu', 'cam', 'uniform', 'attention')


# ------------------------------------------------------------------------------------------- Dirichlet


def log_gamma(key, alpha, shape):
  """log X with X ~ Gamma(alpha, 1) i.i.d., float32 of `shape`; `alpha` > 0 a scalar, possibly traced.

  Exact: Marsaglia & Tsang's (2000) rejection sampler on shape alpha + 1, boosted to alpha by
  Gamma(alpha) = Gamma(alpha + 1) · U^(1/alpha), kept in log space so that the tiny draws of small alpha do not
  underflow. Rejection is vectorised over the whole array with one key per round: the first round is accepted for
  over 95% of the elements whatever alpha, and the loop repeats only for the rest, so the cost is a few uniform and
  normal draws per element (jax.random.gamma splits a key and loops per element).
  """
  alpha = jnp.asarray(alpha, jnp.float32)
  d = alpha + 2.0 / 3.0  # Marsaglia–Tsang on shape alpha + 1: d = (alpha + 1) - 1/3
  c = jax.lax.rsqrt(9.0 * d)
  key_boost, key_first, key_loop = jax.random.split(key, 3)

  def propose(k):
    k_normal, k_uniform = jax.random.split(k)
    x = jax.random.normal(k_normal, shape)
    v = (1.0 + c * x)**3
    log_v = jnp.log(jnp.where(v > 0, v, 1.0))
    log_u = -jax.random.exponential(k_uniform, shape)  # log U, U ~ Uniform(0, 1]
    accepted = (v > 0) & (log_u < 0.5 * x * x + d - d * v + d * log_v)
    return accepted, jnp.log(d) + log_v

  def body(state):
    k, value, done = state
    k, k_round = jax.random.split(k)
    accepted, proposal = propose(k_round)
    return k, jnp.where(done, value, proposal), done | accepted

  accepted, proposal = propose(key_first)
  _, log_x, _ = jax.lax.while_loop(lambda s: ~jnp.all(s[2]), body, (key_loop, proposal, accepted))
  return log_x - jax.random.exponential(key_boost, shape) / alpha  # + log U / alpha


def sample_weights(key, b, m, alpha, *, n=1000):
  """Draws the interpolation matrix Λ of MultiMix.

  Args:
    key: PRNG key.
    b: batch size (static int).
    m: tuple length, 1 <= m <= b (static int); m = b mixes the whole batch in every row.
    alpha: Dirichlet concentration > 0, scalar; may be traced.
    n: number of interpolated examples (rows), >= 1 (static int).

  Returns:
    float32 (n, b): each row is zero outside m positions chosen uniformly at random without replacement, and
    holds a Dirichlet(alpha · 1_m) draw on them: non-negative, sums to 1.
  """
  check_int('b', b)
  check_int('n', n)
  check_int('m', m, high=b, high_name='b')
  check_alpha(alpha)
  return _sample_weights(key, alpha, b=b, m=m, n=n)


@functools.partial(jax.jit, static_argnames=('b', 'm', 'n'))
def _sample_weights(key, alpha, *, b, m, n):
  key_support, key_gamma = jax.random.split(key)
  # Normalised Gamma(alpha) draws are Dirichlet(alpha); the softmax of their logs normalises without underflow.
  lam = jax.nn.softmax(log_gamma(key_gamma, alpha, (n, m)), axis=-1)
  if m == b:  # the symmetric Dirichlet is exchangeable: no support to choose
    return lam
  # The top m of b i.i.d. uniforms are a uniformly random m-subset.
  _, support = jax.lax.top_k(jax.random.uniform(key_support, (n, b)), m)
  return jnp.zeros((n, b), lam.dtype).at[jnp.arange(n)[:, None], support].set(lam)


# ------------------------------------------------------------------------------------------- MultiMix

def sample_interpolation(key, Z, Y, m, alpha, *, n=1000):
  """MultiMix: n interpolations of tuples of m examples of the batch.

  Args:
    key: PRNG key.
    Z: (b, ...) embeddings (b, d), or any per-example array such as logits (b, c) — see the linear-head identity
      in the module docstring.
    Y: (b, c) one-hot or soft targets.
    m: tuple length, 1 <= m <= b.
    alpha: Dirichlet concentration > 0; may be traced.
    n: number of interpolated examples.

  Returns:
    (Z̃, Ỹ) = (Λ Z, Λ Y) of shapes (n, ...) and (n, c), at least float32, with Λ from `sample_weights`.
  """
  if jnp.ndim(Z) < 2:
    raise ValueError(f'Z must have shape (b, d) or (b, ...), got shape {jnp.shape(Z)}.')
  check_targets(Y)
  check_batch(Z=Z, Y=Y)
  weights = sample_weights(key, Z.shape[0], m, alpha, n=n)
  return jnp.tensordot(weights, as_float(Z), axes=1), weights @ as_float(Y)


# ------------------------------------------------------------------------------------- Dense MultiMix


def confidence_map(Z, kind='gap', *, logits=None, labels=None, attention=None):
  """Confidence A of each spatial position of each example (Dense MultiMix), with stop-gradient.

  Args:
    Z: (b, r, d) feature map before pooling.
    kind: 'gap' — softmax over positions of <z_ij, mean_j z_ij> / sqrt(d); 'gap_relu' — ReLU of the same scores,
      l1-normalised (uniform where all are zero); 'cam' — softmax over positions of the dense logit of the
      example's class; 'uniform' — 1/r; 'attention' — the attention each token receives in the last
      self-attention block of a Vision Transformer, A_ij = mean over heads h and queries q of P_hqj (P the
      softmax attention, rows over keys j), renormalised over j: a token many queries attend to is confident.
    logits: (b, r, c) dense logits, for 'cam'.
    labels: for 'cam': (b,) integer classes, or (b, c) one-hot/soft targets (then the target-weighted logit).
    attention: (b, r) non-negative attention received per token, for 'attention': what
      `multimix_jax.models.vit.ViT` sows as `intermediates/attention` (only ViTs provide it).

  Returns:
    float32 (b, r): non-negative, rows sum to 1, no gradient.
  """
  if kind not in CONFIDENCE_KINDS:
    raise ValueError(f'kind must be one of {CONFIDENCE_KINDS}, got {kind!r}.')
  check_rank('Z', Z, 3, '(b, r, d)')
  b, r, d = Z.shape
  Z = jax.lax.stop_gradient(as_float(Z))
  if kind == 'uniform':
    return jnp.full((b, r), 1.0 / r, jnp.float32)
  if kind == 'cam':
    if logits is None or labels is None:
      raise ValueError("kind='cam' needs the dense logits (b, r, c) and the labels.")
    check_rank('logits', logits, 3, '(b, r, c)')
    if jnp.shape(logits)[:2] != (b, r):
      raise ValueError(f'logits must have shape (b, r, c) = ({b}, {r}, c), got {jnp.shape(logits)}.')
    logits = jax.lax.stop_gradient(as_float(logits))
    if jnp.ndim(labels) == 1:
      scores = jnp.take_along_axis(logits, labels[:, None, None].astype(jnp.int32), axis=2)[..., 0]
    else:
      scores = jnp.einsum('brc,bc->br', logits, as_float(labels))
    return jax.nn.softmax(scores, axis=1)
  if kind == 'attention':
    if attention is None:
      raise ValueError("kind='attention' needs the attention each token receives, (b, r), which only a Vision "
                       "Transformer provides (models 'vit_*' sow it); with another model choose 'gap', 'gap_relu', "
                       "'cam' or 'uniform'.")
    if jnp.shape(attention) != (b, r):
      raise ValueError(f'attention must have shape (b, r) = ({b}, {r}), got {jnp.shape(attention)}.')
    attention = jax.lax.stop_gradient(as_float(attention))
    return attention / attention.sum(axis=1, keepdims=True)
  scores = jnp.einsum('brd,bd->br', Z, Z.mean(axis=1)) / np.sqrt(d)
  if kind == 'gap':
    return jax.nn.softmax(scores, axis=1)
  scores = jax.nn.relu(scores)
  total = scores.sum(axis=1, keepdims=True)
  return jnp.where(total > 0, scores / jnp.where(total > 0, total, 1.0), 1.0 / r)


def dense_weights(weights, A):
  """Confidence-weighted interpolation weights, renormalised over examples at each position.

  w_kij = Λ_ki A_ij / Σ_i' Λ_ki' A_i'j. Where the tuple of row k has no confidence at position j (the
  denominator is zero) the weights fall back to Λ_k, so every (k, j) stays on the simplex.

  Args:
    weights: (n, b) interpolation matrix Λ (rows on the simplex).
    A: (b, r) confidence map (non-negative).

  Returns:
    float32 (n, b, r): non-negative, sums to 1 over b.
  """
  check_rank('weights', weights, 2, '(n, b)')
  check_rank('A', A, 2, '(b, r)')
  if weights.shape[1] != A.shape[0]:
    raise ValueError(f'weights (n, b) and A (b, r) must share b; got weights.shape = {weights.shape}, '
                     f'A.shape = {A.shape}.')
  weights, A = as_float(weights), jax.lax.stop_gradient(as_float(A))
  joint = weights[:, :, None] * A[None]
  total = joint.sum(axis=1, keepdims=True)
  return jnp.where(total > 0, joint / jnp.where(total > 0, total, 1.0), weights[:, :, None])


def sample_dense_interpolation(key, Z, Y, A, m, alpha, *, n=1000):
  """Dense MultiMix: n interpolations at every one of r positions, weighted by confidence.

  Args:
    key: PRNG key.
    Z: (b, r, d) feature map before pooling, or dense logits (b, r, c) (linear-head identity per position).
    Y: (b, c) targets; position j of example i inherits y_i.
    A: (b, r) confidence map, e.g. from `confidence_map`.
    m: tuple length, 1 <= m <= b.
    alpha: Dirichlet concentration > 0; may be traced.
    n: number of interpolated examples.

  Returns:
    (Z̃, Ỹ) of shapes (n, r, d) and (n, r, c): z̃_kj = Σ_i w_kij z_ij, ỹ_kj = Σ_i w_kij y_i.
  """
  check_rank('Z', Z, 3, '(b, r, d)')
  check_targets(Y)
  check_rank('A', A, 2, '(b, r)')
  check_batch(Z=Z, Y=Y, A=A)
  if A.shape[1] != Z.shape[1]:
    raise ValueError(f'A must have shape (b, r) = {Z.shape[:2]} to match Z {Z.shape}, got {A.shape}.')
  w = dense_weights(sample_weights(key, Z.shape[0], m, alpha, n=n), A)
  return jnp.einsum('nbr,brd->nrd', w, as_float(Z)), jnp.einsum('nbr,bc->nrc', w, as_float(Y))
