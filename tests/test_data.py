"""Input pipeline: offline builders, exact resume, exact-cover masked evaluation, per-dataset shapes and errors.

Real data is never downloaded: digits is built from scikit-learn's copy, Tiny ImageNet from a fake zip made here,
and CIFAR-10 / ImageNet run under `tfds.testing.mock_data` with metadata written here.
"""

import collections
import importlib.util
import itertools
import os
import pathlib
import socket
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from multimix_jax import data
from multimix_jax.data import deit_augment
from multimix_jax.data import input_pipeline

_spec = importlib.util.spec_from_file_location(
    'default_config', pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'default.py')
default_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default_config)

NUM_TRAIN, NUM_TEST = 1437, 360


def make_config(data_dir, **overrides):
  config = default_config.get_config()
  config.data_dir = str(data_dir)
  config.update(overrides)
  return config


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  """A data_dir with digits prepared, with the network switched off while it builds."""
  data_dir = tmp_path_factory.mktemp('digits')
  with pytest.MonkeyPatch.context() as mp:
    def no_network(*args, **kwargs):
      raise OSError('network access during the digits build')
    mp.setattr(socket.socket, 'connect', no_network)
    info = data.dataset_info(make_config(data_dir))  # prepares on first use
  assert info == data.DatasetInfo(num_classes=10, num_train=NUM_TRAIN, num_eval=NUM_TEST, image_shape=(8, 8, 1))
  return data_dir


def read_split(data_dir, name, split):
  return tfds.as_numpy(tfds.builder(name, data_dir=str(data_dir)).as_dataset(split=split, batch_size=-1))


# Digits builder.


def test_digits_split_is_fixed_and_stratified(digits_dir, tmp_path):
  builder = tfds.builder('digits', data_dir=str(tmp_path))
  builder.download_and_prepare()  # a second, independent build
  for split, size in (('train', NUM_TRAIN), ('test', NUM_TEST)):
    first, second = read_split(digits_dir, 'digits', split), read_split(tmp_path, 'digits', split)
    assert first['image'].shape == (size, 8, 8, 1) and first['image'].dtype == np.uint8
    np.testing.assert_array_equal(first['image'], second['image'])
    np.testing.assert_array_equal(first['label'], second['label'])
    counts = np.bincount(first['label'], minlength=10)
    assert counts.min() >= 0.95 * size / 10 and counts.max() <= 1.05 * size / 10  # stratified
  assert read_split(digits_dir, 'digits', 'train')['image'].max() == 255


# Training batches.


