"""TFDS -> host batches: per-dataset augmentation, host sharding, exact resume and masked evaluation.

`train_batches` yields an endless stream whose epochs are fixed by (seed, epoch, process): each epoch is a shuffle
seeded by (seed, epoch) of this process's shard, read in a fixed order, with the remainder dropped
(steps_per_epoch = local examples // local batch). Augmentation is stateless, keyed by (seed, epoch, position in
the epoch), so it does not depend on threading. Resuming at step k starts at epoch k // steps_per_epoch and skips
(k % steps_per_epoch) · local_batch_size records before augmenting them (or, for ImageNet's JPEG bytes, decoding
them): the stream is exactly the uninterrupted one from its k-th batch on.

`eval_batches` makes one pass over the whole evaluation split: every example once across processes, the last
batches padded to full size with `mask` False, and the same number of batches on every process.

This package is the only part of multimix_jax that imports TensorFlow.
"""

import dataclasses
import os
from typing import Iterator

from absl import logging
from etils import epath
import jax
import tensorflow as tf
import tensorflow_datasets as tfds

from multimix_jax import datasets
from multimix_jax.datasets import DATASETS
from multimix_jax.datasets import SUPPORTED_DATASETS
from multimix_jax.data import deit_augment
from multimix_jax.data import digits as _digits  # pylint: disable=unused-import  # registers 'digits'
from multimix_jax.data import tiny_imagenet as _tiny_imagenet  # registers 'tiny_imagenet'

# TensorFlow only feeds the host: keep it off the accelerators JAX uses (a no-op once TF's runtime has started).
try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:
  pass

_AUTOTUNE = tf.data.AUTOTUNE
RESIZE_METHODS = ('bilinear', 'bicubic')  # config.augment.resize: tf.image.resize methods, antialiased as PIL's
_EVAL_CROP_FRACTION = 224 / 256  # ImageNet evaluation: resize the shorter side to 256, center crop 224
# AlexNet-style PCA lighting noise: eigenvalues and eigenvectors (columns) of the RGB covariance of ImageNet pixels
# in [0, 1], the values of AlignMixup's ImageNet `main.py` (from fb.resnet.torch).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as the authors' Grayscale


class DatasetNotFoundError(RuntimeError):
  """The dataset is not prepared in `config.data_dir`; the message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset; `image_shape` is (H, W, C) after preprocessing."""
  num_classes: int
  num_train: int
  num_eval: int
  image_shape: tuple[int, int, int]


def _prepare_command(name, data_dir):
  return (f"  python -c \"import multimix_jax.data, tensorflow_datasets as tfds; "
          f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\"\n"
          f'(or launch/prepare_data.sh {name}; `tfds build` also works once apache-beam is installed)')


def _build_command(name, data_dir):
  return f'Prepare it once (downloads it) with\n{_prepare_command(name, data_dir)}'


def _imagenet_instructions(name, data_dir):
  manual = os.path.join(data_dir, 'downloads', 'manual')
  return (f'Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org/ (an account '
          f'is needed), place them in\n  {manual}/\nthen prepare it once (hours) with\n'
          f'{_prepare_command(name, data_dir)}')


def _tiny_imagenet_instructions(name, data_dir):
  del name
  manual = os.path.join(data_dir, 'downloads', 'manual', _tiny_imagenet.ARCHIVE)
  return (f'Download http://cs231n.stanford.edu/{_tiny_imagenet.ARCHIVE} and place it, not extracted, at\n'
          f'  {manual}\nIt is then prepared automatically on first use (a few minutes).')


# How to prepare each dataset that is not built automatically (`Dataset.prepare`).
_PREPARE = {'build': _build_command, 'imagenet': _imagenet_instructions, 'tiny_imagenet': _tiny_imagenet_instructions}


def dataset_info(config) -> DatasetInfo:
  """Checks `config` against the dataset and returns its sizes, preparing digits (and Tiny ImageNet) if needed.

  Raises:
    ValueError: unknown `config.dataset`, or `config.num_classes` / `config.image_size` that do not fit it.
    DatasetNotFoundError: the dataset is not prepared in `config.data_dir`; the message gives the fix.
  """
  spec = datasets.spec(config)
  builder = _prepared_builder(config)
  splits = builder.info.splits
  return DatasetInfo(num_classes=spec.num_classes, num_train=splits['train'].num_examples,
                     num_eval=splits[spec.eval_split].num_examples, image_shape=datasets.image_shape(config))


