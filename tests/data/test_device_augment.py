"""Device-side augmentation: its formulas against NumPy, RandAugment's ops against PIL as timm calls it, the
colour jitter, normalisation and random erasing against torchvision's own code, and train_images' keys."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from multimix_jax.data import device_augment as da

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FILL = (124, 116, 104)  # round(255 · ImageNet mean), timm's img_mean
EVERYTHING = da.DeviceAugment(IMAGENET_MEAN, IMAGENET_STD, color_jitter=0.4, lighting_std=0.1, randaugment_layers=2,
                              random_erasing=0.5)
train_jit = jax.jit(da.train_images, static_argnames='augment')
eval_jit = jax.jit(da.eval_images, static_argnames='augment')


def pixels(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def small_image(seed=0):
  return np.random.RandomState(seed).uniform(0, 1, (5, 4, 3)).astype(np.float32)


# Normalisation.


@pytest.mark.parametrize('mean,std', [(IMAGENET_MEAN, IMAGENET_STD), ((0.30543,), (0.37596,))])
def test_eval_images_and_unaugmented_train_images_normalise(mean, std):
  images = pixels((3, 6, 5, len(mean)))
  expected = (images.astype(np.float32) / np.float32(255) - np.float32(mean)) / np.float32(std)
  augment = da.DeviceAugment(mean, std)
  out = da.eval_images(jnp.asarray(images), augment)
  assert out.dtype == jnp.float32 and out.shape == images.shape
  # XLA multiplies by the reciprocal of a constant divisor (255, std): float32 rounding apart from NumPy's division.
  np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(train_jit(jax.random.key(0), jnp.asarray(images), augment=augment),
                                eval_jit(jnp.asarray(images), augment=augment))


def test_normalise_equals_torchvision(torchvision_transforms):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  T = torchvision_transforms.T
  image = pixels((7, 5, 3))
  reference = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(Image.fromarray(image))).numpy()
  ours = da.eval_images(jnp.asarray(image[None]), da.DeviceAugment(IMAGENET_MEAN, IMAGENET_STD))[0]
  np.testing.assert_allclose(ours, reference.transpose(1, 2, 0), rtol=0, atol=1e-6)


def test_channels_must_match_the_mean():
  with pytest.raises(ValueError, match='C = 3'):
    da.eval_images(jnp.zeros((2, 4, 4, 1), jnp.uint8), da.DeviceAugment(IMAGENET_MEAN, IMAGENET_STD))
  with pytest.raises(ValueError, match='one value per channel'):
    da.DeviceAugment(IMAGENET_MEAN, (0.2,))
  assert hash(EVERYTHING) == hash(da.DeviceAugment(**vars(EVERYTHING)))  # static under jit


# Colour jitter and lighting: the authors' ColorJitter and Lighting, against NumPy and torchvision.


def np_gray(image):
  return (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2])[..., None]


def np_jitter_op(op, image, factor):
  """torchvision's blend formulas, unclamped: the authors' img.lerp(target, 1 − factor)."""
  target = {0: np.zeros_like(image), 1: np.full_like(image, np_gray(image).mean()), 2: np_gray(image)}[op]
  return factor * image + (1 - factor) * target


def test_colour_ops_match_numpy_formulas():
  image = small_image()
  for op, fn in enumerate((da.adjust_brightness, da.adjust_contrast, da.adjust_saturation)):
    for factor in (0.6, 1.3):
      np.testing.assert_allclose(fn(jnp.asarray(image), factor), np_jitter_op(op, image, factor), rtol=1e-6,
                                 atol=1e-6)
  np.testing.assert_allclose(da.grayscale(jnp.asarray(image)), np_gray(image), rtol=1e-6)


def test_color_jitter_applies_the_drawn_factors_in_the_drawn_order():
  image, strength = small_image(), 0.4
  jitter = jax.jit(da.color_jitter, static_argnums=2)
  orders = set()
  for i in range(12):
    key = jax.random.key(i)
    factors, order = (np.asarray(t) for t in da.jitter_parameters(key, strength))
    assert sorted(order) == [0, 1, 2] and ((1 - strength <= factors) & (factors <= 1 + strength)).all()
    expected = image
    for op in order:
      expected = np_jitter_op(op, expected, factors[op])
    out = jitter(key, jnp.asarray(image), strength)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out, jitter(key, jnp.asarray(image), strength))
    orders.add(tuple(order))
  assert len(orders) > 2  # the order is random, not fixed


def test_lighting_adds_the_pca_noise():
  image, key = small_image(), jax.random.key(3)
  out = np.asarray(da.lighting(key, jnp.asarray(image), 0.1))
  shift = out - image
  np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-6)  # one RGB shift
  # image + eigvec @ (alpha · eigval): check it against the same key's normal draw.
  eigvec, eigval = np.array(da.IMAGENET_EIGVEC), np.array(da.IMAGENET_EIGVAL)
  alpha = 0.1 * np.asarray(jax.random.normal(key, (3,)))
  np.testing.assert_allclose(shift[0, 0], eigvec @ (alpha * eigval), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(out, da.lighting(key, jnp.asarray(image), 0.1))
  assert not np.allclose(out, da.lighting(jax.random.key(4), jnp.asarray(image), 0.1))


def test_color_jitter_draws_match_torchvision(torchvision_transforms):
  """torchvision's ColorJitter(0.4, 0.4, 0.4).get_params: factors U(0.6, 1.4) each, the order a uniform permutation."""
  import torch  # pylint: disable=g-import-not-at-top
  n = 3000
  torch.manual_seed(0)
  jitter = torchvision_transforms.T.ColorJitter(0.4, 0.4, 0.4)
  theirs_factors, theirs_orders = [], []
  for _ in range(n):
    fn_idx, *factors, _ = jitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
    theirs_factors.append(factors)
    theirs_orders.append(tuple(int(i) for i in fn_idx if i != 3))  # 3 is hue, None here
  ours_factors, ours_orders = jax.vmap(lambda k: da.jitter_parameters(k, 0.4))(jax.random.split(jax.random.key(1), n))
  theirs_factors, ours_factors = np.array(theirs_factors), np.asarray(ours_factors)
  for op in range(3):
    assert stats.ks_2samp(ours_factors[:, op], theirs_factors[:, op]).pvalue > 1e-3, op
    assert stats.kstest(ours_factors[:, op], stats.uniform(0.6, 0.8).cdf).pvalue > 1e-3, op
  permutations = list(itertools.permutations(range(3)))
  counts = [[orders.count(p) for p in permutations]
            for orders in ([tuple(int(i) for i in o) for o in np.asarray(ours_orders)], theirs_orders)]
  assert min(min(c) for c in counts) > 0
  assert stats.chisquare(counts[0]).pvalue > 1e-3  # uniform over the 6 orders
  assert stats.chi2_contingency(counts).pvalue > 1e-3  # the same distribution as torchvision's


