"""Soft-target cross-entropy and the MultiMix losses on logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import multimix_jax as mm

KEY = jax.random.key(0)


def test_soft_cross_entropy_reference_formula():
  logits = jax.random.normal(KEY, (5, 3, 4))
  targets = jax.nn.softmax(jax.random.normal(jax.random.key(1), (5, 3, 4)))
  ref = -(targets * jax.nn.log_softmax(logits)).sum(-1).mean()
  np.testing.assert_allclose(mm.soft_cross_entropy(logits, targets), ref, rtol=1e-6)
  eps = 0.1
  smoothed = (1 - eps) * targets + eps / 4
  np.testing.assert_allclose(mm.soft_cross_entropy(logits, targets, label_smoothing=eps),
                             -(smoothed * jax.nn.log_softmax(logits)).sum(-1).mean(), rtol=1e-6)


def test_soft_cross_entropy_rejects_mismatch():
  with pytest.raises(ValueError, match=r'same shape.*\(2, 3\).*\(2, 4\)'):
    mm.soft_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match='label_smoothing'):
    mm.soft_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3)), label_smoothing=1.0)


def test_multimix_loss_on_logits_equals_loss_on_embeddings():
  b, d, c = 8, 6, 5
  Z = jax.random.normal(KEY, (b, d))
  Y = jax.nn.one_hot(jnp.arange(b) % c, c)
  head = nn.Dense(c, bias_init=nn.initializers.normal(1.0))
  params = head.init(KEY, Z)
  for eps in (0.0, 0.1):
    Zt, Yt = mm.sample_interpolation(KEY, Z, Y, b, 1.0, n=100)
    ref = mm.soft_cross_entropy(head.apply(params, Zt), Yt, label_smoothing=eps)
    loss = mm.multimix_loss(KEY, head.apply(params, Z), Y, b, 1.0, n=100, label_smoothing=eps)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


@pytest.mark.parametrize('n,chunk_size', [(64, 16), (50, 16), (10, 3)])
def test_dense_loss_in_chunks_equals_all_at_once(n, chunk_size):
  b, r, c = 6, 4, 5
  logits = jax.random.normal(KEY, (b, r, c))
  Y = jax.nn.one_hot(jnp.arange(b) % c, c)
  A = mm.confidence_map(jax.random.normal(jax.random.key(3), (b, r, 7)), 'gap')

  def loss(lg, chunk):
    return mm.dense_multimix_loss(KEY, lg, Y, A, 4, 0.5, n=n, chunk_size=chunk, label_smoothing=0.1)

  np.testing.assert_allclose(loss(logits, chunk_size), loss(logits, 0), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(loss)(logits, chunk_size), jax.grad(loss)(logits, 0), atol=1e-6)
  Zt, Yt = mm.sample_dense_interpolation(KEY, logits, Y, A, 4, 0.5, n=n)
  np.testing.assert_allclose(loss(logits, 0), mm.soft_cross_entropy(Zt, Yt, label_smoothing=0.1), rtol=1e-6)


def test_automatic_chunks_bound_the_largest_array():
  assert mm.mixing.losses.dense_chunk_size(1000, 128, 49, 1000) == 0  # 49M elements: fits 2**26
  rows = mm.mixing.losses.dense_chunk_size(10000, 128, 49, 1000)  # 490M: equal chunks that fit
  assert rows * 49 * 1000 <= 2**26 and -(-10000 // rows) == 8 and rows == 1250
  rows = mm.mixing.losses.dense_chunk_size(10001, 128, 49, 1000)
  assert -(-10001 // rows) * rows - 10001 < -(-10001 // rows)  # equal chunks: under one padded row per chunk
  assert mm.mixing.losses.dense_chunk_size(10000, 128, 16, 10) == 0  # the small CNN: n·r·b is small
  assert mm.mixing.losses.dense_chunk_size(10, 4, 3, 5, budget=60) == 4  # 4 rows of 3 x 5 fit: 10 rows in 3 chunks of 4
  logits = jax.random.normal(KEY, (6, 4, 5))
  Y = jax.nn.one_hot(jnp.arange(6) % 5, 5)
  A = mm.confidence_map(jax.random.normal(KEY, (6, 4, 3)), 'uniform')
  auto = mm.dense_multimix_loss(KEY, logits, Y, A, 6, 1.0, n=40, chunk_size=-1)
  np.testing.assert_allclose(auto, mm.dense_multimix_loss(KEY, logits, Y, A, 6, 1.0, n=40, chunk_size=0), rtol=1e-6)
