"""What each supported dataset is, without TensorFlow: classes, channels, size, splits, augmentation, normalisation.

The input pipeline (`multimix_jax.data`) reads and augments the datasets; this table is what the rest of the
project needs to know about them (the image shape a config trains on, for the compile-for-target preflight and the
analysis), so that knowing it never imports TensorFlow.
"""

import dataclasses

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """How one TFDS dataset is read and augmented.

  `augment`: 'none' (digits: not flip-invariant), 'pad_crop_flip' (random crop of the native size from the image
  zero-padded by `padding` pixels, then a horizontal flip) or 'inception' (random-resized crop of JPEG bytes to
  `config.image_size` and a flip; evaluation resizes the shorter side to 256/224 · image_size and center-crops).
  `mean` and `std` are per channel, in [0, 1] pixel units. `color_jitter` > 0 (inception only): after the crop and
  flip, brightness, contrast and saturation jitter of that strength in a random order; `lighting_std` > 0: then
  PCA lighting noise of that standard deviation; both on [0, 1] pixels. `prepare`: how a missing copy is prepared
  ('build': TFDS downloads it; 'imagenet', 'tiny_imagenet': manual downloads first; None: built offline).
  """
  num_classes: int
  channels: int
  size: int | None  # native image size; None: config.image_size (images of any size, cropped and resized)
  eval_split: str
  augment: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  padding: int = 0
  color_jitter: float = 0.0
  lighting_std: float = 0.0
  prepare: str | None = None


DATASETS = {
    # Normalisation of digits: pixel mean and std of its train split.
    'digits': Dataset(10, 1, 8, 'test', 'none', (0.30543,), (0.37596,)),
    # CIFAR-10/100 and Tiny ImageNet: the authors' code normalises all three with the same widely copied CIFAR-10
    # constants (its std is not CIFAR-10's pixel std, 0.247, 0.243, 0.261); we keep theirs, to the letter.
    'cifar10': Dataset(10, 3, 32, 'test', 'pad_crop_flip', _CIFAR_MEAN, _CIFAR_STD, padding=4, prepare='build'),
    'cifar100': Dataset(100, 3, 32, 'test', 'pad_crop_flip', _CIFAR_MEAN, _CIFAR_STD, padding=4, prepare='build'),
    'tiny_imagenet': Dataset(200, 3, 64, 'validation', 'pad_crop_flip', _CIFAR_MEAN, _CIFAR_STD, padding=4,
                             prepare='tiny_imagenet'),
    # ImageNet: AlignMixup's training transform, RandomResizedCrop(224), flip, ColorJitter(0.4, 0.4, 0.4) and
    # Lighting(0.1) of its `utils/util.py`, then Normalize.
    'imagenet2012': Dataset(1000, 3, None, 'validation', 'inception', _IMAGENET_MEAN, _IMAGENET_STD,
                            color_jitter=0.4, lighting_std=0.1, prepare='imagenet'),
}
SUPPORTED_DATASETS = tuple(DATASETS)


def spec(config) -> Dataset:
  """The entry of `config.dataset`, after checking the config keys that must agree with it (ValueError if not)."""
  if config.dataset not in DATASETS:
    raise ValueError(f'dataset={config.dataset!r} is not supported; choose one of {list(SUPPORTED_DATASETS)}.')
  entry = DATASETS[config.dataset]
  problems = []
  if config.num_classes != entry.num_classes:
    problems.append(f'num_classes={config.num_classes} but {config.dataset} has {entry.num_classes} classes; '
                    f'set --config.num_classes={entry.num_classes}.')
  if entry.size is not None and config.image_size != entry.size:
    problems.append(f'image_size={config.image_size} but {config.dataset} images are {entry.size}x{entry.size} '
                    f'and are not resized; set --config.image_size={entry.size}.')
  if entry.size is None and config.image_size < 1:
    problems.append(f'image_size={config.image_size} must be positive.')
  if problems:
    raise ValueError(' '.join(problems))
  return entry


def image_shape(config) -> tuple[int, int, int]:
  """(H, W, C) of the images `config` trains on, after preprocessing."""
  entry = DATASETS[config.dataset]
  size = entry.size or config.image_size
  return (size, size, entry.channels)
