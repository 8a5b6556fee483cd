"""The experiment configs: they load as config_flags loads them, carry exactly the default's keys, state the
paper's protocol (the authors' code), build networks of the authors' sizes, ship in the package, and the trainer
accepts them.

Networks are only traced (jax.eval_shape); nothing is downloaded.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from multimix_jax import configs
from multimix_jax.models import create_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / 'configs'

# The authors' protocol: (dataset, classes, image size, network, epochs, lr boundaries, Nesterov, global batch,
# parameters, final map r). PreActResNet-18 with 200 classes: the 10-class count plus 190 more rows of the
# 512-wide linear head. TinyImageNet ran on 2 GPUs of 128 each; ImageNet on 8.
PROTOCOL = {
    'cifar10_r18': ('cifar10', 10, 32, 'preact_resnet18', 2000, (500, 1000, 1500), False, 128, 11_171_274, 16),
    'cifar100_r18': ('cifar100', 100, 32, 'preact_resnet18', 2000, (500, 1000, 1500), False, 128, 11_217_444, 16),
    'cifar10_wrn16_8': ('cifar10', 10, 32, 'wrn16_8', 2000, (500, 1000, 1500), False, 128, 10_965_866, 64),
    'cifar100_wrn16_8': ('cifar100', 100, 32, 'wrn16_8', 2000, (500, 1000, 1500), False, 128, 11_012_036, 64),
    'tinyimagenet_r18': ('tiny_imagenet', 200, 64, 'preact_resnet18', 1200, (600, 900), False, 256,
                         11_171_274 + 190 * 513, 64),
    'imagenet_r50': ('imagenet2012', 1000, 224, 'resnet50', 300, (75, 150, 225), True, 1024, 25_557_032, 49),
}
# Vision Transformer recipes (README "Vision Transformers"): (dataset, classes, image size, network, epochs, batch,
# lr, weight decay, warmup epochs, decay kernels only, parameters, tokens r). Parameters: timm's count of the same
# network with a class token less that token and its position embedding (2d), see tests/test_vit.py.
RECIPES = {
    # DeiT-S (Touvron et al. 2021): lr 5e-4 · 1024 / 512.
    'imagenet_vit_s16': ('imagenet2012', 1000, 224, 'vit_s16', 300, 1024, 1e-3, 0.05, 5, True, 22_049_896, 196),
    # Lee et al. 2021 (SPT_LSA_ViT main.py defaults).
    'cifar100_vit': ('cifar100', 100, 32, 'vit_cifar', 100, 128, 1e-3, 0.05, 10, False, 2_714_596, 64),
}
# Their augmentation and model options beyond the default's (README "Vision Transformers"): DeiT's bicubic crop,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, no colour jitter or lighting, stochastic depth 0.1; Lee et
# al.'s stochastic depth 0.1 and random erasing 0.25 (their AutoAugment is not implemented).
_HOST_AUGMENT = dict(crop=None, padding=None, flip=None, mean=None, std=None)  # the dataset's
VIT_AUGMENT = {
    'imagenet_vit_s16': dict(_HOST_AUGMENT, resize='bicubic', color_jitter=0.0, lighting_std=0.0, randaugment_layers=2,
                             randaugment_magnitude=9.0, randaugment_magnitude_std=0.5, random_erasing=0.25),
    'cifar100_vit': dict(_HOST_AUGMENT, resize='bilinear', color_jitter=None, lighting_std=None, randaugment_layers=0,
                         randaugment_magnitude=9.0, randaugment_magnitude_std=0.5, random_erasing=0.25),
}
NAMES = ['default', 'digits', *PROTOCOL, *RECIPES]


def load(name):
  """get_config() of configs/<name>.py (the test below checks that config_flags loads the same from the file)."""
  return configs.load(name)


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
  assert sorted(p.stem for p in CONFIGS.glob('*.py') if p.stem != '__init__') == sorted(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_config_has_exactly_the_default_keys(name):
  assert key_tree(load(name)) == key_tree(load('default'))


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
def test_authors_protocol(name):
  dataset, num_classes, image_size, model, epochs, boundaries, nesterov, batch_size, _, _ = PROTOCOL[name]
  config = load(name)
  assert (config.dataset, config.num_classes, config.image_size, config.model) == (dataset, num_classes,
                                                                                     image_size, model)
  assert (config.num_epochs, config.num_train_steps) == (epochs, -1)
  assert (config.schedule, tuple(config.lr_boundaries_epochs), config.lr_decay_factor) == ('piecewise', boundaries,
                                                                                             0.1)
  assert (config.learning_rate, config.momentum, config.nesterov, config.weight_decay) == (0.1, 0.9, nesterov, 1e-4)
  assert config.warmup_epochs == 0
  assert config.batch_size == batch_size
  mm = config.multimix
  assert (config.method, mm.n, mm.m, mm.alpha, mm.alpha_range, mm.prob, mm.alternative, mm.scope) == (
      'multimix', 1000, 0, 0.1, None, 0.5, 'input_mixup', 'device')
  # The pairwise path (input mixup, the baselines) draws lambda ~ Beta(2, 2), one per mini-batch.
  assert (config.mixup_alpha, config.mixup_mode) == (2.0, 'batch')
  # Robustness (the analysis): FGSM in 8/255, PGD in 4/255 with steps of 2/255 (the papers); 10 steps from a random
  # start (our choice). A run saved before these keys existed gets its dataset's values from the analysis.
  from multimix_jax.analysis import options  # pylint: disable=g-import-not-at-top
  assert config.attack.to_dict() == dict(fgsm_eps=8 / 255, pgd_eps=4 / 255, pgd_steps=10, pgd_step_size=2 / 255,
                                         pgd_random_start=True)
  assert options.default_attack(dataset).to_dict() == config.attack.to_dict()


def test_the_keys_that_may_differ_between_runs_of_one_config_are_config_keys():
  keys = set(configs.flatten(load('default').to_dict()))
  assert configs.RESUMABLE_KEYS <= keys and configs.GROUPING_IGNORED_KEYS <= keys
  assert configs.ATTACK_KEYS == {k for k in keys if k.startswith('attack.')}
  from multimix_jax.analysis import options  # pylint: disable=g-import-not-at-top
  assert options.default_attack('digits').to_dict() == load('digits').attack.to_dict()


@pytest.mark.parametrize('name', PROTOCOL)
def test_dataset_agrees_with_the_input_pipeline(name):
  from multimix_jax.data import catalog  # pylint: disable=g-import-not-at-top
  config = load(name)
  spec = catalog.DATASETS[config.dataset]
  assert spec.num_classes == config.num_classes
  assert spec.size in (None, config.image_size)
  # The papers' augmentation comes from the dataset: none of the configs overrides it on the host.
  assert (config.augment.crop, config.augment.padding, config.augment.flip) == (None, None, None)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('num_devices', [1, 8])
def test_trainer_accepts_it(name, num_devices):
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top  # TensorFlow: only here
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


@pytest.mark.parametrize('name', RECIPES)
def test_vit_recipe(name):
  (dataset, num_classes, image_size, model, epochs, batch_size, lr, weight_decay, warmup, kernels_only,
   expected_params, r) = RECIPES[name]
  config = load(name)
  assert (config.dataset, config.num_classes, config.image_size, config.model) == (dataset, num_classes,
                                                                                     image_size, model)
  assert (config.num_epochs, config.num_train_steps, config.batch_size) == (epochs, -1, batch_size)
  assert (config.optimizer, tuple(config.adam_betas), config.schedule) == ('adamw', (0.9, 0.999), 'cosine')
  assert (config.learning_rate, config.weight_decay, config.warmup_epochs) == (lr, weight_decay, warmup)
  assert (config.weight_decay_kernels_only, config.label_smoothing) == (kernels_only, 0.1)
  assert config.augment.to_dict() == VIT_AUGMENT[name]
  assert config.vit.to_dict() == {'pool_norm': 'tokens', 'drop_path': 0.1}
  model = create_model(config.model, num_classes=config.num_classes, dtype=jnp.dtype(config.dtype))
  x = jax.ShapeDtypeStruct((2, config.image_size, config.image_size, 3), jnp.float32)
  (features, logits), variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params'])) == expected_params
  assert (features.shape[1] * features.shape[2], logits.shape) == (r, (2, num_classes))


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # inside config_flags
def test_deit_learning_rate_follows_the_batch_on_the_command_line():
  """5e-4 · batch / 512 for the batch the command line gives, through config_flags as main.py parses it."""
  path = CONFIGS / 'imagenet_vit_s16.py'
  assert parse_flags(path).learning_rate == pytest.approx(1e-3)
  config = parse_flags(path, '--config.batch_size=256')
  assert (config.batch_size, config.learning_rate) == (256, pytest.approx(2.5e-4))
  assert config.to_dict()['learning_rate'] == pytest.approx(2.5e-4)  # what the run's config.json records
  config.batch_size = 4096  # as main.py's --per_device_batch_size sets it
  assert config.learning_rate == pytest.approx(4e-3)
  for overrides in (['--config.batch_size=256', '--config.learning_rate=0.01'],
                    ['--config.learning_rate=0.01', '--config.batch_size=256']):
    config = parse_flags(path, *overrides)  # an explicit learning rate replaces the rule, in either order
    assert (config.batch_size, config.learning_rate) == (256, 0.01)


def test_configs_ship_inside_the_package(tmp_path):
  """`pip install .` (not only -e) carries every config, so the default runs from any directory."""
  source = tmp_path / 'source'  # a copy, so that the build leaves nothing in the repository
  shutil.copytree(ROOT, source, symlinks=True,
                  ignore=shutil.ignore_patterns('.git', '.venv', 'build', '*.egg-info', 'runs', '__pycache__'))
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                  str(tmp_path), str(source)], check=True, capture_output=True)
  (wheel,) = tmp_path.glob('multimix_jax-*.whl')
  shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith('multimix_jax/configs/')}
  assert {f'multimix_jax/configs/{p.name}' for p in CONFIGS.glob('*.py')} <= shipped
  assert 'multimix_jax/configs/__init__.py' in shipped and 'multimix_jax/configs/default.py' in shipped


# The CIFAR-100 CNN configs are their CIFAR-10 siblings on the other dataset (the test below says so), so the step runs
# once per distinct network, pipeline and method: cifar100_vit runs the CIFAR-100 pipeline.
SIBLINGS = {'cifar100_r18': 'cifar10_r18', 'cifar100_wrn16_8': 'cifar10_wrn16_8'}
STEP_CONFIGS = [name for name in configs.NAMES if name not in SIBLINGS]


def test_cifar100_cnn_configs_are_their_cifar10_siblings_on_cifar100():
  for name, sibling in SIBLINGS.items():
    a, b = (configs.flatten(configs.load(n).to_dict()) for n in (name, sibling))
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {'dataset', 'num_classes'}, name


@pytest.mark.parametrize('name', STEP_CONFIGS)
def test_every_config_runs_a_scaled_down_step_on_generated_data(name, tmp_path):
  """Each config's dataset, model and method for one step and a full evaluation, on its dataset generated here with
  the catalog builder's own metadata (tests/fake_data.py), in ArrayRecord as `multimix_jax.data.prepare` writes."""
  import fake_data  # pylint: disable=g-import-not-at-top
  from multimix_jax.data import catalog  # pylint: disable=g-import-not-at-top
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top
  config = configs.load(name)
  n = 8
  if config.dataset != 'digits':  # digits is real and offline
    fake_data.prepare_catalog(config.dataset, tmp_path, {'train': n, catalog.DATASETS[config.dataset].eval_split: n})
  config.data_dir = str(tmp_path)
  config.batch_size = config.eval_batch_size = n
  config.num_train_steps, config.eval_every_steps, config.checkpoint_every_steps = 1, 1, 1
  config.multimix.n = 16
  if config.dataset == 'imagenet2012':
    config.image_size = 32  # scaled down: ResNet-50 at 32x32 ends on a 1x1 map
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['steps'] == 1 and summary['final_top1'] is not None


def test_load_gives_a_fresh_config_and_refuses_unknown_names():
  assert set(configs.NAMES) == {p.stem for p in CONFIGS.glob('*.py') if p.stem != '__init__'}
  first = configs.load('cifar10_r18')
  first.batch_size = 3
  assert configs.load('cifar10_r18').batch_size != 3  # each call builds its own
  with pytest.raises(ValueError, match=r"no config named 'cifar10_r19'; the configs are .*cifar10_r18"):
    configs.load('cifar10_r19')