def train_batches(config, *, local_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int | None = None, process_count: int | None = None) -> Iterator[dict]:
  """Endless training batches of this process, from global step `start_step` on.

  Yields:
    {'image': float32 (local_batch_size, H, W, C), normalised; 'label': int32 (local_batch_size,)}. The stream
    depends only on (config, local_batch_size, seed, process_index, process_count): `start_step=k` yields
    exactly what `start_step=0` yields from its k-th batch on.
  """
  spec = datasets.spec(config)
  process_index, process_count = _process(process_index, process_count)
  if local_batch_size < 1 or start_step < 0:
    raise ValueError(f'local_batch_size={local_batch_size} must be >= 1 and start_step={start_step} >= 0.')
  builder = _prepared_builder(config)
  split = tfds.split_for_jax_process('train', process_index=process_index, process_count=process_count,
                                     drop_remainder=True)
  num_local = builder.info.splits[split].num_examples
  steps_per_epoch = num_local // local_batch_size
  if steps_per_epoch < 1:
    raise ValueError(f'local_batch_size={local_batch_size} exceeds the {num_local} training examples of process '
                     f'{process_index}/{process_count}.')
  records = _read(builder, split, spec)
  if config.cache:
    records = records.cache()  # decoded (JPEG bytes for imagenet2012), before the per-epoch shuffle
  start_epoch, start_batch = divmod(start_step, steps_per_epoch)
  buffer = max(1, min(config.shuffle_buffer, num_local))
  process_key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), process_index)

  def epoch(e):
    epoch_key = tf.random.experimental.stateless_fold_in(process_key, e)
    shuffle_seed = tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_fold_in(epoch_key, 0),
                                               minval=None, maxval=None, dtype=tf.int64)
    augment_key = tf.random.experimental.stateless_fold_in(epoch_key, 1)
    first = tf.where(e == start_epoch, tf.constant(start_batch, tf.int64), 0)
    ds = records.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    # Batch, then skip whole batches: the epoch reads every record (so a cache underneath completes), and skipped
    # or dropped records are never augmented (nor, for JPEG bytes, decoded).
    ds = ds.batch(local_batch_size, drop_remainder=True).enumerate().filter(lambda b, _: b >= first)
    if spec.augment == 'none':
      return ds.map(lambda b, batch: batch)
    # Example j of batch b gets key j of split(fold_in(augment_key, b)): a function of its position alone.
    ds = ds.map(lambda b, batch: (tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(augment_key, b), local_batch_size), batch))
    return ds.unbatch()

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch)
  if spec.augment != 'none':
    ds = ds.map(lambda key, ex: _augment(ex, key, config, spec), num_parallel_calls=_AUTOTUNE)
    ds = ds.batch(local_batch_size, drop_remainder=True)  # epochs hold whole batches: none straddles two
  ds = ds.map(lambda batch: _normalise(batch, spec), num_parallel_calls=_AUTOTUNE)
  ds = ds.prefetch(_AUTOTUNE).with_options(_options())
  return iter(tfds.as_numpy(ds))