@pytest.mark.parametrize('order', list(itertools.permutations(range(3))))
def test_color_jitter_equals_torchvision_ops(torchvision_transforms, monkeypatch, order):
  """With the factors and order injected, our jitter is torchvision's adjust_* applied in that order.

  torchvision clamps each result to [0, 1] where the authors' lerp does not: the image's values stay inside [0, 1]
  throughout (checked), so that torchvision's clamp is inactive. torchvision's luma weighs R by 0.2989, the
  authors' Grayscale by 0.299: with torchvision's weights substituted the two agree to float precision; with the
  authors' they differ by the 0.0001 · R the weights account for, and no more.
  """
  import torch  # pylint: disable=g-import-not-at-top
  F = torchvision_transforms.F
  factors = np.array([1.3, 0.7, 1.25], np.float32)  # brightness, contrast, saturation
  image = np.random.RandomState(0).uniform(0.4, 0.55, (6, 5, 3)).astype(np.float32)
  reference = torch.from_numpy(image.transpose(2, 0, 1))
  for op in order:
    reference = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)[op](reference, float(factors[op]))
  reference = reference.numpy().transpose(1, 2, 0)
  monkeypatch.setattr(da, 'jitter_parameters', lambda key, strength: (jnp.asarray(factors), jnp.asarray(order)))
  authors = np.asarray(da.color_jitter(jax.random.key(0), jnp.asarray(image), 0.4))
  assert 0.05 < authors.min() and authors.max() < 0.95  # torchvision's clamp to [0, 1] inactive
  difference = np.abs(authors - reference).max()
  assert 1e-6 < difference < 2e-4  # 0.0001 · R ≤ 1e-4 per luma, times |1 − factor| ≤ 0.3, over three ops
  monkeypatch.setattr(da, 'GRAY_WEIGHTS', (0.2989, 0.587, 0.114))  # eager, so read at this call
  np.testing.assert_allclose(da.color_jitter(jax.random.key(0), jnp.asarray(image), 0.4), reference, rtol=0,
                             atol=1e-5)


