"""MultiMix and Dense MultiMix interpolation, and the pairwise and input-space baselines, as pure functions.

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

Array = Any

CONFIDENCE_KINDS = ('gap', 'gap_relu', 'cam', 'uniform', 'attention')


# ---------------------------------------------------------------------------------------------- validation


def _check_int(name, value, *, low=1, high=None, high_name=None):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f'{name} must be a Python int (it fixes a shape), got {value!r} of type {type(value).__name__}.')
  if value < low or (high is not None and value > high):
    bound = f'in [{low}, {high}] ({high_name} = {high})' if high is not None else f'>= {low}'
    raise ValueError(f'{name} must be {bound}, got {name} = {value}.')


def _check_alpha(alpha):
  if jnp.ndim(alpha) != 0:
    raise ValueError(f'alpha must be a scalar, got shape {jnp.shape(alpha)}.')
  try:
    value = float(alpha)
  except jax.errors.ConcretizationTypeError:
    return  # traced: checked where it is drawn (the trainer's config validation)
  if not value > 0:
    raise ValueError(f'alpha must be > 0 (the Dirichlet/Beta concentration), got alpha = {value}.')


def _check_rank(name, x, rank, layout):
  if jnp.ndim(x) != rank:
    raise ValueError(f'{name} must have shape {layout}, got shape {jnp.shape(x)}.')


def _check_batch(**arrays):
  sizes = {name: jnp.shape(x)[0] for name, x in arrays.items()}
  if len(set(sizes.values())) != 1:
    seen = ', '.join(f'{name}.shape = {jnp.shape(x)}' for name, x in arrays.items())
    raise ValueError(f'{" and ".join(arrays)} must share their leading batch size b; got {seen}.')


def _check_targets(Y):
  if jnp.ndim(Y) != 2:
    raise ValueError(f'Y must be one-hot or soft targets of shape (b, c), got shape {jnp.shape(Y)} '
                     '(for integer labels pass jax.nn.one_hot(labels, c)).')


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
  _check_int('b', b)
  _check_int('n', n)
  _check_int('m', m, high=b, high_name='b')
  _check_alpha(alpha)
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


def _float(x):
  return jnp.asarray(x, jnp.promote_types(jnp.result_type(x), jnp.float32))


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
  _check_targets(Y)
  _check_batch(Z=Z, Y=Y)
  weights = sample_weights(key, Z.shape[0], m, alpha, n=n)
  return jnp.tensordot(weights, _float(Z), axes=1), weights @ _float(Y)


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
  _check_rank('Z', Z, 3, '(b, r, d)')
  b, r, d = Z.shape
  Z = jax.lax.stop_gradient(_float(Z))
  if kind == 'uniform':
    return jnp.full((b, r), 1.0 / r, jnp.float32)
  if kind == 'cam':
    if logits is None or labels is None:
      raise ValueError("kind='cam' needs the dense logits (b, r, c) and the labels.")
    _check_rank('logits', logits, 3, '(b, r, c)')
    if jnp.shape(logits)[:2] != (b, r):
      raise ValueError(f'logits must have shape (b, r, c) = ({b}, {r}, c), got {jnp.shape(logits)}.')
    logits = jax.lax.stop_gradient(_float(logits))
    if jnp.ndim(labels) == 1:
      scores = jnp.take_along_axis(logits, labels[:, None, None].astype(jnp.int32), axis=2)[..., 0]
    else:
      scores = jnp.einsum('brc,bc->br', logits, _float(labels))
    return jax.nn.softmax(scores, axis=1)
  if kind == 'attention':
    if attention is None:
      raise ValueError("kind='attention' needs the attention each token receives, (b, r), which only a Vision "
                       "Transformer provides (models 'vit_*' sow it); with another model choose 'gap', 'gap_relu', "
                       "'cam' or 'uniform'.")
    if jnp.shape(attention) != (b, r):
      raise ValueError(f'attention must have shape (b, r) = ({b}, {r}), got {jnp.shape(attention)}.')
    attention = jax.lax.stop_gradient(_float(attention))
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
  _check_rank('weights', weights, 2, '(n, b)')
  _check_rank('A', A, 2, '(b, r)')
  if weights.shape[1] != A.shape[0]:
    raise ValueError(f'weights (n, b) and A (b, r) must share b; got weights.shape = {weights.shape}, '
                     f'A.shape = {A.shape}.')
  weights, A = _float(weights), jax.lax.stop_gradient(_float(A))
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
  _check_rank('Z', Z, 3, '(b, r, d)')
  _check_targets(Y)
  _check_rank('A', A, 2, '(b, r)')
  _check_batch(Z=Z, Y=Y, A=A)
  if A.shape[1] != Z.shape[1]:
    raise ValueError(f'A must have shape (b, r) = {Z.shape[:2]} to match Z {Z.shape}, got {A.shape}.')
  w = dense_weights(sample_weights(key, Z.shape[0], m, alpha, n=n), A)
  return jnp.einsum('nbr,brd->nrd', w, _float(Z)), jnp.einsum('nbr,bc->nrc', w, _float(Y))


# ------------------------------------------------------------------------------------ pairwise baselines

# How λ is drawn for the pairwise baselines, as timm's Mixup modes: 'batch' one λ for the batch (the papers'),
# 'pair' one λ per pair of examples that mix with each other, 'elem' one λ per example.
MIXUP_MODES = ('batch', 'pair', 'elem')


def _check_mode(mode):
  if mode not in MIXUP_MODES:
    raise ValueError(f'mode must be one of {MIXUP_MODES}, got {mode!r}.')


def _random_involution(key, b):
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
  _check_int('b', b)
  _check_alpha(alpha)
  _check_mode(mode)
  key_perm, key_lam = jax.random.split(key)
  key_lam = key_lam if lam_key is None else lam_key
  if mode == 'batch':
    return jax.random.permutation(key_perm, b), jax.random.beta(key_lam, alpha, alpha)
  if mode == 'elem':
    return jax.random.permutation(key_perm, b), jax.random.beta(key_lam, alpha, alpha, (b,))
  perm, order = _random_involution(key_perm, b)
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
  _check_targets(y)
  _check_batch(x=x, y=y)
  perm, lam = sample_pairing(key, x.shape[0], alpha, mode=mode, lam_key=lam_key)
  return mix_pair(x, perm, lam), mix_pair(_float(y), perm, lam)


def _first_of_pair(perm):
  """int32 (b,): the member of each pair with the smaller index, whose draws the pair shares (mode 'pair')."""
  return jnp.minimum(jnp.arange(perm.shape[0]), perm)


def _centred_box(cy, cx, lam, height, width):
  """bool (..., H, W): the box of CutMix's size for lam (sides ⌊H·√(1 − lam)⌋ rounded down to even), centred at
  (cy, cx) and clipped to the image; cy, cx, lam of shape () or (b,)."""
  cut = jnp.sqrt(1.0 - lam)
  half_h = jnp.floor(height * cut).astype(jnp.int32)[..., None, None] // 2
  half_w = jnp.floor(width * cut).astype(jnp.int32)[..., None, None] // 2
  cy, cx = cy[..., None, None], cx[..., None, None]
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return (rows >= cy - half_h) & (rows < cy + half_h) & (cols >= cx - half_w) & (cols < cx + half_w)


def paste(x, y, perm, box, source=None):
  """x (b, H, W, C) with the pixels of `box` (bool (b, H, W)) taken from `source` (default x[perm]); the targets
  y (b, c) mixed with each example's own kept area, lam_i = 1 − mean(box_i): the exact share of its own pixels."""
  source = x[perm] if source is None else source
  lam = 1.0 - box.mean(axis=(-2, -1), dtype=jnp.float32)
  return jnp.where(box[..., None], source, x), mix_pair(_float(y), perm, lam)


