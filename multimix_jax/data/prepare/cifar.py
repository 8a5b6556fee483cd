"""CIFAR-10 and CIFAR-100 prepared without TensorFlow, as TFDS's own `cifar10` / `cifar100` builders prepare them.

TFDS's builders (tensorflow_datasets/image_classification/cifar.py, version 3.0.2) need TensorFlow for two things
only: `dl_manager.download_and_extract` (the extractor writes through `tf.io.gfile`) and `_load_data`, which reads
the binary batches with `tf.io.gfile` and yields NumPy images that the Image feature encodes with
`tf.image.encode_png`. `builder` subclasses TFDS's class and replaces just those two steps: the tar.gz is read with
`tarfile`, its records parsed as TFDS parses them, and each image encoded as PNG by Pillow before it reaches the
Image feature (which stores encoded bytes as they are). Everything else is TFDS's: name, version, features,
supervised keys, description, the example keys that decide TFDS's shuffle, the writer, the shard layout and
dataset_info.json, so `tfds.data_source('cifar10', ...)` reads the result as a copy TFDS built. The PNG files are
Pillow's, not libpng's through TensorFlow: the bytes may differ, the decoded pixels are the same.

What TFDS 3.0.2 reads, reproduced here (`LAYOUTS`; tests/test_prepare.py checks it against the installed builder):
`<prefix>/batches.meta.txt` (cifar10) or `coarse_label_names.txt` and `fine_label_names.txt` (cifar100) give the
ClassLabel names, one per line, empty lines dropped; records are `labels | 3072 bytes CHW` with one label byte
(cifar10) or two (coarse, then fine: cifar100); split `train` is `data_batch_1..5.bin` (cifar10) or `train.bin`,
split `test` is `test_batch.bin` or `test.bin`; example `i` of a split (counted across its files in that order) has
key `i` and id `train_%05d` / `test_%05d`.

The archive is taken from the manual dir when the user put it there (an offline machine's way), else from
`<data_dir>/downloads/` where an earlier run left it, else downloaded there with urllib: one attempt, so an offline
machine is told at once where to put the file (TFDS's downloader retries ten times, minutes). Whatever its origin,
it must have the size and sha256 that TFDS records for its URL (tensorflow_datasets/url_checksums/cifar10.txt),
as TFDS checks both downloaded and manually placed files; TFDS's download manager then takes it from that folder
as a manually downloaded file (its `download` does not need TensorFlow, only its extractor does), checks it once
more and records its size in dataset_info.json, as when TFDS downloads it.
"""

import dataclasses
import hashlib
import http.client
import io
import tarfile
import urllib.request

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

REPRODUCED_VERSION = '3.0.2'  # the version of TFDS's builders whose reading this module reproduces
_SIZE = 32
_IMAGE_BYTES = 3 * _SIZE * _SIZE
_TEMPORARY_SUFFIX = '.incomplete'  # a download under way, renamed once complete and checked


@dataclasses.dataclass(frozen=True)
class Layout:
  """What TFDS's builder reads from the archive at `url` (its `CifarInfo`)."""
  url: str
  prefix: str
  train_files: tuple[str, ...]
  test_files: tuple[str, ...]
  label_files: tuple[str, ...]
  label_keys: tuple[str, ...]  # the features the label bytes of a record go to, in their order


LAYOUTS = {
    'cifar10': Layout(url='https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz', prefix='cifar-10-batches-bin/',
                      train_files=tuple(f'data_batch_{i}.bin' for i in range(1, 6)), test_files=('test_batch.bin',),
                      label_files=('batches.meta.txt',), label_keys=('label',)),
    'cifar100': Layout(url='https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz', prefix='cifar-100-binary/',
                       train_files=('train.bin',), test_files=('test.bin',),
                       label_files=('coarse_label_names.txt', 'fine_label_names.txt'),
                       label_keys=('coarse_label', 'label')),
}


class ArchiveError(ValueError):
  """The archive cannot be had (no network, a failed download) or is not TFDS's (size or sha256); one line."""


def url_info(name: str) -> tfds.core.download.checksums.UrlInfo:
  """TFDS's recorded size, sha256 and file name of `name`'s archive."""
  return tfds.builder_cls(name).url_infos[LAYOUTS[name].url]


def find_archive(name: str, manual_dir: epath.PathLike, download_dir: epath.PathLike) -> epath.Path | None:
  """The archive in `manual_dir`, else in `download_dir`, else None (not checked: see `check_archive`)."""
  file_name = url_info(name).filename
  for directory in (manual_dir, download_dir):
    path = epath.Path(directory) / file_name
    if path.exists():
      return path
  return None


