"""Host-side image operations of the TensorFlow-free input pipeline: decode, crop, resize, flip (uint8 in and out).

The geometry is torchvision's, which the authors' PyTorch code uses: `RandomResizedCrop(size)` (its `get_params`,
drawn from a numpy Generator), `Resize(256)` + `CenterCrop(224)` for evaluation, `RandomCrop(32, padding=4)` and
`RandomHorizontalFlip` for CIFAR. The resampling is PIL's, as torchvision's on PIL images: antialiased when
shrinking, plain bilinear or bicubic when enlarging, clipped to uint8. Normalisation and photometric augmentation
are left to the device.

Every function here is meant to run in several host threads at once: simplejpeg, OpenCV and PIL's resampling
release the GIL. Each call is therefore single-threaded: this module sets `cv2.setNumThreads(1)` for the process
when it is imported (OpenCV's pool is process-wide; a pool per call would oversubscribe the cores the pipeline's
threads already fill).
"""

import io
import math

import cv2
import numpy as np
from PIL import Image
import simplejpeg

from multimix_jax.data.catalog import RESIZE_METHODS  # config.augment.resize: the names of _PIL_FILTERS

cv2.setNumThreads(1)

EVAL_CROP_FRACTION = 224 / 256  # evaluation: resize the shorter side to size / this, center crop size
_PIL_FILTERS = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}
_JPEG_MAGIC = b'\xff\xd8'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# libjpeg-turbo's DCT scaling factors worth taking: its 1/2 and 1/4 inverse DCTs have SIMD code and 1/8 keeps the
# DC term alone; the other n/8 scales are plain C and slower than a full decode (7/8 of a 1600x1200 JPEG: 17 ms;
# in full: 11 ms).
_DCT_FACTORS = (8, 4, 2)


def decode(encoded: bytes, channels: int = 3) -> np.ndarray:
  """Encoded image -> uint8 (H, W, channels) pixels: RGB (channels=3) or luma (channels=1).

  JPEG by simplejpeg (libjpeg-turbo's accurate DCT and smooth chroma upsampling: the pixels PIL decodes; CMYK
  within 1 grey level of PIL's conversion), PNG by OpenCV, anything else PIL reads (GIF, BMP, WebP, TIFF) by PIL,
  as are JPEGs simplejpeg refuses (damaged ones libjpeg-turbo only reads with warnings). Greyscale, palette and
  alpha images are converted as PIL's `convert('RGB')` does (alpha dropped); EXIF orientation is ignored, as
  torchvision's loader ignores it. The luma of a colour JPEG is the Y it stores (PIL's `draft('L')`), which
  differs from converting its RGB pixels where the YCbCr -> RGB conversion clips; other formats' luma is PIL's
  `convert('L')` (OpenCV's for PNG, within 1).

  Raises:
    ValueError: 'not a readable image: ...' for bytes no decoder reads.
  """
  _check_channels(channels)
  if encoded[:2] == _JPEG_MAGIC:
    try:
      return simplejpeg.decode_jpeg(encoded, colorspace='RGB' if channels == 3 else 'GRAY')
    except ValueError:
      pass  # PIL's decoder is more lenient
  elif encoded[:8] == _PNG_MAGIC:
    flags = (cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), flags)
    if image is not None:  # BGR: IMREAD_COLOR_RGB needs OpenCV >= 4.10
      return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if channels == 3 else image[..., None]
  return _decode_with_pil(encoded, channels)


