"""Input pipeline: datasets by name, by TFDS name and by folder; exact resume, sharding, exact-cover masked
evaluation, augmentation chosen by rule, and one clear error for bad data. No TensorFlow.

Real data is never downloaded: digits comes from scikit-learn's copy, the other datasets are generated here
(tests/fake_data.py): folders of PNGs and JPEGs, and TFDS datasets prepared as ArrayRecord.
"""

import collections
import itertools
import os
import sys

import numpy as np
import pytest

import fake_data
from multimix_jax import configs
from multimix_jax import data
from multimix_jax.data import sources

NUM_TRAIN, NUM_TEST = 1437, 360


def make_config(**overrides):
  config = configs.load('default')
  config.update_from_flattened_dict(overrides)
  return config


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def train(config, n, **kwargs):
  kwargs = {'local_batch_size': 64, 'seed': 0, 'process_index': 0, 'process_count': 1, **kwargs}
  return take(data.train_batches(config, **kwargs), n)


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """A data_dir with fake_cifar and fake_imagenet prepared as ArrayRecord."""
  data_dir = tmp_path_factory.mktemp('tfds')
  for name in fake_data.BUILDERS:
    fake_data.prepare(name, data_dir)
  return str(data_dir)


@pytest.fixture(scope='module')
def small_folder(tmp_path_factory):
  """30 PNGs of 32×32 per class, three classes, with a `val` split of 6 per class."""
  return fake_data.write_folder(tmp_path_factory.mktemp('small') / 'pets', per_class=(30, 6))


@pytest.fixture(scope='module')
def large_folder(tmp_path_factory):
  """JPEGs of 72 ± 20 pixels a side in class folders, with a `test` split."""
  return fake_data.write_folder(tmp_path_factory.mktemp('large') / 'flowers', classes=('rose', 'iris'),
                                per_class=(24, 7), size=(72, 72), vary=20, kind='jpeg', eval_folder='test')


# ------------------------------------------------------------------------------------------------ no TensorFlow


def test_the_pipeline_never_imports_tensorflow(tfds_dir, small_folder):
  for config in (make_config(), make_config(dataset='fake_cifar', data_dir=tfds_dir),
                 make_config(dataset=small_folder)):
    train(config, 2)
    list(data.eval_batches(config, local_batch_size=64, process_index=0, process_count=1))
  assert 'tensorflow' not in sys.modules


# ------------------------------------------------------------------------------------------------ digits


def test_digits_split_is_fixed_and_stratified():
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

  config = make_config()
  info = data.dataset_info(config)
  assert info == data.DatasetInfo(num_classes=10, num_train=NUM_TRAIN, num_eval=NUM_TEST, image_shape=(8, 8, 1),
                                  class_names=tuple('0123456789'))
  digits = data.resolve(config)
  every = np.round(sk_datasets.load_digits().images * (255 / 16)).astype(np.uint8)
  for split, size in ((digits.train, NUM_TRAIN), (digits.eval, NUM_TEST)):
    assert split.images.shape == (size, 8, 8, 1) and split.images.dtype == np.uint8
    counts = np.bincount(split.labels, minlength=10)
    assert counts.min() >= 0.95 * size / 10 and counts.max() <= 1.05 * size / 10  # stratified
  joined = {im.tobytes() for im in np.concatenate([digits.train.images, digits.eval.images])[..., 0]}
  assert joined == {im.tobytes() for im in every}  # the two splits are the whole of scikit-learn's copy
  # The config states what the data decided.
  assert (config.num_classes, config.image_size, config.augment.crop, config.augment.flip) == (10, 8, 'none', False)
  assert config.augment.mean == (0.30543,) and config.augment.std == (0.37596,)


# ------------------------------------------------------------------------------------------------ training batches


def test_train_batches_are_uint8_deterministic_and_reshuffled_each_epoch():
  config = make_config()
  first = train(config, 23, local_batch_size=128)
  for batch in first:
    assert batch['image'].shape == (128, 8, 8, 1) and batch['image'].dtype == np.uint8
    assert batch['label'].shape == (128,) and batch['label'].dtype == np.int32
  assert_same_batches(first, train(config, 23, local_batch_size=128))
  assert not np.array_equal(first[0]['label'], train(config, 1, local_batch_size=128, seed=1)[0]['label'])
  # 11 steps per epoch: batch 11 opens epoch 1, shuffled differently from epoch 0.
  assert not np.array_equal(first[0]['label'], first[11]['label'])
  epoch = np.concatenate([b['image'] for b in first[:11]])
  assert len({im.tobytes() for im in epoch}) > 0.97 * 11 * 128  # no example twice in an epoch (a few duplicates)


