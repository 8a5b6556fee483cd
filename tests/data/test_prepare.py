"""`python -m multimix_jax.data.prepare` and `find_prepared`: TFRecord copies converted record for record (resumed
after an interruption, a rerun a no-op), Tiny ImageNet from its zip and CIFAR-10/100 from their TFDS archives with
TensorFlow hidden, the refusals' one line.

Everything is generated here: no network, no TensorFlow (it is hidden where a test depends on its absence).
"""

import hashlib
import importlib.abc
import importlib.machinery
import io
import os
import socket
import struct
import subprocess
import sys
import tarfile
import urllib.error
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from array_record.python import array_record_module

from multimix_jax.data import prepare
from multimix_jax.data.prepare import __main__ as prepare_cli
from multimix_jax.data.prepare import cifar

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _crc32c_table():
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), bit-reflected, as TFRecord uses it: slow, for the few bytes of these tests."""
  crc = 0xffffffff
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xff] ^ (crc >> 8)
  return crc ^ 0xffffffff


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def test_crc32c_matches_the_standard_check_value():
  assert crc32c(b'123456789') == 0xe3069283  # RFC 3720's check value for CRC-32C


def png(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, 'PNG')
  return buffer.getvalue()


class PrepareTestImages(tfds.core.GeneratorBasedBuilder):
  """12 train and 5 test 8×8 grey PNGs of 3 named classes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Generated for the tests.'}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 1)),
        'label': tfds.features.ClassLabel(names=['ant', 'bee', 'cat'])}), supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(12, 0), 'test': self._generate_examples(5, 1)}

  def _generate_examples(self, count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
      yield i, {'image': png(rng.integers(0, 256, (8, 8), dtype=np.uint8)), 'label': i % 3}


class PrepareTestTable(tfds.core.GeneratorBasedBuilder):
  """A dataset without images."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Generated for the tests.'}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'x': tfds.features.Tensor(shape=(2,), dtype=np.float32), 'label': tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(), 'test': self._generate_examples()}

  def _generate_examples(self):
    for i in range(4):
      yield i, {'x': np.full((2,), i, np.float32), 'label': i % 2}


NAME = 'prepare_test_images'


def build(cls, data_dir, num_shards=None):
  builder = cls(data_dir=str(data_dir), file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=num_shards))
  return builder


def shard_records(directory, suffix) -> dict[str, list[bytes]]:
  """{shard file name with `suffix` replaced by 'X': records} of one prepared folder."""
  out = {}
  for name in sorted(os.listdir(directory)):
    if f'.{suffix}-' in name and not name.endswith('.incomplete'):
      path = os.path.join(directory, name)
      if suffix == 'array_record':
        reader = array_record_module.ArrayRecordReader(path)
        records = list(reader.read_all())
        reader.close()
      else:
        records = list(prepare.read_tfrecord(path))
      out[name.replace(f'.{suffix}-', '.X-')] = records
  return out


def make_tfrecord_copy(data_dir, num_shards=2, file_format_field=True):
  """NAME prepared as an older TFDS prepared it: TFRecord shards and a dataset_info.json that says so (or, as TFDS
  before 4.5, says no file format). Returns (its folder, its records by shard)."""
  directory = build(PrepareTestImages, data_dir, num_shards).data_path
  originals = shard_records(directory, 'array_record')
  assert len(originals) == 2 * num_shards
  for name in os.listdir(directory):
    if '.array_record-' in name:
      path = os.path.join(directory, name)
      reader = array_record_module.ArrayRecordReader(path)
      with open(path.replace('.array_record-', '.tfrecord-'), 'wb') as f:
        for record in reader.read_all():
          length = struct.pack('<Q', len(record))
          f.write(length + struct.pack('<I', masked_crc32c(length)) + record +
                  struct.pack('<I', masked_crc32c(record)))
      reader.close()
      os.remove(path)
  info_path = os.path.join(directory, 'dataset_info.json')
  with open(info_path) as f:
    text = f.read()
  assert '"fileFormat": "array_record"' in text
  text = text.replace('"fileFormat": "array_record"',
                      '"fileFormat": "tfrecord"' if file_format_field else '"fileFormat": ""')
  with open(info_path, 'w') as f:
    f.write(text)
  return str(directory), originals


def lines(text):
  return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def checked_crc(monkeypatch):
  """Conversion checks CRCs with the crc32c here (google-crc32c's role; it need not be installed)."""
  monkeypatch.setattr(prepare, '_crc32c', crc32c)


@pytest.mark.parametrize('file_format_field', [True, False], ids=['tfrecord', 'no_file_format'])
def test_tfrecord_copy_converts_record_for_record(tmp_path, checked_crc, file_format_field):
  directory, originals = make_tfrecord_copy(tmp_path, file_format_field=file_format_field)
  with pytest.raises(prepare.DatasetNotFoundError) as error:
    prepare.find_prepared(NAME, str(tmp_path))
  assert 'TFRecord only' in str(error.value)
  assert f'python -m multimix_jax.data.prepare --dataset={NAME} --data_dir={tmp_path}' in str(error.value)
  reported = []
  summary = prepare.prepare(NAME, str(tmp_path), report=reported.append)
  assert 'converted to ArrayRecord' in summary and "{'test': 5, 'train': 12}" in summary
  assert 'without downloading' in reported[0] and '4 of 4 shards' in reported[0]
  assert shard_records(directory, 'array_record') == originals == shard_records(directory, 'tfrecord')
  reference = str(build(PrepareTestImages, tmp_path / 'reference', num_shards=2).data_dir_root)  # never converted
  for split, count in (('train', 12), ('test', 5)):
    converted, original = (tfds.data_source(NAME, split=split, data_dir=d,
                                            decoders={'image': tfds.decode.SkipDecoding()})
                           for d in (str(tmp_path), reference))
    assert len(converted) == len(original) == count
    for i in range(count):
      assert converted[i]['image'] == original[i]['image'] and converted[i]['label'] == original[i]['label']
    decoded = tfds.data_source(NAME, split=split, data_dir=str(tmp_path))[count - 1]['image']
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(converted[count - 1]['image'])))[..., None])
  info = prepare.find_prepared(NAME, str(tmp_path))
  assert info == prepare.TfdsInfo(name=NAME, data_dir=str(tmp_path), num_classes=3, class_names=('ant', 'bee', 'cat'),
                                  splits={'test': 5, 'train': 12}, image_shape=(8, 8, 1), image_encoding=None,
                                  train_split='train', eval_split='test')
  before = {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in os.listdir(directory)}
  assert 'nothing to do' in prepare.prepare(NAME, str(tmp_path), report=reported.append)
  assert {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in os.listdir(directory)} == before


