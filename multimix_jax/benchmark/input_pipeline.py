"""`--input`: images/s of the TFDS input pipeline alone, per host (the only part of the benchmark that imports
TensorFlow, and only when called)."""

import contextlib
import os
import tempfile
import time

from multimix_jax.benchmark.settings import BenchmarkError, default_config


def input_benchmark(datasets: list[str], *, batch_size: int, batches: int, warmup: int, mock_examples: int,
                    data_dir: str | None = None, log=print) -> list[dict]:
  """Images/s of `multimix_jax.data.train_batches` alone, per host, for each dataset.

  `digits` is read for real (built offline in `data_dir` on first use); any other dataset is read under
  `tfds.testing.mock_data` (random examples of the dataset's features, metadata written to a temporary
  directory), so its reading, augmentation and normalisation are measured without downloading it. Mocked
  ImageNet JPEGs are tiny (5 to 49 pixels), so its figure leaves out most of the real decoding cost.
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
        stack.enter_context(tfds.testing.mock_data(num_examples=mock_examples, data_dir=config.data_dir,
                                                   policy=tfds.testing.MockPolicy.USE_FILES))
      started = time.perf_counter()
      stream = data.train_batches(config, local_batch_size=batch_size, seed=0)
      for _ in range(warmup):
        next(stream)
      startup_s = time.perf_counter() - started
      started = time.perf_counter()
      for _ in range(batches):
        batch = next(stream)
      elapsed = time.perf_counter() - started
    row = {'dataset': name, 'source': 'tfds.testing.mock_data' if mocked else 'real (offline)',
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
