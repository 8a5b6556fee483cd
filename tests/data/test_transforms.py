"""Host-side image operations against torchvision's own code (conftest's `torchvision_transforms`)."""

import io
import types

import cv2
import numpy as np
from PIL import Image
from PIL import features
import pytest
import simplejpeg
from scipy import stats

from multimix_jax.data import transforms


@pytest.fixture(name='tv')
def tv_fixture(torchvision_transforms, torch):
  """torchvision's transforms (T) and v2 functional (F), with torch (RandomResizedCrop.get_params draws from it)."""
  return types.SimpleNamespace(T=torchvision_transforms.T, F=torchvision_transforms.F, torch=torch)


def _photo_jpeg(height, width, *, seed=0, noise=4.0, quality=90):
  """A JPEG with what photographs have: smooth shading, sharp-edged shapes and mild sensor noise."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (height // 64 + 1, width // 64 + 1, 3)).astype(np.float32)
  image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
  for _ in range(20):
    centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    cv2.circle(image, centre, int(rng.integers(20, 200)), rng.uniform(0, 255, 3).tolist(), -1)
  image += rng.normal(0, noise, image.shape)
  return simplejpeg.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=quality, colorsubsampling='420')


def _encode_with_pil(pixels, fmt, mode=None, **kwargs):
  buffer = io.BytesIO()
  image = Image.fromarray(pixels)
  (image.convert(mode) if mode else image).save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def _abs_diff(a, b):
  assert a.shape == b.shape, (a.shape, b.shape)
  return np.abs(a.astype(np.int32) - b.astype(np.int32))


# --- random_resized_crop_box: torchvision's RandomResizedCrop.get_params --------------------------------------------

class _ScriptedRng:
  """numpy-Generator stand-in whose draws come from a list of uniforms in [0, 1)."""

  def __init__(self, uniforms):
    self._uniforms = iter(uniforms)

  def uniform(self, low, high):
    return low + (high - low) * next(self._uniforms)

  def integers(self, low, high):
    return low + int(next(self._uniforms) * (high - low))


def _scripted_torch(monkeypatch, torch, uniforms):
  """torch.empty(1).uniform_(a, b) and torch.randint(low, high, size) drawing the same way from `uniforms`."""
  uniforms = iter(uniforms)

  class _Empty:
    def uniform_(self, low, high):
      return torch.tensor(float(low) + (float(high) - float(low)) * next(uniforms), dtype=torch.float64)

  monkeypatch.setattr(torch, 'empty', lambda *size: _Empty())
  monkeypatch.setattr(torch, 'randint',
                      lambda low, high, size: torch.tensor([low + int(next(uniforms) * (high - low))]))


@pytest.mark.parametrize('height, width', [(350, 400), (64, 48), (480, 64), (100, 1000), (7, 5)])
def test_random_resized_crop_box_is_torchvision_get_params_draw_for_draw(tv, monkeypatch, height, width):
  """Fed the same uniforms, ours and torchvision's make the same attempts, roundings and fallback: equal boxes."""
  image = tv.torch.zeros(1, height, width)
  scripts = np.random.default_rng(height * width).random((300, 22))  # 10 attempts of 2 draws, then top and left
  for uniforms in scripts:
    ours = transforms.random_resized_crop_box(_ScriptedRng(uniforms), height, width)
    with monkeypatch.context() as patch:
      _scripted_torch(patch, tv.torch, uniforms)
      theirs = tv.T.RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
    assert ours == tuple(theirs)


@pytest.mark.parametrize('height, width', [(350, 400), (480, 64), (100, 1000)])
def test_random_resized_crop_box_distribution_matches_torchvision(tv, height, width):
  """Area fraction, aspect ratio and position: two-sample KS tests of 4000 draws each (fixed seeds); the shapes
  with extreme aspect ratios hit the fallback often."""
  n = 4000
  rng = np.random.default_rng(0)
  ours = np.array([transforms.random_resized_crop_box(rng, height, width) for _ in range(n)])
  tv.torch.manual_seed(0)
  image = tv.torch.zeros(1, height, width)
  theirs = np.array([tv.T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
  for name, statistic in [('area fraction', lambda b: b[:, 2] * b[:, 3] / (height * width)),
                          ('log aspect ratio', lambda b: np.log(b[:, 3] / b[:, 2])),
                          ('top', lambda b: b[:, 0]), ('left', lambda b: b[:, 1])]:
    p = stats.ks_2samp(statistic(ours), statistic(theirs)).pvalue
    assert p > 1e-3, (name, p)
  assert ((ours[:, 0] + ours[:, 2] <= height) & (ours[:, 1] + ours[:, 3] <= width)).all()


@pytest.mark.parametrize('height, width, box', [(11, 1000, (0, 492, 11, 15)), (1000, 11, (492, 0, 15, 11)),
                                                (40, 2000, (0, 973, 40, 53))])
def test_random_resized_crop_box_fallback_is_torchvisions(tv, height, width, box):
  """No attempt fits such elongated images: always torchvision's central crop with the ratio clamped."""
  rng = np.random.default_rng(0)
  image = tv.torch.zeros(1, height, width)
  for seed in range(20):
    tv.torch.manual_seed(seed)
    assert tuple(tv.T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])) == box
    assert transforms.random_resized_crop_box(rng, height, width) == box