def test_interrupted_conversion_resumes(tmp_path, monkeypatch, checked_crc):
  directory, originals = make_tfrecord_copy(tmp_path)
  leftover = os.path.join(directory, f'{NAME}-train.array_record-00001-of-00002.incomplete')
  with open(leftover, 'wb') as f:
    f.write(b'half a shard')  # a run killed while writing
  convert_shard, calls = prepare._convert_shard, []

  def dies_on_the_second_shard(*args):
    calls.append(args[1].name)
    if len(calls) == 2:
      raise KeyboardInterrupt
    convert_shard(*args)

  monkeypatch.setattr(prepare, '_convert_shard', dies_on_the_second_shard)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(NAME, str(tmp_path), report=lambda line: None)
  done = shard_records(directory, 'array_record')
  assert list(done) == [calls[0].replace('.array_record-', '.X-')] and not os.path.exists(leftover)
  assert not [n for n in os.listdir(directory) if n.endswith('.incomplete')]
  with pytest.raises(prepare.DatasetNotFoundError, match='TFRecord only'):  # dataset_info.json changes last
    prepare.find_prepared(NAME, str(tmp_path))
  monkeypatch.setattr(prepare, '_convert_shard', convert_shard)
  reported = []
  summary = prepare.prepare(NAME, str(tmp_path), report=reported.append)
  assert '3 of 4 shards' in reported[0] and '(3 shards written, 1 already done)' in summary
  assert shard_records(directory, 'array_record') == originals
  assert prepare.find_prepared(NAME, str(tmp_path)).splits == {'test': 5, 'train': 12}


