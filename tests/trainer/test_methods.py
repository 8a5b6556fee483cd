"""The mixing methods: what their builders bind, and what each loss function computes on a small affine model.

The loss functions run per device; here they run under `jax.vmap` with the data axis name, which gives
`axis_index` and `all_gather` the meaning they have under shard_map, on a stand-in model whose forward pass is
affine so that every loss can be written down independently.
"""

import functools
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from multimix_jax import mixing
from multimix_jax.configs import default
from multimix_jax.mixing import losses
from multimix_jax.trainer import methods
from multimix_jax.trainer import train
from multimix_jax.trainer.step import AXIS

B, H, W, C_IN, D, C = 6, 2, 2, 3, 5, 4


def config_with(**overrides):
  config = default.get_config()
  config.multimix.n = 40
  config.update_from_flattened_dict(overrides)  # keys such as 'multimix.n'
  return config


class AffineModel:
  """images (b, H, W, C_IN) -> features (b, H, W, D) = images @ w1 + b1; the head (D -> C) at every position."""

  def __init__(self, seed=0):
    normal = lambda *shape: np.random.default_rng([seed, *shape]).normal(size=shape).astype(np.float32)
    self.w1, self.b1, self.w2, self.b2 = normal(C_IN, D), normal(D), normal(D, C), normal(C)
    self.calls = []

  def __call__(self, images, *, dense=False, mix_stage=None, mix_fn=None):
    self.calls.append({'dense': dense, 'mix_stage': mix_stage})
    x = mix_fn(images) if mix_stage == 0 else images
    features = x @ self.w1 + self.b1
    features = mix_fn(features) if mix_stage == 1 else features
    dense_logits = features @ self.w2 + self.b2
    logits = dense_logits if dense else dense_logits.mean(axis=(1, 2))
    return (features, logits), {'batch_stats': {'seen': images.sum()}}


def batch(num_devices=1, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(num_devices, B, H, W, C_IN)).astype(np.float32)
  targets = jax.nn.one_hot(rng.integers(0, C, (num_devices, B)), C)
  return images, targets


def per_device(loss_fn, model, images, targets, key):
  """loss_fn on each device's share (leading axis), as the step runs it."""
  return jax.vmap(lambda x, y: loss_fn(model, x, y, key), axis_name=AXIS)(images, targets)


def only_loss_fn(name, config):
  (branch,) = [b for b in methods.METHODS[name](config) if b.loss_fn.func.__name__ == name]
  return branch.loss_fn


# --------------------------------------------------------------------------------------------------- builders


@pytest.mark.parametrize('name', sorted(methods.METHODS))
def test_schedule_is_a_distribution_of_functions_with_plain_hyperparameters(name):
  schedule = methods.METHODS[name](default.get_config())
  assert schedule and all(b.probability > 0 for b in schedule)
  np.testing.assert_allclose(sum(b.probability for b in schedule), 1.0)
  for branch in schedule:
    # No config object reaches traced code: every bound value is a plain Python value.
    for value in branch.loss_fn.keywords.values():
      assert isinstance(value, (int, float, str, tuple, type(None))), (name, value)
      assert not isinstance(value, ml_collections.ConfigDict)


