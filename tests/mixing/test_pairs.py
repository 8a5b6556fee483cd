"""Properties of the pairwise interpolation (`multimix_jax.mixing.pairs`): partners, λ, input and manifold mixup."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import multimix_jax as mm

KEY = jax.random.key(0)


# ----------------------------------------------------------------------------------------------- pairwise


def test_input_mixup_mixes_inputs_and_targets_alike():
  b, c = 8, 8
  x = jnp.arange(b, dtype=jnp.float32)[:, None, None, None] * jnp.ones((b, 2, 2, 1))
  y = jax.nn.one_hot(jnp.arange(b), c)
  xt, yt = mm.input_mixup(KEY, x, y, 1.0)
  np.testing.assert_allclose(xt[:, 0, 0, 0], yt @ jnp.arange(b, dtype=jnp.float32), atol=1e-5)
  np.testing.assert_allclose(yt.sum(1), 1.0, atol=1e-6)


def test_manifold_mixup_mix_pair():
  h = jax.random.normal(KEY, (5, 3, 3, 2))
  perm = jnp.array([4, 3, 2, 1, 0])
  np.testing.assert_allclose(mm.mix_pair(h, perm, 0.25), 0.25 * h + 0.75 * h[perm], atol=1e-6)


# --------------------------------------------------------------------------- per-pair and per-example λ


@pytest.mark.parametrize('mode', mm.mixing.MIXUP_MODES)
@pytest.mark.parametrize('b', [8, 7])
def test_sample_pairing_modes(mode, b):
  perm, lam = mm.sample_pairing(KEY, b, 2.0, mode=mode)
  perm, lam = np.asarray(perm), np.asarray(lam)
  assert sorted(perm) == list(range(b))  # a permutation
  assert lam.shape == (() if mode == 'batch' else (b,)) and ((0 <= lam) & (lam <= 1)).all()
  if mode == 'pair':  # an involution matching the examples two by two, the pair sharing λ
    np.testing.assert_array_equal(perm[perm], np.arange(b))
    assert (perm == np.arange(b)).sum() == b % 2
    np.testing.assert_array_equal(lam[perm], lam)
    assert len(np.unique(lam)) == (b + 1) // 2
  if mode == 'elem':
    assert len(np.unique(lam)) == b


def test_batch_mode_is_the_default_and_unchanged():
  key_perm, key_lam = jax.random.split(KEY)
  perm, lam = mm.sample_pairing(KEY, 8, 2.0)
  np.testing.assert_array_equal(perm, jax.random.permutation(key_perm, 8))
  np.testing.assert_array_equal(lam, jax.random.beta(key_lam, 2.0, 2.0))
  x, y = jax.random.normal(KEY, (8, 6)), jax.nn.one_hot(jnp.arange(8) % 4, 4)
  jax.tree.map(np.testing.assert_array_equal, mm.input_mixup(KEY, x, y, 2.0), mm.input_mixup(KEY, x, y, 2.0,
                                                                                             mode='batch'))


@pytest.mark.parametrize('mode', ['pair', 'elem'])
def test_input_mixup_per_example_lambda(mode):
  b, c = 8, 5
  x = jax.random.normal(KEY, (b, 3, 2, 2))
  y = jax.nn.one_hot(jnp.arange(b) % c, c)
  key = jax.random.key(3)
  perm, lam = mm.sample_pairing(key, b, 1.0, mode=mode)
  xt, yt = mm.input_mixup(key, x, y, 1.0, mode=mode)
  lam4 = np.asarray(lam)[:, None, None, None]
  np.testing.assert_allclose(xt, lam4 * x + (1 - lam4) * x[perm], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(yt, lam[:, None] * y + (1 - lam[:, None]) * y[perm], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(yt.sum(1), 1.0, atol=1e-6)
  np.testing.assert_allclose(mm.mix_pair(x, perm, lam), xt, rtol=1e-6)  # mix_pair broadcasts a (b,) lam


def test_bad_mixup_mode_is_rejected():
  x, y = jnp.zeros((4, 3, 3, 1)), jnp.zeros((4, 2))
  for call in (lambda: mm.sample_pairing(KEY, 4, 1.0, mode='example'),
               lambda: mm.input_mixup(KEY, x, y, 1.0, mode='batches'),
               lambda: mm.cutmix(KEY, x, y, 1.0, mode=None)):
    with pytest.raises(ValueError, match=r"mode must be one of \('batch', 'pair', 'elem'\)"):
      call()