def test_damaged_tfrecord_is_one_error(tmp_path, monkeypatch, checked_crc):
  directory, _ = make_tfrecord_copy(tmp_path, num_shards=1)
  path = os.path.join(directory, f'{NAME}-test.tfrecord-00000-of-00001')
  data = bytearray(open(path, 'rb').read())
  data[20] ^= 1  # a bit of the first record's data
  with open(path, 'wb') as f:
    f.write(data)
  with pytest.raises(prepare.CorruptRecordError, match='fails its crc32c'):
    prepare.prepare(NAME, str(tmp_path), report=lambda line: None)
  monkeypatch.setattr(prepare, '_crc32c', None)  # without a crc32c: framing still checked
  with open(path, 'wb') as f:
    f.write(data[:-3])
  with pytest.raises(prepare.CorruptRecordError, match='truncated'):
    prepare.prepare(NAME, str(tmp_path), report=lambda line: None)
  assert not [n for n in os.listdir(directory) if '-test.array_record-' in n]  # no damaged shard left behind


def write_fake_tiny_imagenet(manual_dir, train_per_class=3, num_val=5):
  """A tiny-imagenet-200.zip laid out like the official one: 200 wnids, images for the first three only."""
  wnids = [f'n{i:08d}' for i in range(200, 0, -1)]  # not sorted, like the official wnids.txt
  rng = np.random.default_rng(0)

  def jpeg(channels):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, channels), dtype=np.uint8).squeeze()).save(buffer, 'JPEG')
    return buffer.getvalue()

  os.makedirs(manual_dir, exist_ok=True)
  with zipfile.ZipFile(os.path.join(manual_dir, 'tiny-imagenet-200.zip'), 'w') as archive:
    root = 'tiny-imagenet-200/'
    archive.writestr(root + 'wnids.txt', '\n'.join(wnids) + '\n')
    for wnid in wnids[:3]:
      archive.writestr(f'{root}train/{wnid}/{wnid}_boxes.txt', f'{wnid}_0.JPEG\t0\t0\t63\t63\n')
      for j in range(train_per_class):
        archive.writestr(f'{root}train/{wnid}/images/{wnid}_{j}.JPEG', jpeg(1 if j == 0 else 3))  # some greyscale
    annotations = []
    for j in range(num_val):
      archive.writestr(f'{root}val/images/val_{j}.JPEG', jpeg(3))
      annotations.append(f'val_{j}.JPEG\t{wnids[j % 3]}\t0\t0\t63\t63')
    archive.writestr(root + 'val/val_annotations.txt', '\n'.join(annotations) + '\n')
    archive.writestr(root + 'test/images/test_0.JPEG', jpeg(3))
  return wnids


class HideTensorflow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """`import tensorflow` raises ImportError, installed or not, as a `tensorflow` that fails to import would.

  (sys.modules['tensorflow'] = None would not do: etils, under TFDS, takes a name in sys.modules for TensorFlow
  loaded; and a find_spec that raises breaks etils' `importlib.util.find_spec('tensorflow')` probe.)
  """

  def find_spec(self, name, path=None, target=None):
    del path, target
    return importlib.machinery.ModuleSpec(name, self) if name.split('.')[0] == 'tensorflow' else None

  def create_module(self, spec):
    return None

  def exec_module(self, module):
    raise ImportError(f'{module.__name__} hidden by the test')