def encoded_size(encoded: bytes) -> tuple[int, int]:
  """(H, W) of an encoded image, read from its header without decoding the pixels.

  Raises:
    ValueError: 'not a readable image: ...' for bytes no decoder reads.
  """
  if encoded[:2] == _JPEG_MAGIC:
    try:
      height, width, _, _ = simplejpeg.decode_jpeg_header(encoded)
      return height, width
    except ValueError:
      pass
  try:
    with Image.open(io.BytesIO(encoded)) as image:  # lazy: reads the header only
      width, height = image.size
      return height, width
  except Exception as error:  # PIL's format plugins raise many types on bad data
    raise ValueError(f'not a readable image: {_describe(encoded)} ({error})') from error


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(top, left, h, w) of an Inception-style crop: torchvision's `RandomResizedCrop.get_params`, drawn from `rng`.

  Up to 10 attempts, each drawing an area fraction uniform in `scale` and an aspect ratio w/h log-uniform in
  `ratio`; the first crop that fits is placed uniformly. If none fits, the central crop of the whole image, its
  aspect ratio clamped to `ratio`. Sizes are rounded as torchvision rounds them (Python's `round`).
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    w, h = int(round(height * max(ratio))), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def decode_random_resized_crop(encoded: bytes, rng: np.random.Generator, size: int, resize: str = 'bilinear',
                               channels: int = 3) -> np.ndarray:
  """Encoded image -> uint8 (size, size, channels): `random_resized_crop` without decoding what it does not need.

  The box is `random_resized_crop_box` on the size in the header. A JPEG is decoded at the smallest of
  libjpeg-turbo's DCT scales 1/2, 1/4, 1/8 at which the crop still spans >= `size` pixels both ways (else in
  full), as fast JPEG pipelines load big images (PIL's `Image.draft` offers the same scaling): the scaling happens
  in the inverse DCT, so the full-resolution pixels are never made, and the resize that follows is small. The
  result differs slightly from a full decode + antialiased resize of the same box: the DCT's low-pass replaces
  most of PIL's filter (mean absolute difference under 1 grey level on photograph-like content; sharp edges stay
  sharper, by up to tens of levels at a few pixels). Whenever no scaling applies (crops under 2 * size, so most of
  ImageNet's at size 224) it equals `random_resized_crop(decode(encoded), rng, size, resize)` exactly. The scales
  7/8 .. 3/8 are skipped: libjpeg-turbo decodes them slower than the full image.
  """
  height, width = encoded_size(encoded)
  top, left, h, w = random_resized_crop_box(rng, height, width)
  region = (top, left, top + h, left + w)
  image, factor = _decode_scaled(encoded, height, width, _dct_factor(encoded, h, w, size), channels)
  return _resized_crop(image, tuple(v / factor for v in region), size, resize)


def decode_center_crop(encoded: bytes, size: int, resize: str = 'bilinear', crop_fraction: float = EVAL_CROP_FRACTION,
                       channels: int = 3) -> np.ndarray:
  """Encoded image -> uint8 (size, size, channels): evaluation's torchvision `Resize(round(size / crop_fraction))`
  then `CenterCrop(size)` (`Resize(256)` + `CenterCrop(224)` at size 224).

  This is `center_crop(decode(encoded), size, resize, crop_fraction)`, except for JPEGs of at least twice the
  resolution needed: those are decoded at a DCT scale as in `decode_random_resized_crop`, and only the crop's
  pixels are resampled (PIL's resize of a box), which differs slightly from the full-resolution result.
  """
  height, width = encoded_size(encoded)
  new_height, new_width, top, left = _center_crop_geometry(height, width, size, crop_fraction)
  factor = _dct_factor(encoded, size * height / new_height, size * width / new_width, size)
  image, factor = _decode_scaled(encoded, height, width, factor, channels)
  if factor == 1:
    return center_crop(image, size, resize, crop_fraction)
  y, x = height / new_height / factor, width / new_width / factor
  return _pil_resize(image, (left * x, top * y, (left + size) * x, (top + size) * y), size, size, resize)


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        resize: str = 'bilinear') -> np.ndarray:
  """uint8 (H, W, C) -> (size, size, C): torchvision's `RandomResizedCrop(size)` with `random_resized_crop_box`.

  The crop is taken first and then resized, as torchvision does, so no pixel outside it contributes.
  """
  top, left, h, w = random_resized_crop_box(rng, *image.shape[:2])
  return _resized_crop(image, (top, left, top + h, left + w), size, resize)


