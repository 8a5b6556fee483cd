"""Properties of MultiMix and Dense MultiMix (`multimix_jax.mixing.multimix`), and the argument checks every pure
function shares."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import stats

import multimix_jax as mm

KEY = jax.random.key(0)


def batch(b=8, d=6, c=4, seed=1):
  kz, ky = jax.random.split(jax.random.key(seed))
  Z = jax.random.normal(kz, (b, d))
  Y = jax.nn.one_hot(jax.random.randint(ky, (b,), 0, c), c)
  return Z, Y


# ------------------------------------------------------------------------------------------ Λ and Dirichlet


@pytest.mark.parametrize('b,m', [(8, 1), (8, 2), (8, 5), (8, 8), (128, 128)])
@pytest.mark.parametrize('alpha', [0.5, 1.0, 2.0])
def test_weights_on_simplex_with_m_nonzeros(b, m, alpha):
  W = np.asarray(mm.sample_weights(KEY, b, m, alpha, n=500))
  assert W.shape == (500, b) and W.dtype == np.float32
  assert (W >= 0).all()
  np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal((W > 0).sum(1), m)


def test_small_alpha_stays_finite_on_simplex():
  # Gamma(0.01) draws underflow float32 unless normalised in log space.
  W = np.asarray(mm.sample_weights(KEY, 16, 2, 0.01, n=2000))
  assert np.isfinite(W).all()
  np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
  assert ((W > 0).sum(1) <= 2).all()


def test_support_is_uniform():
  b, m, n = 10, 3, 20000
  W = np.asarray(mm.sample_weights(KEY, b, m, 1.0, n=n))
  freq = (W > 0).mean(0)
  np.testing.assert_allclose(freq, m / b, atol=4 * np.sqrt(m / b * (1 - m / b) / n))


@pytest.mark.parametrize('alpha', [0.1, 1.0, 4.5])
def test_log_gamma_is_gamma(alpha):
  x = np.exp(np.asarray(mm.log_gamma(KEY, alpha, (20000,)), np.float64))
  assert stats.kstest(x, stats.gamma(alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize('m,alpha', [(5, 0.1), (5, 1.0), (3, 2.0), (16, 0.5)])
def test_dirichlet_moments_match_scipy(m, alpha):
  n = 40000
  W = np.asarray(mm.sample_weights(KEY, m, m, alpha, n=n), np.float64)
  ref = stats.dirichlet(np.full(m, alpha))
  mean, var = 1 / m, (m - 1) / (m**2 * (m * alpha + 1))
  np.testing.assert_allclose(ref.mean(), mean)
  np.testing.assert_allclose(ref.var(), var)
  # Standard errors of the sample mean and variance (fourth moment from scipy samples).
  ref_draws = ref.rvs(n, random_state=0)
  se_mean = np.sqrt(var / n)
  se_var = np.std((ref_draws - mean)**2, axis=0).max() / np.sqrt(n)
  np.testing.assert_allclose(W.mean(0), mean, atol=5 * se_mean)
  np.testing.assert_allclose(W.var(0), var, atol=5 * se_var)
  # The first coordinate's marginal is Beta(alpha, (m - 1) alpha).
  assert stats.kstest(W[:, 0], stats.beta(alpha, (m - 1) * alpha).cdf).pvalue > 1e-3


def test_alpha_may_be_traced():
  f = jax.jit(lambda k, a: mm.sample_weights(k, 6, 3, a, n=50))
  W = f(KEY, jnp.float32(0.7))
  np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(W, mm.sample_weights(KEY, 6, 3, 0.7, n=50), atol=1e-6)


# --------------------------------------------------------------------------------------------- MultiMix


def test_interpolation_is_weighted_sum_and_targets_on_simplex():
  Z, Y = batch()
  Zt, Yt = mm.sample_interpolation(KEY, Z, Y, 4, 1.0, n=30)
  W = mm.sample_weights(KEY, 8, 4, 1.0, n=30)
  np.testing.assert_allclose(Zt, W @ Z, atol=1e-5)
  np.testing.assert_allclose(Yt, W @ Y, atol=1e-6)
  np.testing.assert_allclose(Yt.sum(1), 1.0, atol=1e-5)


def test_trailing_feature_dims():
  Z = jax.random.normal(KEY, (8, 3, 2, 5))
  Zt, _ = mm.sample_interpolation(KEY, Z, batch()[1], 8, 1.0, n=7)
  assert Zt.shape == (7, 3, 2, 5)


def test_m2_one_pair_is_pairwise_mixup():
  Z, Y = batch(b=2)
  Zt, Yt = mm.sample_interpolation(KEY, Z, Y, 2, 0.4, n=5000)
  lam = np.asarray(mm.sample_weights(KEY, 2, 2, 0.4, n=5000))[:, 0]
  for k in (0, 1, 4999):
    np.testing.assert_allclose(Zt[k], mm.mix_pair(Z, jnp.array([1, 0]), lam[k])[0], atol=1e-5)
    np.testing.assert_allclose(Yt[k], mm.mix_pair(Y, jnp.array([1, 0]), lam[k])[0], atol=1e-6)
  assert stats.kstest(lam, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3


def test_linear_head_identity_global():
  Z, Y = batch(d=6, c=4)
  head = nn.Dense(4, bias_init=nn.initializers.normal(1.0))
  params = head.init(KEY, Z)
  Zt, _ = mm.sample_interpolation(KEY, Z, Y, 8, 0.5, n=64)
  logits_t, _ = mm.sample_interpolation(KEY, head.apply(params, Z), Y, 8, 0.5, n=64)
  np.testing.assert_allclose(head.apply(params, Zt), logits_t, atol=1e-5)


def test_linear_head_identity_dense():
  b, r, d, c = 6, 5, 7, 3
  Z = jax.random.normal(KEY, (b, r, d))
  Y = jax.nn.one_hot(jnp.arange(b) % c, c)
  head = nn.Dense(c, bias_init=nn.initializers.normal(1.0))
  params = head.init(KEY, Z)
  A = mm.confidence_map(Z, 'gap')
  Zt, Yt = mm.sample_dense_interpolation(KEY, Z, Y, A, 4, 1.0, n=20)
  logits_t, Yt2 = mm.sample_dense_interpolation(KEY, head.apply(params, Z), Y, A, 4, 1.0, n=20)
  assert Zt.shape == (20, r, d) and Yt.shape == (20, r, c)
  np.testing.assert_allclose(head.apply(params, Zt), logits_t, atol=1e-5)
  np.testing.assert_allclose(Yt, Yt2)
  np.testing.assert_allclose(Yt.sum(-1), 1.0, atol=1e-5)


def test_jit_equals_nojit_and_vmap():
  Z, Y = batch()
  f = lambda k: mm.sample_interpolation(k, Z, Y, 3, 0.3, n=16)
  for a, b_ in zip(f(KEY), jax.jit(f)(KEY)):
    np.testing.assert_allclose(a, b_, atol=1e-6)
  keys = jax.random.split(KEY, 4)
  Zv, Yv = jax.vmap(f)(keys)
  assert Zv.shape == (4, 16, 6) and Yv.shape == (4, 16, 4)
  np.testing.assert_allclose(Zv[2], f(keys[2])[0], atol=1e-5)


def test_shard_map_over_devices():
  assert jax.device_count() == 4, 'tests/conftest.py forces 4 host devices'
  mesh = jax.make_mesh((4,), ('data',))
  Z, Y = batch(b=32)

  def per_device(key, z, y):
    key = jax.random.fold_in(key[0], jax.lax.axis_index('data'))
    zt, yt = mm.sample_interpolation(key, z, y, 8, 0.5, n=10)
    return zt, yt

  sharded = jax.device_put((jnp.stack([KEY] * 4), Z, Y), NamedSharding(mesh, P('data')))
  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P('data'), P('data'), P('data')),
                            out_specs=(P('data'), P('data'))))
  Zt, Yt = map(np.asarray, f(*sharded))
  assert Zt.shape == (40, 6)
  for i in range(4):  # each device mixed its own 8 examples with its own key
    ref = mm.sample_interpolation(jax.random.fold_in(KEY, i), Z[8 * i:8 * i + 8], Y[8 * i:8 * i + 8], 8, 0.5, n=10)
    np.testing.assert_allclose(Zt[10 * i:10 * i + 10], ref[0], atol=1e-5)
    np.testing.assert_allclose(Yt[10 * i:10 * i + 10], ref[1], atol=1e-6)


# --------------------------------------------------------------------------------------- Dense MultiMix


@pytest.mark.parametrize('kind', mm.CONFIDENCE_KINDS)
def test_confidence_map_on_simplex(kind):
  b, r, d, c = 4, 9, 5, 3
  Z = jax.random.normal(KEY, (b, r, d))
  logits = jax.random.normal(jax.random.key(2), (b, r, c))
  A = mm.confidence_map(Z, kind, logits=logits, labels=jnp.array([0, 1, 2, 0]),
                        attention=jax.random.uniform(jax.random.key(3), (b, r)))
  assert A.shape == (b, r) and (A >= 0).all()
  np.testing.assert_allclose(A.sum(1), 1.0, atol=1e-5)


def test_confidence_map_formulas():
  b, r, d, c = 3, 4, 5, 2
  Z = jax.random.normal(KEY, (b, r, d))
  scores = np.einsum('brd,bd->br', Z, Z.mean(1)) / np.sqrt(d)
  np.testing.assert_allclose(mm.confidence_map(Z, 'gap'), jax.nn.softmax(scores, 1), atol=1e-6)
  relu = np.maximum(scores, 0)
  np.testing.assert_allclose(mm.confidence_map(Z, 'gap_relu'), relu / relu.sum(1, keepdims=True), atol=1e-6)
  # A map whose positions cancel out (pooled embedding 0) has every score 0: gap_relu falls back to uniform.
  half = jnp.round(Z[:, :2] * 4) / 4 + 0.125  # exact in float32, so that the mean is exactly 0
  cancelling = jnp.concatenate([half, -half], axis=1)
  assert float(jnp.abs(cancelling).min()) > 0 and not np.any(cancelling.mean(1))
  np.testing.assert_allclose(mm.confidence_map(cancelling, 'gap_relu'), 1 / r, atol=1e-6)
  np.testing.assert_allclose(mm.confidence_map(Z, 'uniform'), 1 / r)
  logits = jax.random.normal(KEY, (b, r, c))
  labels = jnp.array([1, 0, 1])
  cam = mm.confidence_map(Z, 'cam', logits=logits, labels=labels)
  np.testing.assert_allclose(cam, jax.nn.softmax(logits[jnp.arange(b), :, labels], 1), atol=1e-6)
  np.testing.assert_allclose(mm.confidence_map(Z, 'cam', logits=logits, labels=jax.nn.one_hot(labels, c)), cam,
                             atol=1e-6)


def test_dense_weights_formula_and_simplex():
  W = mm.sample_weights(KEY, 6, 3, 1.0, n=10)
  A = jax.random.uniform(KEY, (6, 4)) + 0.01
  w = mm.dense_weights(W, A)
  ref = W[:, :, None] * A[None] / np.einsum('nb,br->nr', W, A)[:, None]
  np.testing.assert_allclose(w, ref, atol=1e-6)
  np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal((w > 0).sum(1), 3)


def test_dense_weights_fall_back_where_tuple_has_no_confidence():
  W = jnp.array([[0.3, 0.7, 0.0], [0.0, 0.5, 0.5]])
  A = jnp.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # examples 0 and 1 have no confidence at position 0
  w = mm.dense_weights(W, A)
  np.testing.assert_allclose(w[0, :, 0], W[0])  # fallback: the tuple's own weights
  np.testing.assert_allclose(w[1, :, 0], [0, 0, 1])
  np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)


def test_gradients_flow_to_Z_not_through_confidence():
  b, r, d = 4, 3, 5
  Z = jax.random.normal(KEY, (b, r, d))
  Y = jax.nn.one_hot(jnp.arange(b) % 2, 2)
  assert np.all(jax.grad(lambda z: (mm.confidence_map(z, 'gap') * jnp.arange(r)).sum())(Z) == 0)

  def loss(z, A):
    zt, _ = mm.sample_dense_interpolation(KEY, z, Y, A, 3, 1.0, n=8)
    return (zt**2).sum()

  g_through = jax.grad(lambda z: loss(z, mm.confidence_map(z, 'gap')))(Z)
  g_const = jax.grad(loss)(Z, mm.confidence_map(Z, 'gap'))
  assert np.abs(g_through).sum() > 0
  np.testing.assert_allclose(g_through, g_const, atol=1e-6)
  g_global = jax.grad(lambda z: (mm.sample_interpolation(KEY, z, Y, 3, 1.0, n=8)[0]**2).sum())(Z)
  assert np.abs(g_global).sum() > 0


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize('call,match', [
    (lambda: mm.sample_weights(KEY, 4, 5, 1.0), r'm must be in \[1, 4\].*m = 5'),
    (lambda: mm.sample_weights(KEY, 4, 0, 1.0), r'm must be in \[1, 4\].*m = 0'),
    (lambda: mm.sample_weights(KEY, 4, 2, 1.0, n=0), r'n must be >= 1.*n = 0'),
    (lambda: mm.sample_weights(KEY, 4, 2, 0.0), r'alpha must be > 0.*0.0'),
    (lambda: mm.sample_weights(KEY, 4, 2, -1.0), r'alpha must be > 0'),
    (lambda: mm.sample_weights(KEY, 4, 2.5, 1.0), r'm must be a Python int'),
    (lambda: mm.sample_interpolation(KEY, jnp.zeros((4, 3)), jnp.zeros((5, 2)), 2, 1.0),
     r'Z and Y must share.*\(4, 3\).*\(5, 2\)'),
    (lambda: mm.sample_interpolation(KEY, jnp.zeros((4,)), jnp.zeros((4, 2)), 2, 1.0), r'Z must have shape'),
    (lambda: mm.sample_interpolation(KEY, jnp.zeros((4, 3)), jnp.zeros((4,)), 2, 1.0), r'Y must be .*\(4,\)'),
    (lambda: mm.sample_dense_interpolation(KEY, jnp.zeros((4, 3)), jnp.zeros((4, 2)), jnp.ones((4, 3)), 2, 1.0),
     r'Z must have shape \(b, r, d\), got shape \(4, 3\)'),
    (lambda: mm.sample_dense_interpolation(KEY, jnp.zeros((4, 3, 2)), jnp.zeros((4, 2)), jnp.ones((4, 5)), 2, 1.0),
     r'A must have shape \(b, r\) = \(4, 3\)'),
    (lambda: mm.confidence_map(jnp.zeros((4, 3, 2)), 'saliency'), r'kind must be one of'),
    (lambda: mm.confidence_map(jnp.zeros((4, 3, 2)), 'attention'), r"'attention' needs.*Vision Transformer"),
    (lambda: mm.confidence_map(jnp.zeros((4, 3, 2)), 'attention', attention=jnp.ones((4, 2))),
     r'attention must have shape \(b, r\) = \(4, 3\)'),
    (lambda: mm.confidence_map(jnp.zeros((4, 3, 2)), 'cam'), r"'cam' needs"),
    (lambda: mm.dense_weights(jnp.ones((3, 4)), jnp.ones((5, 2))), r'share b.*\(3, 4\).*\(5, 2\)'),
    (lambda: mm.cutmix(KEY, jnp.zeros((4, 3, 3)), jnp.zeros((4, 2)), 1.0), r'x must have shape \(b, H, W, C\)'),
])
def test_bad_arguments_raise_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()