@pytest.fixture
def no_tensorflow(monkeypatch):
  if 'tensorflow' in sys.modules:
    pytest.skip('TensorFlow was imported by an earlier test of this process: cannot hide it')
  monkeypatch.setattr(sys, 'meta_path', [HideTensorflow(), *sys.meta_path])


def test_tiny_imagenet_prepares_from_the_zip_without_tensorflow(tmp_path, no_tensorflow):
  data_dir = str(tmp_path / 'data')
  with pytest.raises(prepare.DatasetNotFoundError) as error:
    prepare.find_prepared('tiny_imagenet', data_dir)
  assert os.path.join(data_dir, 'downloads', 'manual') in str(error.value)
  assert f'python -m multimix_jax.data.prepare --dataset=tiny_imagenet --data_dir={data_dir}' in str(error.value)
  with pytest.raises(prepare.PrepareRefused, match='place tiny-imagenet-200.zip'):
    prepare.prepare('tiny_imagenet', data_dir)
  manual_dir = tmp_path / 'elsewhere'
  wnids = write_fake_tiny_imagenet(manual_dir)
  reported = []
  summary = prepare.prepare('tiny_imagenet', data_dir, str(manual_dir), report=reported.append)
  assert 'tiny-imagenet-200.zip' in reported[0] and "{'train': 9, 'validation': 5}" in summary
  info = prepare.find_prepared('tiny_imagenet', data_dir)
  assert info == prepare.TfdsInfo(name='tiny_imagenet', data_dir=data_dir, num_classes=200,
                                  class_names=tuple(sorted(wnids)), splits={'train': 9, 'validation': 5},
                                  image_shape=(64, 64, 3), image_encoding='jpeg', train_split='train',
                                  eval_split='validation')
  val = tfds.data_source('tiny_imagenet', split='validation', data_dir=data_dir)
  examples = [val[i] for i in range(len(val))]
  assert {e['file_name'].decode(): int(e['label']) for e in examples} == {
      f'val_{j}.JPEG': sorted(wnids).index(wnids[j % 3]) for j in range(5)}
  assert all(e['image'].shape == (64, 64, 3) for e in examples)
  train = tfds.data_source('tiny_imagenet', split='train', data_dir=data_dir)
  assert sorted(int(train[i]['label']) for i in range(len(train))) == sorted(
      sorted(wnids).index(w) for w in wnids[:3] for _ in range(3))
  assert 'nothing to do' in prepare.prepare('tiny_imagenet', data_dir, str(manual_dir))


def test_find_prepared_names_the_command(tmp_path, monkeypatch):
  with pytest.raises(prepare.DatasetNotFoundError) as error:
    prepare.find_prepared('mnist', str(tmp_path))
  command = f'python -m multimix_jax.data.prepare --dataset=mnist --data_dir={tmp_path}'
  assert lines(str(error.value))[-1].strip() == command
  assert "pip install 'multimix_jax[prepare]'" in str(error.value)
  with pytest.raises(prepare.DatasetNotFoundError) as error:
    prepare.find_prepared('cifar10', str(tmp_path))
  assert lines(str(error.value))[-1].strip() == command.replace('mnist', 'cifar10')
  assert 'TensorFlow' not in str(error.value) and 'cifar-10-binary.tar.gz' in str(error.value)
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in str(error.value)
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'default'))
  with pytest.raises(prepare.DatasetNotFoundError, match=f'--data_dir={tmp_path / "default"}'):
    prepare.find_prepared('cifar10', None)
  with pytest.raises(prepare.DatasetNotFoundError) as error:
    prepare.find_prepared('imagenet2012', str(tmp_path))
  for part in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar', os.path.join(str(tmp_path), 'downloads', 'manual'),
               f'--dataset=imagenet2012 --data_dir={tmp_path}'):
    assert part in str(error.value)
  with pytest.raises(prepare.DatasetError, match='neither a TFDS catalog dataset'):
    prepare.find_prepared('no_such_dataset_anywhere', str(tmp_path))
  assert not any(files for _, _, files in os.walk(tmp_path))  # metadata only: nothing written