def center_crop(image: np.ndarray, size: int, resize: str = 'bilinear', crop_fraction: float = EVAL_CROP_FRACTION
                ) -> np.ndarray:
  """uint8 (H, W, C) -> (size, size, C): torchvision's `Resize(round(size / crop_fraction))` + `CenterCrop(size)`.

  The whole image is resized, then cropped, as torchvision does: resampling only the crop (PIL's resize of a
  box) would be faster but PIL takes the box in float32, which moves the filter taps enough to change a fifth
  of the pixels by 1.
  """
  new_height, new_width, top, left = _center_crop_geometry(*image.shape[:2], size, crop_fraction)
  return np.ascontiguousarray(_resize(image, new_height, new_width, resize)[top:top + size, left:left + size])


def resize(image: np.ndarray, height: int, width: int, method: str) -> np.ndarray:
  """uint8 (h, w, C) -> uint8 (height, width, C), as PIL resizes (so as torchvision resizes PIL images).

  Antialiased when shrinking (PIL's filter widened by the scale), plain bilinear or bicubic when enlarging,
  clipped to [0, 255]. Enlarging bilinearly uses OpenCV, whose INTER_LINEAR is PIL's (same pixel centres and edge
  handling) to within 1 grey level (its 11-bit weights) and several times faster.
  """
  h, w, channels = image.shape
  if method == 'bilinear' and height >= h and width >= w:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, channels)
  return _pil_resize(image, (0, 0, w, h), height, width, method)


_resize = resize  # for the functions whose `resize` parameter (the method) hides this function


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator, padding: int, flip: bool = True) -> np.ndarray:
  """uint8 (b, H, W, C) -> (b, H, W, C): torchvision's `RandomCrop(H, padding)` + `RandomHorizontalFlip()` per
  example, vectorised over the batch.

  Each example is zero-padded by `padding` on every side and cropped back to H x W at the offset (dy, dx), both
  uniform in [0, 2 * padding]; then, if `flip`, flipped left-right with probability 0.5. Draws, in this order:
  `rng.integers(0, 2 * padding + 1, (b, 2))` for the offsets, then `rng.random(b) < 0.5` for the flips.
  """
  b, height, width, channels = images.shape
  offsets = rng.integers(0, 2 * padding + 1, (b, 2))
  padded = np.zeros((b, height + 2 * padding, width + 2 * padding, channels), images.dtype)
  padded[:, padding:padding + height, padding:padding + width] = images
  # Every H x W window of every padded example as a view (b, dy, dx, H, W, C); one fancy index copies the b chosen.
  s = padded.strides
  windows = np.lib.stride_tricks.as_strided(
      padded, (b, 2 * padding + 1, 2 * padding + 1, height, width, channels), (s[0], s[1], s[2], *s[1:]),
      writeable=False)
  crops = windows[np.arange(b), offsets[:, 0], offsets[:, 1]]
  return flip_left_right(crops, rng.random(b) < 0.5) if flip else crops


def flip_left_right(images: np.ndarray, flags: np.ndarray) -> np.ndarray:
  """(b, H, W, C) -> (b, H, W, C), example i mirrored left-right where flags[i] (bool (b,)) is True."""
  out = images.copy()
  if flags.any():
    chosen = images[flags]
    b, height, width, channels = chosen.shape
    # The chosen examples as one tall image, each of its rows mirrored: OpenCV's vectorised flip is 6x numpy's
    # reversed-stride copy of 3-byte pixels.
    out[flags] = cv2.flip(chosen.reshape(b * height, width, channels), 1).reshape(chosen.shape)
  return out


def synthetic_jpegs(count: int, *, seed: int = 0, quality: int = 90, mean_size=(350, 400)) -> list[bytes]:
  """`count` JPEGs of ImageNet's size distribution: each side uniform within ±25% of `mean_size` (H, W).

  Smooth content (random colours every 16 pixels, bicubic-interpolated) plus fine Gaussian noise (sd 25), so that
  they compress as photographs do (about 85 kB at quality 90 and the default size), not as flat colour; encoded
  with 4:2:0 chroma subsampling, as most photographs (and TensorFlow's encoder) are.
  """
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    height, width = (int(s * rng.uniform(0.75, 1.25)) for s in mean_size)
    coarse = rng.uniform(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 25, image.shape)
    out.append(simplejpeg.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=quality,
                                      colorspace='RGB', colorsubsampling='420'))
  return out


