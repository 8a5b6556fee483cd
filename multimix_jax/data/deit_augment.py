"""DeiT's training augmentation after the crop and flip: RandAugment and random erasing, as timm writes them
(`timm.data.auto_augment.rand_augment_transform('rand-m9-mstd0.5-inc1')` and `timm.data.random_erasing`), in
TensorFlow ops random only through a stateless key, so that the input pipeline's exact resume holds.

RandAugment (Cubuk et al. 2020) in timm's form: `num_layers` ops per image, each drawn uniformly with replacement
from the 15 below, each applied with probability 0.5 at magnitude m ~ N(magnitude, magnitude_std²) clipped to
[0, 10], drawn per op. The ops act on uint8 RGB pixels as PIL's do (timm runs them on PIL images); m maps to each
op's argument as timm's "increasing" table (`inc1`: stronger for every op as m grows):

| op | argument at magnitude m |
| --- | --- |
| AutoContrast, Equalize, Invert | none |
| Rotate | ± 30° · m/10 (sign a fair coin), about the centre |
| PosterizeIncreasing | keep 4 − int(4 · m/10) bits |
| SolarizeIncreasing | invert pixels ≥ 256 − int(256 · m/10) |
| SolarizeAdd | add int(110 · m/10) to pixels < 128 |
| Color-, Contrast-, Brightness-, SharpnessIncreasing | PIL ImageEnhance factor max(0.1, 1 ± 0.9 · m/10) |
| ShearX, ShearY | shear ± 0.3 · m/10 |
| TranslateXRel, TranslateYRel | shift ± 0.45 · m/10 of the width / height |

The geometric ops fill with the dataset's mean colour (timm's `img_mean`) and resample bilinearly as PIL does:
TensorFlow's projective transform has no bicubic, which DeiT's timm uses there (timm's `interpolation` hparam).
Results are integers, rounded or truncated where PIL rounds or truncates. Posterize at m = 10 keeps 0 bits (black),
as timm did with Pillow before version 10, which refuses 0 bits.

Random erasing (Zhong et al. 2020) as timm's `RandomErasing(mode='pixel')`: with probability `prob`, one rectangle
of area U(0.02, 1/3) of the image and aspect ratio log-uniform in [0.3, 1/0.3] (the first of 10 draws that fits)
is replaced by per-pixel noise N(0, 1) in normalised units.
"""

import math

import tensorflow as tf

NUM_OPS = 15
_LEVEL_MAX = 10.0  # timm's _LEVEL_DENOM and magnitude_max
_LUMA = (0.299, 0.587, 0.114)  # PIL's convert('L')
_SMOOTH = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))  # PIL's ImageFilter.SMOOTH, divided by 13


def _keys(key, n):
  return tf.unstack(tf.random.experimental.stateless_split(key, n))


def _luma(image):
  return tf.round(tf.reduce_sum(image * tf.constant(_LUMA), axis=-1, keepdims=True))


def _blend(degenerate, image, factor):
  """PIL's ImageEnhance (Image.blend): degenerate + factor · (image − degenerate), clipped to [0, 255], truncated."""
  return tf.floor(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def auto_contrast(image):
  """Each channel stretched linearly to [0, 255] (PIL ImageOps.autocontrast); a constant channel is kept."""
  x = tf.cast(image, tf.float64)  # PIL's lookup table is computed in double precision
  lo = tf.reduce_min(x, axis=(0, 1), keepdims=True)
  hi = tf.reduce_max(x, axis=(0, 1), keepdims=True)
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  stretched = tf.clip_by_value(tf.floor(x * scale - lo * scale), 0.0, 255.0)
  return tf.cast(tf.where(hi > lo, stretched, x), tf.float32)


def equalize(image):
  """Histogram equalisation per channel, PIL's ImageOps.equalize lookup table."""
  def channel(x):
    x = tf.cast(x, tf.int32)
    histogram = tf.histogram_fixed_width(x, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = tf.clip_by_value(tf.concat([[0], (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)], 0)[:-1],
                           0, 255)
    return tf.cast(tf.where(step > 0, tf.gather(lut, x), x), tf.float32)

  return tf.stack([channel(image[..., c]) for c in range(3)], axis=-1)


def invert(image):
  return 255.0 - image


def posterize(image, bits):
  """Keeps the `bits` high bits of each value (0 bits: black)."""
  shift = tf.cast(8 - bits, tf.float32)
  return tf.floor(image / 2.0**shift) * 2.0**shift


def solarize(image, threshold):
  return tf.where(image >= threshold, 255.0 - image, image)


def solarize_add(image, addition, threshold=128.0):
  return tf.where(image < threshold, tf.minimum(image + addition, 255.0), image)


def color(image, factor):
  return _blend(_luma(image), image, factor)


def contrast(image, factor):
  return _blend(tf.round(tf.reduce_mean(_luma(image))), image, factor)


def brightness(image, factor):
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """Blend with PIL's SMOOTH filter of the image; the one-pixel border keeps its values, as in PIL."""
  kernel = tf.tile(tf.constant(_SMOOTH)[:, :, None, None] / 13.0, [1, 1, 3, 1])
  smooth = tf.round(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], 'VALID')[0])
  degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.zeros_like(smooth[..., :1]), [[1, 1], [1, 1], [0, 0]], constant_values=1.0) > 0
  return _blend(tf.where(border, image, degenerate), image, factor)


