"""Datasets prepared once as ArrayRecord in a TFDS data_dir, and the trainer's lookup of them.

    python -m multimix_jax.data.prepare --dataset=NAME --data_dir=DIR [--manual_dir=DIR]

One command for every dataset; what it does depends on what `data_dir` already holds (`prepare`):

- NAME prepared as ArrayRecord: nothing (a rerun is a no-op that says so).
- NAME prepared as TFRecord (a copy made by an older TFDS or a tf.data setup): converted in place, record for
  record, without TensorFlow and without downloading. TFRecord framing is `uint64 length | uint32 masked
  crc32c(length) | data | uint32 masked crc32c(data)`, and `data` is the serialized tf.train.Example that TFDS's
  ArrayRecord files hold too, so each `<name>-<split>.tfrecord-0000i-of-0000n` is copied into
  `<name>-<split>.array_record-0000i-of-0000n` (the name `tfds.data_source` reads). The TFRecord files are kept
  and `array_record` is added to `alternativeFileFormats` of dataset_info.json, as TFDS's own in-place
  `convert_format` does: `tfds.data_source` then reads the new files, `tf.data` readers still the old ones.
- Otherwise built by its TFDS builder with `file_format='array_record'`: `tiny_imagenet` from
  `<manual_dir>/tiny-imagenet-200.zip`, `imagenet2012` from `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar`
  in the manual dir (default `<data_dir>/downloads/manual`), `cifar10` and `cifar100` from their TFDS archive
  (`cifar-10-binary.tar.gz`, `cifar-100-binary.tar.gz`) found in the manual dir or downloaded (see `cifar`), any
  other TFDS catalog name by downloading it.

TensorFlow is needed only to build a TFDS catalog dataset (`pip install 'multimix_jax[prepare]'`) other than
cifar10 and cifar100. The decision is by name, not by probing a builder: TFDS's download and extraction write files
through `tf.io.gfile` (tensorflow_datasets/core/download/extractor.py), the catalog's NumPy-image builders (mnist,
svhn_cropped, ...) are encoded with `tf.image.encode_png`, and imagenet2012's builder finds its tars with
`tf.io.gfile` and re-encodes its CMYK and PNG images with `tf.image`. So every builder outside `TF_FREE_BUILDERS`
is refused up front, in one `error:` line, when `import tensorflow` fails. Conversion never needs it.
`TF_FREE_BUILDERS` are this project's builders that yield encoded bytes read from a local file, and TFDS's cifar10
and cifar100 builders with their two TensorFlow steps (extracting the tar.gz, encoding NumPy images) replaced by
`tarfile` and Pillow (`cifar.builder`): the same dataset as TFDS's, PNG bytes aside. These two take that path
whether TensorFlow is installed or not, so that every machine writes the same files. tests/test_prepare.py prepares
each with TensorFlow hidden.

Interruptions: a conversion writes each shard under a temporary name and renames it once complete and counted, so
a rerun skips the finished shards and starts the others over; dataset_info.json changes last. A TFDS build writes
into a temporary folder renamed when every split is written: a rerun of an interrupted build generates every split
again (downloads already in <data_dir>/downloads are reused, not fetched again), and a prepared dataset is never
rebuilt.

`find_prepared` is what the trainer calls: metadata only, no download, no TensorFlow.
"""

import contextlib
import dataclasses
import importlib
import os
import shlex
import shutil
import struct
from typing import Callable, Iterator

from absl import logging
from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_info as dataset_info_lib

from multimix_jax.data import tiny_imagenet  # registers the 'tiny_imagenet' builder
from multimix_jax.data.prepare import cifar