def download_archive(name: str, download_dir: epath.PathLike, manual_dir: epath.PathLike) -> epath.Path:
  """Downloads `name`'s archive into `download_dir` (one attempt) and checks it; returns its path.

  It is written under a temporary name, renamed once complete and equal to TFDS's size and sha256.

  Raises:
    ArchiveError: no network, a failed or different download; the message says where to put the file by hand.
  """
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top  # a TFDS dependency

  url, expected = LAYOUTS[name].url, url_info(name)
  path = epath.Path(download_dir) / expected.filename
  temporary = path.parent / (path.name + _TEMPORARY_SUFFIX)
  path.parent.mkdir(parents=True, exist_ok=True)
  digest, size = hashlib.sha256(), 0
  try:
    with urllib.request.urlopen(url, timeout=60) as response, temporary.open('wb') as f, tqdm.tqdm(
        total=expected.size, unit='B', unit_scale=True, desc=f'Downloading {expected.filename}') as bar:
      while chunk := response.read(1 << 20):
        f.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        bar.update(len(chunk))
  except (OSError, http.client.HTTPException) as e:
    temporary.unlink(missing_ok=True)
    raise ArchiveError(f'could not download {url} ({e}). Download it where there is a network and place '
                       f'{expected.filename} (not extracted) in {manual_dir}/ (or pass --manual_dir), then '
                       'rerun.') from None
  except BaseException:
    temporary.unlink(missing_ok=True)
    raise
  if (size, digest.hexdigest()) != (int(expected.size), expected.checksum):
    temporary.unlink(missing_ok=True)
    raise ArchiveError(f'the download of {url} is not the archive TFDS knows ({_describe(size, digest.hexdigest())}'
                       f', expected {_describe(int(expected.size), expected.checksum)}); rerun, or download it by '
                       f'hand and place it in {manual_dir}/.')
  temporary.rename(path)
  return path


def check_archive(name: str, path: epath.Path) -> None:
  """Raises ArchiveError unless `path` has TFDS's recorded size and sha256 for `name`'s archive."""
  expected = url_info(name)
  size = path.stat().length
  digest = hashlib.sha256()
  if size == int(expected.size):
    with path.open('rb') as f:
      while chunk := f.read(1 << 20):
        digest.update(chunk)
  if (size, digest.hexdigest()) != (int(expected.size), expected.checksum):
    raise ArchiveError(f'{path} is not the archive TFDS knows for {name} ({_describe(size, digest.hexdigest())}, '
                       f'expected {_describe(int(expected.size), expected.checksum)}); delete it and download it '
                       f'again from {LAYOUTS[name].url}.')


def _describe(size, sha256) -> str:
  return f'{size} bytes, sha256 {sha256}'


class _FromBinaryArchive:
  """The steps of TFDS's CIFAR builders that need TensorFlow, done without it (see the module docstring)."""

  def __init__(self, **kwargs):
    self.__module__ = type(self).__bases__[-1].__module__  # dataset_info.json's moduleName: TFDS's, as TFDS writes it
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    layout = LAYOUTS[self.name]
    archive = dl_manager.download(layout.url)  # in the manual dir (see `builder`): no network
    members = _read_members(archive, [layout.prefix + f for f in layout.label_files])
    for key, label_file in zip(layout.label_keys, layout.label_files):
      text = members[layout.prefix + label_file].decode()
      self.info.features[key].names = [name for name in text.split('\n') if name]  # as TFDS: empty lines dropped
    return {
        tfds.Split.TRAIN: self._generate_examples(archive, 'train_', layout.train_files),
        tfds.Split.TEST: self._generate_examples(archive, 'test_', layout.test_files),
    }

  def _generate_examples(self, archive, split_prefix, files):
    layout = LAYOUTS[self.name]
    members = _read_members(archive, [layout.prefix + f for f in files])
    index = 0  # TFDS's key: the example's position in the split, its files read in their listed order
    for file_name in files:
      for labels, image in _records(members.pop(layout.prefix + file_name), len(layout.label_keys), file_name):
        record = {key: int(label) for key, label in zip(layout.label_keys, labels)}
        record['id'] = f'{split_prefix}{index:05d}'
        record['image'] = _png(image)
        yield index, record
        index += 1


def builder(name: str, data_dir: str, version: str | None = None) -> tfds.core.GeneratorBasedBuilder:
  """TFDS's `name` builder ('cifar10' or 'cifar100') writing ArrayRecord, reading its archive without TensorFlow.

  Its `download_and_prepare` needs `download_config.manual_dir` to hold the archive, checked (`check_archive`).
  """
  base = tfds.builder_cls(name)
  cls = type(base.__name__, (_FromBinaryArchive, base), {
      'name': base.name,
      # TFDS looks up checksums next to the builder's module; this one's are TFDS's (and what tests substitute).
      'url_infos': {LAYOUTS[name].url: url_info(name)},
  }, skip_registration=True)
  kwargs = {'version': version} if version else {}
  return cls(data_dir=data_dir, file_format='array_record', **kwargs)


def _read_members(archive: epath.Path, names: list[str]) -> dict[str, bytes]:
  """The bytes of `names` in the tar.gz `archive`, read in one pass; ArchiveError if one is missing."""
  wanted, found = set(names), {}
  with archive.open('rb') as f, tarfile.open(fileobj=f, mode='r:gz') as tar:
    for member in tar:
      if member.name in wanted and member.isfile():
        found[member.name] = tar.extractfile(member).read()
  missing = sorted(wanted - set(found))
  if missing:
    raise ArchiveError(f'{archive} has no {", ".join(missing)}: is it the official archive?')
  return found


def _records(data: bytes, num_labels: int, file_name: str):
  """(labels, (32, 32, 3) uint8 image) of each record `labels | 3072 bytes CHW`, as TFDS's `_load_data`."""
  record_bytes = num_labels + _IMAGE_BYTES
  if len(data) % record_bytes:
    raise ArchiveError(f'{file_name} holds {len(data)} bytes, not a whole number of {record_bytes}-byte records.')
  records = np.frombuffer(data, np.uint8).reshape(-1, record_bytes)
  for record in records:
    yield record[:num_labels], record[num_labels:].reshape(3, _SIZE, _SIZE).transpose(1, 2, 0)


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, 'PNG')
  return buffer.getvalue()
