"""AlignMixup: the plan against a NumPy transcription of the authors' Sinkhorn (and against ott-jax), the aligned mix
against their `mixup_aligned`, and the method's loss and gradients against their forward pass.

The authors' code is github.com/shashankvkt/AlignMixup_CVPR22: `cifar10_100/utils/OT.py` and
`cifar10_100/models/resnet18_classifier.py`. Their step under jax.vmap with the data axis name stands in for one
device of the step; the step itself under shard_map and pmap runs in tests/test_step.py, and a short training run
in tests/test_train.py, as for every registered method.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimix_jax import mixing
from multimix_jax import models
from multimix_jax.configs import default
from multimix_jax.mixing import alignment
from multimix_jax.trainer import methods
from multimix_jax.trainer.step import AXIS


def their_sinkhorn(x, y, eps=0.1, max_iter=100, thresh=0.1):
  """`SinkhornDistance.forward` of utils/OT.py in float64 NumPy: x (b, r, d), y (b, s, d) -> (plan, iterations)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  C = (np.abs(x[:, :, None, :] - y[:, None, :, :])**2).sum(-1)
  mu, nu = np.full(x.shape[:2], 1.0 / x.shape[1]), np.full(y.shape[:2], 1.0 / y.shape[1])
  u, v = np.zeros_like(mu), np.zeros_like(nu)

  def M(u, v):
    return (-C + u[..., :, None] + v[..., None, :]) / eps

  def lse(a):
    top = a.max(-1, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(-1, keepdims=True)))[..., 0]

  for i in range(max_iter):
    u1 = u
    u = eps * (np.log(mu + 1e-8) - lse(M(u, v))) + u
    v = eps * (np.log(nu + 1e-8) - lse(np.swapaxes(M(u, v), -2, -1))) + v
    err = np.abs(u - u1).sum(-1).mean()
    if err < thresh:
      break
  return np.exp(M(u, v)), i + 1


def their_mixup_aligned(out, perm, lam, P, align_mix):
  """`mixup_aligned` of models/resnet18_classifier.py in jnp, on out (b, d, h, w) with a given plan P (b, r, r)."""
  b, d = out.shape[:2]
  feat1 = out.reshape(b, d, -1)
  feat2 = out[perm].reshape(b, d, -1)
  P = P * (out.shape[2] * out.shape[3])
  if align_mix == 0:
    f1 = jnp.matmul(feat2, jnp.swapaxes(P, 1, 2)).reshape(out.shape)
    return feat1.reshape(out.shape) * lam + f1 * (1 - lam)
  f2 = jnp.matmul(feat1, P).reshape(out.shape)
  return f2 * lam + feat2.reshape(out.shape) * (1 - lam)


def maps(scale, b=5, r=6, d=7, seed=0):
  rng = np.random.default_rng(seed)
  x = (scale * rng.normal(size=(b, r, d))).astype(np.float32)
  return x, x[rng.permutation(b)]


# ------------------------------------------------------------------------------------------------------- the plan


@pytest.mark.parametrize('scale,stops_early', [(0.3, True), (4.0, False)])
def test_plan_equals_the_authors_sinkhorn(scale, stops_early):
  x, y = maps(scale)
  expected, iterations = their_sinkhorn(x, y)
  assert (iterations < 100) == stops_early  # both of their exits are exercised
  plan = alignment.sinkhorn_plan(alignment.squared_distances(x, y))
  # Costs of hundreds over ε = 0.1 put float32 rounding of the cost at 1e-4 of the exponent, as in their float32.
  np.testing.assert_allclose(plan, expected, rtol=2e-3, atol=1e-5)
  # v is updated last: columns carry their marginal 1/s + 1e-8 exactly, rows only when converged.
  np.testing.assert_allclose(plan.sum(axis=1), 1 / 6 + 1e-8, rtol=5e-4)
  np.testing.assert_allclose(plan.sum(axis=(1, 2)), 1.0, rtol=5e-4)