COMMAND = 'python -m multimix_jax.data.prepare'
PREPARE_EXTRA = "pip install 'multimix_jax[prepare]'"
ARRAY_RECORD = tfds.core.FileFormat.ARRAY_RECORD
TFRECORD = tfds.core.FileFormat.TFRECORD
# Builders that prepare without TensorFlow: they yield encoded image bytes read from a local file (cifar10 and
# cifar100: TFDS's builders with the archive read by tarfile and the images encoded by Pillow, see `cifar`).
TF_FREE_BUILDERS = frozenset({'tiny_imagenet', *cifar.LAYOUTS})
# Datasets built from files the user downloads by hand: name -> (files in the manual dir, where to get them).
MANUAL_FILES = {
    'tiny_imagenet': ((tiny_imagenet.ARCHIVE,), f'http://cs231n.stanford.edu/{tiny_imagenet.ARCHIVE}'),
    'imagenet2012': (('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'), 'https://image-net.org/, with an account'),
}
_GB = 1e9
_TEMPORARY_SUFFIX = '.incomplete'  # a shard being converted, renamed without it once complete
_ARRAY_RECORD_OPTIONS = 'group_size:1'  # as TFDS writes them: one record per chunk, cheap random access


class DatasetNotFoundError(RuntimeError):
  """Not prepared in data_dir (or prepared only as TFRecord); the message says the one command that fixes it."""


class DatasetError(ValueError):
  """Prepared, but unusable for image classification (no 'image'/'label' features, unknown split, ...); one-line
  message."""


class PrepareRefused(ValueError):
  """`prepare` cannot start (TensorFlow or a manual file missing, too little disk, ...): one line, nothing done."""


class CorruptRecordError(RuntimeError):
  """A TFRecord shard is truncated, fails its crc32c or holds another number of records than dataset_info says."""


@dataclasses.dataclass(frozen=True)
class TfdsInfo:
  """What the trainer needs of a prepared dataset; `image_shape` is (H, W, C) with None where it varies."""
  name: str
  data_dir: str
  num_classes: int
  class_names: tuple[str, ...] | None
  splits: dict[str, int]
  image_shape: tuple
  image_encoding: str | None
  train_split: str
  eval_split: str
  image_key: str = 'image'  # the features holding the image and its label (the builder's supervised_keys)
  label_key: str = 'label'


def default_data_dir() -> str:
  """TFDS's default data_dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return tfds.core.constants.get_default_data_dir()


def prepare_command(name: str, data_dir: str, manual_dir: str | None = None) -> str:
  """The command line that prepares `name` in `data_dir`, quoted for a POSIX shell."""
  command = f'{COMMAND} --dataset={shlex.quote(name)} --data_dir={shlex.quote(os.fspath(data_dir))}'
  return command + (f' --manual_dir={shlex.quote(os.fspath(manual_dir))}' if manual_dir else '')


def manual_dir_of(data_dir: str) -> str:
  """TFDS's default manual dir of `data_dir`."""
  return os.path.join(os.fspath(data_dir), 'downloads', 'manual')


