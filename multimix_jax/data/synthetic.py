"""Datasets generated here, prepared as the real ones are: the benchmark's input sources and the tests' data.

`prepare_catalog` writes a dataset of TFDS's catalog (or one of the project's builders) into a data_dir as
ArrayRecord with that builder's own metadata (version, features, class names) and generated examples, so that the
input pipeline reads it exactly as it reads the real one; `write_folder` writes a folder of images in class
sub-folders. No network, no TensorFlow.
"""

import io
import os
from typing import Callable

import numpy as np


def random_image(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
  """uint8 (height, width, channels): smooth colour blobs plus noise, so that it compresses as a photograph does."""
  coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, channels))
  ys, xs = np.linspace(0, coarse.shape[0] - 1, height), np.linspace(0, coarse.shape[1] - 1, width)
  image = coarse[np.round(ys).astype(int)][:, np.round(xs).astype(int)]
  return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, kind: str) -> bytes:
  """uint8 (H, W, C) -> PNG or JPEG ('jpeg': quality 90) bytes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
      buffer, 'JPEG' if kind == 'jpeg' else 'PNG', **({'quality': 90} if kind == 'jpeg' else {}))
  return buffer.getvalue()


def random_encoded(rng, shape: tuple, kind: str, sizes=(48, 96)) -> bytes:
  """An encoded random image of `shape` (H, W, C), H and W drawn from `sizes` (smallest, largest) where None."""
  height, width, channels = shape
  if height is None or width is None:
    height, width = (int(rng.integers(sizes[0], sizes[1] + 1)) for _ in range(2))
  return encode(random_image(rng, height, width, channels or 3), kind)


def prepare_catalog(name: str, data_dir, splits: dict[str, int], *,
                    images: Callable[[np.random.Generator, tuple, str], bytes] = random_encoded) -> str:
  """Prepares `name` in `data_dir` as ArrayRecord with its builder's metadata and `splits` ({split: count}) of
  generated examples: `images(rng, shape, kind)` gives each encoded image (its feature's (H, W, C), None where the
  size varies, and 'png' or 'jpeg'); labels cycle through the classes. Returns data_dir."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import multimix_jax.data.tiny_imagenet  # pylint: disable=g-import-not-at-top,unused-import  # registers it

  def generate(self, split, count):
    rng = np.random.default_rng(list(splits).index(split))
    for i in range(count):
      example = {}
      for key, feature in self.info.features.items():
        if isinstance(feature, tfds.features.Image):
          example[key] = images(rng, feature.shape, feature.encoding_format or 'png')
        elif isinstance(feature, tfds.features.ClassLabel):
          example[key] = i % feature.num_classes
        else:
          example[key] = f'{split}_{i}'
      yield i, example

  fake = type(f'Generated_{name}', (tfds.builder_cls(name),), {
      '_split_generators': lambda self, dl_manager: {s: self._generate_examples(s, n) for s, n in splits.items()},
      '_generate_examples': generate}, skip_registration=True)
  fake.name = name
  builder = fake(data_dir=str(data_dir), file_format='array_record')
  builder.download_and_prepare()
  return str(data_dir)


def write_folder(root, *, classes=('cat', 'dog', 'fox'), per_class=(20, 5), size=(32, 32), vary=0, kind='png',
                 eval_folder='val', seed=0, images: list[bytes] | None = None) -> str:
  """<root>/train/<class>/* and <root>/<eval_folder>/<class>/*: `per_class` (train, eval) images of each class, of
  `size` (H, W) ± `vary` pixels a side, or taken in turn from `images` (encoded) where given. Returns root."""
  rng = np.random.default_rng(seed)
  written = 0
  for split, count in zip(('train', eval_folder), per_class):
    for name in classes:
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for i in range(count):
        if images:
          encoded = images[written % len(images)]
        else:
          height, width = (s + int(rng.integers(-vary, vary + 1)) for s in size)
          encoded = encode(random_image(rng, height, width), kind)
        written += 1
        extension = 'png' if encoded.startswith(b'\x89PNG') else 'jpg'
        with open(os.path.join(root, split, name, f'{name}_{i:05d}.{extension}'), 'wb') as f:
          f.write(encoded)
  return str(root)
