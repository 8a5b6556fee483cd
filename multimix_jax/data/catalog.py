"""How each dataset is augmented and normalised, without reading it: the named table and the rule for any other.

`config.dataset` is one of the names below, any other TFDS image-classification dataset prepared in
`config.data_dir`, or the path of a folder of images in class sub-folders (`multimix_jax.data` reads all three).
The named datasets carry the augmentation of the papers; a dataset the project has never seen gets one chosen by
`by_rule` from its image size. Every choice can be overridden by a key of `config.augment`, and the run's
config.json states the values it used; `config_problems` checks those keys.

Nothing here reads data or imports TensorFlow: the preflight and the analysis use it.
"""

import dataclasses

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Greyscale images of a dataset never seen: the mean of ImageNet's channel statistics, as timm does.
GREY_MEAN, GREY_STD = (0.449,), (0.226,)
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)

CROPS = ('none', 'pad_crop_flip', 'random_resized_crop')
# How random-resized crops (and evaluation's center crops) are resized: PIL's filters (transforms.py).
RESIZE_METHODS = ('bilinear', 'bicubic')
# The largest side, in pixels, of images that the rule trains on at their own size (padded, cropped and flipped,
# as CIFAR and Tiny ImageNet); larger or unequal images get ImageNet's random-resized crop.
SMALL_IMAGE_SIDE = 64
# The training size the rule picks for large images, and the smallest it picks for images smaller than that.
LARGE_IMAGE_SIZE, MIN_IMAGE_SIZE = 224, 32


@dataclasses.dataclass(frozen=True)
class Dataset:
  """How one dataset is augmented and normalised.

  `crop`: 'none' (digits: not flip-invariant), 'pad_crop_flip' (the image at its own size, zero-padded by
  `padding` pixels and cropped back at a random offset, then flipped: torchvision's RandomCrop(size, padding) and
  RandomHorizontalFlip) or 'random_resized_crop' (torchvision's RandomResizedCrop(image_size) and flip; evaluation
  resizes the shorter side to image_size · 256/224 and center-crops). `mean` and `std` are per channel, in [0, 1]
  pixel units. `color_jitter` > 0: after the crop and flip, brightness, contrast and saturation jitter of that
  strength in a random order; `lighting_std` > 0: then PCA lighting noise of that standard deviation; both on the
  accelerator, on [0, 1] pixels.
  """
  num_classes: int | None  # None: from the data
  channels: int
  size: int | None  # native side, for datasets trained at their own size; None: config.image_size
  crop: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  padding: int = 0
  flip: bool = True
  color_jitter: float = 0.0
  lighting_std: float = 0.0
  eval_split: str | None = None  # None: 'test', else 'validation'


DATASETS = {
    # Normalisation of digits: pixel mean and std of its train split.
    'digits': Dataset(10, 1, 8, 'none', (0.30543,), (0.37596,), flip=False, eval_split='test'),
    # CIFAR-10/100 and Tiny ImageNet: the authors' code normalises all three with the same widely copied CIFAR-10
    # constants (its std is not CIFAR-10's pixel std, 0.247, 0.243, 0.261); we keep theirs, to the letter.
    'cifar10': Dataset(10, 3, 32, 'pad_crop_flip', _CIFAR_MEAN, _CIFAR_STD, padding=4, eval_split='test'),
    'cifar100': Dataset(100, 3, 32, 'pad_crop_flip', _CIFAR_MEAN, _CIFAR_STD, padding=4, eval_split='test'),
    'tiny_imagenet': Dataset(200, 3, 64, 'pad_crop_flip', _CIFAR_MEAN, _CIFAR_STD, padding=4,
                             eval_split='validation'),
    # ImageNet: AlignMixup's training transform, RandomResizedCrop(224), flip, ColorJitter(0.4, 0.4, 0.4) and
    # Lighting(0.1) of its `utils/util.py`, then Normalize.
    'imagenet2012': Dataset(1000, 3, None, 'random_resized_crop', IMAGENET_MEAN, IMAGENET_STD, color_jitter=0.4,
                            lighting_std=0.1, eval_split='validation'),
}
SUPPORTED_DATASETS = tuple(DATASETS)


