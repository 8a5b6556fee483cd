"""`--input`: images/s of the host's input pipeline alone (read, decode, crop, flip; no TensorFlow), per host.

Each source is read as the trainer reads it (`multimix_jax.data.train_batches`), from data generated here
(`multimix_jax.data.synthetic`) unless `--data_dir` holds the real dataset prepared:

| source | what is timed |
| --- | --- |
| digits | the real dataset, in memory: gather and batch (no augmentation) |
| cifar10, cifar100, tiny_imagenet | small images prepared as ArrayRecord with the catalog's metadata, decoded into memory once (start-up), then padded, cropped and flipped a batch at a time |
| imagenet2012 | JPEGs of ImageNet's size and quality prepared as ArrayRecord: read, decoded, random-resized cropped to 224 and flipped per example (ImageNet's whole host transform; colour jitter, lighting and normalisation run on the accelerator) |
| folder | the same JPEGs as a folder of images in class sub-folders, read from their files |
"""

import itertools
import os
import tempfile
import time

import numpy as np

from multimix_jax.benchmark.presets import BenchmarkError, default_config

SOURCES = ('digits', 'cifar10', 'cifar100', 'tiny_imagenet', 'imagenet2012', 'folder')
_DISTINCT_JPEGS = 256  # ImageNet-sized JPEGs generated; a larger source cycles through them
_FOLDER_CLASSES = 10


def input_benchmark(names: list[str], *, batch_size: int, batches: int, warmup: int, mock_examples: int,
                    data_dir: str | None = None, threads: int = 0, log=print) -> list[dict]:
  """Images/s of `multimix_jax.data.train_batches` alone, per host, for each source of `names` (SOURCES).

  `mock_examples`: training examples of a generated source; `threads`: `config.input_threads` (0: one per core).
  """
  from multimix_jax import data  # pylint: disable=g-import-not-at-top
  from multimix_jax.data import transforms  # pylint: disable=g-import-not-at-top

  for name in names:
    if name not in SOURCES:
      raise BenchmarkError(f'--input_datasets: {name!r} is unknown; choose from {", ".join(SOURCES)}.')
  jpegs = None
  rows = []
  for name in names:
    config = default_config()
    config.input_threads = threads
    with tempfile.TemporaryDirectory() as scratch:
      if name in ('imagenet2012', 'folder') and jpegs is None:
        jpegs = transforms.synthetic_jpegs(min(mock_examples, _DISTINCT_JPEGS))
      config.dataset, source = _source(name, scratch, data_dir, mock_examples, jpegs)
      config.data_dir = data_dir if source.startswith('real') else scratch
      started = time.perf_counter()
      stream = data.train_batches(config, local_batch_size=batch_size, seed=0)
      for _ in range(warmup):
        next(stream)
      startup_s = time.perf_counter() - started
      started = time.perf_counter()
      for _ in range(batches):
        batch = next(stream)
      elapsed = time.perf_counter() - started
    cores = len(os.sched_getaffinity(0))
    row = {'dataset': name, 'source': source, 'cores': cores, 'threads': config.input_threads or cores,
           'image_shape': list(batch['image'].shape[1:]), 'dtype': str(batch['image'].dtype),
           'batch_size': batch_size, 'batches': batches, 'startup_s': startup_s,
           'images_per_s': batch_size * batches / elapsed}
    log(f'[input] {name}: {row["images_per_s"]:,.0f} images/s on {cores} core(s)')
    rows.append(row)
  return rows


def _source(name, scratch, data_dir, examples, jpegs) -> tuple[str, str]:
  """(config.dataset, a description) of the source `name`, generated in `scratch` unless prepared in data_dir."""
  from multimix_jax.data import catalog  # pylint: disable=g-import-not-at-top
  from multimix_jax.data import prepare  # pylint: disable=g-import-not-at-top
  from multimix_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  if name == 'digits':
    return name, 'real (scikit-learn, in memory)'
  if name == 'folder':
    per_class = max(1, examples // _FOLDER_CLASSES)
    root = synthetic.write_folder(os.path.join(scratch, 'folder'), classes=[f'c{i}' for i in range(_FOLDER_CLASSES)],
                                  per_class=(per_class, 1), images=jpegs)
    return root, f'{per_class * _FOLDER_CLASSES} JPEG files in class folders ({_describe(jpegs)})'
  if data_dir:
    try:
      prepare.find_prepared(name, data_dir)
      return name, f'real (prepared in {data_dir})'
    except prepare.DatasetNotFoundError:
      pass
  eval_split = catalog.DATASETS[name].eval_split
  if name == 'imagenet2012':
    cycle = itertools.cycle(jpegs)
    images = lambda rng, shape, kind: next(cycle)
    synthetic.prepare_catalog(name, scratch, {'train': examples, eval_split: 8}, images=images)
    return name, f'ArrayRecord, {examples} records cycling through {_describe(jpegs)}'
  synthetic.prepare_catalog(name, scratch, {'train': examples, eval_split: 8})
  return name, f'ArrayRecord, {examples} generated images (decoded into memory at start-up)'


def _describe(jpegs) -> str:
  from multimix_jax.data import transforms  # pylint: disable=g-import-not-at-top
  sizes = np.array([transforms.encoded_size(j) for j in jpegs])
  return (f'{len(jpegs)} synthetic JPEGs, mean {sizes[:, 1].mean():.0f}×{sizes[:, 0].mean():.0f}, '
          f'{np.mean([len(j) for j in jpegs]) / 1e3:.0f} kB')