@pytest.mark.parametrize('dataset', ['digits', 'fake_cifar', 'fake_imagenet', 'small_folder', 'large_folder'])
def test_train_batches_resume_exactly(dataset, tfds_dir, small_folder, large_folder):
  config = make_config(dataset={'small_folder': small_folder, 'large_folder': large_folder}.get(dataset, dataset),
                       data_dir=tfds_dir)
  if dataset == 'fake_imagenet':
    config.augment.color_jitter = 0.4  # on the device: the host's batches do not change
  steps_per_epoch = len(data.resolve(config).train) // 20
  reference = train(config, 2 * steps_per_epoch + 3, local_batch_size=20, seed=3)
  for start in (1, steps_per_epoch, steps_per_epoch + 2):
    resumed = train(config, len(reference) - start, local_batch_size=20, seed=3, start_step=start)
    assert_same_batches(reference[start:], resumed)


def test_train_batches_do_not_depend_on_the_number_of_threads(tfds_dir):
  for dataset in ('fake_cifar', 'fake_imagenet'):
    batches = [train(make_config(dataset=dataset, data_dir=tfds_dir, input_threads=threads), 6, local_batch_size=16)
               for threads in (1, 3)]
    assert_same_batches(*batches)


def test_train_batches_shard_over_processes():
  config = make_config()
  # One epoch of 718 // 64 = 11 batches per process: the processes read disjoint halves of the train split.
  epochs = [train(config, 11, process_index=i, process_count=2) for i in range(2)]
  indices = {image.tobytes(): i for i, image in enumerate(data.resolve(config).train.images)}
  seen = [[indices[image.tobytes()] for b in epoch for image in b['image']] for epoch in epochs]
  duplicates = data.resolve(config).train.images.shape[0] - len(indices)
  assert len(set(seen[0])) >= 11 * 64 - duplicates and len(set(seen[1])) >= 11 * 64 - duplicates
  assert not set(seen[0]) & set(seen[1])


def test_pad_crop_flip_pads_with_zeros_and_keeps_the_image(tfds_dir):
  config = make_config(dataset='fake_cifar', data_dir=tfds_dir)
  originals = data.resolve(config).train.images
  assert config.augment.crop == 'pad_crop_flip' and config.augment.padding == 4 and config.image_size == 32
  batch = train(config, 1, local_batch_size=64)[0]
  padded = np.pad(originals, ((0, 0), (4, 4), (4, 4), (0, 0)))
  views = {(dy, dx, flip): (padded[:, :, ::-1] if flip else padded)[:, dy:dy + 32, dx:dx + 32]
           for flip in (False, True) for dy in range(9) for dx in range(9)}
  shifted = 0
  for image, label in zip(batch['image'][:8], batch['label'][:8]):
    found = [(k, int(np.flatnonzero((v == image).all(axis=(1, 2, 3)))[0])) for k, v in views.items()
             if (v == image).all(axis=(1, 2, 3)).any()]
    assert found, 'a training image is not a padded crop (or its mirror) of a training image'
    (dy, dx, _), index = found[0]
    assert data.resolve(config).train.labels[index] == label
    shifted += (dy, dx) != (4, 4)
  assert shifted >= 4  # most crops are off-centre (1 in 81 is centred)


# ------------------------------------------------------------------------------------------------ evaluation


@pytest.mark.parametrize('process_count,batch_size', [(1, 64), (2, 64), (3, 64), (7, 51)])
def test_eval_batches_cover_every_example_once(process_count, batch_size):
  config = make_config()
  per_process = [list(data.eval_batches(config, local_batch_size=batch_size, process_index=i,
                                        process_count=process_count)) for i in range(process_count)]
  assert len({len(batches) for batches in per_process}) == 1  # same batch count everywhere
  seen = collections.Counter()
  for batches in per_process:
    for batch in batches:
      assert batch['image'].shape == (batch_size, 8, 8, 1) and batch['image'].dtype == np.uint8
      assert batch['label'].dtype == np.int32 and batch['mask'].dtype == np.bool_
      mask = batch['mask']
      np.testing.assert_array_equal(mask, np.arange(batch_size) < mask.sum())  # padding only at the end
      for image, label in zip(batch['image'][mask], batch['label'][mask]):
        seen[(int(label), image.tobytes())] += 1
  split = data.resolve(config).eval
  assert seen == collections.Counter((int(l), im.tobytes()) for im, l in zip(split.images, split.labels))
  if (process_count, batch_size) == (7, 51):  # shares of 52 and 51: two batches, the second fully masked on some
    assert any(not batches[-1]['mask'].any() for batches in per_process)


