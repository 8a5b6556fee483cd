"""Data made here, for the input pipeline's tests: folders of images in class sub-folders, and TFDS datasets prepared
as ArrayRecord from generated images (no TensorFlow, no network).

`fake_cifar` has CIFAR's shape (32×32 PNGs, 10 classes); `fake_imagenet` ImageNet's kind (JPEGs of varying sizes,
trained through the random-resized crop), small enough for a CPU.
"""

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


def encode(image: np.ndarray, kind: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
      buffer, 'JPEG' if kind == 'jpeg' else 'PNG', **({'quality': 90} if kind == 'jpeg' else {}))
  return buffer.getvalue()


def random_image(rng, height, width, channels=3) -> np.ndarray:
  """Smooth colour blobs plus noise: compresses like a photograph, and no two are alike."""
  coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, channels))
  ys, xs = np.linspace(0, coarse.shape[0] - 1, height), np.linspace(0, coarse.shape[1] - 1, width)
  image = coarse[np.round(ys).astype(int)][:, np.round(xs).astype(int)]
  return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)


def write_folder(root, *, classes=('cat', 'dog', 'fox'), per_class=(20, 5), size=(32, 32), vary=0, kind='png',
                 eval_folder='val', seed=0) -> str:
  """<root>/train/<class>/*.<kind> and <root>/<eval_folder>/<class>/*: `per_class` (train, eval) images of each
  class, of `size` (H, W) ± `vary` pixels per side."""
  rng = np.random.default_rng(seed)
  for split, count in zip(('train', eval_folder), per_class):
    for name in classes:
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for i in range(count):
        height, width = (s + int(rng.integers(-vary, vary + 1)) for s in size)
        path = os.path.join(root, split, name, f'{name}_{i:03d}.{"jpg" if kind == "jpeg" else "png"}')
        with open(path, 'wb') as f:
          f.write(encode(random_image(rng, height, width), kind))
  return str(root)


class _Generated(tfds.core.GeneratorBasedBuilder):
  """Encoded images generated from a seed; subclasses set the shape, the classes and the split sizes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Generated for the tests.'}
  SHAPE = (None, None, 3)
  KIND = 'png'
  NUM_CLASSES = 10
  SPLITS = {'train': 200, 'test': 50}
  SIZES = (32, 32)  # (smallest, largest) side

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=self.SHAPE, encoding_format=self.KIND),
        'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)}), supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, count) for split, count in self.SPLITS.items()}

  def _generate_examples(self, split, count):
    rng = np.random.default_rng(list(self.SPLITS).index(split))
    for i in range(count):
      height, width = (int(rng.integers(self.SIZES[0], self.SIZES[1] + 1)) for _ in range(2))
      yield i, {'image': encode(random_image(rng, height, width), self.KIND), 'label': i % self.NUM_CLASSES}


class FakeCifar(_Generated):
  """CIFAR's shape: 32×32×3 PNGs, 10 classes."""
  SHAPE = (32, 32, 3)


class FakeImagenet(_Generated):
  """ImageNet's kind: JPEGs of 48 to 96 pixels a side, 10 classes."""
  KIND = 'jpeg'
  SIZES = (48, 96)
  SPLITS = {'train': 160, 'validation': 40}


BUILDERS = {'fake_cifar': FakeCifar, 'fake_imagenet': FakeImagenet}


def prepare(name: str, data_dir) -> str:
  """Prepares the generated TFDS dataset `name` as ArrayRecord in `data_dir` (once); returns data_dir."""
  builder = BUILDERS[name](data_dir=str(data_dir), file_format='array_record')
  if not builder.is_prepared():
    builder.download_and_prepare()
  return str(data_dir)


def prepare_catalog(name: str, data_dir, splits: dict[str, int], *, sizes=(48, 96)) -> str:
  """Prepares `name` from TFDS's catalog (or the project's builders) in `data_dir` as ArrayRecord, with that
  builder's own metadata (version, features, class names) and `splits` of generated examples: its images PNG or
  JPEG as its features encode them, of its fixed shape or of `sizes` (smallest, largest side)."""
  import multimix_jax.data.tiny_imagenet  # pylint: disable=g-import-not-at-top,unused-import  # registers it

  catalog = tfds.builder_cls(name)

  def generate(self, split, count):
    rng = np.random.default_rng(list(splits).index(split))
    features = self.info.features
    for i in range(count):
      example = {}
      for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
          height, width = feature.shape[:2]
          if height is None:
            height, width = (int(rng.integers(sizes[0], sizes[1] + 1)) for _ in range(2))
          example[key] = encode(random_image(rng, height, width, feature.shape[2] or 3), feature.encoding_format
                                or 'png')
        elif isinstance(feature, tfds.features.ClassLabel):
          example[key] = i % feature.num_classes
        else:
          example[key] = f'{split}_{i}'
      yield i, example

  fake = type(f'Fake_{name}', (catalog,), {
      '_split_generators': lambda self, dl_manager: {s: self._generate_examples(s, n) for s, n in splits.items()},
      '_generate_examples': generate}, skip_registration=True)
  fake.name = name
  builder = fake(data_dir=str(data_dir), file_format='array_record')
  builder.download_and_prepare()
  return str(data_dir)
