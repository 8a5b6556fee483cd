"""The data-parallel step on synthetic batches: the wrappers agree, bfloat16 keeps float32 parameters, every device
and step mixes with its own key. The optimisers and schedules: tests/trainer/test_optim.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimix_jax import models
from multimix_jax.configs import default
from multimix_jax.models import vit
from multimix_jax.trainer import methods
from multimix_jax.trainer import optim
from multimix_jax.trainer import step as step_lib


def default_config():
  config = default.get_config()
  config.multimix.n = 50
  return config


def synthetic_batch(b=32, seed=0, shape=(8, 8, 1)):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(b, *shape)).astype(np.float32),
          'label': rng.integers(0, 10, b).astype(np.int32)}


def run_steps(config, parallelism, loss_fn, num_steps=2, dtype=jnp.float32, model=None, shape=(8, 8, 1)):
  dp = step_lib.DataParallel(parallelism)
  model = model or models.create_model('small_cnn', num_classes=10, dtype=dtype,
                                       bn_axis_name=step_lib.AXIS if config.sync_batch_stats else None)
  tx, _ = optim.create_optimizer(config, steps_per_epoch=10)
  state = dp.put_state(step_lib.create_train_state(jax.random.key(0), model, tx, shape))
  key = dp.put_state(jax.random.key_data(jax.random.key(1)))
  train_step = dp.train_step(model=model, tx=tx, loss_fn=loss_fn)
  for i in range(num_steps):
    state, metrics = train_step(state, dp.put_batch(synthetic_batch(seed=i, shape=shape)), key)
  return dp.get_state(state), dp.metrics(metrics)


def distinct_branches():
  """Every distinct loss function the registry's schedules use (many methods share erm and input_mixup), on the
  small CNN (those that need a ViT's attention run on a tiny ViT below)."""
  config = default_config()
  branches = {}
  for name in sorted(set(methods.METHODS) - set(methods.NEEDS_ATTENTION)):
    for branch in methods.METHODS[name](config):
      fn = branch.loss_fn
      branches.setdefault(f'{fn.func.__name__}{fn.keywords.get("stage", "")}', fn)
  return sorted(branches.items())


def _global_scope_synced_bn():
  """Dense MultiMix with tuples that span devices (m = 20 > the 8 examples of a device) and synchronised BatchNorm."""
  config = default_config()
  config.multimix.scope, config.multimix.m, config.sync_batch_stats = 'global', 20, True
  return config, methods.METHODS['dense_multimix'](config)[0].loss_fn, {}


def _vit_adamw(method):
  """A bfloat16 ViT with stochastic depth (the step hands it a 'dropout' stream per device) under AdamW, with Dense
  MultiMix weighted by its attention, tuples spanning devices."""
  config = default_config()
  config.optimizer, config.learning_rate, config.weight_decay = 'adamw', 1e-3, 0.05
  config.weight_decay_kernels_only = True
  config.multimix.n, config.multimix.confidence, config.multimix.scope, config.multimix.m = 20, 'attention', 'global', 6
  model = vit.ViT(num_classes=10, dtype=jnp.bfloat16, patch_size=4, width=16, depth=3, num_heads=2, mlp_dim=32,
                  drop_path=0.2)
  return config, methods.METHODS[method](config)[0].loss_fn, {'model': model, 'shape': (12, 12, 3)}


# Loss functions that run on a device as another case's does: the pasting methods differ from CutMix only in the mask
# each device pastes (tests/mixing/test_pasting.py checks each under shard_map against each device alone), TransMix
# adds targets read from that device's own attention (tests/test_vit.py), and manifold mixup's stages differ only in
# where the network mixes.
_RUN_AS = {'saliencymix': 'cutmix', 'fmix': 'cutmix', 'resizemix': 'cutmix', 'manifold_mixup0': 'manifold_mixup1',
           'manifold_mixup2': 'manifold_mixup1'}


def wrapper_cases():
  """(config, loss_fn, run_steps keywords): each distinct device-level behaviour of the registry's loss functions on
  the small CNN, and the two settings whose collectives differ most between the wrappers."""
  cases = {name: (default_config(), loss_fn, {}) for name, loss_fn in distinct_branches() if name not in _RUN_AS}
  assert set(_RUN_AS.values()) <= set(cases), 'a loss function stands for one that is gone'
  cases['dense_multimix-global-synced_bn'] = _global_scope_synced_bn()
  cases['vit-dense_multimix-attention-global'] = _vit_adamw('dense_multimix')
  return cases


WRAPPER_CASES = wrapper_cases()


@pytest.mark.parametrize('name', sorted(WRAPPER_CASES))
def test_shard_map_equals_pmap(name):
  """The one check that the two data-parallel wrappers run the same step (the trainer, the analysis and the
  multi-host runs use either through `DataParallel`)."""
  config, loss_fn, keywords = WRAPPER_CASES[name]
  (a, metrics_a), (b, metrics_b) = (run_steps(config, p, loss_fn, **keywords) for p in ('shard_map', 'pmap'))
  assert int(a.step) == 2 and np.isfinite(metrics_a['loss']) and metrics_a['finite'] == 1.0
  np.testing.assert_allclose(metrics_a['loss'], metrics_b['loss'], rtol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), a, b)


def test_bfloat16_compute_keeps_float32_parameters():
  config = default_config()
  state, metrics = run_steps(config, 'shard_map', methods.METHODS['multimix'](config)[0].loss_fn, dtype=jnp.bfloat16)
  assert np.isfinite(metrics['loss'])
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype('float32')}


def test_each_device_and_step_mixes_with_its_own_key():
  """Identical examples on every device still give per-device, per-step losses: keys are folded per device."""
  config = default_config()
  config.multimix.m = 2
  dp = step_lib.DataParallel('shard_map')
  model = models.create_model('small_cnn', num_classes=10)
  tx, _ = optim.create_optimizer(config, steps_per_epoch=10)
  state = dp.put_state(step_lib.create_train_state(jax.random.key(0), model, tx, (8, 8, 1)))
  key = dp.put_state(jax.random.key_data(jax.random.key(1)))
  seen = []

  multimix = methods.METHODS['multimix'](config)[0].loss_fn

  def recording_multimix(forward, images, targets, key):
    loss, aux = multimix(forward, images, targets, key)
    jax.debug.callback(lambda i, k: seen.append((int(i), tuple(np.asarray(k).ravel()))),
                       jax.lax.axis_index(step_lib.AXIS), jax.random.key_data(methods.common.split(key)[1]))
    return loss, aux

  train_step = dp.train_step(model=model, tx=tx, loss_fn=recording_multimix)
  one = synthetic_batch(b=8)
  batch = {k: np.concatenate([v] * 4) for k, v in one.items()}
  for _ in range(2):
    state, _ = train_step(state, dp.put_batch(batch), key)
  jax.effects_barrier()
  assert sorted(i for i, _ in seen) == [0, 0, 1, 1, 2, 2, 3, 3]
  assert len({k for _, k in seen}) == 8