@pytest.mark.parametrize('name, overrides, message', [
    ('erm', {'label_smoothing': 1.0}, 'label_smoothing=1.0 must be in [0, 1).'),
    ('input_mixup', {'mixup_alpha': 0.0}, 'mixup_alpha=0.0 must be > 0.'),
    ('cutmix', {'mixup_mode': 'pixel'}, "mixup_mode='pixel' must be one of ('batch', 'pair', 'elem')."),
    ('manifold_mixup', {'mixup_lambda': 'host'}, "mixup_lambda='host' must be one of ('global', 'device')."),
    ('multimix', {'multimix.n': 0}, 'multimix.n=0 must be >= 1.'),
    ('multimix', {'multimix.alpha': -1.0}, 'multimix.alpha=-1.0 must be > 0.'),
    ('multimix', {'multimix.alpha_range': (0.5, 0.1)}, 'multimix.alpha_range=(0.5, 0.1) must be (lo, hi)'),
    ('multimix', {'multimix.scope': 'host'}, "multimix.scope='host' must be one of ('device', 'global')."),
    ('multimix', {'multimix.alternative': 'cutmix'}, "multimix.alternative='cutmix' must be one of ['erm',"),
    ('multimix', {'mixup_alpha': -1.0}, 'mixup_alpha=-1.0 must be > 0.'),  # its input-mixup branch
    ('dense_multimix', {'multimix.confidence': 'saliency'}, "multimix.confidence='saliency' must be one of"),
    ('dense_multimix', {'multimix.chunk_size': -2}, 'multimix.chunk_size=-2 must be -1 (automatic)'),
    ('erm_or_input_mixup', {'multimix.prob': 1.5}, 'multimix.prob=1.5 must be in [0, 1].'),
    ('alignmixup', {'alignmixup.alpha': 0.0}, 'alignmixup.alpha=0.0 must be > 0.'),
    ('alignmixup', {'alignmixup.prob': -0.1}, 'alignmixup.prob=-0.1 must be in [0, 1].'),
    ('alignmixup', {'alignmixup.epsilon': 0.0}, 'alignmixup.epsilon=0.0 must be > 0'),
    ('alignmixup', {'alignmixup.max_iterations': 0}, 'alignmixup.max_iterations=0 must be an int >= 1.'),
    ('alignmixup', {'alignmixup.threshold': -1.0}, 'alignmixup.threshold=-1.0 must be >= 0'),
    ('fmix', {'fmix.decay_power': 0.0}, 'fmix.decay_power=0.0 must be > 0.'),
    ('fmix', {'fmix.spectrum': 'fourier'}, "fmix.spectrum='fourier' must be one of ('published', 'paper')."),
    ('resizemix', {'resizemix.scale_range': (0.5, 1.5)}, 'resizemix.scale_range=(0.5, 1.5) must be (lo, hi)'),
    ('transmix', {'transmix.attention_weight': 1.5}, 'transmix.attention_weight=1.5 must be in [0, 1].'),
])
def test_builders_refuse_bad_hyperparameters(name, overrides, message):
  with pytest.raises(methods.HyperparameterError, match=re.escape(message)):
    methods.METHODS[name](config_with(**overrides))


# One bad value of a key each method reads: every method of the registry has one here.
BAD_VALUE = {
    'erm': {'label_smoothing': 1.0},
    'input_mixup': {'mixup_alpha': 0.0},
    'cutmix': {'mixup_mode': 'pixel'},
    'manifold_mixup': {'mixup_lambda': 'host'},
    'multimix': {'multimix.n': 0},
    'dense_multimix': {'multimix.chunk_size': -2},
    'erm_or_input_mixup': {'multimix.prob': 1.5},
    'alignmixup': {'alignmixup.epsilon': 0.0},
    'saliencymix': {'mixup_alpha': -1.0},
    'fmix': {'fmix.decay_power': 0.0},
    'resizemix': {'resizemix.scale_range': (0.5, 1.5)},
    'transmix': {'transmix.attention_weight': 1.5},
}


@pytest.mark.parametrize('name', sorted(methods.METHODS))
def test_every_methods_checks_are_reached_through_validate_config(name):
  """The trainer's validation runs the method's own checks (its `Method`), one line naming the key: a method added
  to the registry is checked as it is built, with nothing to add to the trainer."""
  assert set(BAD_VALUE) == set(methods.METHODS), 'give the new method a bad value of a key it reads'
  (key, value), = BAD_VALUE[name].items()
  model = {'model': 'vit_cifar'} if name in methods.NEEDS_ATTENTION else {}
  train.validate_config(config_with(method=name, **model), num_devices=1)
  config = config_with(method=name, **model, **BAD_VALUE[name])
  with pytest.raises(train.ConfigError) as raised:
    train.validate_config(config, num_devices=1)
  (line,) = str(raised.value).splitlines()[1:]
  assert line.strip().startswith(f'{key}={value!r}'), line
  assert line.strip() in methods.METHODS[name].problems(config)


def test_the_attention_a_method_reads_is_asked_of_the_model_by_one_check():
  """TransMix declares that it reads the attention a Vision Transformer sows (its `Method`), as the 'attention'
  confidence does by its name; both are refused with a model that sows none, once their own values are valid."""
  assert methods.NEEDS_ATTENTION == ('transmix',)
  config = config_with(method='transmix', **{'multimix.confidence': 'attention'})
  assert methods.config_problems(config) == [
      "multimix.confidence='attention' needs a Vision Transformer (model=vit_*), which provides its attention; "
      "model='small_cnn' does not: choose another confidence.",
      "method='transmix' needs a Vision Transformer (model=vit_*), which provides its attention; "
      "model='small_cnn' does not: choose cutmix, or a vit_* model."]
  config.transmix.attention_weight = 2.0  # a bad value of its own: that line alone
  assert methods.config_problems(config) == ['transmix.attention_weight=2.0 must be in [0, 1].']
  config.transmix.attention_weight, config.model = 0.5, 'vit_cifar'
  assert methods.config_problems(config) == []
  assert methods.config_problems(config_with(method='mixmatch')) == [
      f"method='mixmatch' is unknown; choose one of {sorted(methods.METHODS)}."]