def test_fixed_iterations_equal_ott_jax():
  ott = pytest.importorskip('ott')
  from ott.geometry import geometry
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn
  del ott
  x, y = maps(1.0, seed=1)
  cost = alignment.squared_distances(x, y)
  solver = sinkhorn.Sinkhorn(min_iterations=30, max_iterations=30, threshold=-1.0)

  def solve(c):  # ott-jax updates the column potential first: solve the transposed problem, transpose back
    r, s = c.shape
    geom = geometry.Geometry(cost_matrix=c.T, epsilon=0.1)  # a float epsilon is absolute in ott-jax
    return solver(linear_problem.LinearProblem(geom, a=jnp.full(s, 1 / s + 1e-8), b=jnp.full(r, 1 / r + 1e-8))).matrix.T

  np.testing.assert_allclose(alignment.sinkhorn_plan(cost, max_iterations=30, threshold=0.0), jax.jit(jax.vmap(solve))(cost),
                             rtol=1e-3, atol=1e-8)


def test_bad_solver_settings_are_refused():
  cost = jnp.ones((2, 3, 3))
  with pytest.raises(ValueError, match='epsilon'):
    alignment.sinkhorn_plan(cost, epsilon=0.0)
  with pytest.raises(ValueError, match='max_iterations'):
    alignment.sinkhorn_plan(cost, max_iterations=0)
  with pytest.raises(ValueError, match=r'shape \(b, r, s\)'):
    alignment.sinkhorn_plan(cost[0])


# -------------------------------------------------------------------------------------------------- the mix


@pytest.mark.parametrize('direction', [0, 1])
def test_aligned_mix_equals_theirs(direction):
  rng = np.random.default_rng(2)
  out = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)  # theirs: (b, d, h, w)
  perm = np.array([2, 0, 3, 1])
  Z = out.reshape(4, 3, 4).transpose(0, 2, 1)  # ours: (b, r, d)
  plan = alignment.sinkhorn_plan(alignment.squared_distances(Z, Z[perm]))
  mixed = alignment.aligned_mix(Z, perm, 0.3, plan, direction)
  expected = their_mixup_aligned(out, perm, 0.3, plan, direction).reshape(4, 3, 4).transpose(0, 2, 1)
  np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-6)


def test_lambda_one_is_the_unmixed_batch_and_lambda_zero_the_partner():
  Z, _ = maps(1.0)
  perm = np.array([1, 2, 3, 4, 0])
  plan = alignment.sinkhorn_plan(alignment.squared_distances(Z, Z[perm]))
  np.testing.assert_array_equal(alignment.aligned_mix(Z, perm, 1.0, plan, 0), Z)  # on the example's positions
  np.testing.assert_array_equal(alignment.aligned_mix(Z, perm, 0.0, plan, 1), Z[perm])  # on the partner's


def test_pooled_mix_of_direction_0_is_mixup_of_the_pooled_maps():
  # Exact column marginals make the aligned partner's mean its own mean: after the authors' average pooling,
  # direction 0 is mixup of the pooled features, whatever the plan's rows.
  Z, _ = maps(4.0)  # far from converged: rows are not uniform
  perm = np.array([1, 2, 3, 4, 0])
  plan = alignment.sinkhorn_plan(alignment.squared_distances(Z, Z[perm]))
  assert np.abs(plan.sum(axis=2) * 6 - 1).max() > 0.1
  pooled = alignment.aligned_mix(Z, perm, 0.3, plan, 0).mean(axis=1)
  # To float32 rounding of exponents of ~2000 (costs of hundreds over ε); rows being off would show at 1e-1.
  np.testing.assert_allclose(pooled, 0.3 * Z.mean(1) + 0.7 * Z[perm].mean(1), rtol=1e-3, atol=5e-4)


# ------------------------------------------------------------------------------------------------- the method


B, H, W, C_IN, D, C = 6, 2, 2, 3, 5, 4


def stand_in(params, images, *, dense=False):
  """A non-linear feature map (b, H, W, D) and the linear head; forward's signature and outputs."""
  w1, b1, w2, b2 = params
  features = jnp.tanh(images @ w1 + b1)
  dense_logits = features @ w2 + b2
  return (features, dense_logits if dense else dense_logits.mean(axis=(1, 2))), {}


def their_loss(params, images, labels, perm, lam, P, align_mix):
  """Their training forward and criterion: mix the encoder's map, avg-pool, classify, λ-weighted cross-entropies."""
  (features, _), _ = stand_in(params, images)
  out = jnp.transpose(features, (0, 3, 1, 2))  # (b, d, h, w)
  pooled = their_mixup_aligned(out, perm, lam, P, align_mix).mean(axis=(2, 3))
  log_p = jax.nn.log_softmax(pooled @ params[2] + params[3])
  ce = lambda y: -jnp.take_along_axis(log_p, y[:, None], axis=1).mean()
  return lam * ce(labels) + (1 - lam) * ce(labels[perm])


