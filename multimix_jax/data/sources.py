"""What `config.dataset` names, opened for random access: digits in memory, a TFDS dataset prepared as ArrayRecord,
or a folder of images in class sub-folders. No TensorFlow.

`resolve(config)` finds the dataset, checks it, fills the config keys left to the data (`num_classes`,
`image_size`, the `augment.*` choices) and returns a `Data`: the dataset's splits as random-access records, with
the augmentation the run uses. Small images of one size (digits, CIFAR, Tiny ImageNet, a folder of small PNGs) are
decoded into memory once per process; larger ones stay encoded and are decoded, cropped and resized per example.
"""

import concurrent.futures
import dataclasses
import json
import os

import numpy as np
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from multimix_jax.data import catalog
from multimix_jax.data import prepare
from multimix_jax.data import transforms

# A folder dataset: the split folders, as timm's ImageFolder convention names them, and the images it reads.
TRAIN_FOLDER = 'train'
EVAL_FOLDERS = ('val', 'validation', 'test')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
_HEADER_THREADS = 16  # reading image headers waits on the disk, not the CPU
_RULE_SAMPLE = 256  # images whose size a TFDS dataset of varying sizes is judged by


class DataError(ValueError):
  """The data cannot be trained on as they are (an empty class folder, an unreadable image, ...): one line."""


class Split:
  """One split, random access: `split[i]` is (image, label). Decoded into memory, `images` is a uint8 array
  (N, H, W, C) and `labels` int32 (N,); otherwise `records[i]` reads (encoded image bytes, label) on access."""

  def __init__(self, records=None, *, images=None, labels=None):
    self.records, self.images, self.labels = records, images, labels

  @property
  def decoded(self) -> bool:
    return self.images is not None

  def __len__(self):
    return len(self.labels) if self.decoded else len(self.records)

  def __getitem__(self, index):
    return (self.images[index], self.labels[index]) if self.decoded else self.records[index]


@dataclasses.dataclass(frozen=True)
class Data:
  """A dataset opened for the run: its splits, classes and the augmentation the run applies.

  `spec` is the dataset's augmentation after the config's overrides; `image_shape` (H, W, C) what the model sees.
  """
  name: str
  spec: catalog.Dataset
  image_size: int
  num_classes: int
  class_names: tuple[str, ...] | None
  train: Split
  eval: Split

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.spec.channels)


def resolve(config) -> Data:
  """Opens `config.dataset` and fills the config keys left to the data; raises DataError, ValueError (a config value
  the data contradict) or prepare.DatasetNotFoundError, each with one message."""
  given = (config.dataset, config.data_dir, _overrides(config))
  data = _OPENED.get(given)
  if data is None:
    if len(_OPENED) >= _MAX_OPENED:
      _OPENED.clear()
    data = _open(*given)
  _fill(config, data.spec, data.image_size)
  # Under the filled config too: the trainer's later calls (training and evaluation batches) find it decoded.
  _OPENED[given] = _OPENED[(config.dataset, config.data_dir, _overrides(config))] = data
  return data


def fill_config(config):
  """Fills the config keys left to the data as `resolve` does; for a named dataset from its table alone, reading
  no data (the preflight compiles runs whose data are elsewhere)."""
  entry = catalog.DATASETS.get(config.dataset)
  if entry is None:
    resolve(config)
    return
  spec, size = _apply(config.dataset, entry, entry.size or catalog.LARGE_IMAGE_SIZE, entry.num_classes,
                      json.loads(_overrides(config)))
  _fill(config, spec, size)


def _overrides(config) -> str:
  """The config keys that shape how the data are opened, as a hashable key of the open-data cache."""
  aug = config.augment
  keys = {'num_classes': config.num_classes, 'image_size': config.image_size, 'crop': aug.crop,
          'padding': aug.padding, 'flip': aug.flip, 'mean': aug.mean, 'std': aug.std,
          'color_jitter': aug.color_jitter, 'lighting_std': aug.lighting_std}
  return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in keys.items()}, sort_keys=True)


# Datasets opened in this process, by (dataset, data_dir, the config keys of `_overrides`): the run's is decoded
# once, though training and every evaluation resolve it again.
_OPENED: dict[tuple, Data] = {}
_MAX_OPENED = 8


