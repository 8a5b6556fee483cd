"""Properties of the pure interpolation functions: MultiMix, Dense MultiMix and the pairwise baselines."""

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


# ----------------------------------------------------------------------------------------------- pairwise


def test_input_mixup_mixes_inputs_and_targets_alike():
  b, c = 8, 8
  x = jnp.arange(b, dtype=jnp.float32)[:, None, None, None] * jnp.ones((b, 2, 2, 1))
  y = jax.nn.one_hot(jnp.arange(b), c)
  xt, yt = mm.input_mixup(KEY, x, y, 1.0)
  np.testing.assert_allclose(xt[:, 0, 0, 0], yt @ jnp.arange(b, dtype=jnp.float32), atol=1e-5)
  np.testing.assert_allclose(yt.sum(1), 1.0, atol=1e-6)


def test_cutmix_lambda_is_exact_pasted_area():
  b, H, W = 6, 10, 7
  x = jnp.broadcast_to(jnp.arange(b, dtype=jnp.float32)[:, None, None, None], (b, H, W, 3))
  y = jax.nn.one_hot(jnp.arange(b), b)
  for seed in range(20):
    xt, yt = mm.cutmix(jax.random.key(seed), x, y, 1.0)
    own = (xt[..., 0] == jnp.arange(b)[:, None, None]).mean((1, 2))
    np.testing.assert_allclose(yt[jnp.arange(b), jnp.arange(b)], own, atol=1e-6)
    np.testing.assert_allclose(yt.sum(1), 1.0, atol=1e-6)


def test_manifold_mixup_mix_pair():
  h = jax.random.normal(KEY, (5, 3, 3, 2))
  perm = jnp.array([4, 3, 2, 1, 0])
  np.testing.assert_allclose(mm.mix_pair(h, perm, 0.25), 0.25 * h + 0.75 * h[perm], atol=1e-6)


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


# --------------------------------------------------------------------------- per-pair and per-example λ


@pytest.mark.parametrize('mode', mm.interpolation.MIXUP_MODES)
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
  x, y = batch(8)
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


@pytest.mark.parametrize('mode', ['pair', 'elem'])
def test_cutmix_per_example_lambda_is_each_pasted_area(mode):
  b, H, W = 6, 10, 7
  x = jnp.broadcast_to(jnp.arange(b, dtype=jnp.float32)[:, None, None, None], (b, H, W, 3))
  y = jax.nn.one_hot(jnp.arange(b), b)
  # One compilation; perm is the partner cutmix draws (from the first of its three keys).
  draw = jax.jit(lambda key: (*mm.cutmix(key, x, y, 1.0, mode=mode),
                              mm.sample_pairing(jax.random.split(key, 3)[0], b, 1.0, mode=mode)[0]))
  areas = set()
  for seed in range(8):
    xt, yt, perm = draw(jax.random.key(seed))
    own = (xt[..., 0] == jnp.arange(b)[:, None, None]).mean((1, 2))
    pasted = xt[..., 0] == perm[:, None, None]
    # Where an example is its own partner nothing changes; elsewhere the box holds the partner's pixels.
    mixed = np.asarray(perm) != np.arange(b)
    np.testing.assert_allclose(np.asarray(own)[mixed] + np.asarray(pasted.mean((1, 2)))[mixed], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(yt)[mixed, np.arange(b)[mixed]], np.asarray(own)[mixed], atol=1e-6)
    np.testing.assert_allclose(yt.sum(1), 1.0, atol=1e-6)
    if mode == 'pair':  # both members paste the same box from each other
      np.testing.assert_array_equal(pasted, pasted[perm])
    areas.update(np.round(np.asarray(own), 6).tolist())
  assert len(areas) > b  # one box per example (or pair), not one for the batch


def test_bad_mixup_mode_is_rejected():
  x, y = jnp.zeros((4, 3, 3, 1)), jnp.zeros((4, 2))
  for call in (lambda: mm.sample_pairing(KEY, 4, 1.0, mode='example'),
               lambda: mm.input_mixup(KEY, x, y, 1.0, mode='batches'),
               lambda: mm.cutmix(KEY, x, y, 1.0, mode=None)):
    with pytest.raises(ValueError, match=r"mode must be one of \('batch', 'pair', 'elem'\)"):
      call()


# ------------------------------------------------------------- SaliencyMix, FMix, ResizeMix, TransMix


