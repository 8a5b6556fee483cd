"""`--input`: images/s of the TFDS input pipeline alone, per host (the only part of the benchmark that imports
TensorFlow, and only when called)."""

import contextlib
import functools
import os
import tempfile
import time

import numpy as np

from multimix_jax.benchmark.settings import BenchmarkError, default_config


def input_benchmark(datasets: list[str], *, batch_size: int, batches: int, warmup: int, mock_examples: int,
                    data_dir: str | None = None, log=print) -> list[dict]:
  """Images/s of `multimix_jax.data.train_batches` alone, per host, for each dataset.

  `digits` is read for real (built offline in `data_dir` on first use); any other dataset is read under
  `tfds.testing.mock_data` (metadata written to a temporary directory), so its reading, augmentation and
  normalisation are measured without downloading it. Mocked examples are random features of the dataset's shapes,
  except ImageNet's: `synthetic_jpegs` of ImageNet's size and quality, since its cost is mostly decoding.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from multimix_jax import data  # pylint: disable=g-import-not-at-top

  for name in datasets:
    if name not in data.DATASETS:
      raise BenchmarkError(f'--input_datasets: {name!r} is unknown; choose from {", ".join(data.DATASETS)}.')
  rows = []
  for name in datasets:
    spec = data.DATASETS[name]
    config = default_config()
    config.dataset, config.num_classes, config.data_dir = name, spec.num_classes, data_dir
    config.image_size = spec.size or 224
    mocked = name != 'digits'
    with contextlib.ExitStack() as stack:
      if mocked:
        config.data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        _write_mock_metadata(tfds, config.data_dir, name, {'train': mock_examples, spec.eval_split: mock_examples})
        jpegs = synthetic_jpegs(min(mock_examples, 256)) if spec.augment == 'inception' else None
        as_dataset_fn = None if jpegs is None else functools.partial(_jpeg_dataset, jpegs, mock_examples)
        stack.enter_context(tfds.testing.mock_data(num_examples=mock_examples, data_dir=config.data_dir,
                                                   policy=tfds.testing.MockPolicy.USE_FILES,
                                                   as_dataset_fn=as_dataset_fn))
      started = time.perf_counter()
      stream = data.train_batches(config, local_batch_size=batch_size, seed=0)
      for _ in range(warmup):
        next(stream)
      startup_s = time.perf_counter() - started
      started = time.perf_counter()
      for _ in range(batches):
        batch = next(stream)
      elapsed = time.perf_counter() - started
    source = 'real (offline)' if not mocked else 'tfds.testing.mock_data'
    if mocked and jpegs is not None:
      sizes = np.array([_jpeg_shape(j) for j in jpegs])
      source += (f' with {len(jpegs)} synthetic JPEGs, mean {sizes[:, 1].mean():.0f}×{sizes[:, 0].mean():.0f}, '
                 f'{np.mean([len(j) for j in jpegs]) / 1e3:.0f} kB')
    row = {'dataset': name, 'source': source, 'cores': len(os.sched_getaffinity(0)),
           'image_shape': list(batch['image'].shape[1:]), 'batch_size': batch_size, 'batches': batches,
           'startup_s': startup_s, 'images_per_s': batch_size * batches / elapsed}
    log(f'[input] {name}: {row["images_per_s"]:,.0f} images/s')
    rows.append(row)
  return rows


def _write_mock_metadata(tfds, data_dir, name, split_sizes):
  """The dataset_info of `name` with these split sizes, which `mock_data(policy=USE_FILES)` reads."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0) for split, size in split_sizes.items()]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


# ImageNet's training images: about 400×350 pixels on average, JPEG quality about 90, 110 kB.
IMAGENET_MEAN_SIZE = (350, 400)  # (H, W)


def synthetic_jpegs(count: int, *, seed: int = 0, quality: int = 90) -> list[bytes]:
  """`count` JPEGs of ImageNet's size distribution around IMAGENET_MEAN_SIZE (±25% per side), encoded at
  `quality`, with smooth content plus fine noise so that they compress as photographs do (not as flat colour)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    height, width = (int(s * rng.uniform(0.75, 1.25)) for s in IMAGENET_MEAN_SIZE)
    coarse = rng.uniform(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    image = tf.image.resize(coarse, (height, width), method='bicubic').numpy()
    image += rng.normal(0, 25, image.shape)
    out.append(tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=quality).numpy())
  return out


def _jpeg_shape(jpeg: bytes) -> tuple[int, int]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tuple(int(v) for v in tf.image.extract_jpeg_shape(jpeg)[:2])


def _jpeg_dataset(jpegs, num_examples, *args, **kwargs):
  """`builder.as_dataset` under mock_data: `num_examples` records cycling through `jpegs`, as JPEG bytes (the
  pipeline skips TFDS's decoding for ImageNet and decodes only the crop)."""
  del args, kwargs  # the builder's split, decoders and read config: one stream serves every split
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = tf.constant(jpegs)
  return tf.data.Dataset.range(num_examples).map(
      lambda i: {'image': images[i % len(jpegs)], 'label': tf.cast(i % 1000, tf.int64)})