def cutmix_box(key, b, height, width, alpha, *, mode='batch', lam_key=None):
  """CutMix's partners and boxes: (perm int32 (b,), box bool (b, H, W), True where the partner's pixel is pasted).

  A box of area about (1 − lam) · H · W, lam ~ Beta(alpha, alpha), centred uniformly and clipped to the image.
  `mode` (see `sample_pairing`): 'batch' — one lam and one box for the batch; 'elem' — one per example; 'pair' —
  the two members of a pair share lam and the box. `lam_key` (see `sample_pairing`) draws lam and the box's centre.
  """
  key_pair, key_y, key_x = jax.random.split(key, 3)
  if lam_key is not None:
    lam_key, key_y, key_x = jax.random.split(lam_key, 3)
  perm, lam = sample_pairing(key_pair, b, alpha, mode=mode, lam_key=lam_key)
  shape = () if mode == 'batch' else (b,)
  cy = jax.random.randint(key_y, shape, 0, height)
  cx = jax.random.randint(key_x, shape, 0, width)
  if mode == 'pair':  # the member with the smaller index chooses the pair's centre
    first = _first_of_pair(perm)
    cy, cx = cy[first], cx[first]
  return perm, jnp.broadcast_to(_centred_box(cy, cx, lam, height, width), (b, height, width))


