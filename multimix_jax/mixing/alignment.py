"""AlignMixup (Venkataramanan et al., CVPR 2022): feature maps aligned by optimal transport, then mixed.

Pure functions, jax only. Notation: b pairs, r (= h · w) spatial positions of the last feature map, d channels; a map
is (b, r, d) and its partner the same array permuted over the batch, (b, s, d) with s = r.

The numbers follow the authors' code (github.com/shashankvkt/AlignMixup_CVPR22, identical in its cifar10_100,
tiny_imgnet and imagenet folders): `utils/OT.py` `SinkhornDistance` for the plan, `models/*_classifier.py`
`mixup_aligned` for the mix. The plan solves the entropic transport between two uniform measures over positions with
the raw squared Euclidean distance as cost (no normalisation) and an absolute ε = 0.1, by log-domain Sinkhorn,
and is taken without gradient (`.detach()` there).

The solver is written here in jnp rather than taken from ott-jax: the authors stop on a criterion ott-jax has no
setting for (the batch mean of the change of the row potential, see `sinkhorn_plan`), and on the CIFAR shape
(b = 128, r = 16, d = 512, 100 iterations, jitted, CPU) it ran in 9.5 ms against ott-jax's 11.4 ms (vmapped,
`min_iterations = max_iterations = 100`). The tests check it against ott-jax and against a NumPy transcription of
the authors' solver.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any

# The authors' settings (utils/OT.py and `SinkhornDistance(eps=0.1, max_iter=100)` in mixup_aligned).
EPSILON = 0.1
MAX_ITERATIONS = 100
THRESHOLD = 0.1
# Added to the uniform marginals inside the log, as theirs (log(mu + 1e-8)).
_MARGINAL_OFFSET = 1e-8


def squared_distances(x, y):
  """Squared Euclidean distances between the positions of paired maps.

  Args:
    x: (b, r, d).
    y: (b, s, d).

  Returns:
    float32 (b, r, s): |x_i − y_j|², clipped at 0 against rounding. The expansion |x|² + |y|² − 2 x·y avoids the
    (b, r, s, d) difference array (2.5 GB for ResNet-50 on ImageNet at b = 128).
  """
  _check_maps(x, y)
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  cross = jnp.einsum('brd,bsd->brs', x, y, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum((x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2.0 * cross, 0.0)


def sinkhorn_plan(cost, *, epsilon=EPSILON, max_iterations=MAX_ITERATIONS, threshold=THRESHOLD):
  """Entropic optimal transport plans between uniform measures, as the authors' `SinkhornDistance`.

  Log-domain Sinkhorn from zero potentials: each iteration updates the row potential u, then the column potential
  v with the new u,
    u ← ε (log(1/r + 1e-8) − logsumexp_j((v_j − C_ij) / ε)),
    v ← ε (log(1/s + 1e-8) − logsumexp_i((u_i − C_ij) / ε)),
  and the plan is exp((u_i + v_j − C_ij) / ε). It stops after `max_iterations`, or earlier, after the first
  iteration whose mean over the b pairs of Σ_i |u_i − u_i^previous| is below `threshold`: the rule is taken over
  the whole batch, as theirs (per device here, as per GPU under their DataParallel). Since v is updated last,
  columns carry their marginal exactly (1/s + 1e-8) and rows only approximately; with costs far above ε (hundreds
  for a PreActResNet-18 at initialisation) 100 iterations leave the rows far from uniform, as in theirs.

  Args:
    cost: (b, r, s) cost matrices, e.g. `squared_distances`; no gradient flows back through the plan.
    epsilon: entropic regularisation > 0, absolute (in the units of the cost).
    max_iterations: static int >= 1.
    threshold: early-stopping tolerance on the change of u; 0 runs exactly `max_iterations`.

  Returns:
    float32 (b, r, s): non-negative plans, each of total mass 1 + s · 1e-8.
  """
  if jnp.ndim(cost) != 3:
    raise ValueError(f'cost must have shape (b, r, s), got shape {jnp.shape(cost)}.')
  if not epsilon > 0:
    raise ValueError(f'epsilon must be > 0 (the entropic regularisation), got epsilon = {epsilon}.')
  if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
    raise ValueError(f'max_iterations must be a Python int >= 1, got {max_iterations!r}.')
  if not threshold >= 0:
    raise ValueError(f'threshold must be >= 0 (0: no early stop), got threshold = {threshold}.')
  cost = jax.lax.stop_gradient(cost.astype(jnp.float32))
  _, r, s = cost.shape
  log_mu, log_nu = np.log(1.0 / r + _MARGINAL_OFFSET), np.log(1.0 / s + _MARGINAL_OFFSET)

  def iterate(state):
    i, u, v, _ = state
    u_new = epsilon * (log_mu - jax.nn.logsumexp((v[:, None, :] - cost) / epsilon, axis=2))
    v_new = epsilon * (log_nu - jax.nn.logsumexp((u_new[:, :, None] - cost) / epsilon, axis=1))
    return i + 1, u_new, v_new, u

  def keep_going(state):
    i, u, _, u_previous = state
    change = jnp.abs(u - u_previous).sum(-1).mean()
    return (i == 0) | ((i < max_iterations) & ~(change < threshold))

  # Potentials start from the cost (zero times it) rather than from constants, so that under shard_map the loop
  # carry is device-varying from the start, as the body makes it.
  zero_u, zero_v = 0.0 * cost[:, :, 0], 0.0 * cost[:, 0, :]
  _, u, v, _ = jax.lax.while_loop(keep_going, iterate, (0, zero_u, zero_v, zero_u))
  return jnp.exp((u[:, :, None] + v[:, None, :] - cost) / epsilon)


def aligned_mix(Z, perm, lam, plan, direction):
  """Mixes each map with its partner after aligning one to the other through the plan, as `mixup_aligned`.

  With R = s · plan[k] (the authors' "assignment matrix", plan scaled by the number of positions) for the pair
  (k, perm[k]):
    direction 0 — the partner aligned to the example: z̃_k,i = λ z_k,i + (1 − λ) Σ_j R_ij z_perm[k],j   (their
      Ã = A' Rᵀ), on the example's positions;
    direction 1 — the example aligned to the partner: z̃_k,j = λ Σ_i R_ij z_k,i + (1 − λ) z_perm[k],j   (their
      Ã' = A R), on the partner's positions.
  Either way λ weighs example k and 1 − λ its partner, so targets mix as in mixup: λ y_k + (1 − λ) y_perm[k].

  The mix is linear in Z, so it may be applied to the dense logits of an affine head (b, r, c) instead of the
  features: the plan's total mass is 1 (up to s · 1e-8), so mixing and then pooling the dense logits equals
  classifying the pooled mixed map.

  Args:
    Z: (b, r, k) maps (features, or dense logits).
    perm: int (b,) partner of each example.
    lam: λ, a scalar or (b,) (one per example).
    plan: (b, r, r) plans between each map (rows) and its partner (columns), e.g. `sinkhorn_plan`.
    direction: 0 or 1 (may be traced; e.g. a fair coin per step, as theirs).

  Returns:
    (b, r, k) mixed maps, at least float32.
  """
  if jnp.ndim(Z) != 3:
    raise ValueError(f'Z must have shape (b, r, k), got shape {jnp.shape(Z)}.')
  b, r, _ = Z.shape
  if jnp.shape(plan) != (b, r, r):
    raise ValueError(f'plan must have shape (b, r, r) = {(b, r, r)} to match Z {Z.shape}, got {jnp.shape(plan)}.')
  Z = Z.astype(jnp.promote_types(Z.dtype, jnp.float32))
  R = r * plan.astype(Z.dtype)
  lam = jnp.asarray(lam, Z.dtype)
  lam = lam.reshape(-1, 1, 1) if lam.ndim == 1 else lam
  partner = Z[perm]
  partner_on_example = jnp.einsum('bij,bjk->bik', R, partner)
  example_on_partner = jnp.einsum('bij,bik->bjk', R, Z)
  return jnp.where(direction == 0, lam * Z + (1 - lam) * partner_on_example,
                   lam * example_on_partner + (1 - lam) * partner)


def _check_maps(x, y):
  if jnp.ndim(x) != 3 or jnp.ndim(y) != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
    raise ValueError(f'x and y must be maps (b, r, d) and (b, s, d) with the same b and d; got {jnp.shape(x)} and '
                     f'{jnp.shape(y)}.')