# --- crops and resizing against torchvision on PIL images -----------------------------------------------------------

@pytest.mark.parametrize('method', transforms.RESIZE_METHODS)
def test_random_resized_crop_matches_torchvision_resized_crop(tv, method):
  """Same box (same seed) -> torchvision's F.resized_crop on the PIL image (PIL's antialiased resampling).

  Exact wherever PIL resamples (bicubic; bilinear shrinking); bilinear enlarging uses OpenCV, within 1 grey level
  (its 11-bit weights; measured mean <= 0.25)."""
  interpolation = tv.T.InterpolationMode(method)
  checked_enlarging = 0
  for jpeg in transforms.synthetic_jpegs(3, seed=1):
    image = transforms.decode(jpeg)
    for seed in range(12):
      top, left, h, w = transforms.random_resized_crop_box(np.random.default_rng(seed), *image.shape[:2])
      theirs = np.asarray(tv.F.resized_crop(Image.fromarray(image), top, left, h, w, [224, 224], interpolation,
                                            antialias=True))
      for ours in (transforms.random_resized_crop(image, np.random.default_rng(seed), 224, method),
                   transforms.decode_random_resized_crop(jpeg, np.random.default_rng(seed), 224, method)):
        diff = _abs_diff(ours, theirs)
        enlarging = method == 'bilinear' and h <= 224 and w <= 224
        checked_enlarging += enlarging
        assert diff.max() <= (1 if enlarging else 0), (method, (top, left, h, w), diff.max())
        assert diff.mean() < 0.5
  assert method == 'bicubic' or checked_enlarging


@pytest.mark.parametrize('height, width, size, method', [
    (333, 501, 224, 'bilinear'), (501, 333, 224, 'bilinear'), (256, 256, 224, 'bilinear'),
    (375, 500, 224, 'bicubic'), (100, 120, 224, 'bilinear'), (300, 411, 160, 'bicubic')])
def test_center_crop_matches_torchvision_resize_center_crop(tv, height, width, size, method):
  """decode_center_crop and center_crop = T.Compose([T.Resize(round(size / (224/256))), T.CenterCrop(size)]) on
  the PIL image of the decoded JPEG: the same region (torchvision's truncated long side and rounded offsets) and
  the same pixels; enlarging bilinearly (OpenCV) within 1 grey level."""
  interpolation = tv.T.InterpolationMode(method)
  jpeg = _photo_jpeg(height, width, seed=height)
  image = transforms.decode(jpeg)
  resized = round(size * 256 / 224)
  reference = tv.T.Compose([tv.T.Resize(resized, interpolation), tv.T.CenterCrop(size)])
  theirs = np.asarray(reference(Image.fromarray(image)))
  tolerance = 1 if method == 'bilinear' and min(height, width) < resized else 0
  for ours in (transforms.decode_center_crop(jpeg, size, method), transforms.center_crop(image, size, method)):
    diff = _abs_diff(ours, theirs)
    assert diff.max() <= tolerance and diff.mean() < 0.5, (diff.max(), diff.mean())


def test_resize_is_pils():
  """Shrinking: PIL's antialiased resize (torchvision's on PIL images) exactly; enlarging bilinearly (OpenCV):
  within 1 grey level."""
  filters = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}
  image = transforms.decode(transforms.synthetic_jpegs(1, seed=2)[0])
  for method in transforms.RESIZE_METHODS:
    for height, width, tolerance in [(100, 150, 0), (123, 600, 0), (500, 640, 1 if method == 'bilinear' else 0)]:
      theirs = np.asarray(Image.fromarray(image).resize((width, height), filters[method]))
      assert _abs_diff(transforms.resize(image, height, width, method), theirs).max() <= tolerance
  grey = image[..., :1]
  assert transforms.resize(grey, 50, 60, 'bicubic').shape == (50, 60, 1)
  assert transforms.resize(grey, 500, 600, 'bilinear').shape == (500, 600, 1)
  with pytest.raises(ValueError, match='unknown'):
    transforms.resize(image, 10, 10, 'nearest')