def test_find_prepared_refuses_a_dataset_without_images(tmp_path):
  build(PrepareTestTable, tmp_path)
  with pytest.raises(prepare.DatasetError, match="no image feature 'image'"):
    prepare.find_prepared('prepare_test_table', str(tmp_path))


def hidden_tensorflow_env(tmp_path):
  """The environment of a subprocess in which `import tensorflow` fails, whether TensorFlow is installed or not."""
  stub = tmp_path / 'hide_tensorflow' / 'tensorflow'
  stub.mkdir(parents=True)
  (stub / '__init__.py').write_text("raise ImportError('TensorFlow hidden by the test')\n")
  path = os.pathsep.join(p for p in (str(stub.parent), os.environ.get('PYTHONPATH')) if p)
  return {**os.environ, 'PYTHONPATH': path}


def error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith('error:')]


@pytest.mark.parametrize('launcher', ['module', 'launch_script'])
def test_command_refuses_a_catalog_builder_without_tensorflow(tmp_path, launcher):
  data_dir = tmp_path / 'data'
  env = hidden_tensorflow_env(tmp_path)
  if launcher == 'module':
    command = [sys.executable, '-m', 'multimix_jax.data.prepare', '--dataset=mnist', f'--data_dir={data_dir}']
  else:
    command = ['bash', os.path.join(REPO, 'launch', 'prepare_data.sh'), 'mnist']
    env.update(DATA_DIR=str(data_dir), PYTHON=sys.executable)
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert error_lines(result.stderr) == [error_lines(result.stderr)[0]] and result.stdout == ''
  assert "needs TensorFlow" in result.stderr and "pip install 'multimix_jax[prepare]'" in result.stderr
  assert not any(files for _, _, files in os.walk(tmp_path / 'data'))  # nothing downloaded, nothing written


@pytest.mark.parametrize('argv, message', [
    (['--dataset=cifar10', '--bogus=1'], "Unknown command line flag 'bogus'"),
    (['--data_dir=/tmp'], '--dataset is required'),
    (['--dataset=cifar10', 'extra'], 'unexpected arguments'),
    (['--dataset=no_such_dataset_anywhere'], 'neither a TFDS catalog dataset'),
])
def test_bad_command_line_is_one_error_line(argv, message, capsys, tmp_path):
  with pytest.raises(SystemExit) as exit_:
    prepare_cli.run(['prepare', f'--data_dir={tmp_path}', *argv])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert error_lines(err) == lines(err) and len(lines(err)) == 1 and message in err


def test_too_little_disk_is_one_error_line(tmp_path, monkeypatch, capsys):
  make_tfrecord_copy(tmp_path)
  capsys.readouterr()  # TFDS's lines while it built the copy
  monkeypatch.setattr(prepare.shutil, 'disk_usage', lambda path: type('Usage', (), {'free': 1000})())
  with pytest.raises(SystemExit) as exit_:
    prepare_cli.run(['prepare', f'--dataset={NAME}', f'--data_dir={tmp_path}'])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert lines(err) == error_lines(err) and len(lines(err)) == 1
  assert 'needs about' in err and 'is free there' in err
  assert not [n for n in os.listdir(tmp_path / NAME / '1.0.0') if '.array_record' in n]  # nothing written




# CIFAR-10 and CIFAR-100 from their TFDS archives, without TensorFlow.