def is_folder(name: str) -> bool:
  """Whether `config.dataset` names a folder of images (a path) rather than a TFDS dataset."""
  return '/' in name or '\\' in name or name.startswith(('.', '~'))


def by_rule(sizes: list[tuple[int, int]], channels: int) -> tuple[Dataset, int]:
  """(augmentation, image_size) for a dataset the project has never seen, from the (H, W) of its images (all of
  them, or a sample).

  Square images of one size, at most SMALL_IMAGE_SIDE pixels, train at that size, padded by 1/8 of it (CIFAR's 4
  of 32), cropped and flipped. Any other dataset gets the random-resized crop to 224, or to
  its median shorter side rounded down to a multiple of 8 (at least 32) where that is smaller. Normalisation:
  ImageNet's statistics (their mean over channels for greyscale images), as timm does for data it does not know.
  """
  mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GREY_MEAN, GREY_STD)
  height, width = sizes[0]
  if len(set(sizes)) == 1 and height == width <= SMALL_IMAGE_SIDE:
    return Dataset(None, channels, height, 'pad_crop_flip', mean, std, padding=max(1, height // 8)), height
  shorter = sorted(min(s) for s in sizes)[len(sizes) // 2]
  size = LARGE_IMAGE_SIZE if shorter >= LARGE_IMAGE_SIZE else max(MIN_IMAGE_SIZE, shorter // 8 * 8)
  return Dataset(None, channels, None, 'random_resized_crop', mean, std), size


def image_shape(config) -> tuple[int, int, int]:
  """(H, W, C) of the images `config` trains on, after preprocessing, known without reading data: a named dataset's,
  or config.image_size and the channels in the run's config (`augment.mean`) for any other."""
  entry = DATASETS.get(config.dataset)
  size = (entry.size if entry else None) or config.image_size or LARGE_IMAGE_SIZE
  channels = entry.channels if entry else len(config.augment.mean or IMAGENET_MEAN)
  return (size, size, channels)


def num_classes(config) -> int | None:
  """`config.num_classes`, else a named dataset's (None for a dataset whose classes only its data tell)."""
  entry = DATASETS.get(config.dataset)
  return config.num_classes or (entry.num_classes if entry else None)


def config_problems(config) -> list[str]:
  """One sentence per bad value of the augmentation keys (`augment.*`: the host's crop and resize, the device's
  colour jitter, lighting, RandAugment and random erasing, multimix_jax/data/device_augment.py); once each is valid,
  augmentation asked of a named dataset that is not augmented (digits)."""
  aug, problems = config.augment, []
  if aug.resize not in RESIZE_METHODS:
    problems.append(f'augment.resize={aug.resize!r} must be one of {RESIZE_METHODS}.')
  for name in ('color_jitter', 'lighting_std'):
    if not (aug[name] is None or aug[name] >= 0):
      problems.append(f'augment.{name}={aug[name]} must be None (the dataset\'s) or >= 0.')
  if not (isinstance(aug.randaugment_layers, int) and aug.randaugment_layers >= 0):
    problems.append(f'augment.randaugment_layers={aug.randaugment_layers!r} must be an int >= 0 (0: no RandAugment).')
  if not 0 <= aug.randaugment_magnitude <= 10:
    problems.append(f'augment.randaugment_magnitude={aug.randaugment_magnitude} must be in [0, 10].')
  if not aug.randaugment_magnitude_std >= 0:
    problems.append(f'augment.randaugment_magnitude_std={aug.randaugment_magnitude_std} must be >= 0.')
  if not 0 <= aug.random_erasing <= 1:
    problems.append(f'augment.random_erasing={aug.random_erasing} must be in [0, 1].')
  if not (aug.crop is None or aug.crop in CROPS):
    problems.append(f'augment.crop={aug.crop!r} must be one of {CROPS}.')
  if not problems and config.dataset in DATASETS and DATASETS[config.dataset].crop == 'none':
    if aug.randaugment_layers or aug.random_erasing or aug.color_jitter or aug.lighting_std or aug.flip:
      problems.append(f'dataset={config.dataset!r} is not augmented (its images are not flip-invariant): leave '
                      'augment.* at their defaults.')
  return problems