# RandAugment: its ops against PIL as timm calls it, and its draws.


def pil_reference_ops(pil, fill):
  """timm's 'inc1' RandAugment ops, f(m, sign) -> PIL image, written as timm's auto_augment.py calls PIL (with
  bilinear resampling; timm's DeiT recipe resamples bicubically)."""
  from PIL import Image, ImageEnhance, ImageOps  # pylint: disable=g-import-not-at-top
  kw = dict(resample=Image.BILINEAR, fillcolor=fill)
  level = lambda m: m / 10
  enhance = lambda m, s: max(0.1, 1 + s * 0.9 * level(m))
  affine = lambda matrix: pil.transform(pil.size, Image.AFFINE, matrix, **kw)
  bits = lambda m: 4 - int(4 * level(m))
  return [
      lambda m, s: ImageOps.autocontrast(pil),
      lambda m, s: ImageOps.equalize(pil),
      lambda m, s: ImageOps.invert(pil),
      lambda m, s: pil.rotate(s * 30 * level(m), **kw),
      # Pillow >= 10 refuses 0 bits (m = 10), which older Pillow turned black.
      lambda m, s: ImageOps.posterize(pil, bits(m)) if bits(m) else pil.point(lambda i: 0),
      lambda m, s: ImageOps.solarize(pil, 256 - int(256 * level(m))),
      lambda m, s: pil.point([min(255, i + int(110 * level(m))) if i < 128 else i for i in range(256)] * 3),
      lambda m, s: ImageEnhance.Color(pil).enhance(enhance(m, s)),
      lambda m, s: ImageEnhance.Contrast(pil).enhance(enhance(m, s)),
      lambda m, s: ImageEnhance.Brightness(pil).enhance(enhance(m, s)),
      lambda m, s: ImageEnhance.Sharpness(pil).enhance(enhance(m, s)),
      lambda m, s: affine((1, s * 0.3 * level(m), 0, 0, 1, 0)),
      lambda m, s: affine((1, 0, 0, s * 0.3 * level(m), 1, 0)),
      lambda m, s: affine((1, 0, s * 0.45 * level(m) * pil.size[0], 0, 1, 0)),
      lambda m, s: affine((1, 0, 0, 0, 1, s * 0.45 * level(m) * pil.size[1])),
  ]


def public_ops(image, m, s):
  """The module's public op functions, called with the arguments timm passes PIL."""
  height, width = image.shape[:2]
  level, factor = m / 10, max(0.1, 1 + s * 0.9 * m / 10)
  return [
      lambda: da.auto_contrast(image), lambda: da.equalize(image), lambda: da.invert(image),
      lambda: da.rotate(image, s * 30 * level, FILL), lambda: da.posterize(image, 4 - int(4 * level)),
      lambda: da.solarize(image, 256 - int(256 * level)), lambda: da.solarize_add(image, int(110 * level)),
      lambda: da.color(image, factor), lambda: da.contrast(image, factor), lambda: da.brightness(image, factor),
      lambda: da.sharpness(image, factor), lambda: da.shear_x(image, s * 0.3 * level, FILL),
      lambda: da.shear_y(image, s * 0.3 * level, FILL), lambda: da.translate_x(image, s * 0.45 * level * width, FILL),
      lambda: da.translate_y(image, s * 0.45 * level * height, FILL),
  ]


def test_randaugment_ops_match_pil():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = pixels((9, 11, 3))
  image[2:5, 3:8] = [200, 30, 90]  # a flat patch, so that sharpness and equalize see structure
  references = pil_reference_ops(Image.fromarray(image), FILL)
  assert len(references) == len(da.OP_NAMES) == da.NUM_OPS
  apply_op = jax.jit(da.apply_op, static_argnums=4)  # one compilation: index, magnitude and sign traced
  x = jnp.asarray(image, jnp.float32)
  for index, name in enumerate(da.OP_NAMES):
    for m, sign in ((9.0, 1.0), (6.3, -1.0), (10.0, 1.0)):
      reference = np.asarray(references[index](m, sign), np.float32)
      fused = np.asarray(apply_op(x, index, np.float32(m), np.float32(sign), FILL))
      np.testing.assert_array_equal(fused, public_ops(x, m, sign)[index](), err_msg=name)
      difference = np.abs(fused - reference)
      # PIL computes autocontrast's table and the geometric ops' sample points in double precision, here float32:
      # where the exact value is an integer, PIL's truncation can land one level below. A level apart on a few
      # pixels at most.
      assert difference.max() <= 1 and (difference > 0).mean() < 0.05, (name, m, sign, difference.max())