def spectral_residual_reference(image, sigma):
  """Hou & Zhang (CVPR 2007) in NumPy/SciPy, as their MATLAB code, at the image's own size: grey level, log
  amplitude minus its 3 × 3 mean (replicated borders), back with the phase, squared magnitude, Gaussian smoothing
  (replicated borders), scaled to [0, 1]."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  spectrum = np.fft.fft2(np.asarray(image, np.float64).mean(-1))
  log_amplitude = np.log(np.maximum(np.abs(spectrum), 1e-12))
  residual = log_amplitude - ndimage.uniform_filter(log_amplitude, 3, mode='nearest')
  saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum))))**2
  saliency = ndimage.gaussian_filter(saliency, sigma, mode='nearest', truncate=4.0)
  return (saliency - saliency.min()) / (saliency.max() - saliency.min())


@pytest.mark.parametrize('shape', [(8, 8, 1), (12, 10, 3), (32, 32, 3)])
def test_saliency_map_is_the_spectral_residual(shape):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, *shape)).astype(np.float32)
  # A bright square on a smooth background: its corner region is the salient part.
  images[2] = np.linspace(0, 1, shape[1])[None, :, None] + 0.05 * images[2]
  images[2, 2:5, 3:6] += 4.0
  maps = np.asarray(mm.saliency_map(jnp.asarray(images)))
  assert maps.shape == (3, *shape[:2])
  sigma = mm.interpolation.saliency_sigma(*shape[:2])
  for image, got in zip(images, maps):
    np.testing.assert_allclose(got, spectral_residual_reference(image, sigma), atol=2e-4)
  rows, cols = map(np.asarray, mm.interpolation.saliency_peak(jnp.asarray(images)))
  np.testing.assert_array_equal(rows * shape[1] + cols, maps.reshape(3, -1).argmax(-1))
  assert 1 <= rows[2] <= 6 and 2 <= cols[2] <= 7  # at (or next to, after smoothing) the square


# CutMix's own tests are above; the methods that paste a region of (or the whole) partner share these.
PASTING = {
    'saliencymix': lambda key, x, y, mode: mm.saliencymix(key, x, y, 1.0, mode=mode),
    'fmix': lambda key, x, y, mode: mm.fmix(key, x, y, 1.0, mode=mode),
    'resizemix': lambda key, x, y, mode: mm.resizemix(key, x, y, mode=mode),
}


@pytest.mark.parametrize('mode', mm.interpolation.MIXUP_MODES)
@pytest.mark.parametrize('name', sorted(PASTING))
def test_pasting_methods_mix_targets_by_the_exact_share_of_pixels(name, mode):
  """Example i is filled with the value i (plus texture in a second channel, for the saliency): the targets must
  equal the share of each example's pixels in each mixed image, and sum to one."""
  b, height, width = 6, 10, 7
  texture = np.random.default_rng(1).normal(size=(b, height, width, 1)).astype(np.float32)
  x = jnp.concatenate([jnp.broadcast_to(jnp.arange(b, dtype=jnp.float32)[:, None, None, None],
                                        (b, height, width, 1)), texture], axis=-1)
  y = jax.nn.one_hot(jnp.arange(b), b)
  draw = jax.jit(lambda key: PASTING[name](key, x, y, mode))
  own_shares = []
  for seed in range(4):
    xt, yt = map(np.asarray, draw(jax.random.key(seed)))
    shares = (xt[..., 0][:, None] == np.arange(b)[None, :, None, None]).mean((2, 3))  # (b, b): pixels of each
    np.testing.assert_allclose(yt, shares, atol=1e-6)
    np.testing.assert_allclose(yt.sum(1), 1.0, atol=1e-6)
    own = np.diag(yt)
    partner = np.argmax(yt - np.eye(b), axis=1)  # where an example is mixed, its partner holds the rest
    mixed = own < 1
    if mode == 'batch':  # one λ: every mixed example keeps the same share (SaliencyMix's box is one for the batch)
      assert len(set(np.round(own[mixed], 6))) <= 1
    if mode == 'pair' and name != 'saliencymix':  # the pair shares the box or mask, each pasting the other's
      np.testing.assert_allclose(own[mixed], own[partner[mixed]], atol=1e-6)
    own_shares.append(own)
  if mode == 'elem':
    assert max(len(set(np.round(own, 6))) for own in own_shares) > 2  # one λ per example