def _open(name: str, data_dir: str | None, overrides: str) -> Data:
  given = json.loads(overrides)
  if name in catalog.DATASETS:  # a named dataset's classes and size are known: refuse a contradiction before reading
    entry = catalog.DATASETS[name]
    _apply(name, entry, entry.size or catalog.LARGE_IMAGE_SIZE, entry.num_classes, given)
  if name == 'digits':
    entry, size, num_classes, class_names, train, evaluation = _digits()
  elif catalog.is_folder(name):
    entry, size, num_classes, class_names, train, evaluation = _folder(name)
  else:
    entry, size, num_classes, class_names, train, evaluation = _tfds(name, data_dir)
  spec, size = _apply(name, entry, size, num_classes, given)
  if spec.crop != 'random_resized_crop':  # trained at their own size: decoded into memory once
    train, evaluation = _decoded(train, spec.channels, name), _decoded(evaluation, spec.channels, name)
    shapes = {train.images.shape[1:], evaluation.images.shape[1:]}
    if len(shapes) > 1 or train.images.shape[1] != train.images.shape[2]:
      raise DataError(f'dataset={name}: augment.crop={spec.crop!r} trains on the images at their own size, which '
                      f'must be one square size, not {sorted(s[:2] for s in shapes)}: use '
                      "--config.augment.crop=random_resized_crop.")
    size = train.images.shape[1]
    _check_not_resized(name, given['image_size'], size, spec.crop)
  return Data(name, spec, size, num_classes, class_names, train, evaluation)


def _apply(name, entry, size, num_classes, given):
  """The dataset's augmentation and image size with the config's keys applied; refuses a key the data contradict."""
  if given['num_classes'] is not None and given['num_classes'] != num_classes:
    raise ValueError(f'num_classes={given["num_classes"]} but {name} has {num_classes} classes; leave '
                     f'num_classes unset or set --config.num_classes={num_classes}.')
  crop = given['crop'] or entry.crop
  if crop not in catalog.CROPS:
    raise ValueError(f'augment.crop={crop!r} must be one of {catalog.CROPS}.')
  if given['image_size'] is not None:
    if crop != 'random_resized_crop' and entry.size:
      _check_not_resized(name, given['image_size'], entry.size, crop)
    if given['image_size'] < 1:
      raise ValueError(f'image_size={given["image_size"]} must be positive.')
    size = given['image_size']
  channels = entry.channels
  mean = tuple(given['mean']) if given['mean'] is not None else entry.mean
  std = tuple(given['std']) if given['std'] is not None else entry.std
  if len(mean) != channels or len(std) != channels or min(std) <= 0:
    raise ValueError(f'augment.mean={mean} and augment.std={std} need {channels} values each (the images have '
                     f'{channels} channels), std > 0.')
  padding = entry.padding if given['padding'] is None else given['padding']
  if padding < 0:
    raise ValueError(f'augment.padding={padding} must be >= 0.')
  spec = dataclasses.replace(
      entry, num_classes=num_classes, crop=crop, mean=mean, std=std, padding=padding,
      flip=entry.flip if given['flip'] is None else bool(given['flip']),
      color_jitter=entry.color_jitter if given['color_jitter'] is None else given['color_jitter'],
      lighting_std=entry.lighting_std if given['lighting_std'] is None else given['lighting_std'])
  return spec, size


def _check_not_resized(name, image_size, native, crop):
  """Refuses an image_size other than the images' own when they are trained at their own size."""
  if image_size not in (None, native):
    raise ValueError(f'image_size={image_size} but {name} images are {native}x{native} and are not resized '
                     f'(augment.crop={crop!r}); set --config.image_size={native}, or resize them with '
                     '--config.augment.crop=random_resized_crop.')


def _fill(config, spec: catalog.Dataset, image_size: int):
  """Writes what the data decided into the config, so that the run's config.json states it."""
  aug = config.augment
  config.num_classes = spec.num_classes
  config.image_size = image_size
  aug.crop, aug.padding, aug.flip = spec.crop, spec.padding, spec.flip
  aug.mean, aug.std = tuple(spec.mean), tuple(spec.std)
  aug.color_jitter, aug.lighting_std = float(spec.color_jitter), float(spec.lighting_std)