# --- the DCT-scaled decode of big JPEGs -----------------------------------------------------------------------------

def test_dct_scaled_decode_is_close_to_full_decode():
  """Big JPEGs decoded at 1/2, 1/4 or 1/8 scale: close to a full decode + PIL's antialiased resize of the same box;
  identical where the crop is under twice the output size (no scaling).

  On photograph-like content the mean difference is under 1 grey level (measured 0.33-0.59, 99th percentile <= 4):
  the largest ones sit at sharp edges, which the DCT's low-pass keeps sharper than PIL's triangle filter (a few
  pixels reach 30). On noise-dominated images (synthetic_jpegs) the mean is 1-3 levels: there is most to filter."""
  jpeg = _photo_jpeg(1200, 1600)
  image = transforms.decode(jpeg)
  scaled = 0
  for seed in range(10):
    top, left, h, w = transforms.random_resized_crop_box(np.random.default_rng(seed), *image.shape[:2])
    ours = transforms.decode_random_resized_crop(jpeg, np.random.default_rng(seed), 224)
    full = transforms.random_resized_crop(image, np.random.default_rng(seed), 224)
    diff = _abs_diff(ours, full)
    if min(h, w) < 2 * 224:
      assert diff.max() == 0
    else:
      scaled += 1
      assert 0 < diff.mean() < 1.0 and np.percentile(diff, 99) <= 6, (diff.mean(), np.percentile(diff, 99))
  assert scaled >= 3
  diff = _abs_diff(transforms.decode_center_crop(jpeg, 224), transforms.center_crop(image, 224))
  assert 0 < diff.mean() < 1.0 and np.percentile(diff, 99) <= 6, (diff.mean(), np.percentile(diff, 99))


# --- pad_crop_flip and flip_left_right ------------------------------------------------------------------------------

def test_pad_crop_flip_is_torchvision_random_crop_and_flip(tv):
  """Every output is torchvision's F.crop(F.pad(image, p), dy, dx, H, W), flipped or not, for some (dy, dx); the
  offsets are uniform over [0, 2p]^2 (chi-square) and about half are flipped."""
  padding, n = 4, 8100
  base = np.random.default_rng(0).integers(1, 256, (32, 32, 3), dtype=np.uint8)
  padded = tv.F.pad(Image.fromarray(base), [padding])  # zeros, as RandomCrop's default fill
  candidates = {}
  for dy in range(2 * padding + 1):
    for dx in range(2 * padding + 1):
      crop = tv.F.crop(padded, dy, dx, 32, 32)
      candidates[np.asarray(crop).tobytes()] = (dy, dx, False)
      candidates[np.asarray(tv.F.horizontal_flip(crop)).tobytes()] = (dy, dx, True)
  assert len(candidates) == 2 * (2 * padding + 1) ** 2
  out = transforms.pad_crop_flip(np.broadcast_to(base, (n, 32, 32, 3)), np.random.default_rng(1), padding)
  assert out.shape == (n, 32, 32, 3) and out.dtype == np.uint8
  found = np.array([candidates[example.tobytes()] for example in out])  # KeyError: not a torchvision output
  counts = np.zeros((2 * padding + 1,) * 2)
  np.add.at(counts, (found[:, 0], found[:, 1]), 1)
  assert stats.chisquare(counts.ravel()).pvalue > 1e-3
  assert abs(found[:, 2].sum() - n / 2) < 4 * np.sqrt(n / 4)
  no_flip = transforms.pad_crop_flip(np.broadcast_to(base, (500, 32, 32, 3)), np.random.default_rng(1), padding,
                                     flip=False)
  assert not any(candidates[example.tobytes()][2] for example in no_flip)


def test_flip_left_right():
  images = np.random.default_rng(0).integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
  flags = np.array([True, False, True, True, False, False])
  out = transforms.flip_left_right(images, flags)
  np.testing.assert_array_equal(out[flags], images[flags, :, ::-1])
  np.testing.assert_array_equal(out[~flags], images[~flags])
  np.testing.assert_array_equal(transforms.flip_left_right(images, np.zeros(6, bool)), images)
  grey = images[..., :1]
  np.testing.assert_array_equal(transforms.flip_left_right(grey, flags)[flags], grey[flags, :, ::-1])