def test_builders_list_every_problem_once_and_ignore_keys_they_do_not_read():
  config = config_with(**{'label_smoothing': 1.0, 'multimix.alpha': 0.0})
  with pytest.raises(methods.HyperparameterError) as raised:
    methods.METHODS['multimix'](config)  # label smoothing is read by MultiMix and by its input-mixup branch
  assert raised.value.problems == ('label_smoothing=1.0 must be in [0, 1).', 'multimix.alpha=0.0 must be > 0.')
  assert methods.METHODS['input_mixup'](config_with(**{'multimix.alpha': 0.0}))  # ERM and input mixup read no α


def test_multimix_binds_its_hyperparameters_from_the_config():
  config = config_with(**{'multimix.n': 77, 'multimix.m': 3, 'multimix.alpha_range': (0.5, 2.0),
                          'multimix.scope': 'global', 'label_smoothing': 0.1, 'multimix.prob': 0.25,
                          'multimix.alternative': 'erm'})
  (mixing, other) = methods.METHODS['multimix'](config)
  assert (mixing.probability, other.probability) == (0.25, 0.75)
  assert mixing.loss_fn.func is methods.multimix.multimix and other.loss_fn.func is methods.pairwise.erm
  assert mixing.loss_fn.keywords == dict(n=77, m=3, alpha=(0.5, 2.0), scope='global', label_smoothing=0.1)
  assert other.loss_fn.keywords == dict(label_smoothing=0.1)


def test_coin_flip_edges_keep_a_single_branch():
  assert [b.loss_fn.func for b in methods.METHODS['multimix'](config_with(**{'multimix.prob': 1.0}))] == [
      methods.multimix.multimix]
  assert [b.loss_fn.func for b in methods.METHODS['dense_multimix'](config_with(**{'multimix.prob': 0.0}))] == [
      methods.pairwise.input_mixup]


def test_pairwise_methods_bind_beta_and_mode():
  config = config_with(mixup_alpha=2.0, mixup_mode='elem')
  for name in ('input_mixup', 'cutmix', 'manifold_mixup'):
    for branch in methods.METHODS[name](config):
      assert (branch.loss_fn.keywords['alpha'], branch.loss_fn.keywords['mode']) == (2.0, 'elem')
  stages = [b.loss_fn.keywords['stage'] for b in methods.METHODS['manifold_mixup'](config)]
  assert stages == [0, 1, 2]


def test_fmix_binds_its_spectrum():
  for spectrum in mixing.FMIX_SPECTRA:
    assert only_loss_fn('fmix', config_with(**{'fmix.spectrum': spectrum})).keywords['spectrum'] == spectrum


def test_changing_the_config_after_building_does_not_change_the_method():
  config = config_with()
  loss_fn = methods.METHODS['multimix'](config)[0].loss_fn
  config.multimix.n = 5
  assert loss_fn.keywords['n'] == 40


# ----------------------------------------------------------------------------------------------- loss functions


def test_erm_is_the_cross_entropy_of_the_pooled_logits():
  model, (images, targets) = AffineModel(), batch()
  loss, (logits, logit_targets, updates) = per_device(
      only_loss_fn('erm', config_with(method='erm', label_smoothing=0.2)), model, images, targets,
      jax.random.key(0))
  (_, expected), _ = model(images[0])
  np.testing.assert_allclose(logits[0], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss[0], losses.soft_cross_entropy(expected, targets[0], label_smoothing=0.2),
                             rtol=1e-5)
  np.testing.assert_array_equal(logit_targets, targets)
  np.testing.assert_allclose(updates['batch_stats']['seen'][0], images[0].sum(), rtol=1e-5)