def cutmix(key, x, y, alpha, *, mode='batch', lam_key=None):
  """CutMix (Yun et al. 2019) on images x (b, H, W, C) and targets y (b, c).

  The partner's pixels in `cutmix_box`'s box are pasted in; the targets are mixed with lam corrected to the exact
  pasted area (of each example's own box with mode 'elem' or 'pair').
  """
  _check_rank('x', x, 4, '(b, H, W, C)')
  _check_targets(y)
  _check_batch(x=x, y=y)
  _check_mode(mode)
  b, height, width, _ = x.shape
  perm, box = cutmix_box(key, b, height, width, alpha, mode=mode, lam_key=lam_key)
  return paste(x, y, perm, box)


# ---------------------------------------------------------------------- saliency-, noise- and resize-guided


def _filter_rows_and_columns(maps, kernel):
  """maps (..., H, W) convolved with the 1-D `kernel` (odd length) along both axes, borders replicated ('nearest'
  of scipy.ndimage, 'replicate' of MATLAB)."""
  radius = len(kernel) // 2
  height, width = maps.shape[-2:]
  pad = [(0, 0)] * (maps.ndim - 2)
  padded = jnp.pad(maps, pad + [(radius, radius), (0, 0)], mode='edge')
  maps = sum(w * padded[..., i:i + height, :] for i, w in enumerate(kernel))
  padded = jnp.pad(maps, pad + [(0, 0), (radius, radius)], mode='edge')
  return sum(w * padded[..., :, i:i + width] for i, w in enumerate(kernel))


def saliency_sigma(height, width):
  """The Gaussian smoothing of `saliency_map`: 2.5 pixels per 64 of the longer side, Hou & Zhang's MATLAB code's
  σ = 2.5 on images resized to 64 pixels."""
  return 2.5 * max(height, width) / 64