# --- decoding -------------------------------------------------------------------------------------------------------

def test_decode_formats():
  """JPEG as PIL decodes it; lossless formats give back their pixels; greyscale, palette and alpha images become
  RGB as PIL's convert('RGB') makes them; channels=1 gives luma."""
  rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
  jpeg = simplejpeg.encode_jpeg(rgb, quality=90, colorsubsampling='420')
  np.testing.assert_array_equal(transforms.decode(jpeg), np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB')))
  luma = Image.open(io.BytesIO(jpeg))
  luma.draft('L', luma.size)  # libjpeg's greyscale output: the JPEG's Y channel
  np.testing.assert_array_equal(transforms.decode(jpeg, channels=1)[..., 0], np.asarray(luma))
  rgba = np.concatenate([rgb, rgb[..., :1]], -1)
  grey = rgb[..., 0]
  cases = [(_encode_with_pil(rgb, 'PNG'), rgb), (_encode_with_pil(grey, 'PNG'), np.stack([grey] * 3, -1)),
           (_encode_with_pil(rgba, 'PNG'), rgb), (_encode_with_pil(rgb, 'BMP'), rgb),
           (_encode_with_pil(rgb, 'TIFF'), rgb)]
  if features.check('webp'):
    cases.append((_encode_with_pil(rgb, 'WEBP', lossless=True), rgb))
  for encoded in (_encode_with_pil(rgb, 'PNG', mode='P'), _encode_with_pil(rgb, 'GIF')):  # palette images
    cases.append((encoded, np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB'))))
  for encoded, expected in cases:
    np.testing.assert_array_equal(transforms.decode(encoded), expected)
    assert transforms.encoded_size(encoded) == (37, 53)
    luma = transforms.decode(encoded, channels=1)
    assert luma.shape == (37, 53, 1) and luma.dtype == np.uint8
    reference = np.asarray(Image.open(io.BytesIO(encoded)).convert('L'))
    assert _abs_diff(luma[..., 0], reference).max() <= 1
  assert transforms.encoded_size(jpeg) == (37, 53)


def test_decode_cmyk_jpeg():
  rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  cmyk = _encode_with_pil(rgb, 'JPEG', mode='CMYK')
  assert _abs_diff(transforms.decode(cmyk), np.asarray(Image.open(io.BytesIO(cmyk)).convert('RGB'))).max() <= 1
  assert transforms.decode_random_resized_crop(cmyk, np.random.default_rng(0), 16).shape == (16, 16, 3)


@pytest.mark.parametrize('encoded', [b'', b'not an image at all', b'\xff\xd8\xff\xe0 truncated JPEG',
                                     b'\x89PNG\r\n\x1a\n broken PNG'])
def test_unreadable_bytes_raise_value_error(encoded):
  with pytest.raises(ValueError, match='not a readable image'):
    transforms.decode(encoded)
  with pytest.raises(ValueError, match='not a readable image'):
    transforms.encoded_size(encoded)


def test_truncated_jpeg_raises_value_error():
  jpeg = transforms.synthetic_jpegs(1)[0]
  with pytest.raises(ValueError, match='not a readable image'):
    transforms.decode(jpeg[:len(jpeg) // 2])


def test_channels_other_than_1_or_3_are_refused():
  with pytest.raises(ValueError, match='channels'):
    transforms.decode(transforms.synthetic_jpegs(1)[0], channels=4)


# --- determinism and the synthetic images ---------------------------------------------------------------------------

def test_same_seed_same_output():
  jpeg = transforms.synthetic_jpegs(1, seed=5)[0]
  images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  for f in (lambda rng: transforms.decode_random_resized_crop(jpeg, rng, 64),
            lambda rng: transforms.random_resized_crop(transforms.decode(jpeg), rng, 64, 'bicubic'),
            lambda rng: transforms.pad_crop_flip(images, rng, 4)):
    np.testing.assert_array_equal(f(np.random.default_rng(3)), f(np.random.default_rng(3)))
    assert (f(np.random.default_rng(3)) != f(np.random.default_rng(4))).any()


def test_synthetic_jpegs():
  jpegs = transforms.synthetic_jpegs(8, seed=0)
  assert jpegs == transforms.synthetic_jpegs(8, seed=0)
  sizes = np.array([transforms.encoded_size(j) for j in jpegs])
  assert ((sizes >= np.multiply((350, 400), 0.75) - 1) & (sizes <= np.multiply((350, 400), 1.25))).all()
  assert 60e3 < np.mean([len(j) for j in jpegs]) < 130e3  # photograph-like compression at quality 90
