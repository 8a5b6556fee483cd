"""The experiment configs and launch scripts: they load as config_flags loads them, carry exactly the default's
keys, state SPEC §5's protocol, build networks of the authors' sizes, and the trainer accepts them.

Networks are only traced (jax.eval_shape); nothing is downloaded.
"""

import importlib.util
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from multimix_jax.models import create_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / 'configs'
LAUNCH = ROOT / 'launch'

# SPEC §5: (dataset, classes, image size, network, epochs, lr boundaries, Nesterov, parameters, final map r).
# PreActResNet-18 with 200 classes: the 10-class count plus 190 more rows of the 512-wide linear head.
PROTOCOL = {
    'cifar10_r18': ('cifar10', 10, 32, 'preact_resnet18', 2000, (500, 1000, 1500), False, 11_171_274, 16),
    'cifar100_r18': ('cifar100', 100, 32, 'preact_resnet18', 2000, (500, 1000, 1500), False, 11_217_444, 16),
    'cifar10_wrn16_8': ('cifar10', 10, 32, 'wrn16_8', 2000, (500, 1000, 1500), False, 10_965_866, 64),
    'cifar100_wrn16_8': ('cifar100', 100, 32, 'wrn16_8', 2000, (500, 1000, 1500), False, 11_012_036, 64),
    'tinyimagenet_r18': ('tiny_imagenet', 200, 64, 'preact_resnet18', 1200, (600, 900), False,
                         11_171_274 + 190 * 513, 64),
    'imagenet_r50': ('imagenet2012', 1000, 224, 'resnet50', 300, (75, 150, 225), True, 25_557_032, 49),
}
NAMES = ['default', 'digits', *PROTOCOL]


def load(name):
  """get_config() of configs/<name>.py, loaded by path as ml_collections.config_flags loads it."""
  spec = importlib.util.spec_from_file_location(f'config_{name}', CONFIGS / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def key_tree(config):
  """The nested key structure of a ConfigDict: {key: subtree or None}."""
  return {k: key_tree(v) if isinstance(v, ml_collections.ConfigDict) else None for k, v in config.items()}


def parse_flags(path, *overrides):
  """The config that `--config=path` and `--config.k=v` overrides give, through a fresh absl flag set."""
  argv = ['main', f'--config={path}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values, lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_every_config_file_is_tested():
  assert sorted(p.stem for p in CONFIGS.glob('*.py')) == sorted(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_config_has_exactly_the_default_keys(name):
  assert key_tree(load(name)) == key_tree(load('default'))


def test_digits_is_the_default():
  assert load('digits').to_dict() == load('default').to_dict()


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # inside config_flags
@pytest.mark.parametrize('name', PROTOCOL)
def test_config_flags_loads_it_from_any_working_directory(name, tmp_path, monkeypatch):
  expected = load(name).to_dict()
  monkeypatch.chdir(ROOT)
  assert parse_flags(f'configs/{name}.py').to_dict() == expected
  monkeypatch.chdir(tmp_path)  # config files find their base config next to themselves, not in the cwd
  config = parse_flags(CONFIGS / f'{name}.py', '--config.method=erm', '--config.multimix.n=10')
  assert (config.method, config.multimix.n) == ('erm', 10)
  config.method, config.multimix.n = expected['method'], expected['multimix']['n']
  assert config.to_dict() == expected  # nothing else moved


@pytest.mark.parametrize('name', PROTOCOL)
def test_spec_protocol(name):
  dataset, num_classes, image_size, model, epochs, boundaries, nesterov, _, _ = PROTOCOL[name]
  config = load(name)
  assert (config.dataset, config.num_classes, config.image_size, config.model) == (dataset, num_classes,
                                                                                     image_size, model)
  assert (config.num_epochs, config.num_train_steps) == (epochs, -1)
  assert (config.schedule, tuple(config.lr_boundaries_epochs), config.lr_decay_factor) == ('piecewise', boundaries,
                                                                                             0.1)
  assert (config.learning_rate, config.momentum, config.nesterov, config.weight_decay) == (0.1, 0.9, nesterov, 1e-4)
  assert config.warmup_epochs == 0
  # b = 128 per device (SPEC §5): one device for the small datasets, 8 for ImageNet.
  assert config.batch_size == (1024 if dataset == 'imagenet2012' else 128)
  mm = config.multimix
  assert (config.method, mm.n, mm.m, mm.alpha, mm.alpha_range, mm.prob, mm.alternative, mm.scope) == (
      'multimix', 1000, 0, 0.1, None, 0.5, 'input_mixup', 'device')


@pytest.mark.parametrize('name', PROTOCOL)
def test_dataset_agrees_with_the_input_pipeline(name):
  from multimix_jax import data  # pylint: disable=g-import-not-at-top  # TensorFlow: only here
  config = load(name)
  spec = data.DATASETS[config.dataset]
  assert spec.num_classes == config.num_classes
  assert spec.size in (None, config.image_size)
  assert config.shuffle_buffer >= 10_000
  assert config.cache == (config.dataset != 'imagenet2012')  # ImageNet's JPEGs do not fit in memory


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('num_devices', [1, 8])
def test_trainer_accepts_it(name, num_devices):
  from multimix_jax import train  # pylint: disable=g-import-not-at-top  # TensorFlow: only here
  train.validate_config(load(name), num_devices)


@pytest.mark.parametrize('name', PROTOCOL)
def test_network_has_the_authors_size(name):
  *_, expected_params, r = PROTOCOL[name]
  config = load(name)
  model = create_model(config.model, num_classes=config.num_classes, dtype=jnp.dtype(config.dtype))
  x = jax.ShapeDtypeStruct((2, config.image_size, config.image_size, 3), jnp.float32)
  (features, logits), variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params'])) == expected_params
  assert features.shape[1] * features.shape[2] == r
  assert logits.shape == (2, config.num_classes)


@pytest.mark.parametrize('script', sorted(LAUNCH.glob('*.sh')), ids=lambda p: p.name)
def test_launch_script_is_valid_bash(script):
  result = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  text = script.read_text()
  assert text.startswith('#!/usr/bin/env bash\n') and 'set -euo pipefail' in text


def test_launch_scripts_exist():
  assert {'slurm_multinode.sh', 'tpu_pod.sh'} <= {p.name for p in LAUNCH.glob('*.sh')}
  assert (LAUNCH / 'README.md').exists()