def test_randaugment_applies_its_draws():
  image = pixels((8, 8, 3), seed=1)
  kwargs = dict(num_layers=2, magnitude=9.0, magnitude_std=0.5)
  keys = jax.random.split(jax.random.key(5), 300)
  index, applied, m, sign = (np.asarray(t).ravel() for t in
                             jax.vmap(lambda k: da.rand_augment_draws(k, **kwargs))(keys))
  assert set(index) == set(range(15)) and abs(applied.mean() - 0.5) < 0.06 and abs((sign > 0).mean() - 0.5) < 0.06
  assert m.max() <= 10 and m.min() >= 0 and abs(np.median(m) - 9) < 0.1 and 0.3 < m[m < 10].std() < 0.5
  rand_augment = jax.jit(lambda key, x: da.rand_augment(key, x, fill=FILL, **kwargs))
  apply_op = jax.jit(da.apply_op, static_argnums=4)
  index, applied, m, sign = (t.reshape(300, 2) for t in (index, applied, m, sign))
  for i in range(6):
    out = rand_augment(keys[i], jnp.asarray(image))
    expected = jnp.asarray(image, jnp.float32)
    for layer in range(2):
      if applied[i, layer]:
        expected = apply_op(expected, index[i, layer], m[i, layer], sign[i, layer], FILL)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, rand_augment(keys[i], jnp.asarray(image)))


# Random erasing, in normalised units.


def test_random_erasing_replaces_one_rectangle_with_noise():
  image = jnp.full((20, 24, 3), 0.3)
  erase = jax.jit(jax.vmap(da.random_erasing, in_axes=(0, None, None)))
  outs = np.asarray(erase(jax.random.split(jax.random.key(9), 120), image, 0.25))
  erased = 0
  for out in outs:
    changed = (out != np.float32(0.3)).any(-1)
    if not changed.any():
      continue
    erased += 1
    rows, cols = np.nonzero(changed.any(1))[0], np.nonzero(changed.any(0))[0]
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert changed.sum() == h * w  # one full rectangle
    assert 0.02 * 480 - 2 * 24 <= h * w <= 480 / 3 + 2 * 24 and h < 20 and w < 24  # area, up to rounding h and w
    assert np.abs(out[changed]).max() < 6
  assert 15 <= erased <= 48  # p = 0.25 of 120: 30 ± 3.5 standard deviations
  np.testing.assert_array_equal(erase(jax.random.split(jax.random.key(9), 120), image, 0.0), np.broadcast_to(
      image, (120, 20, 24, 3)))
  noise = np.asarray(erase(jax.random.split(jax.random.key(3), 120), image, 1.0))[:10]
  noise = noise[noise != np.float32(0.3)]
  assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1  # N(0, 1)


@pytest.mark.parametrize('scale,ratio', [((0.02, 1 / 3), (0.3, 3.3)), ((0.1, 0.5), (0.5, 1.0))])
def test_random_erasing_box_matches_torchvision(torchvision_transforms, scale, ratio):
  """torchvision's RandomErasing.get_params draws the rectangle as timm does: the same distribution of found,
  area, aspect and position (torchvision's default ratio is (0.3, 3.3), timm's (0.3, 1/0.3); the second
  parameters are asymmetric, so that h and w swapped would show)."""
  import torch  # pylint: disable=g-import-not-at-top
  height, width, n = 20, 24, 3000
  torch.manual_seed(0)
  image = torch.zeros(3, height, width)
  theirs = []
  for _ in range(n):
    top, left, h, w, _ = torchvision_transforms.T.RandomErasing.get_params(image, scale=scale, ratio=ratio,
                                                                          value=[0.0])
    theirs.append((not (h == height and w == width), top, left, h, w))  # none found: the whole image
  theirs = np.array(theirs)
  box = jax.vmap(lambda k: da.erasing_box(k, height, width, scale=scale, ratio=ratio))
  ours = np.stack([np.asarray(t) for t in box(jax.random.split(jax.random.key(2), n))], axis=1)
  assert abs(ours[:, 0].mean() - theirs[:, 0].mean()) < 0.02
  ours, theirs = ours[ours[:, 0] == 1], theirs[theirs[:, 0] == 1]
  for name, f in (('area', lambda b: b[:, 3] * b[:, 4]), ('aspect', lambda b: b[:, 3] / b[:, 4]),
                  ('top', lambda b: b[:, 1]), ('left', lambda b: b[:, 2]), ('h', lambda b: b[:, 3])):
    assert stats.ks_2samp(f(ours), f(theirs)).pvalue > 1e-3, name
  assert (ours[:, 3] < height).all() and (ours[:, 4] < width).all()
  assert (ours[:, 1] + ours[:, 3] <= height).all() and (ours[:, 2] + ours[:, 4] <= width).all()