def saliency_map(x, *, sigma=None):
  """Spectral-residual saliency (Hou & Zhang, CVPR 2007) of images x (b, H, W, C), at their own resolution.

  The image's grey level (the channel mean) is Fourier transformed; the spectral residual R = log|F| − (3 × 3 mean
  of log|F|, borders replicated) is recombined with the phase and transformed back; the saliency is the squared
  magnitude smoothed by a Gaussian of `sigma` (default `saliency_sigma`; truncated at 4σ, borders replicated) and
  scaled to [0, 1] by its minimum and maximum. Amplitudes are floored at 1e-12 before the logarithm, so a flat
  image gives a finite (flat) map. float32 (b, H, W); no gradient.
  """
  _check_rank('x', x, 4, '(b, H, W, C)')
  height, width = x.shape[1:3]
  sigma = saliency_sigma(height, width) if sigma is None else sigma
  gray = jax.lax.stop_gradient(_float(x)).mean(axis=-1)
  spectrum = jnp.fft.fft2(gray)
  log_amplitude = jnp.log(jnp.maximum(jnp.abs(spectrum), 1e-12))
  residual = log_amplitude - _filter_rows_and_columns(log_amplitude, np.full(3, 1 / 3))
  saliency = jnp.abs(jnp.fft.ifft2(jnp.exp(residual + 1j * jnp.angle(spectrum))))**2
  radius = int(4 * sigma + 0.5)
  kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma)**2) if radius else np.ones(1)
  saliency = _filter_rows_and_columns(saliency.astype(jnp.float32), kernel / kernel.sum())
  lo = saliency.min(axis=(-2, -1), keepdims=True)
  span = saliency.max(axis=(-2, -1), keepdims=True) - lo
  return jnp.where(span > 0, (saliency - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def saliency_peak(x):
  """(row, column) int32, each (b,): the first position of the maximum of each image's `saliency_map`."""
  saliency = saliency_map(x)
  flat = jnp.argmax(saliency.reshape(saliency.shape[0], -1), axis=-1).astype(jnp.int32)
  return flat // x.shape[2], flat % x.shape[2]


def saliencymix(key, x, y, alpha, *, mode='batch', lam_key=None):
  """SaliencyMix (Uddin et al., ICLR 2021) on images x (b, H, W, C) and targets y (b, c).

  CutMix with the box centred on the peak of the partner's spectral-residual `saliency_map`, not at random: the
  pasted patch is the partner's most salient region. lam ~ Beta(alpha, alpha) sets the box's size as in CutMix and
  is corrected to the exact pasted area. `mode` (see `sample_pairing`): 'batch' — one lam and one box for the
  batch, centred on the saliency peak of the first example's partner, as the authors' code; 'elem' — one lam per
  example, each box centred on that example's partner's peak; 'pair' — the pair shares lam, and each member pastes
  the other's most salient region. `lam_key` draws lam.
  """
  _check_rank('x', x, 4, '(b, H, W, C)')
  _check_targets(y)
  _check_batch(x=x, y=y)
  _check_mode(mode)
  b, height, width, _ = x.shape
  perm, lam = sample_pairing(key, b, alpha, mode=mode, lam_key=lam_key)
  cy, cx = saliency_peak(x[perm[:1]] if mode == 'batch' else x[perm])
  if mode == 'batch':
    cy, cx = cy[0], cx[0]
  box = jnp.broadcast_to(_centred_box(cy, cx, lam, height, width), (b, height, width))
  return paste(x, y, perm, box)


def fourier_noise(key, shape, height, width, *, decay_power=3.0):
  """Low-frequency noise of FMix: float32 (*shape, H, W), the inverse real FFT of complex Gaussian coefficients
  scaled by 1 / max(f, 1 / max(H, W))^decay_power at frequency magnitude f (Harris et al. 2020, the authors'
  `make_low_freq_image` before its rescaling to [0, 1], which does not change the order of the values)."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  scale = 1.0 / np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / max(height, width))**decay_power
  coefficients = jax.random.normal(key, (2, *shape, height, width // 2 + 1))
  spectrum = scale.astype(np.float32) * (coefficients[0] + 1j * coefficients[1])
  return jnp.fft.irfft2(spectrum, s=(height, width)).astype(jnp.float32)


def fourier_mask(key, lam, height, width, *, decay_power=3.0):
  """FMix's binary mask: bool (*lam.shape, H, W), True at the round(lam · H · W) largest values of `fourier_noise`;
  its mean is lam to within half a pixel (1 / (2 · H · W)). lam: () or (b,), in [0, 1]."""
  lam = jnp.asarray(lam, jnp.float32)
  noise = fourier_noise(key, lam.shape, height, width, decay_power=decay_power).reshape(*lam.shape, -1)
  count = jnp.round(lam * height * width).astype(jnp.int32)
  ranks = jnp.argsort(jnp.argsort(-noise, axis=-1), axis=-1)  # 0 at the largest value
  return (ranks < count[..., None]).reshape(*lam.shape, height, width)


def fmix(key, x, y, alpha, *, decay_power=3.0, mode='batch', lam_key=None):
  """FMix (Harris et al. 2020) on images x (b, H, W, C) and targets y (b, c).

  Each example keeps its own pixels where `fourier_mask` (thresholded low-frequency noise, lam ~ Beta(alpha,
  alpha), decay power δ) is True and takes its partner's elsewhere; the targets mix with the mask's exact mean.
  `mode` (see `sample_pairing`): 'batch' — one lam and one mask for the batch, as the authors' code; 'elem' — one
  per example; 'pair' — the pair shares lam and the mask, each member keeping its own pixels where the mask is
  True. `lam_key` draws lam and the mask.
  """
  _check_rank('x', x, 4, '(b, H, W, C)')
  _check_targets(y)
  _check_batch(x=x, y=y)
  _check_mode(mode)
  b, height, width, _ = x.shape
  key_pair, key_mask = jax.random.split(key)
  if lam_key is not None:
    lam_key, key_mask = jax.random.split(lam_key)
  perm, lam = sample_pairing(key_pair, b, alpha, mode=mode, lam_key=lam_key)
  mask = fourier_mask(key_mask, lam, height, width, decay_power=decay_power)
  if mode == 'pair':
    mask = mask[_first_of_pair(perm)]
  return paste(x, y, perm, ~jnp.broadcast_to(mask, (b, height, width)))


def resizemix(key, x, y, *, scale=(0.1, 0.8), mode='batch', lam_key=None):
  """ResizeMix (Qin et al. 2020) on images x (b, H, W, C) and targets y (b, c).

  The whole partner image, resized (nearest neighbour, as PyTorch's `interpolate`) to a box of sides ⌊τ·H⌋ × ⌊τ·W⌋
  with the scale rate τ ~ U(scale), is pasted at a uniformly random position inside the image; the targets mix
  with the exact box area (lam_i = 1 − area / (H · W), about 1 − τ²). `mode` (see `sample_pairing`): 'batch' —
  one τ and box for the batch; 'elem' — one per example; 'pair' — the pair shares τ and the box. `lam_key` draws
  τ and the box's position.
  """
  _check_rank('x', x, 4, '(b, H, W, C)')
  _check_targets(y)
  _check_batch(x=x, y=y)
  _check_mode(mode)
  b, height, width, _ = x.shape
  key_pair, key_tau, key_y, key_x = jax.random.split(key, 4)
  if lam_key is not None:
    key_tau, key_y, key_x = jax.random.split(lam_key, 3)
  perm = _random_involution(key_pair, b)[0] if mode == 'pair' else jax.random.permutation(key_pair, b)
  shape = () if mode == 'batch' else (b,)
  lo, hi = scale
  tau = jax.random.uniform(key_tau, shape, minval=lo, maxval=hi)
  box_h = jnp.floor(tau * height).astype(jnp.int32)
  box_w = jnp.floor(tau * width).astype(jnp.int32)
  top = jnp.floor(jax.random.uniform(key_y, shape) * (height - box_h + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(key_x, shape) * (width - box_w + 1)).astype(jnp.int32)
  if mode == 'pair':
    first = _first_of_pair(perm)
    box_h, box_w, top, left = box_h[first], box_w[first], top[first], left[first]

  def placed(size, start, extent):  # (..., extent): inside the box, and the source pixel of each position
    offset = jnp.arange(extent) - start[..., None]
    inside = (offset >= 0) & (offset < size[..., None])
    source = jnp.floor(offset * (extent / jnp.maximum(size, 1))[..., None]).astype(jnp.int32)
    return inside, jnp.clip(source, 0, extent - 1)

  inside_rows, source_rows = placed(box_h, top, height)
  inside_cols, source_cols = placed(box_w, left, width)
  box = jnp.broadcast_to(inside_rows[..., :, None] & inside_cols[..., None, :], (b, height, width))
  source_rows = jnp.broadcast_to(source_rows, (b, height))
  source_cols = jnp.broadcast_to(source_cols, (b, width))
  resized = jnp.take_along_axis(x[perm], source_rows[:, :, None, None], axis=1)
  resized = jnp.take_along_axis(resized, source_cols[:, None, :, None], axis=2)
  return paste(x, y, perm, box, source=resized)


def transmix_targets(y, perm, box, attention, *, attention_weight=0.5):
  """TransMix's targets (Chen et al., CVPR 2022) for CutMix's inputs: the pasted share re-weighted by attention.

  Args:
    y: (b, c) targets of the unmixed examples.
    perm, box: CutMix's partners (b,) and pasted pixels bool (b, H, W) (`cutmix_box`).
    attention: (b, h, w) non-negative attention each token of the mixed image receives, on the token grid, in the
      last block (a ViT's `intermediates/attention`). A token counts as pasted where the box holds its pixel at
      (⌊i·H/h⌋, ⌊j·W/w⌋): the box downsampled by nearest neighbour, as the authors' `nn.Upsample`.
    attention_weight: w in [0, 1]; the authors' code averages the two shares (its `ratio = 0.5`).

  Returns:
    float32 (b, c): (1 − lam_i) · y_i + lam_i · y_perm[i] with the pasted share lam_i = (1 − w) · area_i + w · (the
    attention on pasted tokens / all attention). Rows sum to one; no gradient flows through the attention.
  """
  _check_rank('attention', attention, 3, '(b, h, w)')
  height, width = box.shape[-2:]
  grid_h, grid_w = attention.shape[1:]
  rows = np.arange(grid_h) * height // grid_h
  cols = np.arange(grid_w) * width // grid_w
  pasted_tokens = box[:, rows][:, :, cols].astype(jnp.float32)
  attention = jax.lax.stop_gradient(_float(attention))
  total = attention.sum(axis=(1, 2))
  attention_share = (pasted_tokens * attention).sum(axis=(1, 2)) / jnp.where(total > 0, total, 1.0)
  area = box.mean(axis=(-2, -1), dtype=jnp.float32)
  pasted = (1.0 - attention_weight) * area + attention_weight * attention_share
  return mix_pair(_float(y), perm, 1.0 - pasted)