def find_prepared(name: str, data_dir: str | None) -> TfdsInfo:
  """The ArrayRecord copy of `name` in `data_dir` (None: TFDS's default, `default_data_dir()`).

  Reads metadata only (dataset_info.json, features.json and the folder's file names): never downloads, never
  imports TensorFlow. The trainer then reads it with `tfds.data_source(name, split=..., data_dir=...)`.

  >>> info = find_prepared('cifar10', '~/tensorflow_datasets')  # doctest: +SKIP
  >>> info.num_classes, info.splits, info.image_shape, info.eval_split  # doctest: +SKIP
  (10, {'test': 10000, 'train': 50000}, (32, 32, 3), 'test')

  Raises:
    DatasetNotFoundError: not prepared in `data_dir`, or prepared only as TFRecord; the message gives the exact
      `python -m multimix_jax.data.prepare ...` command (with --data_dir) that fixes it.
    DatasetError: an unknown name, or a dataset without an Image feature, a ClassLabel label, a 'train' split, or a
      'test' / 'validation' split to evaluate on.
  """
  data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
  builder = _builder(name, data_dir)
  if not _is_prepared(builder):
    raise DatasetNotFoundError(f'Dataset {name} is not prepared in data_dir={data_dir}.\n'
                               f'{_how_to_prepare(name, data_dir)}')
  if not _has_array_record(builder):
    raise DatasetNotFoundError(
        f'Dataset {name} in data_dir={data_dir} is prepared as TFRecord only ({builder.data_path}); training reads '
        f'ArrayRecord. Convert it once (no download, no TensorFlow, about {_size(_tfrecord_bytes(builder))} more '
        f'disk) with\n  {prepare_command(name, data_dir)}')
  info = builder.info
  image_key, label_key = 'image', 'label'
  keys = info.supervised_keys
  if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    image_key, label_key = keys
  features = info.features
  if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
    raise DatasetError(f'Dataset {name} has no image feature {image_key!r} (features: {sorted(features.keys())}); '
                       'image classification needs a tfds.features.Image.')
  if label_key not in features or not isinstance(features[label_key], tfds.features.ClassLabel):
    raise DatasetError(f'Dataset {name} has no ClassLabel feature {label_key!r} (features: '
                       f'{sorted(features.keys())}); image classification needs one.')
  splits = {split: split_info.num_examples for split, split_info in sorted(info.splits.items())}
  if 'train' not in splits:
    raise DatasetError(f"Dataset {name} has no 'train' split (splits: {sorted(splits)}).")
  eval_split = next((s for s in ('test', 'validation') if s in splits), None)
  if eval_split is None:
    raise DatasetError(f"Dataset {name} has neither a 'test' nor a 'validation' split to evaluate on (splits: "
                       f'{sorted(splits)}).')
  image, label = features[image_key], features[label_key]
  names = tuple(label.names)
  return TfdsInfo(name=name, data_dir=data_dir, num_classes=label.num_classes,
                  class_names=None if names == tuple(str(i) for i in range(label.num_classes)) else names,
                  splits=splits, image_shape=tuple(image.shape), image_encoding=image.encoding_format,
                  train_split='train', eval_split=eval_split, image_key=image_key, label_key=label_key)


def prepare(name: str, data_dir: str | None, manual_dir: str | None = None, *,
            report: Callable[[str], None] = print) -> str:
  """Prepares `name` in `data_dir` as ArrayRecord (see the module docstring) and returns what it did, one line.

  `report` gets the plan (what it will do, the disk it needs) before any work.

  Raises:
    PrepareRefused: before any work; one line that says what to do (install the `prepare` extra, place a manual
      file, free disk, ...).
    CorruptRecordError: a TFRecord shard to convert is damaged; the shards converted before it are kept.
  """
  data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
  manual_dir = os.path.expanduser(manual_dir) if manual_dir else None
  try:
    builder = _builder(name, data_dir)
  except DatasetError as e:
    raise PrepareRefused(str(e)) from None
  if _is_prepared(builder):
    if _has_array_record(builder):
      return f'{name} is already prepared as ArrayRecord in {builder.data_path}: nothing to do.'
    return _convert(name, builder, report)
  return _build(name, data_dir, manual_dir, report)


# Building with TFDS.