@pytest.mark.parametrize('name', sorted(PASTING))
def test_pasting_methods_under_shard_map_equal_each_device_alone(name):
  """Each of 4 devices mixes its own 6 examples with its own key, under jit(shard_map), exactly as the function
  jitted on one device does with that device's share."""
  mesh = jax.make_mesh((4,), ('data',))
  x = jax.random.normal(KEY, (24, 8, 8, 2))
  y = jax.nn.one_hot(jnp.arange(24) % 5, 5)

  def per_device(key, x, y):
    return PASTING[name](jax.random.fold_in(key[0], jax.lax.axis_index('data')), x, y, 'elem')

  sharded = jax.device_put((jnp.stack([KEY] * 4), x, y), NamedSharding(mesh, P('data')))
  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P('data'), out_specs=(P('data'), P('data'))))
  xt, yt = map(np.asarray, f(*sharded))
  alone = jax.jit(lambda key, x, y: PASTING[name](key, x, y, 'elem'))  # x, y: on one device
  for i in range(4):
    ref_x, ref_y = alone(jax.random.fold_in(KEY, i), x[6 * i:6 * i + 6], y[6 * i:6 * i + 6])
    np.testing.assert_allclose(xt[6 * i:6 * i + 6], ref_x, atol=1e-6)
    np.testing.assert_allclose(yt[6 * i:6 * i + 6], ref_y, atol=1e-6)


def test_saliencymix_centres_the_box_on_the_partners_saliency_peak():
  b, size = 8, 16
  x = jax.random.normal(KEY, (b, size, size, 3))
  y = jax.nn.one_hot(jnp.arange(b), b)
  key = jax.random.key(2)

  @jax.jit
  def draw(x):
    perm, lam = mm.sample_pairing(key, b, 1.0, mode='elem')
    return perm, lam, mm.saliencymix(key, x, y, 1.0, mode='elem'), mm.interpolation.saliency_peak(x[perm])

  perm, lam, (xt, yt), (rows, cols) = draw(x)
  pasted = np.asarray((xt != x).any(-1))
  for i in np.flatnonzero(np.asarray(perm) != np.arange(b)):
    half = int(size * np.sqrt(1 - float(lam[i]))) // 2
    expected = np.zeros((size, size), bool)
    expected[max(rows[i] - half, 0):rows[i] + half, max(cols[i] - half, 0):cols[i] + half] = True
    np.testing.assert_array_equal(pasted[i], expected)
    np.testing.assert_allclose(yt[i, i], 1 - expected.mean(), atol=1e-6)
  # 'batch': the authors' one box, on the peak of the first example's partner.

  @jax.jit
  def draw_batch(x):
    perm = mm.sample_pairing(key, b, 1.0)[0]
    return perm, mm.saliencymix(key, x, y, 1.0)[0], mm.interpolation.saliency_peak(x[perm[:1]])

  perm, xt, (row, col) = draw_batch(x)
  row, col = int(row[0]), int(col[0])
  pasted = np.asarray((xt != x).any(-1))
  assert pasted.any() and pasted[np.asarray(perm) != np.arange(b)].all(0)[row, col]


@pytest.mark.parametrize('height,width', [(8, 8), (10, 7), (32, 32)])
def test_fmix_mask_mean_is_the_drawn_lambda_within_a_pixel(height, width):
  lam = jnp.concatenate([jnp.array([0.0, 1.0, 0.5]), jax.random.uniform(KEY, (61,))])
  mask = np.asarray(mm.fourier_mask(jax.random.key(3), lam, height, width))
  assert mask.shape == (64, height, width) and mask.dtype == bool
  assert np.abs(mask.mean((1, 2)) - np.asarray(lam)).max() <= 0.5 / (height * width) + 1e-7
  batch_mask = mm.fourier_mask(jax.random.key(3), 0.3, height, width)  # one λ: one mask
  assert batch_mask.shape == (height, width)