def affine(image, matrix, fill):
  """PIL's `Image.transform(AFFINE, (a, b, c, d, e, f), BILINEAR, fillcolor=fill)`: output pixel (x, y) reads the
  input at (a x + b y + c, d x + e y + f) in PIL's coordinates (pixel centres at half-integers), bilinearly with
  the edge pixels repeated, and is `fill` where that point lies outside the image; truncated to integers."""
  a, b, c, d, e, f = (tf.cast(v, tf.float32) for v in matrix)
  # TensorFlow's coordinates have pixel centres at integers: shift by half a pixel either side.
  c, f = c + 0.5 * (a + b - 1.0), f + 0.5 * (d + e - 1.0)
  shape = tf.shape(image)[:2]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.stack([a, b, c, d, e, f, 0.0, 0.0])[None], output_shape=shape,
      fill_value=0.0, interpolation='BILINEAR', fill_mode='NEAREST')[0]  # NEAREST: the edge pixels repeated
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  y, x = tf.meshgrid(tf.range(height), tf.range(width), indexing='ij')
  xs, ys = a * x + b * y + c, d * x + e * y + f
  outside = (xs < -0.5) | (xs >= width - 0.5) | (ys < -0.5) | (ys >= height - 0.5)
  out = tf.floor(tf.clip_by_value(out, 0.0, 255.0) + 1e-3)
  return tf.where(outside[..., None], tf.constant(fill, tf.float32), out)


def rotate(image, degrees, fill):
  """Counter-clockwise by `degrees` about the image centre, as PIL's `Image.rotate`."""
  height, width = (tf.cast(s, tf.float32) for s in tf.unstack(tf.shape(image)[:2]))
  angle = -degrees * math.pi / 180.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = width / 2.0, height / 2.0
  return affine(image, (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy), fill)


def _ops(fill):
  """The 15 ops of timm's `_RAND_INCREASING_TRANSFORMS`, in its order: f(image, m, sign) with m in [0, 10]."""
  level = lambda m: m / _LEVEL_MAX
  enhance = lambda m, sign: tf.maximum(0.1, 1.0 + sign * 0.9 * level(m))
  size = lambda image, axis: tf.cast(tf.shape(image)[axis], tf.float32)
  one, zero = tf.constant(1.0), tf.constant(0.0)
  return [
      lambda x, m, s: auto_contrast(x),
      lambda x, m, s: equalize(x),
      lambda x, m, s: invert(x),
      lambda x, m, s: rotate(x, s * 30.0 * level(m), fill),
      lambda x, m, s: posterize(x, 4 - tf.cast(tf.floor(4.0 * level(m)), tf.int32)),
      lambda x, m, s: solarize(x, 256.0 - tf.floor(256.0 * level(m))),
      lambda x, m, s: solarize_add(x, tf.floor(110.0 * level(m))),
      lambda x, m, s: color(x, enhance(m, s)),
      lambda x, m, s: contrast(x, enhance(m, s)),
      lambda x, m, s: brightness(x, enhance(m, s)),
      lambda x, m, s: sharpness(x, enhance(m, s)),
      lambda x, m, s: affine(x, (one, s * 0.3 * level(m), zero, zero, one, zero), fill),
      lambda x, m, s: affine(x, (one, zero, zero, s * 0.3 * level(m), one, zero), fill),
      lambda x, m, s: affine(x, (one, zero, s * 0.45 * level(m) * size(x, 1), zero, one, zero), fill),
      lambda x, m, s: affine(x, (one, zero, zero, zero, one, s * 0.45 * level(m) * size(x, 0)), fill),
  ]


OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing', 'SolarizeIncreasing',
            'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing',
            'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')


def apply_op(image, index, magnitude, sign, fill):
  """Op `index` (of OP_NAMES) at `magnitude` in [0, 10] with `sign` ±1: (H, W, 3) float32 integer-valued pixels
  in [0, 255] -> the same."""
  branches = [lambda f=f: f(image, magnitude, sign) for f in _ops(fill)]
  return tf.switch_case(tf.convert_to_tensor(index, tf.int32), branches)


