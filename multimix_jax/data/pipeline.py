"""Host batches on grain: per-process sharding, exact resume and masked evaluation, with no TensorFlow.

The host decodes, crops and flips; the batches it yields are uint8 pixels, and the accelerator normalises and does
the rest of the augmentation inside the train step (`multimix_jax.data.device_augment`).

`train_batches` yields an endless stream that is a pure function of its position. Epoch e shuffles the whole
training split with a permutation seeded by (seed, e), the same on every process; process p of P takes every P-th
example of it (`perm[p::P]`, cut to the same count on every process), and the epoch is that share in batches, the
remainder dropped. The crop and flip of an example are drawn from a generator seeded by (seed, epoch, its position
in the epoch): batch k of a run resumed at step k is batch k of the uninterrupted run, bit for bit, whatever the
number of threads. grain maps the positions over threads (decoders release the GIL): `config.input_threads`.

`eval_batches` makes one pass over the evaluation split: process p reads examples p, p + P, ..., the last batches
padded to full size with `mask` False, and every process yields the same number of batches.
"""

import functools
import os
from typing import Iterator

import grain
import jax
import numpy as np

from multimix_jax.data import sources
from multimix_jax.data import transforms

_END = 2**62  # the training stream has no end; grain's datasets need one
_SHUFFLE, _AUGMENT = 0, 1  # streams of the host's generators


def threads(config) -> int:
  """Threads that decode and augment: `config.input_threads`, or one per core this process may use (0)."""
  if config.input_threads:
    return config.input_threads
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1  # macOS: no affinity


def train_batches(config, *, local_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int | None = None, process_count: int | None = None) -> Iterator[dict]:
  """Endless training batches of this process, from global step `start_step` on.

  Yields:
    {'image': uint8 (local_batch_size, H, W, C), 'label': int32 (local_batch_size,)}. The stream depends only on
    (config, local_batch_size, seed, process_index, process_count): `start_step=k` yields exactly what
    `start_step=0` yields from its k-th batch on.
  """
  data = sources.resolve(config)
  process_index, process_count = _process(process_index, process_count)
  if local_batch_size < 1 or start_step < 0:
    raise ValueError(f'local_batch_size={local_batch_size} must be >= 1 and start_step={start_step} >= 0.')
  split, spec = data.train, data.spec
  per_process = len(split) // process_count
  steps_per_epoch = per_process // local_batch_size
  if steps_per_epoch < 1:
    raise ValueError(f'local_batch_size={local_batch_size} exceeds the {per_process} training examples of process '
                     f'{process_index}/{process_count}.')
  epoch_size = steps_per_epoch * local_batch_size

  @functools.lru_cache(maxsize=2)  # the current epoch's, and the next one's while threads read ahead
  def order(epoch):
    """This process's record indices in `epoch`: its share of a permutation of the whole split."""
    permutation = np.random.default_rng([seed, _SHUFFLE, epoch]).permutation(len(split))
    return permutation[process_index::process_count][:per_process]

  if split.decoded and spec.crop != 'random_resized_crop':
    def batch(step):  # small images in memory: a whole batch cropped and flipped at once
      epoch, first = divmod(step, steps_per_epoch)
      indices = order(epoch)[first * local_batch_size:(first + 1) * local_batch_size]
      rng = np.random.default_rng([seed, _AUGMENT, epoch, first, process_index, process_count])
      images = split.images[indices]
      if spec.crop == 'pad_crop_flip':
        images = transforms.pad_crop_flip(images, rng, spec.padding, flip=spec.flip)
      elif spec.flip:
        images = transforms.flip_left_right(images, rng.random(len(images)) < 0.5)
      return {'image': images, 'label': split.labels[indices]}

    dataset = grain.MapDataset.range(start_step, _END).map(batch)
  else:
    def example(position):  # an image of any size, decoded (if encoded), cropped and resized, flipped
      epoch, rank = divmod(position, epoch_size)
      image, label = split[order(epoch)[rank]]
      # Keyed by its place in the epoch's permutation, the same whatever the number of processes.
      rng = np.random.default_rng([seed, _AUGMENT, epoch, rank * process_count + process_index])
      image = _random_resized_crop(image, rng, data, config.augment.resize)
      if spec.flip and rng.random() < 0.5:
        image = image[:, ::-1]
      return image, label

    dataset = (grain.MapDataset.range(start_step * local_batch_size, _END).map(example)
               .batch(local_batch_size, batch_fn=_stack))
  return _iterate(dataset, config)


def eval_batches(config, *, local_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict]:
  """One pass over this process's share of the evaluation split (test or validation).

  Yields:
    {'image': uint8 (local_batch_size, H, W, C), 'label': int32 (local_batch_size,), 'mask': bool
    (local_batch_size,)}: `mask` is False on padding. Shares cover the split exactly once across processes, and
    every process yields the same number of batches (fully masked ones where its share runs out first).
  """
  data = sources.resolve(config)
  process_index, process_count = _process(process_index, process_count)
  if local_batch_size < 1:
    raise ValueError(f'local_batch_size={local_batch_size} must be >= 1.')
  split = data.eval
  share = np.arange(process_index, len(split), process_count)
  num_batches = -(-(-(-len(split) // process_count)) // local_batch_size)  # of the largest share
  mask = np.zeros(num_batches * local_batch_size, bool)
  mask[:len(share)] = True
  indices = np.resize(share, len(mask)) if len(share) else np.zeros(len(mask), np.int64)

  if split.decoded and data.spec.crop != 'random_resized_crop':
    def batch(b):
      taken = indices[b * local_batch_size:(b + 1) * local_batch_size]
      return {'image': split.images[taken], 'label': split.labels[taken],
              'mask': mask[b * local_batch_size:(b + 1) * local_batch_size]}

    dataset = grain.MapDataset.range(num_batches).map(batch)
  else:
    def example(position):
      image, label = split[indices[position]]
      return _center_crop(image, data, config.augment.resize), label, mask[position]

    dataset = grain.MapDataset.range(len(mask)).map(example).batch(local_batch_size, batch_fn=_stack)
  return _iterate(dataset, config)


def _random_resized_crop(image, rng, data, resize):
  if isinstance(image, np.ndarray):
    return transforms.random_resized_crop(image, rng, data.image_size, resize)
  return transforms.decode_random_resized_crop(image, rng, data.image_size, resize, channels=data.spec.channels)


def _center_crop(image, data, resize):
  """Evaluation's view of a random-resized-crop dataset (the others are decoded in memory and batched as they are)."""
  if isinstance(image, np.ndarray):
    return transforms.center_crop(image, data.image_size, resize)
  return transforms.decode_center_crop(image, data.image_size, resize, channels=data.spec.channels)


def _stack(examples):
  """A batch of (image, label[, mask]) tuples -> {'image': uint8 (b, H, W, C), 'label': int32 (b,)[, 'mask']}."""
  columns = list(zip(*examples))
  batch = {'image': np.stack(columns[0]), 'label': np.asarray(columns[1], np.int32)}
  if len(columns) > 2:
    batch['mask'] = np.asarray(columns[2], bool)
  return batch


def _iterate(dataset, config) -> Iterator[dict]:
  count = threads(config)
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=count, prefetch_buffer_size=2 * count)))


def _process(process_index, process_count) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, process_count={process_count}).')
  return process_index, process_count