def test_train_batches_shapes_and_normalisation(digits_dir):
  config = make_config(digits_dir)
  batches = take(data.train_batches(config, local_batch_size=128, seed=0, process_index=0, process_count=1), 22)
  for batch in batches:
    assert batch['image'].shape == (128, 8, 8, 1) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (128,) and batch['label'].dtype == np.int32
  images = np.concatenate([b['image'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05  # the train split's statistics
  assert set(labels) == set(range(10))


def test_train_batches_are_deterministic_and_reshuffled_each_epoch(digits_dir):
  config = make_config(digits_dir)
  batches = lambda seed: take(data.train_batches(config, local_batch_size=128, seed=seed, process_index=0,
                                                 process_count=1), 13)
  first = batches(0)
  assert_same_batches(first, batches(0))
  assert not np.array_equal(first[0]['label'], batches(1)[0]['label'])
  # 11 steps per epoch: batch 11 opens epoch 1, shuffled differently from epoch 0.
  assert not np.array_equal(first[0]['label'], first[11]['label'])


@pytest.mark.parametrize('start_step', [1, 13, 14, 31])
def test_train_batches_resume_exactly(digits_dir, start_step):
  # 14 steps of 100 per epoch (37 examples dropped per epoch): 14 and 31 start in epochs 1 and 2.
  config = make_config(digits_dir)
  reference = take(data.train_batches(config, local_batch_size=100, seed=3, process_index=0, process_count=1), 40)
  resumed = take(data.train_batches(config, local_batch_size=100, seed=3, start_step=start_step, process_index=0,
                                    process_count=1), 40 - start_step)
  assert_same_batches(reference[start_step:], resumed)


def test_train_batches_do_not_depend_on_the_cache(digits_dir):
  kwargs = dict(local_batch_size=100, seed=5, process_index=0, process_count=1)
  assert_same_batches(take(data.train_batches(make_config(digits_dir, cache=True), **kwargs), 16),
                      take(data.train_batches(make_config(digits_dir, cache=False), **kwargs), 16))


def test_train_batches_shard_over_processes(digits_dir):
  config = make_config(digits_dir)
  # One epoch of 718 // 64 = 11 batches per process: the processes read disjoint halves of the train split.
  epochs = [take(data.train_batches(config, local_batch_size=64, seed=0, process_index=i, process_count=2), 11)
            for i in range(2)]
  key = lambda image, label: (int(label), np.round(image, 4).tobytes())
  seen = [{key(image, label) for b in epoch for image, label in zip(b['image'], b['label'])} for epoch in epochs]
  assert len(seen[0]) > 0.95 * 11 * 64 and len(seen[1]) > 0.95 * 11 * 64  # no example twice in an epoch
  train = read_split(digits_dir, 'digits', 'train')
  duplicated = len(train['label']) - len({(int(l), im.tobytes()) for im, l in zip(train['image'], train['label'])})
  assert len(seen[0] & seen[1]) <= duplicated  # only identical digits can appear on both processes


# Evaluation batches.


@pytest.mark.parametrize('process_count,batch_size', [(1, 64), (2, 64), (3, 64), (7, 51)])
def test_eval_batches_cover_every_example_once(digits_dir, process_count, batch_size):
  config = make_config(digits_dir)
  per_process = [list(data.eval_batches(config, local_batch_size=batch_size, process_index=i,
                                        process_count=process_count)) for i in range(process_count)]
  assert len({len(batches) for batches in per_process}) == 1  # same batch count everywhere
  seen = collections.Counter()
  for batches in per_process:
    for batch in batches:
      assert batch['image'].shape == (batch_size, 8, 8, 1) and batch['image'].dtype == np.float32
      assert batch['label'].dtype == np.int32 and batch['mask'].dtype == np.bool_
      mask = batch['mask']
      np.testing.assert_array_equal(mask, np.arange(batch_size) < mask.sum())  # padding only at the end
      for image, label in zip(batch['image'][mask], batch['label'][mask]):
        seen[(int(label), np.round(image, 4).tobytes())] += 1
  test = read_split(digits_dir, 'digits', 'test')
  mean, std = data.DATASETS['digits'].mean[0] * 255, data.DATASETS['digits'].std[0] * 255
  expected = collections.Counter(
      (int(label), np.round((image.astype(np.float32) - np.float32(mean)) / np.float32(std), 4).tobytes())
      for image, label in zip(test['image'], test['label']))
  assert seen == expected
  if (process_count, batch_size) == (7, 51):  # shares of 52 and 51: two batches, the second fully masked on some
    assert any(not batches[-1]['mask'].any() for batches in per_process)


# Other datasets: mocked CIFAR-10 and ImageNet, Tiny ImageNet from a fake zip.


def write_metadata(data_dir, name, split_sizes):
  """Writes the dataset_info of `name` with these split sizes, for `tfds.testing.mock_data(policy=USE_FILES)`."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0) for split, n in split_sizes.items()]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)


def mock(data_dir, num_examples):
  return tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=str(data_dir))


def test_cifar10_pipeline_pads_crops_and_flips(tmp_path):
  n = 8
  write_metadata(tmp_path, 'cifar10', {'train': n, 'test': n})
  config = make_config(tmp_path, dataset='cifar10', image_size=32)
  with mock(tmp_path, n):
    assert data.dataset_info(config) == data.DatasetInfo(10, n, n, (32, 32, 3))
    originals = tfds.as_numpy(tfds.builder('cifar10').as_dataset(split='train', batch_size=-1))['image']
    batches = take(data.train_batches(config, local_batch_size=4, seed=0, process_index=0, process_count=1), 4)
    evals = list(data.eval_batches(config, local_batch_size=5, process_index=0, process_count=1))
  mean = np.array(data.DATASETS['cifar10'].mean) * 255
  std = np.array(data.DATASETS['cifar10'].std) * 255
  padded = np.pad(originals.astype(np.float64), [(0, 0), (4, 4), (4, 4), (0, 0)])
  candidates = [view for image in padded for flip in (image, image[:, ::-1])
                for view in (flip[y:y + 32, x:x + 32] for y in range(9) for x in range(9))]
  views = []
  for batch in batches:
    assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.float32
    for image in batch['image'].astype(np.float64) * std + mean:  # un-normalised: a crop of a padded original
      distances = [np.abs(image - c).max() for c in candidates]
      assert min(distances) < 1e-3
      views.append(int(np.argmin(distances)) % 162)  # which flip and offset
  assert len(set(views)) > 8  # the crops and flips vary
  assert [b['mask'].sum() for b in evals] == [5, 3]
  assert evals[0]['image'].shape == (5, 32, 32, 3)


def test_imagenet2012_pipeline_decodes_and_crops_lazily(tmp_path):
  n = 6
  write_metadata(tmp_path, 'imagenet2012', {'train': n, 'validation': n})
  config = make_config(tmp_path, dataset='imagenet2012', num_classes=1000, image_size=32, cache=False)
  with mock(tmp_path, n):  # mock JPEGs of random sizes between 5 and 49 pixels
    assert data.dataset_info(config) == data.DatasetInfo(1000, n, n, (32, 32, 3))
    train = take(data.train_batches(config, local_batch_size=3, seed=0, process_index=0, process_count=1), 3)
    resumed = take(data.train_batches(config, local_batch_size=3, seed=0, start_step=1, process_index=0,
                                      process_count=1), 2)
    evals = list(data.eval_batches(config, local_batch_size=4, process_index=0, process_count=1))
  assert_same_batches(train[1:], resumed)
  for batch in train:
    assert batch['image'].shape == (3, 32, 32, 3) and batch['image'].dtype == np.float32
    assert np.isfinite(batch['image']).all() and ((0 <= batch['label']) & (batch['label'] < 1000)).all()
  assert [b['image'].shape for b in evals] == [(4, 32, 32, 3)] * 2 and [b['mask'].sum() for b in evals] == [4, 2]


def write_fake_tiny_imagenet(manual_dir, train_per_class=3, num_val=5):
  """A tiny-imagenet-200.zip laid out like the official one: 200 wnids, images for the first three only."""
  wnids = [f'n{i:08d}' for i in range(200, 0, -1)]  # not sorted, like the official wnids.txt
  rng = np.random.default_rng(0)
  jpeg = lambda channels: tf.io.encode_jpeg(rng.integers(0, 256, (64, 64, channels), dtype=np.uint8)).numpy()
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


def test_tiny_imagenet_builds_from_the_manual_zip(tmp_path):
  manual_dir = tmp_path / 'elsewhere'
  wnids = write_fake_tiny_imagenet(manual_dir)
  builder = tfds.builder('tiny_imagenet', data_dir=str(tmp_path / 'data'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  assert builder.info.splits['train'].num_examples == 9 and builder.info.splits['validation'].num_examples == 5
  assert builder.info.features['label'].names == sorted(wnids)
  val = tfds.as_numpy(builder.as_dataset(split='validation', batch_size=-1))
  assert val['image'].shape == (5, 64, 64, 3)
  expected = {f'val_{j}.JPEG': sorted(wnids).index(wnids[j % 3]) for j in range(5)}
  assert {f.decode(): int(l) for f, l in zip(val['file_name'], val['label'])} == expected


def test_tiny_imagenet_is_prepared_on_first_use(tmp_path):
  config = make_config(tmp_path, dataset='tiny_imagenet', num_classes=200, image_size=64)
  with pytest.raises(data.DatasetNotFoundError, match=str(tmp_path / 'downloads' / 'manual' / 'tiny-imagenet-200.zip')):
    data.dataset_info(config)
  write_fake_tiny_imagenet(tmp_path / 'downloads' / 'manual', train_per_class=4)
  assert data.dataset_info(config) == data.DatasetInfo(200, 12, 5, (64, 64, 3))
  batch, = take(data.train_batches(config, local_batch_size=4, seed=0, process_index=0, process_count=1), 1)
  assert batch['image'].shape == (4, 64, 64, 3) and batch['image'].dtype == np.float32


# Errors.


def test_missing_dataset_names_the_fix(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.dataset_info(make_config(tmp_path, dataset='cifar10', image_size=32))
  command = str(error.value).split('\n')[2].strip()
  assert command == ("python -c \"import multimix_jax.data, tensorflow_datasets as tfds; "
                     f"tfds.builder('cifar10', data_dir='{tmp_path}').download_and_prepare()\"")
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.dataset_info(make_config(tmp_path, dataset='imagenet2012', num_classes=1000, image_size=224))
  for part in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar', str(tmp_path / 'downloads' / 'manual')):
    assert part in str(error.value)


def test_config_errors_are_clear(tmp_path):
  with pytest.raises(ValueError, match=r"dataset='mnist' is not supported; choose one of \['digits', 'cifar10'"):
    data.dataset_info(make_config(tmp_path, dataset='mnist'))
  with pytest.raises(ValueError, match='num_classes=10 but cifar100 has 100 classes'):
    data.dataset_info(make_config(tmp_path, dataset='cifar100', image_size=32))
  with pytest.raises(ValueError, match='set --config.image_size=32'):
    data.dataset_info(make_config(tmp_path, dataset='cifar10'))


# ImageNet's colour augmentation: the authors' ColorJitter and Lighting, against NumPy references.


def small_image(seed=0):
  return np.random.RandomState(seed).uniform(0, 1, (5, 4, 3)).astype(np.float32)


def np_gray(image):
  return (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2])[..., None]


def np_jitter_op(op, image, factor):
  """torchvision's blend formulas, unclamped: the authors' img.lerp(target, 1 − factor)."""
  target = {0: np.zeros_like(image), 1: np.full_like(image, np_gray(image).mean()), 2: np_gray(image)}[op]
  return factor * image + (1 - factor) * target


def test_colour_ops_match_numpy_formulas():
  image = small_image()
  for op, fn in enumerate((input_pipeline.adjust_brightness, input_pipeline.adjust_contrast,
                           input_pipeline.adjust_saturation)):
    for factor in (0.6, 1.3):
      np.testing.assert_allclose(fn(tf.constant(image), factor).numpy(), np_jitter_op(op, image, factor),
                                 rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(input_pipeline.grayscale(tf.constant(image)).numpy(), np_gray(image), rtol=1e-6)


def test_color_jitter_applies_the_drawn_factors_in_the_drawn_order():
  image, strength = small_image(), 0.4
  orders = set()
  for i in range(12):
    key = tf.constant([7, i], tf.int64)
    factors, order = (t.numpy() for t in input_pipeline.jitter_parameters(key, strength))
    assert sorted(order) == [0, 1, 2] and ((1 - strength <= factors) & (factors <= 1 + strength)).all()
    expected = image
    for op in order:
      expected = np_jitter_op(op, expected, factors[op])
    out = input_pipeline.color_jitter(tf.constant(image), key, strength).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out, input_pipeline.color_jitter(tf.constant(image), key, strength).numpy())
    orders.add(tuple(order))
  assert len(orders) > 2  # the order is random, not fixed


def test_lighting_adds_the_pca_noise():
  image = small_image()
  key = tf.constant([3, 4], tf.int64)
  out = input_pipeline.lighting(tf.constant(image), key, 0.1).numpy()
  shift = out - image
  np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-6)  # one RGB shift
  # image + eigvec @ (alpha · eigval): recover alpha and check it against the same key's normal draw.
  eigvec, eigval = np.array(input_pipeline.IMAGENET_EIGVEC), np.array(input_pipeline.IMAGENET_EIGVAL)
  alpha = 0.1 * tf.random.stateless_normal([3], seed=key).numpy()
  np.testing.assert_allclose(shift[0, 0], eigvec @ (alpha * eigval), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(out, input_pipeline.lighting(tf.constant(image), key, 0.1).numpy())
  assert not np.allclose(out, input_pipeline.lighting(tf.constant(image), tf.constant([3, 5], tf.int64), 0.1))


def test_only_imagenet_has_colour_augmentation():
  assert (data.DATASETS['imagenet2012'].color_jitter, data.DATASETS['imagenet2012'].lighting_std) == (0.4, 0.1)
  assert all(spec.color_jitter == spec.lighting_std == 0 for name, spec in data.DATASETS.items()
             if name != 'imagenet2012')


# DeiT's augmentation (the ViT recipes): RandAugment's ops against PIL as timm calls it, its draws, random erasing,
# and the pipeline's exact resume with all of it on.


def pil_reference_ops(pil, fill):
  """timm's 'inc1' RandAugment ops, f(m, sign) -> PIL image, written as timm's auto_augment.py calls PIL (with
  bilinear resampling, which TensorFlow has; timm's DeiT recipe resamples bicubically)."""
  from PIL import Image, ImageEnhance, ImageOps  # pylint: disable=g-import-not-at-top
  kw = dict(resample=Image.BILINEAR, fillcolor=fill)
  level = lambda m: m / 10
  enhance = lambda m, s: max(0.1, 1 + s * 0.9 * level(m))
  affine = lambda matrix: pil.transform(pil.size, Image.AFFINE, matrix, **kw)
  bits = lambda m: 4 - int(4 * level(m))
  return [
      lambda m, s: ImageOps.autocontrast(pil),
      lambda m, s: ImageOps.equalize(pil),
      lambda m, s: ImageOps.invert(pil),
      lambda m, s: pil.rotate(s * 30 * level(m), **kw),
      # Pillow >= 10 refuses 0 bits (m = 10), which older Pillow turned black.
      lambda m, s: ImageOps.posterize(pil, bits(m)) if bits(m) else pil.point(lambda i: 0),
      lambda m, s: ImageOps.solarize(pil, 256 - int(256 * level(m))),
      lambda m, s: pil.point([min(255, i + int(110 * level(m))) if i < 128 else i for i in range(256)] * 3),
      lambda m, s: ImageEnhance.Color(pil).enhance(enhance(m, s)),
      lambda m, s: ImageEnhance.Contrast(pil).enhance(enhance(m, s)),
      lambda m, s: ImageEnhance.Brightness(pil).enhance(enhance(m, s)),
      lambda m, s: ImageEnhance.Sharpness(pil).enhance(enhance(m, s)),
      lambda m, s: affine((1, s * 0.3 * level(m), 0, 0, 1, 0)),
      lambda m, s: affine((1, 0, 0, s * 0.3 * level(m), 1, 0)),
      lambda m, s: affine((1, 0, s * 0.45 * level(m) * pil.size[0], 0, 1, 0)),
      lambda m, s: affine((1, 0, 0, 0, 1, s * 0.45 * level(m) * pil.size[1])),
  ]


def test_randaugment_ops_match_pil():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.random.RandomState(0).randint(0, 256, (9, 11, 3)).astype(np.uint8)
  image[2:5, 3:8] = [200, 30, 90]  # a flat patch, so that sharpness and equalize see structure
  fill = (124, 116, 104)
  references = pil_reference_ops(Image.fromarray(image), fill)
  assert len(references) == len(deit_augment.OP_NAMES) == deit_augment.NUM_OPS
  for index, name in enumerate(deit_augment.OP_NAMES):
    for m, sign in ((9.0, 1.0), (6.3, -1.0), (10.0, 1.0)):
      ours = deit_augment.apply_op(tf.constant(image, tf.float32), index, tf.constant(m), tf.constant(sign),
                                   fill).numpy()
      difference = np.abs(ours - np.asarray(references[index](m, sign), np.float32))
      # Integer arithmetic in PIL, float32 here: a level apart on a few pixels at most.
      assert difference.max() <= 1 and (difference > 0).mean() < 0.05, (name, m, sign, difference.max())


def test_randaugment_applies_its_draws():
  image = np.random.RandomState(1).randint(0, 256, (8, 8, 3)).astype(np.uint8)
  kwargs = dict(num_layers=2, magnitude=9.0, magnitude_std=0.5)
  fill = (124, 116, 104)
  draws = [tuple(t.numpy() for t in deit_augment.rand_augment_draws(tf.constant([5, i], tf.int64), **kwargs))
           for i in range(300)]
  index, applied, m, sign = (np.concatenate(column) for column in zip(*draws))
  assert set(index) == set(range(15)) and abs(applied.mean() - 0.5) < 0.06 and abs((sign > 0).mean() - 0.5) < 0.06
  assert m.max() <= 10 and m.min() >= 0 and abs(np.median(m) - 9) < 0.1 and 0.3 < m[m < 10].std() < 0.5
  for i in range(6):
    key = tf.constant([5, i], tf.int64)
    out = deit_augment.rand_augment(tf.constant(image), key, fill=fill, **kwargs).numpy()
    expected = tf.constant(image, tf.float32)
    for layer in range(2):
      if draws[i][1][layer]:
        expected = deit_augment.apply_op(expected, int(draws[i][0][layer]), tf.constant(draws[i][2][layer]),
                                         tf.constant(draws[i][3][layer]), fill)
    np.testing.assert_array_equal(out, expected.numpy())
    np.testing.assert_array_equal(out, deit_augment.rand_augment(tf.constant(image), key, fill=fill, **kwargs))


def test_random_erasing_replaces_one_rectangle_with_noise():
  mean, std = data.DATASETS['imagenet2012'].mean, data.DATASETS['imagenet2012'].std
  image = tf.fill([20, 24, 3], 77.0)
  erased = 0
  for i in range(120):
    key = tf.constant([9, i], tf.int64)
    out = deit_augment.random_erasing(image, key, 0.25, mean, std).numpy()
    if i < 3:
      np.testing.assert_array_equal(out, deit_augment.random_erasing(image, key, 0.25, mean, std))
    changed = (out != 77.0).any(-1)
    if not changed.any():
      continue
    erased += 1
    rows, cols = np.nonzero(changed.any(1))[0], np.nonzero(changed.any(0))[0]
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert changed.sum() == h * w  # one full rectangle
    assert 0.02 * 480 - 2 * 24 <= h * w <= 480 / 3 + 2 * 24 and h < 20 and w < 24  # area, up to rounding h and w
    noise = (out[changed] / 255 - np.array(mean)) / np.array(std)  # what the normalisation makes of it
    assert np.abs(noise).max() < 6
  assert 15 <= erased <= 48  # p = 0.25 of 120: 30 ± 3.5 standard deviations
  np.testing.assert_array_equal(deit_augment.random_erasing(image, key, 0.0, mean, std), image)
  big = np.concatenate([(deit_augment.random_erasing(image, tf.constant([3, i], tf.int64), 1.0, mean, std).numpy()
                         / 255 - np.array(mean)) / np.array(std) for i in range(10)])
  noise = big[np.abs(big - (77 / 255 - np.array(mean)) / np.array(std)) > 1e-4]
  assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1  # N(0, 1) once normalised


DEIT = dict(resize='bicubic', color_jitter=0.0, lighting_std=0.0, randaugment_layers=2, random_erasing=0.25)


def test_deit_augmentation_resumes_exactly(tmp_path):
  """The ViT recipe's augmentation (bicubic crop, RandAugment, random erasing) keeps exact resume."""
  n = 6
  write_metadata(tmp_path, 'imagenet2012', {'train': n, 'validation': n})
  plain = make_config(tmp_path, dataset='imagenet2012', num_classes=1000, image_size=16, cache=False)
  config = make_config(tmp_path, dataset='imagenet2012', num_classes=1000, image_size=16, cache=False)
  config.augment.update(DEIT)
  kwargs = dict(local_batch_size=3, seed=0, process_index=0, process_count=1)
  with mock(tmp_path, n):
    train = take(data.train_batches(config, **kwargs), 5)
    resumed = take(data.train_batches(config, start_step=3, **kwargs), 2)
    without = take(data.train_batches(plain, **kwargs), 5)
  assert_same_batches(train[3:], resumed)
  assert not any(np.allclose(a['image'], b['image']) for a, b in zip(train, without))  # the augmentation ran
  for batch in train:
    assert batch['image'].shape == (3, 16, 16, 3) and np.isfinite(batch['image']).all()


def test_bicubic_resize_is_clipped_and_differs(tmp_path):
  n = 4
  write_metadata(tmp_path, 'imagenet2012', {'train': n, 'validation': n})
  config = make_config(tmp_path, dataset='imagenet2012', num_classes=1000, image_size=32, cache=False)
  bicubic = make_config(tmp_path, dataset='imagenet2012', num_classes=1000, image_size=32, cache=False)
  bicubic.augment.resize = 'bicubic'
  with mock(tmp_path, n):
    evals = [list(data.eval_batches(c, local_batch_size=4, process_index=0, process_count=1))[0]['image']
             for c in (config, bicubic)]
  spec = data.DATASETS['imagenet2012']
  pixels = [image * np.array(spec.std) * 255 + np.array(spec.mean) * 255 for image in evals]
  assert not np.allclose(*pixels, atol=0.5)
  assert all(-1e-3 <= p.min() and p.max() <= 255 + 1e-3 for p in pixels)
