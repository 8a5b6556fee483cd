"""Data made here, for the input pipeline's tests: folders of images in class sub-folders, and TFDS datasets prepared
as ArrayRecord from generated images (no TensorFlow, no network); see multimix_jax.data.synthetic.

`fake_cifar` has CIFAR's shape (32×32 PNGs, 10 classes); `fake_imagenet` ImageNet's kind (JPEGs of varying sizes,
trained through the random-resized crop), small enough for a CPU.
"""

import numpy as np
import tensorflow_datasets as tfds

from multimix_jax.data import synthetic

prepare_catalog = synthetic.prepare_catalog
write_folder = synthetic.write_folder


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
      image = synthetic.random_encoded(rng, self.SHAPE, self.KIND, self.SIZES)
      yield i, {'image': image, 'label': i % self.NUM_CLASSES}


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