def eval_batches(config, *, local_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict]:
  """One pass over this process's share of the evaluation split (test or validation).

  Yields:
    {'image': float32 (local_batch_size, H, W, C), 'label': int32 (local_batch_size,), 'mask': bool
    (local_batch_size,)}: `mask` is False on padding. Shares cover the split exactly once across processes, and
    every process yields the same number of batches (fully masked ones where its share runs out first).
  """
  spec = datasets.spec(config)
  process_index, process_count = _process(process_index, process_count)
  if local_batch_size < 1:
    raise ValueError(f'local_batch_size={local_batch_size} must be >= 1.')
  builder = _prepared_builder(config)
  shares = tfds.even_splits(spec.eval_split, n=process_count, drop_remainder=False)
  num_batches = max(-(-builder.info.splits[s].num_examples // local_batch_size) for s in shares)
  ds = _read(builder, shares[process_index], spec)
  if spec.augment == 'inception':
    ds = ds.map(lambda ex: {'image': _decode_center_crop(ex['image'], config.image_size, config.augment.resize),
                            'label': ex['label']}, num_parallel_calls=_AUTOTUNE)
  ds = ds.map(lambda ex: {**ex, 'mask': tf.constant(True)})
  padding = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat()).take(num_batches * local_batch_size)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.map(lambda batch: _normalise(batch, spec), num_parallel_calls=_AUTOTUNE)
  ds = ds.prefetch(_AUTOTUNE).with_options(_options())
  return iter(tfds.as_numpy(ds))


def _prepared_builder(config) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `config.dataset`, prepared: digits (and Tiny ImageNet from its zip) on first use."""
  name, spec = config.dataset, DATASETS[config.dataset]
  data_dir = os.path.expanduser(config.data_dir) if config.data_dir else None
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  root = os.fspath(epath.Path(builder.data_dir).parent.parent)  # <data_dir>/<name>/<version>
  zip_path = epath.Path(root) / 'downloads' / 'manual' / _tiny_imagenet.ARCHIVE
  if spec.prepare is None or (name == 'tiny_imagenet' and zip_path.exists()):
    logging.info('Preparing %s in %s (offline, once).', name, root)
    builder.download_and_prepare()
    return builder
  raise DatasetNotFoundError(f'Dataset {name} is not prepared in data_dir={root}.\n'
                              f'{_PREPARE[spec.prepare](name, root)}')


def _process(process_index, process_count) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, process_count={process_count}).')
  return process_index, process_count


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def _read(builder, split, spec) -> tf.data.Dataset:
  """{'image', 'label'} records of `split` in file order; ImageNet images stay JPEG bytes until cropped."""
  decoders = {'image': tfds.decode.SkipDecoding()} if spec.augment == 'inception' else None
  read_config = tfds.ReadConfig(try_autocache=False, options=_options())
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders, read_config=read_config)
  return ds.map(lambda ex: {'image': ex['image'], 'label': tf.cast(ex['label'], tf.int32)})


def _augment(example, key, config, spec) -> dict:
  """Per-example training augmentation, random only through the stateless `key` (shape (2,) int64).

  The dataset's crop and flip; then, as `config.augment` asks, RandAugment, colour jitter and PCA lighting (None:
  the dataset's), and random erasing, in timm's order. Each draws from its own key folded from `key`.
  """
  aug = config.augment
  crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  image = example['image']
  if spec.augment == 'inception':
    image = _decode_random_resized_crop(image, crop_key, config.image_size, aug.resize)
  else:  # pad_crop_flip
    p = spec.padding
    image = tf.pad(image, [[p, p], [p, p], [0, 0]])
    image = tf.image.stateless_random_crop(image, [spec.size, spec.size, spec.channels], seed=crop_key)
  image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
  if aug.randaugment_layers:
    fill = tuple(round(255 * m) for m in spec.mean)  # timm's img_mean
    image = deit_augment.rand_augment(image, tf.random.experimental.stateless_fold_in(key, 4),
                                      num_layers=aug.randaugment_layers, magnitude=aug.randaugment_magnitude,
                                      magnitude_std=aug.randaugment_magnitude_std, fill=fill)
  jitter = spec.color_jitter if aug.color_jitter is None else aug.color_jitter
  lighting_std = spec.lighting_std if aug.lighting_std is None else aug.lighting_std
  if jitter or lighting_std:
    # On [0, 1] pixels, as the authors' transforms after ToTensor; keys folded in so crop and flip keep theirs.
    image = tf.cast(image, tf.float32) / 255
    if jitter:
      image = color_jitter(image, tf.random.experimental.stateless_fold_in(key, 2), jitter)
    if lighting_std:
      image = lighting(image, tf.random.experimental.stateless_fold_in(key, 3), lighting_std)
    image = image * 255
  if aug.random_erasing:
    image = deit_augment.random_erasing(tf.cast(image, tf.float32), tf.random.experimental.stateless_fold_in(key, 5),
                                        aug.random_erasing, spec.mean, spec.std)
  return {'image': image, 'label': example['label']}


def grayscale(image):
  """(H, W, 3) float RGB -> (H, W, 1) luma 0.299 R + 0.587 G + 0.114 B."""
  return tf.reduce_sum(image * tf.constant(_GRAY_WEIGHTS, image.dtype), axis=-1, keepdims=True)


def adjust_brightness(image, factor):
  """factor · image: a blend with black (torchvision's adjust_brightness without its clamp to [0, 1])."""
  return factor * image


def adjust_contrast(image, factor):
  """factor · image + (1 − factor) · the mean luma of the whole image (torchvision's formula, no clamp)."""
  return factor * image + (1 - factor) * tf.reduce_mean(grayscale(image))


def adjust_saturation(image, factor):
  """factor · image + (1 − factor) · the pixel's luma (torchvision's formula, no clamp)."""
  return factor * image + (1 - factor) * grayscale(image)


def jitter_parameters(key, strength):
  """(factors float32 (3,), order int32 (3,)) for `color_jitter`: brightness, contrast and saturation factors
  1 − a with a ~ U(−strength, strength) each, and a random permutation, the order in which to apply them (0, 1, 2
  for brightness, contrast, saturation)."""
  factor_key, order_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  factors = 1 - tf.random.stateless_uniform([3], seed=factor_key, minval=-strength, maxval=strength)
  order = tf.argsort(tf.random.stateless_uniform([3], seed=order_key))
  return factors, order


def color_jitter(image, key, strength):
  """Brightness, contrast and saturation jitter in a random order, random only through the stateless `key`.

  As the authors' ImageNet `ColorJitter` (AlignMixup's `imagenet/utils/util.py`, from convNet.pytorch): each op is
  `img.lerp(target, a)` = (1 − a) · img + a · target, a ~ U(−strength, strength), targets black, the image's mean
  luma and each pixel's luma; the three are shuffled per image and nothing is clamped. That is torchvision's
  ColorJitter(strength, strength, strength) without its clamping to [0, 1].

  Args:
    image: (H, W, 3) float32 RGB in [0, 1].
    key: stateless seed, shape (2,) int64.
    strength: the jitter strength (0.4 in the authors' ImageNet runs).

  Returns:
    (H, W, 3) float32.
  """
  factors, order = jitter_parameters(key, strength)
  ops = (adjust_brightness, adjust_contrast, adjust_saturation)
  for i in range(3):
    image = tf.switch_case(order[i], [lambda op=op, j=j, x=image: op(x, factors[j]) for j, op in enumerate(ops)])
  return image


def lighting(image, key, alphastd, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
  """AlexNet-style PCA lighting noise: image + eigvec @ (alpha · eigval) per pixel, alpha ~ N(0, alphastd²) (3,).

  As the authors' `Lighting` (AlignMixup's `imagenet/utils/util.py`), on [0, 1] pixels before normalisation,
  unclamped. image (H, W, 3) float32; key a stateless seed (2,) int64; eigvec's columns are the eigenvectors.
  """
  alpha = alphastd * tf.random.stateless_normal([3], seed=key)
  rgb = tf.linalg.matvec(tf.constant(eigvec, tf.float32), alpha * tf.constant(eigval, tf.float32))
  return image + rgb


def _resize(image, size, method):
  """To size × size, antialiased as PIL's resampling; clipped to [0, 255] (bicubic overshoots, PIL clips)."""
  return tf.clip_by_value(tf.image.resize(image, [size, size], method=method, antialias=True), 0.0, 255.0)


def _decode_random_resized_crop(jpeg, key, size, method):
  """Inception-style crop: area in [0.08, 1] of the image, aspect ratio in [3/4, 4/3], resized to size × size with
  `method` ('bilinear' or 'bicubic')."""
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.image.extract_jpeg_shape(jpeg), bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      seed=key, min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)  # after 10 failed attempts: the whole image
  window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  return _resize(image, size, method)


def _decode_center_crop(jpeg, size, method):
  """Evaluation crop: the central 224/256 of the shorter side, resized to size × size with `method`."""
  shape = tf.image.extract_jpeg_shape(jpeg)
  height, width = shape[0], shape[1]
  side = tf.cast(tf.round(_EVAL_CROP_FRACTION * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  window = tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  return _resize(image, size, method)


def _normalise(batch, spec) -> dict:
  """Pixels (0..255, any dtype) -> float32 standardised per channel; labels int32."""
  mean = tf.constant(spec.mean, tf.float32) * 255
  std = tf.constant(spec.std, tf.float32) * 255
  return {**batch, 'image': (tf.cast(batch['image'], tf.float32) - mean) / std}