CIFAR10_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
# The official archives (https://www.cs.toronto.edu/~kriz/cifar.html), binary version: folder, label name files (in
# the order of the label bytes of a record), batch files of each split.
FAKE_CIFAR = {
    'cifar10': dict(folder='cifar-10-batches-bin/', labels={'label': ('batches.meta.txt', CIFAR10_NAMES)},
                    train=[f'data_batch_{i}.bin' for i in range(1, 6)], test=['test_batch.bin']),
    'cifar100': dict(folder='cifar-100-binary/', labels={
        'coarse_label': ('coarse_label_names.txt', [f'superclass_{i}' for i in range(20)]),
        'label': ('fine_label_names.txt', [f'class_{i}' for i in range(100)])}, train=['train.bin'], test=['test.bin']),
}


def write_fake_cifar(name, directory, records_per_file=3):
  """`name`'s archive laid out as the official one, with a few random records per batch file.

  Returns (its path, {split: {id: (labels by feature, (32, 32, 3) image)}}), ids numbering a split's records across
  its files in their order.
  """
  spec = FAKE_CIFAR[name]
  rng = np.random.default_rng(len(name))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, os.path.basename(cifar.LAYOUTS[name].url))
  expected = {'train': {}, 'test': {}}
  with tarfile.open(path, 'w:gz') as tar:

    def add(member, data):
      info = tarfile.TarInfo(spec['folder'] + member)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))

    add('readme.html', b'<html>not read</html>')
    for file_name, names in spec['labels'].values():
      add(file_name, ('\n'.join(names) + '\n\n').encode())  # the official files end with an empty line
    for split in ('train', 'test'):
      for file_name in spec[split]:
        records = rng.integers(0, 256, (records_per_file, len(spec['labels']) + 3072), dtype=np.uint8)
        for k, (_, names) in enumerate(spec['labels'].values()):
          records[:, k] = rng.integers(0, len(names), records_per_file)
        add(file_name, records.tobytes())
        for record in records:
          labels = {key: int(record[k]) for k, key in enumerate(spec['labels'])}
          image = record[len(labels):].reshape(3, 32, 32).transpose(1, 2, 0)
          expected[split][f'{split}_{len(expected[split]):05d}'] = (labels, image)
  return path, expected


def url_info_of(path):
  with open(path, 'rb') as f:
    data = f.read()
  return tfds.core.download.checksums.UrlInfo(size=len(data), checksum=hashlib.sha256(data).hexdigest(),
                                               filename=os.path.basename(path))


def accept(monkeypatch, name, path):
  """TFDS's size and sha256 of `name`'s URL replaced, in both checks, by those of the fake archive at `path`."""
  info = url_info_of(path)
  monkeypatch.setattr(cifar, 'url_info', lambda n: info if n == name else pytest.fail(f'url_info({n!r})'))