def _build(name, data_dir, manual_dir, report) -> str:
  base = _base(name)
  manual = manual_dir or manual_dir_of(data_dir)
  if base in cifar.LAYOUTS:
    return _build_cifar(name, data_dir, manual, report)
  needed = None
  if base in MANUAL_FILES:
    files, source = MANUAL_FILES[base]
    missing = [f for f in files if not os.path.exists(os.path.join(manual, f))]
    if missing:
      raise PrepareRefused(f'{name} is built from {" and ".join(files)} (download from {source}), not by TFDS: place '
                           f'{" and ".join(missing)} (not extracted) in {manual}/ and rerun.')
    needed = sum(os.path.getsize(os.path.join(manual, f)) for f in files)  # prepared ≈ the images as they are
    what = f'{_size(needed)} (the size of {" + ".join(files)})'
  if base not in TF_FREE_BUILDERS and not _tensorflow_available():
    raise PrepareRefused(f'preparing {name} with its TFDS builder needs TensorFlow (TFDS downloads, extracts and '
                         f'encodes images with it); install it with {PREPARE_EXTRA} and rerun. (Converting a copy '
                         'already prepared as TFRecord does not need it.)')
  builder = _builder(name, data_dir, file_format=ARRAY_RECORD)
  if needed is None:
    urls = getattr(type(builder), 'url_infos', None) or {}
    download = sum(u.size or 0 for u in urls.values())
    if download:
      needed = 2 * download
      what = f'about {_size(needed)} (download {_size(download)}, prepared about as much; archives are extracted '\
             'on top)'
    else:
      what = 'unknown (TFDS lists no download size for it)'
  report(f'Preparing {name} in {builder.data_path} as ArrayRecord; disk needed: {what}.')
  _check_disk(needed, data_dir, f'preparing {name}')
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=config)
  splits = {split: info.num_examples for split, info in sorted(builder.info.splits.items())}
  return f'{name} prepared as ArrayRecord in {builder.data_path}: {splits}.'


def _build_cifar(name, data_dir, manual, report) -> str:
  """cifar10 / cifar100 without TensorFlow (see `cifar`): the archive found or downloaded, checked, then built."""
  base = _base(name)
  installed = tfds.builder_cls(base).VERSION
  if str(installed) != cifar.REPRODUCED_VERSION:
    raise PrepareRefused(f'the installed tensorflow-datasets builds {base} {installed}, but this command reproduces '
                         f'{base} {cifar.REPRODUCED_VERSION} only; install tensorflow-datasets 4.9.x.')
  downloads = os.path.join(data_dir, 'downloads')
  expected = cifar.url_info(base)
  archive = cifar.find_archive(base, manual, downloads)
  with _quiet():
    builder = cifar.builder(base, data_dir, version=name.partition(':')[2] or None)
  prepared = int(expected.size)  # PNG-encoded images take about as much as the archive
  if archive is None:
    source, needed = f'downloading {cifar.LAYOUTS[base].url} into {downloads}/', 2 * prepared
    what = f'about {_size(needed)} (download {_size(prepared)}, prepared about as much)'
  else:
    source, needed = f'from {archive}', prepared
    what = f'about {_size(needed)}'
  report(f'Preparing {name} in {builder.data_path} as ArrayRecord without TensorFlow, {source}; disk needed: {what}.')
  _check_disk(needed, data_dir, f'preparing {name}')
  try:
    if archive is None:
      archive = cifar.download_archive(base, downloads, manual)
    else:
      cifar.check_archive(base, archive)
  except cifar.ArchiveError as e:
    raise PrepareRefused(str(e)) from None
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(archive.parent)))
  splits = {str(split): info.num_examples for split, info in sorted(builder.info.splits.items())}
  return f'{name} prepared as ArrayRecord in {builder.data_path}: {splits}.'


def _tensorflow_available() -> bool:
  try:
    importlib.import_module('tensorflow')
  except ImportError:
    return False
  return True


# Converting a TFRecord copy.