def rand_augment_draws(key, *, num_layers, magnitude, magnitude_std):
  """The random choices of RandAugment for one image, all from the stateless `key` (shape (2,) int64).

  Returns:
    (index int32, applied bool, m float32, sign float32), each (num_layers,): op `index` of OP_NAMES, applied or
    not (probability 0.5 each, as timm's ops), at magnitude m ~ N(magnitude, magnitude_std²) clipped to [0, 10],
    with `sign` ±1 (a fair coin) for the ops that go either way.
  """
  draws = []
  for layer_key in _keys(key, num_layers):
    op_key, apply_key, magnitude_key, sign_key = _keys(layer_key, 4)
    draws.append((
        tf.random.stateless_uniform([], seed=op_key, minval=0, maxval=NUM_OPS, dtype=tf.int32),
        tf.random.stateless_uniform([], seed=apply_key) < 0.5,
        tf.clip_by_value(magnitude + magnitude_std * tf.random.stateless_normal([], seed=magnitude_key), 0.0,
                         _LEVEL_MAX),
        tf.where(tf.random.stateless_uniform([], seed=sign_key) < 0.5, 1.0, -1.0)))
  return tuple(tf.stack(column) for column in zip(*draws))


def rand_augment(image, key, *, num_layers, magnitude, magnitude_std, fill):
  """timm's RandAugment: (H, W, 3) pixels in [0, 255] (any dtype) -> float32 integer-valued pixels in [0, 255].

  Args:
    image: (H, W, 3) RGB, rounded to integers first (timm's ops see PIL uint8 images).
    key: stateless seed, shape (2,) int64; every draw of this image comes from it (`rand_augment_draws`).
    num_layers: ops per image (timm's n, 2), >= 1.
    magnitude, magnitude_std: each op's m ~ N(magnitude, magnitude_std²), clipped to [0, 10] (timm's m9, mstd0.5).
    fill: per-channel fill of the geometric ops, in [0, 255] (the dataset's mean colour).
  """
  image = tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0)
  index, applied, m, sign = rand_augment_draws(key, num_layers=num_layers, magnitude=magnitude,
                                               magnitude_std=magnitude_std)
  for i in range(num_layers):
    image = tf.cond(applied[i], lambda image=image, i=i: apply_op(image, index[i], m[i], sign[i], fill),
                    lambda image=image: image)
  return image


def erasing_box(key, height, width, *, min_area=0.02, max_area=1 / 3, min_aspect=0.3, attempts=10):
  """timm's RandomErasing rectangle: (found bool, top, left, h, w) int32 scalars; `found` False when none of the
  `attempts` draws fits in the (height, width) image."""
  area_key, aspect_key, top_key, left_key = _keys(key, 4)
  area = float(height * width) * tf.random.stateless_uniform([attempts], seed=area_key, minval=min_area,
                                                             maxval=max_area)
  aspect = tf.exp(tf.random.stateless_uniform([attempts], seed=aspect_key, minval=math.log(min_aspect),
                                              maxval=-math.log(min_aspect)))
  h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (h < height) & (w < width)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  h, w = h[first], w[first]
  # randint(0, height − h) inclusive, as Python's random.randint.
  top = tf.cast(tf.floor(tf.random.stateless_uniform([], seed=top_key) * tf.cast(height - h + 1, tf.float32)),
                tf.int32)
  left = tf.cast(tf.floor(tf.random.stateless_uniform([], seed=left_key) * tf.cast(width - w + 1, tf.float32)),
                 tf.int32)
  return tf.reduce_any(fits), top, left, h, w


def random_erasing(image, key, prob, mean, std):
  """(H, W, C) float32 pixels in [0, 255] -> the same, one rectangle replaced with probability `prob` by
  255 · (mean + std · N(0, 1)) per pixel and channel: N(0, 1) once normalised with this (mean, std)."""
  coin_key, box_key, noise_key = _keys(key, 3)
  height, width, channels = image.shape
  found, top, left, h, w = erasing_box(box_key, height, width)
  erase = found & (tf.random.stateless_uniform([], seed=coin_key) < prob)

  def erased():  # noise drawn for the rectangle only, and only for the images erased
    noise = tf.random.stateless_normal(tf.stack([h, w, channels]), seed=noise_key)
    fill = 255.0 * (tf.constant(mean, tf.float32) + tf.constant(std, tf.float32) * noise)
    padding = [[top, height - top - h], [left, width - left - w], [0, 0]]
    inside = tf.pad(tf.ones([h, w, 1], tf.bool), padding)
    return tf.ensure_shape(tf.where(inside, tf.pad(fill, padding), image), image.shape)

  return tf.cond(erase, erased, lambda: image)