def test_multimix_per_device_mixes_logits_with_that_devices_key():
  model, (images, targets) = AffineModel(), batch(num_devices=2)
  key = jax.random.key(3)
  loss, (logits, _, _) = per_device(only_loss_fn('multimix', config_with()), model, images, targets, key)
  _, mixing = jax.random.split(key)
  for device in range(2):
    (_, pooled), _ = model(images[device])
    expected = losses.multimix_loss(jax.random.fold_in(mixing, device), pooled, targets[device], B, 0.1, n=40)
    np.testing.assert_allclose(loss[device], expected, rtol=1e-5)
    np.testing.assert_allclose(logits[device], pooled, rtol=1e-5, atol=1e-5)  # accuracy is scored on the clean batch
  assert not np.allclose(loss[0], loss[1])


def test_multimix_global_scope_mixes_the_gathered_batch():
  model, (images, targets) = AffineModel(), batch(num_devices=2)
  key = jax.random.key(4)
  loss, _ = per_device(only_loss_fn('multimix', config_with(**{'multimix.scope': 'global', 'multimix.m': 9})),
                       model, images, targets, key)
  _, mixing = jax.random.split(key)
  pooled = jnp.concatenate([model(images[d])[0][1] for d in range(2)])
  for device in range(2):
    expected = losses.multimix_loss(jax.random.fold_in(mixing, device), pooled, targets.reshape(-1, C), 9, 0.1,
                                    n=40)
    np.testing.assert_allclose(loss[device], expected, rtol=1e-5)


def test_alpha_range_is_drawn_once_per_step_within_its_bounds():
  keys = jax.random.split(jax.random.key(0), 200)
  draws = np.array([methods.multimix.draw_alpha(k, (0.5, 2.0)) for k in keys[:50]])
  assert draws.min() >= 0.5 and draws.max() <= 2.0 and draws.std() > 0.1
  assert methods.multimix.draw_alpha(keys[0], 0.3) == 0.3
  # Every device draws the same alpha: the shared key does not depend on the device.
  shared = jax.vmap(lambda _: methods.common.split(keys[1])[0], axis_name=AXIS)(jnp.arange(3))
  assert len({tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in shared}) == 1