# train_images: keys, batches, jit and devices.


def test_train_images_keys_examples_and_jit():
  # NumPy in and out: eager indexing of jax arrays would compile a program per index.
  images = np.broadcast_to(pixels((1, 16, 16, 3)), (4, 16, 16, 3))  # four copies of one image
  key = jax.random.key(7)
  out = np.asarray(train_jit(key, images, augment=EVERYTHING))
  assert out.shape == (4, 16, 16, 3) and out.dtype == np.float32 and np.isfinite(out).all()
  np.testing.assert_array_equal(out, train_jit(key, images, augment=EVERYTHING))  # deterministic for a key
  assert not np.allclose(out, train_jit(jax.random.key(8), images, augment=EVERYTHING))
  assert all(not np.allclose(out[i], out[j]) for i, j in itertools.combinations(range(4), 2))  # per example
  # Example i is train_image with key i of split(key, b), also without jit: with lighting alone, since running the
  # other stages op by op compiles a program per op (RandAugment's ops are compared eagerly with the jitted apply_op
  # in test_randaugment_ops_match_pil, the jitter with NumPy jitted). To float32 rounding: jit multiplies by 1 / 255
  # and 1 / std rather than dividing.
  lit = da.DeviceAugment(IMAGENET_MEAN, IMAGENET_STD, lighting_std=0.1)
  out = np.asarray(train_jit(key, images, augment=lit))
  for i, example_key in enumerate(jax.random.split(key, 4)):
    np.testing.assert_allclose(da.train_image(example_key, images[i], lit), out[i], rtol=1e-6, atol=1e-6)
  assert all(not np.allclose(out[i], out[j]) for i, j in itertools.combinations(range(4), 2))


def test_greyscale_images_are_normalised_and_erased_only():
  images = jnp.asarray(pixels((3, 8, 8, 1)))
  grey = dict(mean=(0.3,), std=(0.4,))
  colour = da.DeviceAugment(**grey, color_jitter=0.4, lighting_std=0.1, randaugment_layers=2)
  np.testing.assert_array_equal(train_jit(jax.random.key(0), images, augment=colour),
                                eval_jit(images, augment=colour))
  erased = train_jit(jax.random.key(0), images, augment=da.DeviceAugment(**grey, random_erasing=1.0))
  assert (np.asarray(erased) != np.asarray(eval_jit(images, augment=colour))).any()


def test_train_images_on_devices():
  """Under jit over a sharded batch, as on one device; inside shard_map, per device with its index folded in."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ('data',))  # as multimix_jax.trainer.step's
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  images = pixels((16, 16, 16, 3), seed=2)
  key = jax.random.key(11)
  erase = da.DeviceAugment(IMAGENET_MEAN, IMAGENET_STD, random_erasing=1.0)  # random, and quick to compile
  sharded = train_jit(key, jax.device_put(images, sharding), augment=erase)
  assert sharded.sharding.is_equivalent_to(sharding, 4)
  np.testing.assert_array_equal(sharded, train_jit(key, images, augment=erase))  # the same keys, whatever the devices

  def body(key, local):
    return da.train_images(jax.random.fold_in(key, jax.lax.axis_index('data')), local, EVERYTHING)

  spec = jax.sharding.PartitionSpec
  out = np.asarray(jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(spec(), spec('data')),
                                        out_specs=spec('data')))(key, images))
  for d in range(4):  # local batches of 4, as test_train_images_keys_examples_and_jit's: compiled once
    np.testing.assert_array_equal(out[4 * d:4 * d + 4],
                                  train_jit(jax.random.fold_in(key, d), images[4 * d:4 * d + 4], augment=EVERYTHING))
