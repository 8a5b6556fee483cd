"""`python -m multimix_jax.data.prepare` and `find_prepared`: TFRecord copies converted record for record (resumed
after an interruption, a rerun a no-op), Tiny ImageNet from its zip with TensorFlow hidden, the refusals' one line.

Everything is generated here: no network, no TensorFlow (it is hidden where a test depends on its absence).
"""

import importlib.abc
import importlib.machinery
import io
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from array_record.python import array_record_module

from multimix_jax.data import prepare
from multimix_jax.data.prepare import cli as prepare_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    prepare.find_prepared('cifar10', str(tmp_path))
  command = f'python -m multimix_jax.data.prepare --dataset=cifar10 --data_dir={tmp_path}'
  assert lines(str(error.value))[-1].strip() == command
  assert "pip install 'multimix_jax[prepare]'" in str(error.value)
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
    command = [sys.executable, '-m', 'multimix_jax.data.prepare', '--dataset=cifar10', f'--data_dir={data_dir}']
  else:
    command = ['bash', os.path.join(REPO, 'launch', 'prepare_data.sh'), 'cifar10']
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