def test_fmix_noise_is_the_authors_low_frequency_image():
  """The noise is the authors' `make_low_freq_image` (before its monotone rescaling), with the same coefficients;
  the decay makes masks smooth: far fewer neighbours disagree at δ = 3 than with white noise (δ = 0)."""
  height, width, decay = 12, 9, 3.0
  key = jax.random.key(4)
  noise = np.asarray(mm.interpolation.fourier_noise(key, (), height, width, decay_power=decay))
  coefficients = np.asarray(jax.random.normal(key, (2, height, width // 2 + 1)), np.float64)
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.fftfreq(width)[:width // 2 + 2] if width % 2 else np.fft.fftfreq(width)[:width // 2 + 1]
  scale = 1 / np.maximum(np.sqrt(fx * fx + fy * fy), 1 / max(height, width))**decay
  spectrum = scale[:, :width // 2 + 1] * (coefficients[0] + 1j * coefficients[1])
  np.testing.assert_allclose(noise, np.fft.irfft2(spectrum, (height, width)), rtol=1e-4, atol=1e-5)

  def disagreements(decay_power):
    masks = np.asarray(mm.fourier_mask(key, jnp.full((32,), 0.5), 32, 32, decay_power=decay_power))
    return (masks[:, 1:] != masks[:, :-1]).mean() + (masks[:, :, 1:] != masks[:, :, :-1]).mean()

  assert disagreements(3.0) < 0.25 * disagreements(0.0)


def test_resizemix_pastes_the_whole_partner_resized_into_a_box_of_side_tau():
  b, height, width = 8, 20, 16
  x = jax.random.normal(KEY, (b, height, width, 2))
  y = jax.nn.one_hot(jnp.arange(b), b)
  for seed in range(6):
    xt, yt = map(np.asarray, mm.resizemix(jax.random.key(seed), x, y, scale=(0.1, 0.8), mode='elem'))
    for i in range(b):
      box = (xt[i] != np.asarray(x[i])).any(-1)
      if not box.any() or yt[i, i] == 1:  # an empty box, or an example paired with itself
        continue
      rows, cols = np.flatnonzero(box.any(1)), np.flatnonzero(box.any(0))
      h, w = len(rows), len(cols)
      assert box.sum() == h * w and rows[-1] - rows[0] == h - 1 and cols[-1] - cols[0] == w - 1  # one box, inside
      tau = (h / height, w / width)
      assert 0.1 - 1 / height <= tau[0] <= 0.8 and 0.1 - 1 / width <= tau[1] <= 0.8
      partner = int(np.argmax(yt[i] - np.eye(b)[i]))
      source = np.asarray(x[partner])[np.arange(h) * height // h][:, np.arange(w) * width // w]  # nearest
      np.testing.assert_allclose(xt[i][box].reshape(h, w, 2), source, rtol=1e-6)
      np.testing.assert_allclose(yt[i, partner], h * w / (height * width), atol=1e-6)
      np.testing.assert_allclose(yt[i, i], 1 - h * w / (height * width), atol=1e-6)


def test_transmix_targets_weigh_the_pasted_share_by_attention():
  b, height, width, c = 4, 8, 8, 4
  perm = jnp.array([1, 0, 3, 2])
  y = jax.nn.one_hot(jnp.arange(b), c)
  box = jnp.zeros((b, height, width), bool).at[:, :4, :4].set(True)  # a quarter, the top-left 2 × 2 of 4 × 4 tokens
  uniform = jnp.ones((b, 4, 4))
  np.testing.assert_allclose(mm.transmix_targets(y, perm, box, uniform), mm.mix_pair(y, perm, 0.75), atol=1e-6)
  on_pasted = jnp.zeros((b, 4, 4)).at[:, 1, 1].set(1.0)  # all attention on one pasted token
  targets = mm.transmix_targets(y, perm, box, on_pasted)
  np.testing.assert_allclose(targets, mm.mix_pair(y, perm, 1 - (0.25 + 1.0) / 2), atol=1e-6)
  np.testing.assert_allclose(mm.transmix_targets(y, perm, box, on_pasted, attention_weight=1.0),
                             y[perm], atol=1e-6)
  np.testing.assert_allclose(mm.transmix_targets(y, perm, box, on_pasted, attention_weight=0.0),
                             mm.mix_pair(y, perm, 0.75), atol=1e-6)
  # A token counts as pasted by its top-left pixel (nearest-neighbour downsampling).
  corner = jnp.zeros((b, height, width), bool).at[:, 2, 2].set(True)
  only_there = jnp.zeros((b, 4, 4)).at[:, 1, 1].set(1.0)
  np.testing.assert_allclose(mm.transmix_targets(y, perm, corner, only_there, attention_weight=1.0), y[perm],
                             atol=1e-6)
  np.testing.assert_allclose(mm.transmix_targets(y, perm, box.at[:, 2, 2].set(False), only_there,
                                                 attention_weight=1.0), y, atol=1e-6)
  assert not jax.grad(lambda a: mm.transmix_targets(y, perm, box, a)[:, 0].sum())(on_pasted + 1).any()