def _check_channels(channels):
  if channels not in (1, 3):
    raise ValueError(f'channels={channels} must be 1 (luma) or 3 (RGB).')


def _describe(encoded):
  return f'{len(encoded)} bytes starting {bytes(encoded[:8])!r}'


def _decode_with_pil(encoded, channels):
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      pixels = np.array(image.convert('RGB' if channels == 3 else 'L'))
  except Exception as error:  # PIL's format plugins raise many types on bad data
    raise ValueError(f'not a readable image: {_describe(encoded)} ({error})') from error
  return pixels.reshape(*pixels.shape[:2], channels)


def _dct_factor(encoded, region_height, region_width, size):
  """The largest of _DCT_FACTORS that leaves the region >= size pixels both ways, for a JPEG; else 1."""
  if encoded[:2] != _JPEG_MAGIC:
    return 1
  return next((f for f in _DCT_FACTORS if min(region_height, region_width) >= size * f), 1)


def _decode_scaled(encoded, height, width, factor, channels):
  """(pixels (ceil(H / factor), ceil(W / factor), channels), factor): a JPEG decoded at 1/factor scale, where
  simplejpeg reads it; otherwise `decode` in full and factor 1. Output pixel k covers input pixels
  [k·factor, (k+1)·factor): coordinates scale by exactly 1/factor."""
  if factor > 1:
    try:
      return simplejpeg.decode_jpeg(encoded, colorspace='RGB' if channels == 3 else 'GRAY',
                                    min_height=-(-height // factor), min_width=-(-width // factor),
                                    min_factor=factor), factor
    except ValueError:
      pass  # decode's fallbacks below
  return decode(encoded, channels), 1


def _center_crop_geometry(height, width, size, crop_fraction):
  """(new_height, new_width, top, left): torchvision's Resize(round(size / crop_fraction)) resizes to
  (new_height, new_width), then CenterCrop(size) crops from (top, left)."""
  if not 0 < crop_fraction <= 1:
    raise ValueError(f'crop_fraction={crop_fraction} must be in (0, 1].')
  resized = round(size / crop_fraction)
  # torchvision's _compute_resized_output_size: the shorter side to `resized`, the longer one truncated.
  short, long = (width, height) if width <= height else (height, width)
  new_short, new_long = resized, int(resized * long / short)
  new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
  return new_height, new_width, int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))


def _resized_crop(image, region, size, method):
  """uint8 (H, W, C) -> (size, size, C): the region (top, left, bottom, right), in pixels, cropped then resized
  as torchvision's `resized_crop` does; only the pixels the region touches contribute. A fractional region (of a
  DCT-scaled image) is resampled as PIL's resize of a box."""
  top, left, bottom, right = region
  row, col = math.floor(top), math.floor(left)
  image = image[row:math.ceil(bottom), col:math.ceil(right)]
  top, left, bottom, right = top - row, left - col, bottom - row, right - col
  if (top, left, bottom, right) == (0, 0, *image.shape[:2]):
    return resize(image, size, size, method)
  return _pil_resize(image, (left, top, right, bottom), size, size, method)


def _pil_resize(image, box, height, width, method):
  """uint8 (h, w, C) -> (height, width, C): PIL's resize of the region box = (left, top, right, bottom)."""
  if method not in RESIZE_METHODS:
    raise ValueError(f'resize method {method!r} is unknown; choose from {RESIZE_METHODS}.')
  channels = image.shape[2]
  pil_image = Image.fromarray(image[..., 0] if channels == 1 else image)
  return np.array(pil_image.resize((width, height), _PIL_FILTERS[method], box=box)).reshape(height, width, channels)
