"""The input pipeline, without TensorFlow: datasets by name or path, host batches on grain, device augmentation.

`sources` resolves `config.dataset` (digits, a TFDS dataset prepared as ArrayRecord, a folder of images in class
sub-folders), `pipeline` turns it into uint8 host batches (decode, crop, flip), `device_augment` normalises and
augments them inside the jitted step, `prepare` prepares a TFDS dataset once (`python -m
multimix_jax.data.prepare`), `transforms` holds the host's image operations.

The names below are imported on first use, so that `from multimix_jax.data import device_augment` (the step's
augmentation, which the benchmark and the preflight compile) does not import TFDS or grain.
"""

import dataclasses
import importlib

_LAZY = {
    'train_batches': 'pipeline', 'eval_batches': 'pipeline',
    'resolve': 'sources', 'Data': 'sources', 'DataError': 'sources',
    'DatasetError': 'prepare', 'DatasetNotFoundError': 'prepare',
    'RESIZE_METHODS': 'catalog',
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset; `image_shape` is (H, W, C) after preprocessing."""
  num_classes: int
  num_train: int
  num_eval: int
  image_shape: tuple[int, int, int]
  class_names: tuple[str, ...] | None = None


def dataset_info(config) -> DatasetInfo:
  """Opens `config.dataset`, fills the config keys left to the data (see `sources.resolve`) and returns its sizes.

  Raises:
    ValueError: a config value the data contradict (DataError: data that cannot be trained on).
    DatasetNotFoundError: a TFDS dataset not prepared in `config.data_dir`; the message gives the command.
  """
  from multimix_jax.data import sources  # pylint: disable=g-import-not-at-top
  data = sources.resolve(config)
  return DatasetInfo(num_classes=data.num_classes, num_train=len(data.train), num_eval=len(data.eval),
                     image_shape=data.image_shape, class_names=data.class_names)
