"""Properties of the pasting baselines (`multimix_jax.mixing.pasting`): CutMix, SaliencyMix, FMix, ResizeMix, TransMix."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import multimix_jax as mm

KEY = jax.random.key(0)


def test_cutmix_lambda_is_exact_pasted_area():
  b, H, W = 6, 10, 7
  x = jnp.broadcast_to(jnp.arange(b, dtype=jnp.float32)[:, None, None, None], (b, H, W, 3))
  y = jax.nn.one_hot(jnp.arange(b), b)
  for seed in range(20):
    xt, yt = mm.cutmix(jax.random.key(seed), x, y, 1.0)
    own = (xt[..., 0] == jnp.arange(b)[:, None, None]).mean((1, 2))
    np.testing.assert_allclose(yt[jnp.arange(b), jnp.arange(b)], own, atol=1e-6)
    np.testing.assert_allclose(yt.sum(1), 1.0, atol=1e-6)


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
  sigma = mm.mixing.saliency_sigma(*shape[:2])
  for image, got in zip(images, maps):
    np.testing.assert_allclose(got, spectral_residual_reference(image, sigma), atol=2e-4)
  rows, cols = map(np.asarray, mm.mixing.saliency_peak(jnp.asarray(images)))
  np.testing.assert_array_equal(rows * shape[1] + cols, maps.reshape(3, -1).argmax(-1))
  assert 1 <= rows[2] <= 6 and 2 <= cols[2] <= 7  # at (or next to, after smoothing) the square


# CutMix's own tests are above; the methods that paste a region of (or the whole) partner share these.
PASTING = {
    'saliencymix': lambda key, x, y, mode: mm.saliencymix(key, x, y, 1.0, mode=mode),
    'fmix': lambda key, x, y, mode: mm.fmix(key, x, y, 1.0, mode=mode),
    'resizemix': lambda key, x, y, mode: mm.resizemix(key, x, y, mode=mode),
}


@pytest.mark.parametrize('mode', mm.mixing.MIXUP_MODES)
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
    return perm, lam, mm.saliencymix(key, x, y, 1.0, mode='elem'), mm.mixing.saliency_peak(x[perm])

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
    return perm, mm.saliencymix(key, x, y, 1.0)[0], mm.mixing.saliency_peak(x[perm[:1]])

  perm, xt, (row, col) = draw_batch(x)
  row, col = int(row[0]), int(col[0])
  pasted = np.asarray((xt != x).any(-1))
  assert pasted.any() and pasted[np.asarray(perm) != np.arange(b)].all(0)[row, col]


@pytest.mark.parametrize('height,width', [(8, 8), (10, 7), (32, 32)])
def test_fmix_mask_mean_is_the_drawn_lambda_within_a_pixel(height, width):
  """The authors' count: ⌈λ·H·W⌉ or ⌊λ·H·W⌋ on a coin per mask, both occurring."""
  lam = jnp.concatenate([jnp.array([0.0, 1.0, 0.5]), jax.random.uniform(KEY, (61,))])
  mask = np.asarray(mm.fourier_mask(jax.random.key(3), lam, height, width))
  assert mask.shape == (64, height, width) and mask.dtype == bool
  area = np.asarray(lam, np.float64) * height * width
  count = mask.sum((1, 2))
  assert ((count == np.floor(area)) | (count == np.ceil(area))).all()
  fractional = area != np.round(area)
  assert (count[fractional] == np.ceil(area[fractional])).any()
  assert (count[fractional] == np.floor(area[fractional])).any()
  assert np.abs(mask.mean((1, 2)) - np.asarray(lam)).max() < 1 / (height * width)
  batch_mask = mm.fourier_mask(jax.random.key(3), 0.3, height, width)  # one λ: one mask
  assert batch_mask.shape == (height, width)