def _convert(name, builder, report) -> str:
  directory = epath.Path(builder.data_path)
  proto = dataset_info_lib.read_proto_from_builder_dir(directory)
  source = proto.file_format or TFRECORD.value  # TFDS before 4.5 wrote no file format: TFRecord was the only one
  if source != TFRECORD.value:
    state = 'with ArrayRecord shards missing' if source == ARRAY_RECORD.value else f'as {source}'
    raise PrepareRefused(f'{name} in {directory} is prepared {state}, which this command does not repair or '
                         f'convert; delete {directory} and rerun.')
  shards = _shard_pairs(proto, directory, source)
  for leftover in directory.glob(f'*{_TEMPORARY_SUFFIX}'):  # from an interrupted run: that shard starts over
    leftover.unlink()
  todo = [(src, dst, n) for src, dst, n in shards if not dst.exists()]
  needed = sum(src.stat().length for src, _, _ in todo)
  report(f'Converting {name} in {directory} from TFRecord to ArrayRecord without downloading: {len(todo)} of '
         f'{len(shards)} shards to write, disk needed: {_size(needed)} (the TFRecord files stay).')
  _check_disk(needed, directory, f'converting {name}')
  if _crc32c is None:
    report('CRCs not checked (google-crc32c is not installed); framing and record counts are.')
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top  # a TFDS dependency
  with tqdm.tqdm(total=sum(n for _, _, n in todo), unit=' examples', desc=f'Converting {name}') as bar:
    for src, dst, n in todo:
      _convert_shard(src, dst, n, bar.update)
  _add_array_record_format(proto, directory)
  counts = {split.name: sum(int(n) for n in split.shard_lengths) for split in proto.splits}
  return (f'{name} converted to ArrayRecord in {directory} ({len(todo)} shards written, '
          f'{len(shards) - len(todo)} already done): {dict(sorted(counts.items()))}.')


def _shard_pairs(proto, directory, source) -> list[tuple[epath.Path, epath.Path, int]]:
  """(TFRecord shard, ArrayRecord shard, records) of every split, with TFDS's file names for each format."""
  sources = dataset_info_lib.get_split_dict_from_proto(proto, directory, file_format=source)
  targets = dataset_info_lib.get_split_dict_from_proto(proto, directory, file_format=ARRAY_RECORD)
  pairs = []
  for split, split_info in sources.items():
    for src, dst, n in zip(split_info.filepaths, targets[split].filepaths, split_info.shard_lengths):
      if not src.exists():
        raise PrepareRefused(f'{src} is missing: the TFRecord copy of split {split} is incomplete; prepare the '
                             'dataset again in another data_dir.')
      pairs.append((epath.Path(src), epath.Path(dst), int(n)))
  return pairs


def _convert_shard(src, dst, num_records, update):
  """Copies the records of TFRecord `src` into ArrayRecord `dst`, written under a temporary name then renamed."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  temporary = dst.parent / (dst.name + _TEMPORARY_SUFFIX)
  writer = array_record_module.ArrayRecordWriter(os.fspath(temporary), _ARRAY_RECORD_OPTIONS)
  count = 0
  try:
    for record in read_tfrecord(src):
      writer.write(record)
      count += 1
      update(1)
    writer.close()
    if count != num_records:
      raise CorruptRecordError(f'{src} holds {count} records, dataset_info.json says {num_records}.')
  except BaseException:
    if writer.is_open():
      writer.close()
    temporary.unlink(missing_ok=True)
    raise
  temporary.rename(dst)


def read_tfrecord(path: epath.PathLike) -> Iterator[bytes]:
  """The records of a TFRecord file, checking its framing and, where google-crc32c is installed, its crc32c."""
  with epath.Path(path).open('rb') as f:
    while header := f.read(12):
      if len(header) < 12:
        raise CorruptRecordError(f'{path} is truncated (a partial record header at its end).')
      length, length_crc = struct.unpack('<QI', header)
      if _crc32c is not None and masked_crc32c(header[:8]) != length_crc:
        raise CorruptRecordError(f'{path}: a record length fails its crc32c.')
      data = f.read(length)
      footer = f.read(4)
      if len(data) < length or len(footer) < 4:
        raise CorruptRecordError(f'{path} is truncated (its last record is incomplete).')
      if _crc32c is not None and masked_crc32c(data) != struct.unpack('<I', footer)[0]:
        raise CorruptRecordError(f'{path}: a record fails its crc32c.')
      yield data


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C of `data` (needs google-crc32c)."""
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def _load_crc32c():
  try:
    import google_crc32c  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return google_crc32c.value


_crc32c = _load_crc32c()