def test_eval_of_large_images_is_a_center_crop_covering_the_split(tfds_dir, large_folder):
  for dataset in ('fake_imagenet', large_folder):
    config = make_config(dataset=dataset, data_dir=tfds_dir)
    resolved = data.resolve(config)
    batches = [list(data.eval_batches(config, local_batch_size=16, process_index=i, process_count=2))
               for i in range(2)]
    images = np.concatenate([b['image'][b['mask']] for bs in batches for b in bs])
    assert images.shape == (len(resolved.eval), config.image_size, config.image_size, 3)
    assert sorted(int(l) for bs in batches for b in bs for l in b['label'][b['mask']]) == sorted(
        resolved.eval[i][1] for i in range(len(resolved.eval)))
    again = list(data.eval_batches(config, local_batch_size=16, process_index=0, process_count=2))
    assert_same_batches(batches[0], again)


# ------------------------------------------------------------------------------------------------ TFDS by name


def test_a_tfds_dataset_by_name_takes_classes_splits_and_shape_from_its_info(tfds_dir):
  config = make_config(dataset='fake_cifar', data_dir=tfds_dir)
  info = data.dataset_info(config)
  assert (info.num_classes, info.num_train, info.num_eval, info.image_shape) == (10, 200, 50, (32, 32, 3))
  assert config.augment.mean == (0.485, 0.456, 0.406) and config.augment.flip  # ImageNet's, by rule
  config = make_config(dataset='fake_imagenet', data_dir=tfds_dir)
  info = data.dataset_info(config)
  assert (info.num_classes, info.num_train, info.num_eval) == (10, 160, 40)  # 'validation' evaluates
  # Images of 48 to 96 pixels: random-resized crops to their median shorter side, rounded down to 8.
  assert config.augment.crop == 'random_resized_crop' and 48 <= config.image_size <= 72
  assert config.image_size % 8 == 0 and info.image_shape == (config.image_size,) * 2 + (3,)