def test_loss_and_gradients_equal_their_forward_with_the_plan_detached(monkeypatch):
  rng = np.random.default_rng(3)
  params = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((C_IN, D), (D,), (D, C), (C,)))
  images = jnp.asarray(rng.normal(size=(B, H, W, C_IN)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, C, B))
  perm, lam = jnp.array([3, 0, 5, 1, 2, 4]), 0.3
  monkeypatch.setattr(mixing, 'sample_pairing', lambda key, b, alpha, mode, lam_key=None: (perm, jnp.float32(lam)))
  config = default.get_config()
  loss_fn = methods.METHODS['alignmixup'](config)[0].loss_fn
  assert loss_fn.func is methods.alignmixup.alignmixup

  @jax.jit
  def ours(params, key):
    def per_device(images, targets):
      return loss_fn(functools.partial(stand_in, params), images, targets, key)[0]
    return jax.vmap(per_device, axis_name=AXIS)(images[None], jax.nn.one_hot(labels, C)[None])[0]

  # Their plan, from their solver on the forward's map, enters as a constant (`.detach()`).
  features = np.asarray(stand_in(params, images)[0][0]).reshape(B, -1, D)
  P, _ = their_sinkhorn(features, features[np.asarray(perm)])
  P = jnp.asarray(P, jnp.float32)
  ours = jax.jit(jax.value_and_grad(ours))
  theirs = jax.jit(jax.value_and_grad(their_loss), static_argnums=6)
  theirs = [theirs(params, images, labels, perm, lam, P, a) for a in (0, 1)]
  seen = set()
  for seed in range(8):
    loss, grads = ours(params, jax.random.key(seed))
    (direction,) = [a for a in (0, 1) if np.isclose(loss, theirs[a][0], rtol=1e-5)]
    seen.add(direction)
    jax.tree.map(lambda g, t: np.testing.assert_allclose(g, t, rtol=1e-4, atol=1e-6), grads, theirs[direction][1])
    assert all(np.abs(g).max() > 0 for g in grads)  # the backbone (w1, b1) learns through both maps
  assert seen == {0, 1}  # a fair coin per step chooses which side is aligned


def test_builder_binds_the_protocol_and_the_input_mixup_branch():
  config = default.get_config()
  config.alignmixup.prob = 0.25
  config.alignmixup.alpha = 0.7
  aligned, other = methods.METHODS['alignmixup'](config)
  assert (aligned.probability, other.probability) == (0.25, 0.75)
  assert aligned.loss_fn.keywords == dict(alpha=0.7, mode='batch', lam_scope='global', epsilon=0.1,
                                          max_iterations=100, threshold=0.1, label_smoothing=0.0)
  assert other.loss_fn.func is methods.pairwise.input_mixup and other.loss_fn.keywords['alpha'] == 0.7


# One model per architecture module: models of one module share their forward.
ONE_PER_ARCHITECTURE = sorted({cls.__module__: name for name, cls in sorted(models.MODELS.items(), reverse=True)}.values())


@pytest.mark.parametrize('name', ONE_PER_ARCHITECTURE)
def test_every_architecture_traces_the_aligned_loss(name):
  # Shapes only (no compilation): the loss reads the dense forward of any model; the gradient is checked above.
  model = models.create_model(name, num_classes=7)
  images = jnp.zeros((1, 2, *getattr(model, 'example_input', (32, 32, 3))))
  loss_fn = methods.METHODS['alignmixup'](default.get_config())[0].loss_fn

  def run(images, targets):
    variables = model.init(jax.random.key(1), images[0], train=False)

    def forward(x, **kwargs):
      return model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'], **kwargs)

    return jax.vmap(lambda x, y: loss_fn(forward, x, y, jax.random.key(0)), axis_name=AXIS)(images, targets)

  loss, (logits, targets, _) = jax.eval_shape(run, images, jnp.zeros((1, 2, 7)))
  assert loss.shape == (1,) and logits.shape == targets.shape == (1, 2, 7)
