"""TFDS builder `digits`: scikit-learn's bundled handwritten digits, prepared offline.

1,797 grey 8×8 images (UCI optdigits test set) with values 0..16, rescaled to uint8 0..255 as round(v · 255 / 16).
The train/test split is fixed (stratified, 20 % test, `random_state=0`): 1,437 train and 360 test examples.
Preparing reads the copy shipped inside scikit-learn and never touches the network.
"""

import numpy as np
import tensorflow_datasets as tfds

_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8×8 handwritten digits with a fixed stratified train/test split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # bundled with scikit-learn: nothing to download
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    from sklearn import model_selection  # pylint: disable=g-import-not-at-top

    digits = datasets.load_digits()
    images = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    train, test = model_selection.train_test_split(
        np.arange(len(labels)), test_size=_TEST_FRACTION, random_state=_SPLIT_SEED, stratify=labels)
    return {
        'train': self._generate_examples(images, labels, np.sort(train)),
        'test': self._generate_examples(images, labels, np.sort(test)),
    }

  def _generate_examples(self, images, labels, indices):
    for i in indices:  # the key is the index in scikit-learn's array: stable across rebuilds
      yield int(i), {'image': images[i], 'label': int(labels[i])}