def test_tfds_records_are_tfds_own(tfds_dir):
  """The pipeline parses only the image and label of each record: the same as TFDS's data source gives."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  split = data.resolve(make_config(dataset='fake_imagenet', data_dir=tfds_dir)).train
  source = tfds.data_source('fake_imagenet', split='train', data_dir=tfds_dir,
                            decoders={'image': tfds.decode.SkipDecoding()})
  assert len(split) == len(source) == 160
  for i in (0, 1, 77, 159):
    assert split[i] == (source[i]['image'], int(source[i]['label']))


def test_a_tfds_dataset_not_prepared_names_the_command(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match='python -m multimix_jax.data.prepare'):
    data.dataset_info(make_config(dataset='svhn_cropped', data_dir=str(tmp_path)))


# ------------------------------------------------------------------------------------------------ folders


def test_a_folder_of_small_images_trains_at_its_size_with_classes_sorted(small_folder):
  config = make_config(dataset=small_folder)
  info = data.dataset_info(config)
  assert info.class_names == ('cat', 'dog', 'fox')
  assert (info.num_classes, info.num_train, info.num_eval, info.image_shape) == (3, 90, 18, (32, 32, 3))
  assert (config.augment.crop, config.augment.padding, config.augment.flip) == ('pad_crop_flip', 4, True)
  resolved = data.resolve(config)
  assert resolved.train.decoded and np.bincount(resolved.train.labels).tolist() == [30, 30, 30]
  # The first image of class 'dog' is the 31st of the sorted list.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(os.path.join(small_folder, 'train', 'dog', 'dog_00000.png')) as image:
    np.testing.assert_array_equal(resolved.train.images[30], np.asarray(image.convert('RGB')))


def test_a_folder_of_large_images_gets_the_random_resized_crop(large_folder):
  config = make_config(dataset=large_folder)
  info = data.dataset_info(config)
  assert info.class_names == ('iris', 'rose') and (info.num_train, info.num_eval) == (48, 14)
  assert config.augment.crop == 'random_resized_crop' and 48 <= config.image_size <= 72
  batch = train(config, 1, local_batch_size=8)[0]
  assert batch['image'].shape == (8, config.image_size, config.image_size, 3) and batch['image'].dtype == np.uint8


def test_config_values_that_agree_with_the_data_are_accepted_others_refused(small_folder, large_folder, tfds_dir):
  data.dataset_info(make_config(dataset=small_folder, num_classes=3, image_size=32))
  with pytest.raises(ValueError, match='num_classes=5 but .*pets has 3 classes'):
    data.dataset_info(make_config(dataset=small_folder, num_classes=5))
  with pytest.raises(ValueError, match='image_size=48 but .*images are 32x32 and are not resized'):
    data.dataset_info(make_config(dataset=small_folder, image_size=48))
  config = make_config(dataset=small_folder, image_size=48, **{'augment.crop': 'random_resized_crop'})
  assert data.dataset_info(config).image_shape == (48, 48, 3)  # resized when asked
  config = make_config(dataset=large_folder, image_size=40)
  assert data.dataset_info(config).image_shape == (40, 40, 3)
  with pytest.raises(ValueError, match='num_classes=10 but cifar100 has 100 classes'):
    data.dataset_info(make_config(dataset='cifar100', num_classes=10, data_dir=tfds_dir))
  with pytest.raises(ValueError, match=r'augment.mean=\(0.5,\) and augment.std=\(0.5,\) need 3 values each'):
    data.dataset_info(make_config(dataset=small_folder, **{'augment.mean': (0.5,), 'augment.std': (0.5,)}))


@pytest.mark.parametrize('damage,message', [
    ('empty_class', 'an empty class folder'),
    ('unreadable', 'not a readable image'),
    ('one_class', 'has 1 class folder'),
    ('unknown_eval_class', "has classes that .* lacks: \\['wolf'\\]"),
    ('no_eval_split', 'expected the split folders train/ and one of val/, validation/, test/'),
    ('loose_image', 'holds images directly'),
    ('missing', 'no such folder'),
])
def test_bad_folders_get_one_clear_error(tmp_path, damage, message):
  root = fake_data.write_folder(tmp_path / 'd', per_class=(2, 1))
  if damage == 'empty_class':
    os.makedirs(os.path.join(root, 'train', 'empty'))
  elif damage == 'unreadable':
    with open(os.path.join(root, 'train', 'cat', 'broken.png'), 'wb') as f:
      f.write(b'not an image')
  elif damage == 'one_class':
    root = fake_data.write_folder(tmp_path / 'one', classes=('cat',), per_class=(2, 1))
  elif damage == 'unknown_eval_class':
    fake_data.write_folder(tmp_path / 'extra', classes=('wolf',), per_class=(1, 1))
    os.rename(tmp_path / 'extra' / 'val' / 'wolf', os.path.join(root, 'val', 'wolf'))
  elif damage == 'no_eval_split':
    os.rename(os.path.join(root, 'val'), os.path.join(root, 'holdout'))
  elif damage == 'loose_image':
    os.rename(os.path.join(root, 'train', 'cat', 'cat_00000.png'), os.path.join(root, 'train', 'cat_00000.png'))
  elif damage == 'missing':
    root = str(tmp_path / 'nowhere')
  with pytest.raises(sources.DataError, match=message) as error:
    data.dataset_info(make_config(dataset=root))
  assert '\n' not in str(error.value)


def test_large_images_of_one_size_train_at_that_size_when_asked(tmp_path):
  root = fake_data.write_folder(tmp_path / 'd', per_class=(4, 2), size=(100, 100), kind='jpeg')
  config = make_config(dataset=root, **{'augment.crop': 'pad_crop_flip'})
  assert data.dataset_info(config).image_shape == (100, 100, 3) and config.image_size == 100
  assert train(config, 1, local_batch_size=4)[0]['image'].shape == (4, 100, 100, 3)
  with pytest.raises(ValueError, match='image_size=96 but .* images are 100x100 and are not resized'):
    data.dataset_info(make_config(dataset=root, image_size=96, **{'augment.crop': 'pad_crop_flip'}))


def test_images_of_several_sizes_refuse_to_train_at_their_own_size(tmp_path):
  root = fake_data.write_folder(tmp_path / 'd', per_class=(4, 2), size=(30, 30), vary=2)
  config = make_config(dataset=root, **{'augment.crop': 'pad_crop_flip'})
  with pytest.raises(sources.DataError, match='at their own size, which must be one square size'):
    data.dataset_info(config)


def test_a_bucket_without_gcsfs_is_one_error_naming_the_install(monkeypatch):
  def find_prepared(name, data_dir):
    raise ImportError('Please install gcsfs to access Google Storage')  # what TFDS raises without TF and gcsfs
  monkeypatch.setattr(sources.prepare, 'find_prepared', find_prepared)
  with pytest.raises(sources.DataError, match=r"data_dir=gs://bucket/tfds needs .*multimix_jax\[gcs\]"):
    data.dataset_info(make_config(dataset='svhn_cropped', data_dir='gs://bucket/tfds'))
