"""Training needs no TensorFlow: the command line trains, evaluates and resumes exactly in processes where
`import tensorflow` fails, on the default (digits), a CIFAR-shaped and an ImageNet-shaped TFDS dataset (generated
here with the catalog builders' own metadata, in ArrayRecord) and a folder of a few hundred PNGs in class folders.

A run of 6 steps is compared with a run of 3 steps resumed to 6 (`num_train_steps` may grow on resume): the same
parameters bit for bit and the same evaluation history, so the data order and augmentation resumed exactly.
"""

import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

import fake_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ['--config.batch_size=16', '--config.eval_batch_size=32', '--config.multimix.n=32',
          '--config.checkpoint_every_steps=3', '--config.eval_every_steps=3', '--config.log_every_steps=3',
          '--config.model=small_cnn']


@pytest.fixture(scope='module')
def no_tensorflow(tmp_path_factory):
  """An environment whose Python cannot import TensorFlow, installed or not: a stand-in package that raises."""
  stub = tmp_path_factory.mktemp('no_tensorflow')
  (stub / 'tensorflow').mkdir()
  (stub / 'tensorflow' / '__init__.py').write_text("raise ImportError('training imported tensorflow')\n")
  return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(stub), os.environ.get('PYTHONPATH', '')]),
          'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  fake_data.prepare_catalog('cifar10', data_dir, {'train': 96, 'test': 40})
  fake_data.prepare_catalog('imagenet2012', data_dir, {'train': 96, 'validation': 40})
  return str(data_dir)


def train(workdir, env, steps, args):
  done = subprocess.run([sys.executable, '-m', 'multimix_jax.main', f'--workdir={workdir}',
                         f'--config.num_train_steps={steps}', *COMMON, *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stderr


def final(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    return manager.restore(manager.latest_step())['params'], manager.latest_step()


@pytest.mark.parametrize('dataset', ['digits', 'cifar10', 'imagenet2012', 'folder'])
def test_trains_evaluates_and_resumes_exactly_without_tensorflow(dataset, no_tensorflow, data_dir, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top

  args = {'digits': [],
          'cifar10': [f'--config.data_dir={data_dir}', '--config.dataset=cifar10'],
          # ImageNet's whole transform (random-resized crop, flip, colour jitter, lighting), at 32 pixels for a CPU.
          'imagenet2012': [f'--config.data_dir={data_dir}', '--config.dataset=imagenet2012',
                           '--config.image_size=32'],
          'folder': [f'--config.dataset={tmp_path / "pets"}']}[dataset]
  if dataset == 'folder':  # 300 PNGs of 32x32 in three class folders, 60 to evaluate
    fake_data.write_folder(tmp_path / 'pets', per_class=(100, 20))
  log = train(tmp_path / 'straight', no_tensorflow, 6, args)
  assert 'training imported tensorflow' not in log
  train(tmp_path / 'resumed', no_tensorflow, 3, args)
  log = train(tmp_path / 'resumed', no_tensorflow, 6, args)
  assert 'Resumed from the checkpoint at step 3' in log
  (straight, step), (resumed, resumed_step) = final(tmp_path / 'straight'), final(tmp_path / 'resumed')
  assert step == resumed_step == 6
  jax.tree.map(np.testing.assert_array_equal, straight, resumed)
  histories = [json.loads((tmp_path / run / 'eval_history.json').read_text()) for run in ('straight', 'resumed')]
  assert histories[0] == histories[1] and [h['step'] for h in histories[0]] == [3, 6]
  config = json.loads((tmp_path / 'straight' / 'config.json').read_text())
  expected = {'digits': (10, 8, 'none'), 'cifar10': (10, 32, 'pad_crop_flip'),
              'imagenet2012': (1000, 32, 'random_resized_crop'), 'folder': (3, 32, 'pad_crop_flip')}[dataset]
  assert (config['num_classes'], config['image_size'], config['augment']['crop']) == expected
  if dataset == 'imagenet2012':
    assert (config['augment']['color_jitter'], config['augment']['lighting_std']) == (0.4, 0.1)
  if dataset == 'folder':
    assert json.loads((tmp_path / 'straight' / 'classes.json').read_text()) == ['cat', 'dog', 'fox']