def mtimes(directory):
  return {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in os.listdir(directory)}


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_cifar_layout_is_the_installed_tfds_builders(name, tmp_path):
  builder = tfds.builder(name, data_dir=str(tmp_path))
  tfds_layout, layout, spec = builder._cifar_info, cifar.LAYOUTS[name], FAKE_CIFAR[name]  # what TFDS's builder reads
  assert (layout.url, layout.prefix, list(layout.train_files), list(layout.test_files), list(layout.label_files),
          list(layout.label_keys)) == (tfds_layout.url, tfds_layout.prefix, tfds_layout.train_files,
                                       tfds_layout.test_files, tfds_layout.label_files, tfds_layout.label_keys)
  assert (spec['folder'], spec['train'], spec['test'], [f for f, _ in spec['labels'].values()], list(spec['labels'])) \
      == (tfds_layout.prefix, tfds_layout.train_files, tfds_layout.test_files, tfds_layout.label_files,
          tfds_layout.label_keys)  # the fake archives are laid out as TFDS reads them
  assert str(builder.version) == cifar.REPRODUCED_VERSION
  assert cifar.url_info(name) == type(builder).url_infos[layout.url]  # TFDS's recorded size and sha256
  assert cifar.url_info(name).filename == os.path.basename(layout.url)


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_cifar_prepares_from_its_archive_without_tensorflow(name, tmp_path, monkeypatch, no_tensorflow):
  data_dir, manual_dir = str(tmp_path / 'data'), tmp_path / 'manual'
  path, expected = write_fake_cifar(name, manual_dir)
  accept(monkeypatch, name, path)
  reported = []
  summary = prepare.prepare(name, data_dir, str(manual_dir), report=reported.append)
  assert len(reported) == 1 and 'without TensorFlow' in reported[0] and f'from {path};' in reported[0]
  counts = {split: len(examples) for split, examples in sorted(expected.items())}
  assert summary.endswith(f': {counts}.')
  spec = FAKE_CIFAR[name]
  for split, examples in expected.items():
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    got = [source[i] for i in range(len(source))]
    hasher = tfds.core.hashing.Hasher(split)  # TFDS's shuffle: examples sorted by the salted hash of their key
    assert [e['id'].decode() for e in got] == [f'{split}_{k:05d}' for k in sorted(
        range(len(examples)), key=hasher.hash_key)]  # key k has id {split}_k, as TFDS's builder yields them
    for example in got:
      labels, image = examples[example['id'].decode()]
      np.testing.assert_array_equal(example['image'], image)
      assert {key: int(example[key]) for key in labels} == labels
  prepared, reference = tfds.builder(name, data_dir=data_dir), tfds.builder(name, data_dir=str(tmp_path / 'tfds'))
  assert prepared.info.features.to_json() == reference.info.features.to_json()  # reference: TFDS's, unprepared
  assert (prepared.info.module_name, prepared.info.supervised_keys, prepared.info.description) == (
      reference.info.module_name, reference.info.supervised_keys, reference.info.description)
  assert prepared.info.download_size == os.path.getsize(path)
  for key, (_, names) in spec['labels'].items():
    assert prepared.info.features[key].names == names
  info = prepare.find_prepared(name, data_dir)
  assert info == prepare.TfdsInfo(name=name, data_dir=data_dir, num_classes=len(spec['labels']['label'][1]),
                                  class_names=tuple(spec['labels']['label'][1]), splits=counts, image_shape=(32, 32, 3),
                                  image_encoding=None, train_split='train', eval_split='test')
  before = mtimes(prepared.data_path)
  assert 'nothing to do' in prepare.prepare(name, data_dir, str(manual_dir), report=reported.append)
  assert mtimes(prepared.data_path) == before and len(reported) == 1
  assert 'tensorflow' not in sys.modules


def test_cifar_archive_must_be_tfds(tmp_path, no_tensorflow):
  data_dir = str(tmp_path / 'data')
  write_fake_cifar('cifar10', prepare.manual_dir_of(data_dir))  # the default manual dir; TFDS's checksums, kept
  reported = []
  with pytest.raises(prepare.PrepareRefused) as error:
    prepare.prepare('cifar10', data_dir, report=reported.append)
  message = str(error.value)
  assert len(lines(message)) == 1 and 'is not the archive TFDS knows' in message and 'sha256' in message
  assert cifar.url_info('cifar10').checksum in message and cifar.LAYOUTS['cifar10'].url in message
  assert len(reported) == 1  # the plan, then the refusal
  assert not os.path.exists(os.path.join(data_dir, 'cifar10'))


