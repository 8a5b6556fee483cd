"""Soft-target cross-entropy, and the MultiMix losses computed on logits through the linear-head identity."""

import jax
import jax.numpy as jnp
import optax

from multimix_jax.mixing import multimix


def soft_cross_entropy(logits, targets, *, label_smoothing=0.0):
  """Mean soft-target cross-entropy −Σ_c t_c log softmax(logits)_c over every leading position.

  Args:
    logits: (..., c): (b, c) or (n, c) for global losses, (n, r, c) for dense ones.
    targets: (..., c) one-hot or soft targets, same shape.
    label_smoothing: eps in [0, 1): targets become (1 − eps) · t + eps / c.

  Returns:
    float32 scalar.
  """
  if jnp.shape(logits) != jnp.shape(targets):
    raise ValueError(f'logits and targets must have the same shape (..., c); got {jnp.shape(logits)} and '
                     f'{jnp.shape(targets)}.')
  targets = _smooth(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def _smooth(targets, label_smoothing):
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing}.')
  targets = targets.astype(jnp.float32)
  return optax.smooth_labels(targets, label_smoothing) if label_smoothing else targets


def multimix_loss(key, logits, targets, m, alpha, *, n=1000, label_smoothing=0.0):
  """MultiMix loss from the b logits: cross-entropy of n interpolated logits against interpolated targets.

  Interpolating logits (b, c) equals classifying interpolated embeddings when the head is affine and every row of
  Λ sums to one: g(ΛZ) = W ΛZ + w₀ = Λ (WZ + w₀) = Λ g(Z).

  Args:
    key: PRNG key.
    logits: (b, c) logits of the clean examples.
    targets: (b, c) one-hot or soft targets.
    m, alpha, n: as in `multimix.sample_interpolation`.
    label_smoothing: applied to the targets before mixing (the same thing, since rows of Λ sum to one).

  Returns:
    float32 scalar: mean over the n interpolated examples.
  """
  mixed_logits, mixed_targets = multimix.sample_interpolation(
      key, logits, _smooth(targets, label_smoothing), m, alpha, n=n)
  return soft_cross_entropy(mixed_logits, mixed_targets)


# The automatic chunk size keeps the dense loss's largest arrays, (rows, r, c) logits and targets and (rows, b, r)
# weights, under this many float32 elements (256 MiB).
DENSE_CHUNK_ELEMENTS = 2**26


def dense_chunk_size(n, b, r, c, budget=DENSE_CHUNK_ELEMENTS):
  """Rows of Λ per chunk keeping (rows, r, max(c, b)) under `budget` elements, in equal chunks; 0: no chunking."""
  rows = max(1, budget // (r * max(c, b)))
  if rows >= n:
    return 0
  num_chunks = -(-n // rows)
  return -(-n // num_chunks)


def dense_multimix_loss(key, dense_logits, targets, A, m, alpha, *, n=1000, chunk_size=-1, label_smoothing=0.0):
  """Dense MultiMix loss from the dense logits (b, r, c): the head applied at every position of the feature map.

  The n · r · c interpolated logits are the largest array of the step (n = 1000, r = 49, c = 1000: 196 MB; n = 10000:
  ten times that). With 0 < chunk_size < n the loss is computed over chunks of that many interpolation rows under
  `jax.checkpoint`, so forward and backward hold one chunk at a time; the result is the same.

  Args:
    key: PRNG key.
    dense_logits: (b, r, c).
    targets: (b, c) one-hot or soft; position j of example i inherits y_i.
    A: (b, r) confidence map (gradients do not flow through it).
    m, alpha, n: as in `multimix.sample_interpolation`.
    chunk_size: rows of Λ per chunk; 0 (or >= n) computes all n at once; -1 chooses by `dense_chunk_size`.
    label_smoothing: applied to the targets before mixing.

  Returns:
    float32 scalar: mean over the n · r interpolated positions.
  """
  if jnp.ndim(dense_logits) != 3:
    raise ValueError(f'dense_logits must have shape (b, r, c), got {jnp.shape(dense_logits)}.')
  targets = _smooth(targets, label_smoothing)
  b, r, c = dense_logits.shape
  if chunk_size < 0:
    chunk_size = dense_chunk_size(n, b, r, c)
  if chunk_size == 0 or chunk_size >= n:
    mixed_logits, mixed_targets = multimix.sample_dense_interpolation(
        key, dense_logits, targets, A, m, alpha, n=n)
    return soft_cross_entropy(mixed_logits, mixed_targets)

  weights = multimix.sample_weights(key, b, m, alpha, n=n)
  # Zero rows pad n to a multiple of chunk_size: their weights and targets are zero, so they add zero loss.
  num_chunks = -(-n // chunk_size)
  weights = jnp.pad(weights, ((0, num_chunks * chunk_size - n), (0, 0)))
  weights = weights.reshape(num_chunks, chunk_size, -1)
  dense_logits = dense_logits.astype(jnp.float32)

  @jax.checkpoint
  def chunk_loss(weights_chunk):
    w = multimix.dense_weights(weights_chunk, A)
    mixed_logits = jnp.einsum('nbr,brc->nrc', w, dense_logits)
    mixed_targets = jnp.einsum('nbr,bc->nrc', w, targets)
    return optax.softmax_cross_entropy(mixed_logits, mixed_targets).sum()

  # lax.map rather than a scan with a running total: its carry would have to be device-varying under shard_map.
  return jax.lax.map(chunk_loss, weights).sum() / (n * r)