def _add_array_record_format(proto, directory):
  """Makes ArrayRecord the copy's file format in dataset_info.json, TFRecord an alternative; written atomically.

  The primary format, not only an alternative as TFDS's in-place `convert_format` writes it: a registered builder
  (`tfds.builder(name)`, hence `tfds.data_source`) restores `fileFormat` from dataset_info.json but not
  `alternativeFileFormats`, and would find no random-access format.
  """
  del proto.alternative_file_formats[:]
  proto.alternative_file_formats.append(TFRECORD.value)
  proto.file_format = ARRAY_RECORD.value
  path = dataset_info_lib.dataset_info_path(directory)
  temporary = path.parent / (path.name + _TEMPORARY_SUFFIX)
  temporary.write_text(dataset_info_lib.get_dataset_info_json(proto))
  temporary.replace(path)  # atomic where the file system allows it (local, POSIX)


# Shared.


@contextlib.contextmanager
def _quiet():
  """Without TFDS's warning that the folder of a dataset not prepared yet has no dataset_info.json."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


def _builder(name, data_dir, **kwargs):
  """tfds.builder(name, data_dir=data_dir, **kwargs); DatasetError for a name TFDS does not know."""
  try:
    with _quiet():
      return tfds.builder(name, data_dir=data_dir, **kwargs)
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetError(f'{name!r} is neither a TFDS catalog dataset nor tiny_imagenet, and nothing named so is '
                       f'prepared in data_dir={data_dir}.') from None


def _is_prepared(builder) -> bool:
  with _quiet():
    return builder.is_prepared()


def _has_array_record(builder) -> bool:
  """Whether the prepared copy lists ArrayRecord and every ArrayRecord shard is there."""
  info = builder.info
  if ARRAY_RECORD not in info.available_file_formats():
    return False
  proto = info.as_proto
  splits = dataset_info_lib.get_split_dict_from_proto(proto, builder.data_path, file_format=ARRAY_RECORD)
  present = {p.name for p in epath.Path(builder.data_path).iterdir()}
  return all(p.name in present for split_info in splits.values() for p in split_info.filepaths)


def _tfrecord_bytes(builder) -> int:
  return sum(p.stat().length for p in epath.Path(builder.data_path).glob(f'*.{TFRECORD.file_suffix}-*'))


def _base(name) -> str:
  """The builder's name without its config and version ('imagenet2012:5.1.0' -> 'imagenet2012')."""
  return name.split('/')[0].split(':')[0]


def _how_to_prepare(name, data_dir) -> str:
  base = _base(name)
  command = prepare_command(name, data_dir)
  if base in MANUAL_FILES:
    files, source = MANUAL_FILES[base]
    need = '' if base in TF_FREE_BUILDERS else f' (needs TensorFlow: {PREPARE_EXTRA})'
    return (f'Download {" and ".join(files)} from {source}, place {"them" if len(files) > 1 else "it"}, not '
            f'extracted, in\n  {manual_dir_of(data_dir)}/\nthen prepare it once{need} with\n  {command}')
  if base in cifar.LAYOUTS:
    return (f'Prepare it once (downloads {cifar.LAYOUTS[base].url}; offline, place that file, not extracted, in '
            f'{manual_dir_of(data_dir)}/ first) with\n  {command}')
  need = '' if base in TF_FREE_BUILDERS else f' (needs TensorFlow: {PREPARE_EXTRA})'
  return f'Prepare it once (downloads it){need} with\n  {command}'


def _check_disk(needed, path, what):
  """Refuses when the file system of `path` (local only) clearly has less than `needed` bytes free."""
  if not needed:
    return
  path = os.fspath(path)
  if '://' in path:
    return  # gs:// and other remote file systems: nothing to measure
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  free = shutil.disk_usage(existing).free
  if free < needed:
    raise PrepareRefused(f'{what} needs about {_size(needed)} in {path}, but only {_size(free)} is free there.')


def _size(num_bytes) -> str:
  return f'{num_bytes / _GB:.1f} GB' if num_bytes >= 0.1 * _GB else f'{num_bytes / 1e6:.1f} MB'