def test_cifar_downloads_its_archive_once(tmp_path, monkeypatch, no_tensorflow):
  source, expected = write_fake_cifar('cifar100', tmp_path / 'server')
  accept(monkeypatch, 'cifar100', source)
  with open(source, 'rb') as f:
    served = [f.read()[:-1]]  # first a truncated download
  urls = []

  def urlopen(url, timeout):
    del timeout
    urls.append(url)
    return io.BytesIO(served[-1])

  monkeypatch.setattr(cifar.urllib.request, 'urlopen', urlopen)
  data_dir = str(tmp_path / 'data')
  downloads = os.path.join(data_dir, 'downloads')
  with pytest.raises(prepare.PrepareRefused, match='download of .* is not the archive TFDS knows'):
    prepare.prepare('cifar100', data_dir, report=lambda line: None)
  assert not any(files for _, _, files in os.walk(downloads))  # nothing kept of a bad download
  served.append(served[0] + open(source, 'rb').read()[-1:])
  reported = []
  prepare.prepare('cifar100', data_dir, report=reported.append)
  assert f'downloading {cifar.LAYOUTS["cifar100"].url} into {downloads}/' in reported[0]
  assert [files for _, _, files in os.walk(downloads)] == [['cifar-100-binary.tar.gz'], []]  # and TFDS's extracted/
  assert prepare.find_prepared('cifar100', data_dir).splits == {'test': 3, 'train': 3}
  tfds.builder('cifar100', data_dir=data_dir).data_path.rmtree()
  prepare.prepare('cifar100', data_dir, report=reported.append)  # prepared again from the archive downloaded
  assert urls == 2 * [cifar.LAYOUTS['cifar100'].url] and f'from {downloads}/cifar-100-binary.tar.gz' in reported[1]
  train = tfds.data_source('cifar100', split='train', data_dir=data_dir)
  assert sorted(train[i]['id'].decode() for i in range(len(train))) == sorted(expected['train'])


def test_cifar_offline_is_one_error_line(tmp_path, monkeypatch, capsys, no_tensorflow):
  def offline(url, timeout):
    raise urllib.error.URLError(socket.gaierror(-2, 'Name or service not known'))

  monkeypatch.setattr(cifar.urllib.request, 'urlopen', offline)
  data_dir = tmp_path / 'data'
  with pytest.raises(SystemExit) as exit_:
    prepare_cli.run(['prepare', '--dataset=cifar10', f'--data_dir={data_dir}'])
  assert exit_.value.code == 2
  captured = capsys.readouterr()
  assert error_lines(captured.err) == lines(captured.err) and len(lines(captured.err)) == 1
  assert f'could not download {cifar.LAYOUTS["cifar10"].url}' in captured.err
  assert f'place cifar-10-binary.tar.gz (not extracted) in {data_dir / "downloads" / "manual"}/' in captured.err
  assert lines(captured.out)[0].startswith('Preparing cifar10 in')  # the plan came first
  assert not any(files for _, _, files in os.walk(data_dir))  # nothing written


def test_cifar_command_without_tensorflow(tmp_path):
  data_dir, manual_dir = tmp_path / 'data', tmp_path / 'manual'
  path, _ = write_fake_cifar('cifar10', manual_dir)
  env = hidden_tensorflow_env(tmp_path)
  argv = ['--dataset=cifar10', f'--data_dir={data_dir}', f'--manual_dir={manual_dir}']

  def run(*command):
    return subprocess.run([sys.executable, *command, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)

  refused = run('-m', 'multimix_jax.data.prepare')  # TFDS's checksums: the fake archive is not the real one
  assert refused.returncode == 2 and len(error_lines(refused.stderr)) == 1 and 'sha256' in refused.stderr
  info = url_info_of(path)
  accepted = run('-c', '; '.join([  # the same command, with the fake archive's checksum in place of TFDS's
      'import runpy', 'from tensorflow_datasets.core.download import checksums',
      'from multimix_jax.data.prepare import cifar',
      f'cifar.url_info = lambda name: checksums.UrlInfo(size={info.size}, checksum={info.checksum!r}, '
      f'filename={info.filename!r})',
      "runpy.run_module('multimix_jax.data.prepare', run_name='__main__')"]))
  assert accepted.returncode == 0, accepted.stderr
  assert lines(accepted.stdout)[-1] == (f'cifar10 prepared as ArrayRecord in {data_dir}/cifar10/3.0.2: '
                                        "{'test': 3, 'train': 15}.")
  assert len(tfds.data_source('cifar10', split='train', data_dir=str(data_dir))) == 15
