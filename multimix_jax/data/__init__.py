"""The input pipeline, without TensorFlow: datasets by name or path, host batches on grain, device augmentation.

`sources` resolves `config.dataset` (digits, a TFDS dataset prepared as ArrayRecord, a folder of images in class
sub-folders), `pipeline` turns it into uint8 host batches (decode, crop, flip), `device_augment` normalises and
augments them inside the jitted step, `prepare` prepares a TFDS dataset once (`python -m
multimix_jax.data.prepare`), `transforms` holds the host's image operations.
"""

import dataclasses

from multimix_jax.data.pipeline import eval_batches
from multimix_jax.data.pipeline import train_batches
from multimix_jax.data.prepare import DatasetError
from multimix_jax.data.prepare import DatasetNotFoundError
from multimix_jax.data.sources import Data
from multimix_jax.data.sources import DataError
from multimix_jax.data.sources import resolve
from multimix_jax.data.transforms import RESIZE_METHODS
from multimix_jax.datasets import DATASETS
from multimix_jax.datasets import SUPPORTED_DATASETS


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
  data = resolve(config)
  return DatasetInfo(num_classes=data.num_classes, num_train=len(data.train), num_eval=len(data.eval),
                     image_shape=data.image_shape, class_names=data.class_names)
