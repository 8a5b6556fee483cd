"""The pasting baselines: CutMix, SaliencyMix, FMix, ResizeMix, and TransMix's targets.

Each pastes a region of a partner into every image (a box, a box at the partner's saliency peak, a thresholded
Fourier-noise mask, the whole partner resized into a box) and mixes the targets by the pasted area. Images are
(b, H, W, C); pure, jit-able, jax only. Partners and λ come from `pairs.sample_pairing`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from multimix_jax.mixing._checks import as_float, check_batch, check_mode, check_rank, check_targets, first_of_pair
from multimix_jax.mixing.pairs import mix_pair, random_involution, sample_pairing


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
  return jnp.where(box[..., None], source, x), mix_pair(as_float(y), perm, lam)


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
    first = first_of_pair(perm)
    cy, cx = cy[first], cx[first]
  return perm, jnp.broadcast_to(_centred_box(cy, cx, lam, height, width), (b, height, width))


def cutmix(key, x, y, alpha, *, mode='batch', lam_key=None):
  """CutMix (Yun et al. 2019) on images x (b, H, W, C) and targets y (b, c).

  The partner's pixels in `cutmix_box`'s box are pasted in; the targets are mixed with lam corrected to the exact
  pasted area (of each example's own box with mode 'elem' or 'pair').
  """
  check_rank('x', x, 4, '(b, H, W, C)')
  check_targets(y)
  check_batch(x=x, y=y)
  check_mode(mode)
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
  check_rank('x', x, 4, '(b, H, W, C)')
  height, width = x.shape[1:3]
  sigma = saliency_sigma(height, width) if sigma is None else sigma
  gray = jax.lax.stop_gradient(as_float(x)).mean(axis=-1)
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
  check_rank('x', x, 4, '(b, H, W, C)')
  check_targets(y)
  check_batch(x=x, y=y)
  check_mode(mode)
  b, height, width, _ = x.shape
  perm, lam = sample_pairing(key, b, alpha, mode=mode, lam_key=lam_key)
  cy, cx = saliency_peak(x[perm[:1]] if mode == 'batch' else x[perm])
  if mode == 'batch':
    cy, cx = cy[0], cx[0]
  box = jnp.broadcast_to(_centred_box(cy, cx, lam, height, width), (b, height, width))
  return paste(x, y, perm, box)


FMIX_SPECTRA = ('published', 'paper')


def _fmix_frequencies(height, width, spectrum):
  """(H, W_f) frequency magnitudes √(fx² + fy²) of FMix's spectrum. 'published': the authors' `fftfreqnd`, whose
  W_f = W // 2 + 1 for even W and W // 2 + 2 for odd W (one negative frequency more, of the same magnitude);
  'paper': the rfft grid, W_f = W // 2 + 1 (the column the authors add for odd W is one `irfftn` crops anyway)."""
  fy = np.fft.fftfreq(height)[:, None]
  if spectrum == 'published':
    fx = np.fft.fftfreq(width)[:width // 2 + (2 if width % 2 else 1)]
  else:
    fx = np.fft.rfftfreq(width)
  return np.sqrt(fx * fx + fy * fy)


def _check_spectrum(spectrum, height):
  if spectrum not in FMIX_SPECTRA:
    raise ValueError(f'spectrum={spectrum!r}: expected one of {FMIX_SPECTRA}.')
  if spectrum == 'published' and height < 2:
    raise ValueError(f"spectrum='published' needs a height of at least 2 (it reads two rows), got {height}.")


def fourier_noise(key, shape, height, width, *, decay_power=3.0, spectrum='published'):
  """Low-frequency noise of FMix (Harris et al. 2020): float32 (*shape, H, W), one image per element of `shape`.

  Gaussian Fourier coefficients are scaled by 1 / max(f, 1 / max(H, W))^decay_power at frequency magnitude f and
  transformed back. This is the authors' `make_low_freq_image` before its rescaling to [0, 1] (which does not
  change the order of the values, so not the mask either). `spectrum` chooses which of two spectra:

  'published' (default): exactly what the authors' released code computes, which every published FMix number
    came from. It draws normals of shape (1, H, W_f, 2) meant as real and imaginary parts over the (H, W_f)
    frequency grid, but then indexes the height axis instead of the last one (`spectrum[:, 0] + 1j *
    spectrum[:, 1]`): the real parts are the 2·W_f draws of frequency row 0 (fy = 0) and the imaginary parts
    those of row 1 (fy = 1/H), all other rows are discarded, and the result, (1, W_f, 2), goes to
    `irfftn(·, (H, W))`. The grid's W_f width frequencies thus fill the first W_f slots of the image's height
    axis (a full FFT axis of length H: zero-padded or cropped to H), and the real/imaginary index becomes the
    width frequency: every image holds only width frequencies 0 and 1 (one period across the image), and on
    non-square images the scales belong to the other axis. W_f is that of the authors' `fftfreqnd`: W // 2 + 1,
    or W // 2 + 2 for odd W (the extra column survives, on the height axis). `key` draws only the two rows read,
    `jax.random.normal(key, (*shape, 2, W_f, 2))`, the published `param[:, :2]`. Needs H ≥ 2.
  'paper': the spectrum as the paper describes it: independent real and imaginary parts at every frequency of the
    rfft grid, `key` drawing `jax.random.normal(key, (2, *shape, H, W // 2 + 1))` (real, imaginary).
  """
  _check_spectrum(spectrum, height)
  scale = (1.0 / np.maximum(_fmix_frequencies(height, width, spectrum), 1.0 / max(height, width))**decay_power)
  scale = scale.astype(np.float32)
  if spectrum == 'published':
    draws = jax.random.normal(key, (*shape, 2, scale.shape[1], 2))  # rows 0 and 1 of the authors' param
    scaled = scale[:2, :, None] * draws
    coefficients = scaled[..., 0, :, :] + 1j * scaled[..., 1, :, :]  # (*shape, W_f, 2), as the authors index
    # irfftn with s=(H, W) over the last two axes, as numpy's: W_f zero-padded or cropped to H (a full FFT axis),
    # the 2 padded to W // 2 + 1 (the rfft axis).
    return jnp.fft.irfftn(coefficients, s=(height, width), axes=(-2, -1)).astype(jnp.float32)
  coefficients = jax.random.normal(key, (2, *shape, height, width // 2 + 1))
  return jnp.fft.irfft2(scale * (coefficients[0] + 1j * coefficients[1]), s=(height, width)).astype(jnp.float32)


def _floor_and_ceil_of_product(lam, n):
  """int32 ⌊lam · n⌋ and ⌈lam · n⌉ of the exact product of float32 lam in [0, 1] and the integer n < 2^22: the
  authors' float64 `lam * mask.size` (exact for a float32 lam), where a float32 product may round onto or across an
  integer. lam = m · 2^-shift with the integer significand m (24 bits), cut in bytes so m · n never leaves int32."""
  if not 0 < n < 1 << 22:
    raise ValueError(f'FMix masks count up to 2^22 pixels exactly, got {n}.')
  bits = jax.lax.bitcast_convert_type(lam, jnp.int32)
  bits = jnp.where(bits < 0, 0, jnp.minimum(bits, 0x3F800000))  # lam clipped to [0, 1] on its bits (keeps subnormals)
  exponent = bits >> 23
  significand = jnp.where(exponent > 0, (bits & 0x7FFFFF) | 0x800000, bits & 0x7FFFFF)
  shift = 150 - jnp.maximum(exponent, 1) - 16  # lam · n = (m · n / 2^16) / 2^shift; shift ≥ 7 for lam ≤ 1
  carry, inexact = jnp.zeros_like(bits), jnp.zeros_like(bits, dtype=bool)
  for byte in range(2):  # the low two bytes of m · n: into the carry, and whether any bit is set
    partial = ((significand >> (8 * byte)) & 0xFF) * n + carry
    carry, inexact = partial >> 8, inexact | ((partial & 0xFF) != 0)
  high = (significand >> 16) * n + carry  # ⌊m · n / 2^16⌋ < 2^8 · n + n
  floor = jnp.where(shift > 30, 0, high >> jnp.minimum(shift, 30))
  inexact = inexact | (high != floor << jnp.minimum(shift, 30))
  return floor, floor + inexact.astype(jnp.int32)


def fourier_mask(key, lam, height, width, *, decay_power=3.0, spectrum='published'):
  """FMix's binary mask: bool (*lam.shape, H, W), True at the `count` largest values of `fourier_noise` (of
  `spectrum`, see there). As the authors' `binarise_mask`, count is ⌈lam · H · W⌉ or ⌊lam · H · W⌋ (of the exact
  product, as their float64 one) on a fair coin, one per mask, so the mask's mean is within a pixel (1 / (H · W))
  of lam. lam: () or (b,), in [0, 1]. `key` splits into the noise's key and the coins' key (`jax.random.split`);
  the coins are `jax.random.bernoulli(coin_key, 0.5, lam.shape)`, True for rounding up."""
  lam = jnp.asarray(lam, jnp.float32)
  noise_key, coin_key = jax.random.split(key)
  noise = fourier_noise(noise_key, lam.shape, height, width, decay_power=decay_power, spectrum=spectrum)
  noise = noise.reshape(*lam.shape, -1)
  floor, ceil = _floor_and_ceil_of_product(lam, height * width)
  count = jnp.where(jax.random.bernoulli(coin_key, 0.5, lam.shape), ceil, floor)
  ranks = jnp.argsort(jnp.argsort(-noise, axis=-1), axis=-1)  # 0 at the largest value
  return (ranks < count[..., None]).reshape(*lam.shape, height, width)


def fmix(key, x, y, alpha, *, decay_power=3.0, spectrum='published', mode='batch', lam_key=None):
  """FMix (Harris et al. 2020) on images x (b, H, W, C) and targets y (b, c).

  Each example keeps its own pixels where `fourier_mask` (thresholded low-frequency noise, lam ~ Beta(alpha,
  alpha), decay power δ) is True and takes its partner's elsewhere; the targets mix with the mask's exact mean.
  `spectrum` (see `fourier_noise`): 'published' (default) — the noise of the authors' released code, which every
  published FMix number used (it keeps only two rows of the frequency grid, having indexed the height axis where
  it meant real and imaginary parts); 'paper' — the whole spectrum drawn as the paper describes it.
  `mode` (see `sample_pairing`): 'batch' — one lam and one mask for the batch, as the authors' code; 'elem' — one
  per example; 'pair' — the pair shares lam and the mask, each member keeping its own pixels where the mask is
  True. `lam_key` draws lam and the mask.
  """
  check_rank('x', x, 4, '(b, H, W, C)')
  check_targets(y)
  check_batch(x=x, y=y)
  check_mode(mode)
  b, height, width, _ = x.shape
  key_pair, key_mask = jax.random.split(key)
  if lam_key is not None:
    lam_key, key_mask = jax.random.split(lam_key)
  perm, lam = sample_pairing(key_pair, b, alpha, mode=mode, lam_key=lam_key)
  mask = fourier_mask(key_mask, lam, height, width, decay_power=decay_power, spectrum=spectrum)
  if mode == 'pair':
    mask = mask[first_of_pair(perm)]
  return paste(x, y, perm, ~jnp.broadcast_to(mask, (b, height, width)))


def resizemix(key, x, y, *, scale=(0.1, 0.8), mode='batch', lam_key=None):
  """ResizeMix (Qin et al. 2020) on images x (b, H, W, C) and targets y (b, c).

  The whole partner image, resized (nearest neighbour, as PyTorch's `interpolate`) to a box of sides ⌊τ·H⌋ × ⌊τ·W⌋
  with the scale rate τ ~ U(scale), is pasted at a uniformly random position inside the image; the targets mix
  with the exact box area (lam_i = 1 − area / (H · W), about 1 − τ²). `mode` (see `sample_pairing`): 'batch' —
  one τ and box for the batch; 'elem' — one per example; 'pair' — the pair shares τ and the box. `lam_key` draws
  τ and the box's position.
  """
  check_rank('x', x, 4, '(b, H, W, C)')
  check_targets(y)
  check_batch(x=x, y=y)
  check_mode(mode)
  b, height, width, _ = x.shape
  key_pair, key_tau, key_y, key_x = jax.random.split(key, 4)
  if lam_key is not None:
    key_tau, key_y, key_x = jax.random.split(lam_key, 3)
  perm = random_involution(key_pair, b)[0] if mode == 'pair' else jax.random.permutation(key_pair, b)
  shape = () if mode == 'batch' else (b,)
  lo, hi = scale
  tau = jax.random.uniform(key_tau, shape, minval=lo, maxval=hi)
  box_h = jnp.floor(tau * height).astype(jnp.int32)
  box_w = jnp.floor(tau * width).astype(jnp.int32)
  top = jnp.floor(jax.random.uniform(key_y, shape) * (height - box_h + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(key_x, shape) * (width - box_w + 1)).astype(jnp.int32)
  if mode == 'pair':
    first = first_of_pair(perm)
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
  check_rank('attention', attention, 3, '(b, h, w)')
  height, width = box.shape[-2:]
  grid_h, grid_w = attention.shape[1:]
  rows = np.arange(grid_h) * height // grid_h
  cols = np.arange(grid_w) * width // grid_w
  pasted_tokens = box[:, rows][:, :, cols].astype(jnp.float32)
  attention = jax.lax.stop_gradient(as_float(attention))
  total = attention.sum(axis=(1, 2))
  attention_share = (pasted_tokens * attention).sum(axis=(1, 2)) / jnp.where(total > 0, total, 1.0)
  area = box.mean(axis=(-2, -1), dtype=jnp.float32)
  pasted = (1.0 - attention_weight) * area + attention_weight * attention_share
  return mix_pair(as_float(y), perm, 1.0 - pasted)