def test_dense_multimix_scores_the_pooled_logits_and_uses_the_dense_forward():
  model, (images, targets) = AffineModel(), batch()
  key = jax.random.key(5)
  loss_fn = only_loss_fn('dense_multimix', config_with(**{'multimix.confidence': 'uniform'}))
  loss, (logits, _, _) = per_device(loss_fn, model, images, targets, key)
  assert model.calls[-1]['dense']
  (features, dense), _ = model(images[0], dense=True)
  np.testing.assert_allclose(logits[0], dense.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
  A = jnp.full((B, H * W), 1 / (H * W))
  expected = losses.dense_multimix_loss(jax.random.fold_in(jax.random.split(key)[1], 0), dense.reshape(B, -1, C),
                                        targets[0], A, B, 0.1, n=40)
  np.testing.assert_allclose(loss[0], expected, rtol=1e-5)
  del features


def test_manifold_mixup_mixes_targets_as_the_hidden_state():
  model, (images, targets) = AffineModel(), batch()
  key = jax.random.key(6)
  loss_fn = methods.METHODS['manifold_mixup'](config_with())[1].loss_fn  # stage 1: after the features
  loss, (logits, mixed_targets, _) = per_device(loss_fn, model, images, targets, key)
  assert model.calls[-1]['mix_stage'] == 1
  shared, device = jax.random.split(key)  # λ from the step's shared key (mixup_lambda='global'), partners per device
  perm, lam = mixing.sample_pairing(jax.random.fold_in(device, 0), B, 1.0, mode='batch',
                                           lam_key=jax.random.fold_in(shared, 1))
  mix = functools.partial(mixing.mix_pair, perm=perm, lam=lam)
  np.testing.assert_allclose(mixed_targets[0], mix(targets[0]), rtol=1e-6)
  # The head is affine, so mixing the features mixes the pooled logits the same way.
  (_, pooled), _ = model(images[0])
  np.testing.assert_allclose(logits[0], mix(pooled), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(loss[0], losses.soft_cross_entropy(mix(pooled), mix(targets[0])), rtol=1e-4)


@pytest.mark.parametrize('name,mix', [
    ('saliencymix', lambda key, x, y, **kw: mixing.saliencymix(key, x, y, 2.0, **kw)),
    ('fmix', lambda key, x, y, **kw: mixing.fmix(key, x, y, 2.0, decay_power=2.5, **kw)),
    ('resizemix', lambda key, x, y, **kw: mixing.resizemix(key, x, y, scale=(0.2, 0.6), **kw)),
])
def test_input_space_methods_forward_the_images_they_mix(name, mix):
  """Each binds its hyperparameters from the config and forwards the images `interpolation` mixes with this
  device's key (λ from the step's shared key in the default 'global' scope), scored against the mixed targets."""
  config = config_with(method=name, mixup_alpha=2.0, mixup_mode='elem', **{'fmix.decay_power': 2.5,
                                                                         'resizemix.scale_range': (0.2, 0.6)})
  loss_fn = only_loss_fn(name, config)
  assert loss_fn.keywords['mode'] == 'elem' and loss_fn.keywords.get('alpha', 2.0) == 2.0
  model, (_, targets) = AffineModel(), batch(num_devices=2)
  images = jax.random.normal(jax.random.key(0), (2, B, 8, 8, C_IN))  # boxes of 2 × 2 images would be empty
  key = jax.random.key(8)
  loss, (logits, mixed_targets, _) = jax.jit(lambda x, y: per_device(loss_fn, model, x, y, key))(images, targets)
  _, device = jax.random.split(key)
  mix = jax.jit(functools.partial(mix, mode='elem'))
  for d in range(2):
    expected_images, expected_targets = mix(jax.random.fold_in(device, d), images[d], targets[d])
    np.testing.assert_allclose(mixed_targets[d], expected_targets, rtol=1e-6)
    np.testing.assert_allclose(logits[d], model(expected_images)[0][1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss[d], losses.soft_cross_entropy(logits[d], expected_targets), rtol=1e-5)
  assert not np.allclose(mixed_targets, targets)


def test_input_mixup_forwards_mixed_images():
  model, (images, targets) = AffineModel(), batch()
  key = jax.random.key(7)
  _, (logits, mixed_targets, _) = per_device(only_loss_fn('input_mixup', config_with(method='input_mixup')), model,
                                             images, targets, key)
  shared, device = jax.random.split(key)
  mixed_images, expected_targets = mixing.input_mixup(jax.random.fold_in(device, 0), images[0], targets[0],
                                                             1.0, mode='batch', lam_key=jax.random.fold_in(shared, 1))
  np.testing.assert_allclose(mixed_targets[0], expected_targets, rtol=1e-6)
  np.testing.assert_allclose(logits[0], model(mixed_images)[0][1], rtol=1e-4, atol=1e-5)
  assert not np.allclose(mixed_targets[0], targets[0])


# SaliencyMix is left out: its box is centred on each device's own saliency peak, so its exact area (λ) differs.
@pytest.mark.parametrize('name', ['input_mixup', 'cutmix', 'manifold_mixup', 'alignmixup', 'fmix', 'resizemix'])
@pytest.mark.parametrize('lam_scope', ['global', 'device'])
def test_batch_mode_draws_lambda_once_for_the_global_batch(name, lam_scope):
  """mixup_lambda='global': every device mixes with the same λ (the authors' DataParallel draws one per batch),
  each with its own partners; 'device': each device draws its own λ."""
  devices, b, size = 4, 8, 32  # 32 × 32: CutMix's boxes (λ, corrected to their area) of two devices rarely tie
  loss_fn = methods.METHODS[name](config_with(method=name, mixup_lambda=lam_scope, mixup_alpha=2.0))[0].loss_fn
  assert loss_fn.func.__name__ == name
  images = jnp.asarray(np.random.default_rng(0).normal(size=(devices, b, size, size, C_IN)), jnp.float32)
  targets = jnp.broadcast_to(jnp.eye(b), (devices, b, b))  # example i alone has class i: ỹ_i[i] = λ unless paired with i

  def forward(x, *, dense=False, mix_stage=None, mix_fn=None):
    del mix_stage, mix_fn
    logits = jnp.zeros((b, size, size, b) if dense else (b, b))
    return (jnp.zeros((b, size, size, D)), logits), {}

  _, (_, mixed, _) = per_device(loss_fn, forward, images, targets, jax.random.key(3))
  lam = np.asarray(jnp.min(jnp.einsum('kii->ki', mixed), axis=1))  # per device
  partners = np.asarray(jnp.argsort(mixed, axis=-1)[..., -2])  # each row's second-largest class: its partner
  assert len({tuple(p) for p in partners}) > 1  # partners are drawn per device in both scopes
  if lam_scope == 'global':
    np.testing.assert_allclose(lam, lam[0], rtol=1e-6)
  else:
    assert len(set(np.round(lam, 6))) == devices, lam