# ----------------------------------------------------------------------------------------------------- digits


_DIGITS_TEST_FRACTION, _DIGITS_SPLIT_SEED = 0.2, 0


def _digits():
  """scikit-learn's bundled 8×8 digits (values 0..16 rescaled to uint8 as round(v · 255 / 16)), with a fixed
  stratified split: 1,437 train and 360 test images, offline."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train, test = model_selection.train_test_split(np.arange(len(labels)), test_size=_DIGITS_TEST_FRACTION,
                                                 random_state=_DIGITS_SPLIT_SEED, stratify=labels)
  train, test = np.sort(train), np.sort(test)
  entry = catalog.DATASETS['digits']
  return (entry, entry.size, 10, tuple(str(d) for d in range(10)),
          Split(images=images[train], labels=labels[train]), Split(images=images[test], labels=labels[test]))


# ----------------------------------------------------------------------------------------------------- TFDS


class _TfdsRecords:
  """(encoded image, label) of a TFDS split, read from its ArrayRecord files on access (thread-safe).

  Reads the records of TFDS's data source and parses only the two features it needs: TFDS's own deserialisation
  of every feature took twice as long as the read (130 against 60 µs a record of ImageNet's size)."""

  def __init__(self, source, image_key, label_key):
    self._records, self._image_key, self._label_key = source.data_source, image_key, label_key

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    features = tf_example_pb2.Example.FromString(self._records[int(index)]).features.feature
    return features[self._image_key].bytes_list.value[0], int(features[self._label_key].int64_list.value[0])


def _tfds(name, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    info = prepare.find_prepared(name, data_dir)
  except ImportError as e:  # a gs:// data_dir without TensorFlow: TFDS reads it through fsspec's gcsfs
    raise DataError(f'dataset={name}: data_dir={data_dir} needs a package that is not installed ({e}); for gs:// '
                    "install gcsfs (pip install 'multimix_jax[gcs]'; the tpu extra has it).") from None
  splits = {}
  for role, split in (('train', info.train_split), ('eval', info.eval_split)):
    source = tfds.data_source(name, split=split, data_dir=info.data_dir)
    splits[role] = Split(_TfdsRecords(source, info.image_key, info.label_key))
  try:
    splits['train'][0]  # pylint: disable=pointless-statement  (the first read: can the files be opened at all?)
  except Exception as e:  # pylint: disable=broad-except  (array_record raises RuntimeError, OSError, ...)
    if '://' not in str(info.data_dir):
      raise
    raise DataError(f'dataset={name}: cannot read its ArrayRecord files in data_dir={info.data_dir} '
                    f'({type(e).__name__}: {" ".join(str(e).split())[:200]}): the ArrayRecord reader opens local '
                    'paths only. Mount the bucket (gcsfuse --implicit-dirs BUCKET /mnt/BUCKET, then '
                    '--config.data_dir=/mnt/BUCKET/...) or copy the prepared dataset to a local disk.') from None
  channels = info.image_shape[2] or 3
  if name in catalog.DATASETS:
    entry = catalog.DATASETS[name]
    size = entry.size or catalog.LARGE_IMAGE_SIZE
  else:
    height, width = info.image_shape[:2]
    if height and width:
      sizes = [(height, width)]
    else:
      train = splits['train']
      step = max(1, len(train) // _RULE_SAMPLE)
      sizes = [transforms.encoded_size(train[i][0]) for i in range(0, len(train), step)]
    entry, size = catalog.by_rule(sizes, channels)
  return entry, size, info.num_classes, info.class_names, splits['train'], splits['eval']


# ----------------------------------------------------------------------------------------------------- folders


class _Files:
  """(bytes of the image file, label), read on access."""

  def __init__(self, paths, labels):
    self.paths, self.labels = paths, labels

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    with open(self.paths[int(index)], 'rb') as f:
      return f.read(), int(self.labels[index])


def _folder(name):
  """A folder `<root>/train/<class>/*.png|jpg` with `val`, `validation` or `test` beside `train` (timm's layout;
  the class is the image's folder, classes sorted by name)."""
  root = os.path.abspath(os.path.expanduser(name))
  if not os.path.isdir(root):
    raise DataError(f'dataset={name}: no such folder. A folder dataset is <root>/train/<class>/<image> with '
                    f'<root>/val (or validation, test) beside it.')
  train_dir = os.path.join(root, TRAIN_FOLDER)
  eval_dirs = [os.path.join(root, d) for d in EVAL_FOLDERS if os.path.isdir(os.path.join(root, d))]
  if not os.path.isdir(train_dir) or not eval_dirs:
    raise DataError(f'dataset={name}: expected the split folders {TRAIN_FOLDER}/ and one of '
                    f'{"/, ".join(EVAL_FOLDERS)}/ in {root}, each with one sub-folder of images per class; found '
                    f'{sorted(os.listdir(root))[:10]}.')
  train_paths, train_classes = _list_images(train_dir)
  eval_paths, eval_classes = _list_images(eval_dirs[0])
  class_names = tuple(sorted(set(train_classes)))
  if len(class_names) < 2:
    raise DataError(f'dataset={name}: {train_dir} has {len(class_names)} class folder(s); a classifier needs at '
                    'least two.')
  unknown = sorted(set(eval_classes) - set(class_names))
  if unknown:
    raise DataError(f'dataset={name}: {eval_dirs[0]} has classes that {train_dir} lacks: {unknown[:5]}; every '
                    'evaluation class must have training images.')
  index = {c: i for i, c in enumerate(class_names)}
  logging.info('%s: %d training and %d evaluation images in %d classes; reading every header.', root,
               len(train_paths), len(eval_paths), len(class_names))
  sizes = _image_sizes(train_paths + eval_paths)
  entry, size = catalog.by_rule(sizes[:len(train_paths)], 3)
  return (entry, size, len(class_names), class_names,
          Split(_Files(train_paths, [index[c] for c in train_classes])),
          Split(_Files(eval_paths, [index[c] for c in eval_classes])))


def _list_images(split_dir):
  """(paths, class names) of the images under `split_dir` in sorted order; the class of an image is the name of
  its folder. Refuses a class folder without images and images outside class folders."""
  paths, classes = [], []
  for folder, subfolders, files in os.walk(split_dir):
    subfolders.sort()
    images = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
    if folder == split_dir:
      if images:
        raise DataError(f'{split_dir} holds images directly ({images[0]}, ...); put each in the folder of its class: '
                        f'{split_dir}/<class>/{images[0]}.')
      continue
    if not images and not subfolders:
      raise DataError(f'{folder}: an empty class folder (no .jpg, .jpeg or .png images); remove it or add images.')
    paths.extend(os.path.join(folder, f) for f in images)
    classes.extend([os.path.basename(folder)] * len(images))
  if not paths:
    raise DataError(f'{split_dir}: no class folders with images.')
  return paths, classes


def _image_sizes(paths):
  """(H, W) of every image from its header (PIL reads no pixels); DataError names the first unreadable one."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def size(path):
    try:
      with Image.open(path) as image:
        return image.height, image.width
    except Exception as e:  # pylint: disable=broad-except  (PIL raises many kinds for a bad file)
      raise DataError(f'{path}: not a readable image ({type(e).__name__}: {" ".join(str(e).split())}); remove or '
                      'replace it.') from None

  with concurrent.futures.ThreadPoolExecutor(_HEADER_THREADS) as pool:
    return list(pool.map(size, paths))


# ----------------------------------------------------------------------------------------------------- decoding


def _decoded(split: Split, channels: int, name: str) -> Split:
  """The split with its images decoded into one uint8 array (N, H, W, C), in threads (decoders release the GIL)."""
  if split.decoded:
    return split

  def decode(index):
    encoded, label = split[index]
    try:
      return transforms.decode(encoded, channels), label
    except ValueError as e:
      raise DataError(f'dataset={name}: image {index} of the split: {e}') from None

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    images, labels = zip(*pool.map(decode, range(len(split))))
  shapes = {image.shape for image in images}
  if len(shapes) > 1:
    raise DataError(f'dataset={name}: images of several sizes ({sorted(shapes)[:3]}, ...) cannot be trained at their '
                    'own size, which must be one square size: use --config.augment.crop=random_resized_crop.')
  return Split(images=np.stack(images), labels=np.asarray(labels, np.int32))