def test_fmix_count_rounds_the_exact_product_as_the_authors_float64():
  """⌊λ·n⌋ and ⌈λ·n⌉ of the exact product of a float32 λ (the authors' float64 `lam * mask.size`), also where the
  float32 product rounds onto or across an integer."""
  from fractions import Fraction  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  n_values = [1, 70, 960, 1024, 50176, (1 << 22) - 1]
  lams = np.concatenate([[0.0, 1.0, 0.5, 0.3, 1e-45, 1e-30, np.nextafter(np.float32(1), np.float32(0))],
                         rng.uniform(size=200)]).astype(np.float32)
  for n in n_values:
    near = (rng.integers(0, n + 1, 100) / n).astype(np.float32)  # λ·n within float32 rounding of an integer
    near = np.concatenate([near, np.nextafter(near, np.float32(0)), np.nextafter(near, np.float32(2))])
    lam = np.clip(np.concatenate([lams, near]), 0, 1).astype(np.float32)
    floor, ceil = map(np.asarray, jax.jit(mm.mixing.pasting._floor_and_ceil_of_product, static_argnums=1)(lam, n))
    exact = [Fraction(float(value)) * n for value in lam]
    np.testing.assert_array_equal(floor, [math.floor(value) for value in exact])
    np.testing.assert_array_equal(ceil, [math.ceil(value) for value in exact])
    np.testing.assert_array_equal(floor, np.floor(lam.astype(np.float64) * n))  # the authors' float64 product


