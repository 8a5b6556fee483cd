"""Normalisation and photometric augmentation on the accelerator, inside the jitted train step.

The host decodes, crops and flips, and sends uint8 pixels; `train_images` does the rest, per example, random only
through a JAX key, so that a resumed run draws exactly what the uninterrupted one drew. In timm's order:

1. RandAugment (timm's 'rand-m9-mstd0.5-inc1') on 0..255 pixels, the geometric ops filling with the mean colour;
2. colour jitter (brightness, contrast, saturation in a random order), then PCA lighting, on [0, 1] pixels;
3. normalisation, (x / 255 − mean) / std;
4. random erasing, in normalised units (timm's `RandomErasing(mode='pixel')`).

Example i of a batch of b gets key `jax.random.split(key, b)[i]`; each stage then draws from
`jax.random.fold_in(example_key, stage)` (`_RANDAUGMENT` ... `_ERASING`), so that switching one stage on or off
leaves the others' draws unchanged. Under `jax.jit` over a batch sharded across devices, example i's key does not
depend on the number of devices. Inside `shard_map` or `pmap`, where each device sees its own share, fold the
device's axis index into `key` first, or every device draws the same.

Colour jitter is AlignMixup's ImageNet `ColorJitter(0.4, 0.4, 0.4)`: each op is `img.lerp(target, a)` with
a ~ U(−s, s), that is torchvision's blend with factor 1 − a, targets black, the image's mean luma and each pixel's
luma (weights 0.299, 0.587, 0.114), shuffled per image and never clamped. Lighting is its AlexNet-style
`Lighting(0.1)`. We write these in jax.numpy rather than with dm-pix: dm-pix follows `tf.image`, whose brightness
adds a delta, whose contrast blends each channel with its own mean and whose saturation goes through HSV with a
clamp, none of which is the authors' unclamped torchvision-style lerp; its affine transform has neither a
per-channel fill nor PIL's rule for what lies outside the image.

RandAugment (Cubuk et al. 2020) in timm's form: `num_layers` ops per image, drawn uniformly with replacement from
the 15 of OP_NAMES, each applied with probability 0.5 at magnitude m ~ N(magnitude, magnitude_std²) clipped to
[0, 10], with a fair-coin sign for the ops that go either way. The ops act on integer pixel values as PIL's do on
uint8 images (timm runs them on PIL images), with m mapped to each op's argument by timm's "increasing" table:

| op | argument at magnitude m |
| --- | --- |
| AutoContrast, Equalize, Invert | none |
| Rotate | ± 30° · m/10, about the centre |
| PosterizeIncreasing | keep 4 − int(4 · m/10) bits (0 bits: black, as Pillow < 10) |
| SolarizeIncreasing | invert pixels ≥ 256 − int(256 · m/10) |
| SolarizeAdd | add int(110 · m/10) to pixels < 128 |
| Color-, Contrast-, Brightness-, SharpnessIncreasing | PIL ImageEnhance factor max(0.1, 1 ± 0.9 · m/10) |
| ShearX, ShearY | shear ± 0.3 · m/10 |
| TranslateXRel, TranslateYRel | shift ± 0.45 · m/10 of the width / height |

The geometric ops resample bilinearly as PIL does (DeiT's timm resamples bicubically there). Luma, the contrast
mean, the sharpness filter and the histograms are PIL's integer arithmetic, exactly. PIL computes autocontrast's
table and the geometric ops' sample points in double precision, here in float32 (as accelerators compute): where
the exact result is an integer, PIL's truncation can land one level below it, so a few pixels differ by one level
(autocontrast here is the exact stretch, which PIL's table misses for about 0.4% of (low, high, value) triples).

Random erasing (Zhong et al. 2020) as timm's: with probability `prob`, one rectangle of area U(0.02, 1/3) of the
image and aspect ratio log-uniform in [0.3, 1/0.3] (the first of 10 draws that fits) is replaced by per-pixel
N(0, 1) noise.

Greyscale images (C = 1) are normalised and randomly erased; colour jitter, lighting and RandAugment, which are
defined on RGB, are not applied to them (only RGB datasets enable them).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

# AlexNet-style PCA lighting noise: eigenvalues and eigenvectors (columns) of the RGB covariance of ImageNet pixels
# in [0, 1], the values of AlignMixup's ImageNet `main.py` (from fb.resnet.torch).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as the authors' Grayscale (torchvision uses 0.2989 for R)

OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing', 'SolarizeIncreasing',
            'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing',
            'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')  # timm's _RAND_INCREASING_TRANSFORMS, in order
NUM_OPS = len(OP_NAMES)
_LEVEL_MAX = 10.0  # timm's _LEVEL_DENOM and magnitude_max
# Every op is one of three kinds: a lookup table per channel, a blend with a "degenerate" image, or an affine
# warp. `apply_op` computes one op of each kind and keeps one: under vmap every branch of a switch is computed,
# so this costs three ops per layer rather than fifteen. The order within each kind is `apply_op`'s.
_LUT_OPS = ('AutoContrast', 'Equalize', 'Invert', 'PosterizeIncreasing', 'SolarizeIncreasing', 'SolarizeAdd',
            'ContrastIncreasing', 'BrightnessIncreasing')
_BLEND_OPS = ('ColorIncreasing', 'SharpnessIncreasing')
_AFFINE_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')
_KINDS = (_LUT_OPS, _BLEND_OPS, _AFFINE_OPS)
_OP_KIND = np.array([next(k for k, ops in enumerate(_KINDS) if name in ops) for name in OP_NAMES], np.int32)
_OP_SLOT = np.array([_KINDS[k].index(name) for k, name in zip(_OP_KIND, OP_NAMES)], np.int32)
# PIL's convert('L'): (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16, fixed point for 0.299, 0.587, 0.114 rounded.
_PIL_LUMA = (19595, 38470, 7471)
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.int32)  # PIL's ImageFilter.SMOOTH, divided by 13
_VALUES = np.arange(256, dtype=np.float32)  # the pixel values a lookup table maps

# Stages of `train_image`, folded into the example's key.
_RANDAUGMENT, _JITTER, _LIGHTING, _ERASING = range(4)


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
  """What `train_images` and `eval_images` do; frozen and hashable, so static under `jax.jit`.

  `mean` and `std` are per channel, in [0, 1] pixel units. `color_jitter` is the strength s (factors 1 − U(−s, s)
  for brightness, contrast and saturation, in a random order); `lighting_std` the PCA lighting alphastd;
  `randaugment_layers` the ops per image (0: no RandAugment), at magnitude N(randaugment_magnitude,
  randaugment_magnitude_std²); `random_erasing` the probability of erasing a rectangle. Zero switches a stage off.
  """
  mean: tuple[float, ...]
  std: tuple[float, ...]
  color_jitter: float = 0.0
  lighting_std: float = 0.0
  randaugment_layers: int = 0
  randaugment_magnitude: float = 9.0
  randaugment_magnitude_std: float = 0.5
  random_erasing: float = 0.0

  def __post_init__(self):
    if len(self.mean) != len(self.std):
      raise ValueError(f'mean {self.mean} and std {self.std} must have one value per channel each.')
    if not 0 <= self.random_erasing <= 1:
      raise ValueError(f'random_erasing={self.random_erasing} must be a probability.')


def train_images(key, images, augment: DeviceAugment) -> jax.Array:
  """(b, H, W, C) uint8 pixels -> (b, H, W, C) float32, normalised and augmented as `augment` says.

  Example i is augmented by `train_image` with key `jax.random.split(key, b)[i]`. Pure and jittable (`augment` is
  static), also inside `shard_map` and `pmap` bodies (see the module docstring on keys there).

  >>> augment = DeviceAugment(mean=(0.5,) * 3, std=(0.25,) * 3, color_jitter=0.4)
  >>> train_images(jax.random.key(0), jnp.zeros((2, 8, 8, 3), jnp.uint8), augment).shape
  (2, 8, 8, 3)
  """
  _check_channels(images, augment)
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda k, image: train_image(k, image, augment))(keys, images)


def eval_images(images, augment: DeviceAugment) -> jax.Array:
  """(b, H, W, C) uint8 pixels -> (b, H, W, C) float32 (x / 255 − mean) / std, nothing random."""
  _check_channels(images, augment)
  return normalise(images, augment.mean, augment.std)


def train_image(key, image, augment: DeviceAugment) -> jax.Array:
  """One example: (H, W, C) uint8 pixels -> (H, W, C) float32, normalised and augmented; stage s draws from
  `fold_in(key, s)`."""
  rgb = image.shape[-1] == 3
  pixels = image
  if augment.randaugment_layers and rgb:
    fill = tuple(round(255 * m) for m in augment.mean)  # timm's img_mean
    pixels = rand_augment(jax.random.fold_in(key, _RANDAUGMENT), pixels, num_layers=augment.randaugment_layers,
                          magnitude=augment.randaugment_magnitude,
                          magnitude_std=augment.randaugment_magnitude_std, fill=fill)
  unit = jnp.asarray(pixels, jnp.float32) / 255
  if augment.color_jitter and rgb:
    unit = color_jitter(jax.random.fold_in(key, _JITTER), unit, augment.color_jitter)
  if augment.lighting_std and rgb:
    unit = lighting(jax.random.fold_in(key, _LIGHTING), unit, augment.lighting_std)
  normalised = _standardise(unit, augment.mean, augment.std)
  if augment.random_erasing:
    normalised = random_erasing(jax.random.fold_in(key, _ERASING), normalised, augment.random_erasing)
  return normalised


def _check_channels(images, augment):
  if images.ndim != 4 or images.shape[-1] != len(augment.mean):
    raise ValueError(f'images of shape {images.shape} must be (b, H, W, C) with C = {len(augment.mean)}, the '
                     f'channels of mean={augment.mean}.')


def normalise(images, mean, std) -> jax.Array:
  """(..., C) pixels in [0, 255] (uint8 or float) -> float32 (x / 255 − mean) / std, as torchvision's ToTensor
  then Normalize(mean, std)."""
  return _standardise(jnp.asarray(images, jnp.float32) / 255, mean, std)


def _standardise(unit, mean, std):
  """(..., C) float32 in [0, 1] units -> (x − mean) / std."""
  return (unit - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


# Colour jitter and lighting: (H, W, 3) float32 RGB in [0, 1] units, never clamped.


def grayscale(image) -> jax.Array:
  """(H, W, 3) float32 RGB -> (H, W, 1) luma 0.299 R + 0.587 G + 0.114 B."""
  return jnp.sum(image * jnp.asarray(GRAY_WEIGHTS, image.dtype), axis=-1, keepdims=True)


def _toward(image, target, factor):
  """factor · image + (1 − factor) · target: the authors' img.lerp(target, 1 − factor), torchvision's blend."""
  return factor * image + (1 - factor) * target


def adjust_brightness(image, factor) -> jax.Array:
  """factor · image: a blend with black (torchvision's adjust_brightness without its clamp to [0, 1])."""
  return _toward(image, 0.0, factor)


def adjust_contrast(image, factor) -> jax.Array:
  """A blend with the mean luma of the whole image (torchvision's formula, no clamp)."""
  return _toward(image, jnp.mean(grayscale(image)), factor)


def adjust_saturation(image, factor) -> jax.Array:
  """A blend with each pixel's luma (torchvision's formula, no clamp)."""
  return _toward(image, grayscale(image), factor)


def jitter_parameters(key, strength) -> tuple[jax.Array, jax.Array]:
  """(factors float32 (3,), order int32 (3,)) for `color_jitter`: brightness, contrast and saturation factors
  1 − a with a ~ U(−strength, strength) each, and a uniformly random permutation of (0, 1, 2), the order in which
  to apply them (0 brightness, 1 contrast, 2 saturation)."""
  factor_key, order_key = jax.random.split(key)
  factors = 1 - jax.random.uniform(factor_key, (3,), minval=-strength, maxval=strength)
  return factors, jax.random.permutation(order_key, 3)


def color_jitter(key, image, strength) -> jax.Array:
  """AlignMixup's ImageNet ColorJitter: (H, W, 3) float32 RGB in [0, 1] -> (H, W, 3) float32, unclamped.

  The three ops of `jitter_parameters(key, strength)`, each with its factor, in its order.
  """
  factors, order = jitter_parameters(key, strength)
  for op in order:
    gray = grayscale(image)
    # adjust_brightness, _contrast or _saturation: one blend toward the op's target. Under vmap a switch between
    # the three ops computes all three; selecting the target is 2.4 times faster on a CPU.
    target = jnp.select([op == 0, op == 1], [jnp.zeros_like(gray), jnp.full_like(gray, jnp.mean(gray))], gray)
    image = _toward(image, target, factors[op])
  return image


def lighting(key, image, alphastd, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC) -> jax.Array:
  """AlexNet-style PCA lighting noise: (H, W, 3) float32 RGB in [0, 1] -> image + eigvec @ (alpha · eigval) at
  every pixel, alpha ~ N(0, alphastd²) (3,); unclamped, as the authors' `Lighting`. eigvec's columns are the
  eigenvectors."""
  alpha = alphastd * jax.random.normal(key, (3,))
  return image + jnp.asarray(eigvec, jnp.float32) @ (alpha * jnp.asarray(eigval, jnp.float32))


# RandAugment's ops: (H, W, 3) float32 integer-valued pixels in [0, 255] -> the same, as PIL's on uint8 images.


def apply_lut(image, lut) -> jax.Array:
  """Pixel value v of channel c becomes lut[v, c]: image (H, W, C) float32 integer-valued in [0, 255], lut
  (256,) or (256, C) -> (H, W, C) float32."""
  channels = image.shape[-1]
  lut = jnp.broadcast_to(jnp.reshape(lut, (256, -1)), (256, channels)).astype(jnp.float32)
  index = image.astype(jnp.int32).reshape(-1, channels)
  return jnp.take_along_axis(lut, index, axis=0).reshape(image.shape)


def _auto_contrast_lut(image):
  """(256, C): each channel's [low, high] stretched to [0, 255], floor((v − low) · 255 / (high − low)) exactly;
  identity for a constant channel."""
  low, high = jnp.min(image, axis=(0, 1)), jnp.max(image, axis=(0, 1))
  values = jnp.asarray(_VALUES)[:, None]
  # Integers: exact where PIL's double precision is (see the module docstring).
  stretched = ((values - low).astype(jnp.int32) * 255) // jnp.maximum(high - low, 1).astype(jnp.int32)
  return jnp.where(high > low, jnp.clip(stretched, 0, 255).astype(jnp.float32), values)


def _equalize_lut(image):
  """(256, C): PIL's ImageOps.equalize table, from each channel's histogram."""
  channels = image.shape[-1]
  pixels = image.astype(jnp.int32).reshape(-1, channels)
  histogram = jnp.zeros((256, channels), jnp.int32).at[pixels, jnp.arange(channels)].add(1)
  highest = 255 - jnp.argmax(histogram[::-1] > 0, axis=0)  # the largest value present
  step = (pixels.shape[0] - jnp.take_along_axis(histogram, highest[None], axis=0)[0]) // 255
  below = jnp.cumsum(histogram, axis=0) - histogram  # pixels below each value
  lut = jnp.clip((step // 2 + below) // jnp.maximum(step, 1), 0, 255).astype(jnp.float32)
  return jnp.where(step > 0, lut, jnp.asarray(_VALUES)[:, None])  # a single value: unchanged


def _invert_lut():
  return 255 - jnp.asarray(_VALUES)


def _posterize_lut(bits):
  shift = 2.0 ** (8 - jnp.asarray(bits, jnp.float32))
  return jnp.floor(jnp.asarray(_VALUES) / shift) * shift


def _solarize_lut(threshold):
  values = jnp.asarray(_VALUES)
  return jnp.where(values >= threshold, 255 - values, values)


def _solarize_add_lut(addition, threshold):
  values = jnp.asarray(_VALUES)
  return jnp.where(values < threshold, jnp.minimum(values + addition, 255), values)


def _blend(degenerate, image, factor):
  """PIL's ImageEnhance (Image.blend): degenerate + factor · (image − degenerate) in float32, clipped to
  [0, 255], truncated."""
  return jnp.floor(jnp.clip(degenerate + factor * (image - degenerate), 0, 255))


def _luma(image):
  """(H, W, 3) -> (H, W, 1) float32, PIL's convert('L') in its fixed-point arithmetic."""
  weighted = jnp.sum(image.astype(jnp.int32) * jnp.asarray(_PIL_LUMA, jnp.int32), axis=-1, keepdims=True)
  return ((weighted + 2**15) >> 16).astype(jnp.float32)


def _contrast_lut(image, factor):
  """(256,): the blend with the image's mean luma, rounded half up as PIL's int(mean + 0.5)."""
  luma = _luma(image).astype(jnp.int32)
  mean = (2 * jnp.sum(luma) + luma.size) // (2 * luma.size)  # integers: exact for any image size PIL takes
  return _blend(mean.astype(jnp.float32), jnp.asarray(_VALUES), factor)


def _brightness_lut(factor):
  return _blend(0.0, jnp.asarray(_VALUES), factor)


def _smooth(image):
  """(H, W, C) -> (H, W, C) float32: PIL's SMOOTH filter, its one-pixel border keeping the image's values."""
  x = image.astype(jnp.int32)
  height, width = x.shape[:2]
  total = sum(int(_SMOOTH[i, j]) * x[i:height - 2 + i, j:width - 2 + j] for i in range(3) for j in range(3))
  inner = ((2 * total + 13) // 26).astype(jnp.float32)  # round(total / 13), never a tie: 13 is odd
  return image.at[1:-1, 1:-1].set(inner)


def auto_contrast(image) -> jax.Array:
  """PIL's ImageOps.autocontrast: each channel stretched linearly to [0, 255]; a constant channel is kept."""
  return apply_lut(image, _auto_contrast_lut(image))


def equalize(image) -> jax.Array:
  """PIL's ImageOps.equalize: histogram equalisation per channel."""
  return apply_lut(image, _equalize_lut(image))


def invert(image) -> jax.Array:
  """255 − image."""
  return apply_lut(image, _invert_lut())


def posterize(image, bits) -> jax.Array:
  """Keeps the `bits` (0 to 8) high bits of each value; 0 bits: black."""
  return apply_lut(image, _posterize_lut(bits))


def solarize(image, threshold) -> jax.Array:
  """Values >= threshold inverted (PIL's ImageOps.solarize)."""
  return apply_lut(image, _solarize_lut(threshold))


def solarize_add(image, addition, threshold=128) -> jax.Array:
  """`addition` added to values below `threshold`, saturating at 255 (timm's solarize_add)."""
  return apply_lut(image, _solarize_add_lut(addition, threshold))


def color(image, factor) -> jax.Array:
  """PIL's ImageEnhance.Color: a blend with the image's luma."""
  return _blend(_luma(image), image, factor)


def contrast(image, factor) -> jax.Array:
  """PIL's ImageEnhance.Contrast: a blend with the image's mean luma."""
  return apply_lut(image, _contrast_lut(image, factor))


def brightness(image, factor) -> jax.Array:
  """PIL's ImageEnhance.Brightness: a blend with black."""
  return apply_lut(image, _brightness_lut(factor))


def sharpness(image, factor) -> jax.Array:
  """PIL's ImageEnhance.Sharpness: a blend with the SMOOTH-filtered image."""
  return _blend(_smooth(image), image, factor)


def affine(image, matrix, fill) -> jax.Array:
  """PIL's `Image.transform(size, AFFINE, matrix, BILINEAR, fillcolor=fill)`.

  Output pixel (x, y) reads the input at (a x' + b y' + c, d x' + e y' + f), (x', y') = (x + 0.5, y + 0.5) its
  centre, in PIL's coordinates (pixel i spans [i, i + 1)): bilinearly, the edge pixels repeated, and `fill` where
  that point lies outside the image; truncated to an integer.

  Args:
    image: (H, W, C) float32 integer-valued pixels in [0, 255].
    matrix: (a, b, c, d, e, f), float32 (6,).
    fill: (C,) fill colour in [0, 255].

  Returns:
    (H, W, C) float32.
  """
  height, width, channels = image.shape
  a, b, c, d, e, f = (matrix[i] for i in range(6))
  y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5, jnp.arange(width, dtype=jnp.float32) + 0.5,
                      indexing='ij')
  xin, yin = a * x + b * y + c, d * x + e * y + f
  inside = (xin >= 0) & (xin < width) & (yin >= 0) & (yin < height)
  x0, y0 = jnp.floor(xin - 0.5), jnp.floor(yin - 0.5)  # the sample's top-left neighbour, centres at i + 0.5
  dx, dy = (xin - 0.5 - x0)[..., None], (yin - 0.5 - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  flat = image.reshape(-1, channels)

  def pixel(row, col):
    return flat[jnp.clip(row, 0, height - 1) * width + jnp.clip(col, 0, width - 1)]

  top = pixel(y0, x0) + (pixel(y0, x0 + 1) - pixel(y0, x0)) * dx
  bottom = pixel(y0 + 1, x0) + (pixel(y0 + 1, x0 + 1) - pixel(y0 + 1, x0)) * dx
  value = top + (bottom - top) * dy
  # PIL truncates its double-precision result; where that is an exact integer, float32 can land just below it.
  value = jnp.floor(jnp.clip(value, 0, 255) + 1e-3)
  return jnp.where(inside[..., None], value, jnp.asarray(fill, jnp.float32))


def _rotation(degrees, height, width):
  """PIL's `Image.rotate` matrix: counter-clockwise by `degrees` about the image centre."""
  angle = -jnp.asarray(degrees, jnp.float32) * (math.pi / 180)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  cx, cy = width / 2, height / 2
  return jnp.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy])


def _matrix(*values):
  return jnp.stack([jnp.asarray(v, jnp.float32) for v in values])


def rotate(image, degrees, fill) -> jax.Array:
  """PIL's `Image.rotate(degrees, BILINEAR, fillcolor=fill)`: counter-clockwise about the centre."""
  return affine(image, _rotation(degrees, *image.shape[:2]), fill)


def shear_x(image, shear, fill) -> jax.Array:
  """timm's shear_x: input x = x + shear · y."""
  return affine(image, _matrix(1, shear, 0, 0, 1, 0), fill)


def shear_y(image, shear, fill) -> jax.Array:
  """timm's shear_y: input y = y + shear · x."""
  return affine(image, _matrix(1, 0, 0, shear, 1, 0), fill)


def translate_x(image, pixels, fill) -> jax.Array:
  """timm's translate_x_rel with pixels = pct · W: input x = x + pixels."""
  return affine(image, _matrix(1, 0, pixels, 0, 1, 0), fill)


def translate_y(image, pixels, fill) -> jax.Array:
  """timm's translate_y_rel with pixels = pct · H: input y = y + pixels."""
  return affine(image, _matrix(1, 0, 0, 0, 1, pixels), fill)


def apply_op(image, index, magnitude, sign, fill) -> jax.Array:
  """RandAugment op `index` (of OP_NAMES) at `magnitude` in [0, 10] with `sign` ±1, timm's arguments.

  Args:
    image: (H, W, 3) float32 integer-valued pixels in [0, 255].
    index, magnitude, sign: scalars (int32, float32, float32), traced or not.
    fill: (3,) fill colour of the geometric ops, in [0, 255].

  Returns:
    (H, W, 3) float32 integer-valued pixels in [0, 255].
  """
  height, width = image.shape[:2]
  level = jnp.asarray(magnitude, jnp.float32) / _LEVEL_MAX
  factor = jnp.maximum(0.1, 1 + sign * 0.9 * level)  # timm's enhance-increasing argument
  luts = jnp.stack([jnp.broadcast_to(jnp.reshape(lut, (256, -1)), (256, image.shape[-1])) for lut in (
      _auto_contrast_lut(image), _equalize_lut(image), _invert_lut(),
      _posterize_lut(4 - jnp.floor(4 * level)), _solarize_lut(256 - jnp.floor(256 * level)),
      _solarize_add_lut(jnp.floor(110 * level), 128), _contrast_lut(image, factor), _brightness_lut(factor))])
  matrices = jnp.stack([
      _rotation(sign * 30 * level, height, width), _matrix(1, sign * 0.3 * level, 0, 0, 1, 0),
      _matrix(1, 0, 0, sign * 0.3 * level, 1, 0), _matrix(1, 0, sign * 0.45 * level * width, 0, 1, 0),
      _matrix(1, 0, 0, 0, 1, sign * 0.45 * level * height)])
  kind, slot = jnp.asarray(_OP_KIND)[index], jnp.asarray(_OP_SLOT)[index]
  blend_slot = jnp.minimum(slot, len(_BLEND_OPS) - 1)
  by_lut = apply_lut(image, luts[jnp.minimum(slot, len(_LUT_OPS) - 1)])
  by_blend = _blend(jnp.where(blend_slot == 0, _luma(image), _smooth(image)), image, factor)
  by_affine = affine(image, matrices[jnp.minimum(slot, len(_AFFINE_OPS) - 1)], fill)
  return jnp.select([kind == 0, kind == 1], [by_lut, by_blend], by_affine)


def rand_augment_draws(key, *, num_layers, magnitude, magnitude_std):
  """The random choices of RandAugment for one image, all from `key`.

  Returns:
    (index int32, applied bool, m float32, sign float32), each (num_layers,): op `index` of OP_NAMES, applied or
    not (probability 0.5 each, as timm's ops), at magnitude m ~ N(magnitude, magnitude_std²) clipped to [0, 10],
    with `sign` ±1 (a fair coin) for the ops that go either way.
  """
  op_key, apply_key, magnitude_key, sign_key = jax.random.split(key, 4)
  index = jax.random.randint(op_key, (num_layers,), 0, NUM_OPS)
  applied = jax.random.bernoulli(apply_key, 0.5, (num_layers,))
  m = jnp.clip(magnitude + magnitude_std * jax.random.normal(magnitude_key, (num_layers,)), 0, _LEVEL_MAX)
  sign = jnp.where(jax.random.bernoulli(sign_key, 0.5, (num_layers,)), 1.0, -1.0)
  return index, applied, m, sign


def rand_augment(key, image, *, num_layers, magnitude, magnitude_std, fill) -> jax.Array:
  """timm's RandAugment: (H, W, 3) pixels in [0, 255] (uint8 or float) -> float32 integer-valued pixels.

  Args:
    key: every draw of this image comes from it (`rand_augment_draws`).
    image: (H, W, 3) RGB, rounded to integers first (timm's ops see PIL uint8 images).
    num_layers: ops per image (timm's n, 2), >= 1.
    magnitude, magnitude_std: each op's m ~ N(magnitude, magnitude_std²), clipped to [0, 10] (timm's m9, mstd0.5).
    fill: (3,) fill colour of the geometric ops, in [0, 255] (the dataset's mean colour).
  """
  image = jnp.clip(jnp.round(jnp.asarray(image, jnp.float32)), 0, 255)
  index, applied, m, sign = rand_augment_draws(key, num_layers=num_layers, magnitude=magnitude,
                                               magnitude_std=magnitude_std)
  for i in range(num_layers):
    image = jnp.where(applied[i], apply_op(image, index[i], m[i], sign[i], fill), image)
  return image


# Random erasing, in normalised units.


def erasing_box(key, height, width, *, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), attempts=10):
  """timm's (and torchvision's) RandomErasing rectangle in an (height, width) image.

  Up to `attempts` draws of an area U(scale) · height · width and an aspect ratio h / w log-uniform in `ratio`;
  the first whose h = round(√(area · aspect)) < height and w = round(√(area / aspect)) < width is placed at a
  uniformly random top-left corner.

  Returns:
    (found bool, top, left, h, w int32), scalars; `found` False when no draw fits.
  """
  area_key, aspect_key, top_key, left_key = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(area_key, (attempts,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(aspect_key, (attempts,), minval=math.log(ratio[0]),
                                      maxval=math.log(ratio[1])))
  h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)  # half to even, as Python's round
  w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (h < height) & (w < width)
  first = jnp.argmax(fits)
  h, w = h[first], w[first]
  top = jax.random.randint(top_key, (), 0, height - h + 1)
  left = jax.random.randint(left_key, (), 0, width - w + 1)
  return jnp.any(fits), top, left, h, w


def random_erasing(key, image, prob, **box_kwargs) -> jax.Array:
  """timm's RandomErasing(prob, mode='pixel'): (H, W, C) float32 normalised -> the same, one rectangle
  (`erasing_box`, with `box_kwargs`) replaced with probability `prob` by per-pixel N(0, 1) noise."""
  coin_key, box_key, noise_key = jax.random.split(key, 3)
  height, width = image.shape[:2]
  found, top, left, h, w = erasing_box(box_key, height, width, **box_kwargs)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  erase = found & jax.random.bernoulli(coin_key, prob)
  # Noise for the whole image: shapes are static under jit, and only the rectangle keeps it.
  noise = jax.random.normal(noise_key, image.shape, image.dtype)
  return jnp.where((erase & inside)[..., None], noise, image)