def published_low_freq_image(param, decay, height, width):
  """The authors' `make_low_freq_image(decay, (H, W))` (ecs-vlc/FMix, fmix.py, with `fftfreqnd` and
  `get_spectrum`), transcribed for two dimensions and ch = 1, with its normal draws `param` (1, H, W_f, 2) passed
  in for `np.random.randn(*param_size)`: (1, H, W) in [0, 1]."""
  h, w, z = height, width, 0
  fy = np.expand_dims(np.fft.fftfreq(h), -1)  # fftfreqnd(h, w)
  fx = np.fft.fftfreq(w)[:w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[:w // 2 + 1]
  freqs = np.sqrt(fx * fx + fy * fy)
  scale = np.ones(1) / (np.maximum(freqs, np.array([1. / max(w, h, z)]))**decay)  # get_spectrum
  param_size = [1] + list(freqs.shape) + [2]
  assert list(param.shape) == param_size
  scale = np.expand_dims(scale, -1)[None, :]
  spectrum = scale * param
  spectrum = spectrum[:, 0] + 1j * spectrum[:, 1]  # make_low_freq_image
  # The authors' call is irfftn(spectrum, shape): numpy's default axes for s of length 2 are the last two.
  mask = np.real(np.fft.irfftn(spectrum, (h, w), axes=(1, 2)))
  mask = mask[:1, :h, :w]
  mask = (mask - mask.min())
  return mask / mask.max()


def published_binarise_mask(mask, lam, round_up):
  """The authors' `binarise_mask(mask, lam, in_shape)` with max_soft = 0, its coin `random.random() > 0.5` given
  as `round_up`."""
  idx = mask.reshape(-1).argsort()[::-1]
  mask = mask.reshape(-1).copy()
  num = math.ceil(lam * mask.size) if round_up else math.floor(lam * mask.size)
  mask[idx[:num]] = 1
  mask[idx[num:]] = 0
  return mask


@pytest.mark.parametrize('height,width', [(32, 32), (24, 40), (40, 24), (7, 10), (10, 7), (4, 32)])
def test_fmix_default_noise_and_mask_are_the_published_codes(height, width):
  """With the same normal draws (our two rows in the published code's param, whose other rows it never reads) the
  default noise rescaled to [0, 1] is the published low-frequency image, and the mask is the published binarised
  one with the same coin: not a pixel differs, but at a tie with the threshold up to float32 rounding."""
  decay, b = 3.0, 4
  key = jax.random.key(5)
  lam = np.array([0.3, 0.5, 0.77, 0.123], np.float32)
  masks = np.asarray(mm.fourier_mask(key, jnp.asarray(lam), height, width, decay_power=decay))
  noise_key, coin_key = jax.random.split(key)
  noise = np.asarray(mm.mixing.fourier_noise(noise_key, (b,), height, width, decay_power=decay), np.float64)
  width_f = width // 2 + (2 if width % 2 else 1)
  rows = np.asarray(jax.random.normal(noise_key, (b, 2, width_f, 2)), np.float64)
  coins = np.asarray(jax.random.bernoulli(coin_key, 0.5, (b,)))
  rng = np.random.default_rng(0)
  for i in range(b):
    param = rng.normal(size=(1, height, width_f, 2))
    param[0, :2] = rows[i]
    image = published_low_freq_image(param, decay, height, width)[0]
    ours = (noise[i] - noise[i].min()) / (noise[i].max() - noise[i].min())
    np.testing.assert_allclose(ours, image, atol=2e-5)
    expected = published_binarise_mask(image, float(lam[i]), coins[i]).reshape(height, width) == 1
    assert masks[i].sum() == expected.sum()
    differ = masks[i] != expected
    if differ.any():  # only at ties: values within float32 rounding of the threshold
      cutoff = np.sort(image.reshape(-1))[::-1][max(int(expected.sum()) - 1, 0)]
      assert np.abs(image[differ] - cutoff).max() < 2e-5, differ.sum()
  # The published indexing's axis behaviour: only width frequencies 0 and 1 (one period across the image).
  spectrum = np.abs(np.fft.rfft2(noise[0]))
  assert spectrum[:, 2:].max() < 1e-6 * spectrum.max() and spectrum[:, 1].max() > 1e-3 * spectrum.max()


@pytest.mark.parametrize('spectrum', ['published', 'paper'])
def test_fmix_pastes_the_partner_outside_the_mask_of_its_spectrum(spectrum):
  b, height, width = 6, 12, 9
  x = jnp.broadcast_to(jnp.arange(b, dtype=jnp.float32)[:, None, None, None], (b, height, width, 1))
  y = jax.nn.one_hot(jnp.arange(b), b)
  key = jax.random.key(6)
  key_pair, key_mask = jax.random.split(key)
  perm, lam = mm.sample_pairing(key_pair, b, 1.0)
  mask = np.asarray(mm.fourier_mask(key_mask, lam, height, width, spectrum=spectrum))
  xt = np.asarray(mm.fmix(key, x, y, 1.0, spectrum=spectrum)[0][..., 0])
  np.testing.assert_array_equal(xt, np.where(mask, np.arange(b)[:, None, None], np.asarray(perm)[:, None, None]))
  if spectrum == 'published':
    np.testing.assert_array_equal(xt, mm.fmix(key, x, y, 1.0)[0][..., 0])  # the default


def test_fmix_refuses_an_unknown_spectrum_and_a_published_one_row_high():
  with pytest.raises(ValueError, match='spectrum'):
    mm.fourier_mask(KEY, 0.5, 8, 8, spectrum='text')
  with pytest.raises(ValueError, match='height of at least 2'):
    mm.mixing.fourier_noise(KEY, (), 1, 8)
  mm.mixing.fourier_noise(KEY, (), 1, 8, spectrum='paper')


def test_fmix_paper_spectrum_is_the_whole_low_frequency_grid():
  """spectrum='paper': independent real and imaginary parts at every frequency of the grid (the published
  `make_low_freq_image` with its real/imaginary axis indexed as meant, before its monotone rescaling), with the
  same coefficients; the decay makes masks smooth: far fewer neighbours disagree at δ = 3 than with white noise
  (δ = 0)."""
  height, width, decay = 12, 9, 3.0
  key = jax.random.key(4)
  noise = np.asarray(mm.mixing.fourier_noise(key, (), height, width, decay_power=decay, spectrum='paper'))
  coefficients = np.asarray(jax.random.normal(key, (2, height, width // 2 + 1)), np.float64)
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.fftfreq(width)[:width // 2 + 2] if width % 2 else np.fft.fftfreq(width)[:width // 2 + 1]
  scale = 1 / np.maximum(np.sqrt(fx * fx + fy * fy), 1 / max(height, width))**decay
  spectrum = scale[:, :width // 2 + 1] * (coefficients[0] + 1j * coefficients[1])
  np.testing.assert_allclose(noise, np.fft.irfft2(spectrum, (height, width)), rtol=1e-4, atol=1e-5)

  def disagreements(decay_power):
    masks = np.asarray(mm.fourier_mask(key, jnp.full((32,), 0.5), 32, 32, decay_power=decay_power,
                                       spectrum='paper'))
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
