"""The model zoo: the authors' parameter counts, output shapes and dtypes, dense logits, the mixing hook, BN.

Big networks are only traced (jax.eval_shape); real forwards use the small CNN and, at b = 2, PreActResNet-18;
the fidelity tests run each network once in float64 against the authors' PyTorch definition (`torch_reference`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimix_jax.models import MODELS
from multimix_jax.models import common
from multimix_jax.models import create_model

# XLA compiles RngBitGenerator much faster than threefry on a CPU; the tests check properties, not values.
KEY = jax.random.key(0, impl='rbg')

# (name, input shape (H, W, C), final map (h, w, d)) on the datasets each network is used for.
SHAPES = [
    ('small_cnn', (8, 8, 1), (4, 4, 64)),
    ('preact_resnet18', (32, 32, 3), (4, 4, 512)),
    ('preact_resnet18', (64, 64, 3), (8, 8, 512)),
    ('wrn16_8', (32, 32, 3), (8, 8, 512)),
    ('resnet50', (224, 224, 3), (7, 7, 2048)),
]


def images(shape, b=2, key=KEY):
  return jax.random.normal(key, (b, *shape))


def num_params(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))


def traced(model, x, **kwargs):
  """(outputs, variables) of init + apply as shapes only: no convolution is computed."""
  return jax.eval_shape(lambda x: model.init_with_output(KEY, x, train=False, **kwargs), x)


@functools.cache
def initialized(name, shape, b=2):
  """(float32 model with 10 classes, images (b, *shape), variables), initialised once per test session."""
  model, x = create_model(name, num_classes=10), images(shape, b)
  return model, x, jax.jit(functools.partial(model.init, train=False))(KEY, x)


def run(model, variables, x, **kwargs):
  """Jitted model.apply: one compilation instead of one per operation."""
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


@pytest.mark.parametrize('name, num_classes, shape, expected', [
    ('preact_resnet18', 10, (32, 32, 3), 11_171_274),
    ('preact_resnet18', 100, (32, 32, 3), 11_217_444),
    ('preact_resnet18', 10, (64, 64, 3), 11_171_274),
    ('wrn16_8', 10, (32, 32, 3), 10_965_866),
    ('wrn16_8', 100, (32, 32, 3), 11_012_036),
    ('resnet50', 1000, (224, 224, 3), 25_557_032),
])
def test_parameter_count_matches_the_authors_pytorch_definition(name, num_classes, shape, expected):
  _, variables = traced(create_model(name, num_classes=num_classes), images(shape))
  assert num_params(variables) == expected


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('name, shape, final', SHAPES)
def test_output_shapes_and_dtypes(name, shape, final, dtype):
  b, c = 2, 7
  model = create_model(name, num_classes=c, dtype=dtype)
  (features, logits), variables = traced(model, images(shape, b))
  assert features.shape == (b, *final) and features.dtype == dtype
  assert logits.shape == (b, c) and logits.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert set(variables) == {'params', 'batch_stats'}
  features, logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, dense=True), variables,
                                    images(shape, b))
  assert features.shape == (b, *final) and logits.shape == (b, *final[:2], c) and logits.dtype == jnp.float32


def test_small_cnn_bfloat16_forward():
  model32, x, variables = initialized('small_cnn', (8, 8, 1), 8)
  model16 = create_model('small_cnn', num_classes=10, dtype=jnp.bfloat16)
  features, logits = run(model16, variables, x, train=False)
  assert features.dtype == jnp.bfloat16 and logits.dtype == jnp.float32
  _, ref = run(model32, variables, x, train=False)
  np.testing.assert_allclose(logits, ref, atol=0.1)


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('name, shape', [('small_cnn', (8, 8, 1)), ('preact_resnet18', (32, 32, 3))])
def test_dense_logits_average_to_pooled_logits(name, shape, train):
  model, x, variables = initialized(name, shape)
  kwargs = dict(train=train, mutable=['batch_stats']) if train else dict(train=False)
  out = run(model, variables, x, **kwargs)
  dense_out = run(model, variables, x, dense=True, **kwargs)
  (features, logits), (dense_features, dense_logits) = (out[0], dense_out[0]) if train else (out, dense_out)
  np.testing.assert_array_equal(features, dense_features)
  np.testing.assert_allclose(dense_logits.mean(axis=(1, 2)), logits, atol=1e-5)


def test_mix_stage_identity_and_zero():
  model, x, variables = initialized('small_cnn', (8, 8, 1), 8)
  ref = run(model, variables, x, train=False)
  for stage in (0, 1, 2):
    out = run(model, variables, x, train=False, mix_stage=stage, mix_fn=lambda h: h)
    jax.tree.map(np.testing.assert_array_equal, out, ref)
  zero_input = run(model, variables, jnp.zeros_like(x), train=False)
  out = run(model, variables, x, train=False, mix_stage=0, mix_fn=lambda h: h * 0)
  jax.tree.map(np.testing.assert_array_equal, out, zero_input)
  # In training mode the mixed state also feeds the batch statistics of everything after it.
  out, stats = run(model, variables, x, train=True, mutable=['batch_stats'], mix_stage=0, mix_fn=lambda h: h * 0)
  ref, ref_stats = run(model, variables, jnp.zeros_like(x), train=True, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, (out, stats), (ref, ref_stats))


@pytest.mark.parametrize('name, shape, stage_shapes', [
    ('small_cnn', (8, 8, 1), [(8, 8, 1), (4, 4, 32), (4, 4, 64)]),
    ('preact_resnet18', (32, 32, 3), [(32, 32, 3), (32, 32, 64), (16, 16, 128)]),
    ('wrn16_8', (32, 32, 3), [(32, 32, 3), (32, 32, 128), (16, 16, 256)]),
    ('resnet50', (224, 224, 3), [(224, 224, 3), (56, 56, 256), (28, 28, 512)]),
])
def test_mix_fn_sees_the_hidden_state_after_each_stage(name, shape, stage_shapes):
  model = create_model(name, num_classes=10, dtype=jnp.bfloat16)
  for stage, expected in enumerate(stage_shapes):
    seen = []
    traced(model, images(shape), mix_stage=stage, mix_fn=lambda h: seen.append(h) or h)
    assert len(seen) == 1
    assert seen[0].shape == (2, *expected)
    assert seen[0].dtype == (jnp.float32 if stage == 0 else jnp.bfloat16)


def test_bad_mix_stage_is_rejected():
  model = create_model('small_cnn', num_classes=10)
  x = images((8, 8, 1))
  with pytest.raises(ValueError, match=r'mix_stage must be .*\[0, 2\]'):
    traced(model, x, mix_stage=3, mix_fn=lambda h: h)
  with pytest.raises(ValueError, match='needs a mix_fn'):
    traced(model, x, mix_stage=1)


@pytest.mark.parametrize('mix_stage, order, expected', [
    (None, ['stem', 'a1', 'a2', 'b'], 1 + 4),
    (0, ['mix', 'stem', 'a1', 'a2', 'b'], 1 * 10 + 4),
    (1, ['stem', 'a1', 'a2', 'mix', 'b'], (1 + 3) * 10 + 1),
    (2, ['stem', 'a1', 'a2', 'b', 'mix'], (1 + 4) * 10),
])
def test_run_stages_mixes_after_the_stage_asked(mix_stage, order, expected):
  calls = []

  def layer(tag):
    return lambda h: calls.append((tag, h.dtype)) or h + 1

  mix = lambda h: calls.append(('mix', h.dtype)) or h * 10
  out = common.run_stages(jnp.ones((2, 3)), [layer('stem')], [[layer('a1'), layer('a2')], [layer('b')]],
                          dtype=jnp.bfloat16, mix_stage=mix_stage, mix_fn=mix)
  assert [tag for tag, _ in calls] == order
  # The input is mixed in its own dtype (float32), everything after it in the compute dtype.
  assert calls[0][1] == (jnp.float32 if mix_stage == 0 else jnp.bfloat16)
  assert all(dtype == jnp.bfloat16 for _, dtype in calls[1:])
  assert out.dtype == jnp.bfloat16 and np.all(np.asarray(out, np.float32) == expected)
  with pytest.raises(ValueError, match=r'mix_stage must be .*\[0, 2\]'):
    common.run_stages(jnp.ones((2, 3)), [], [[], []], dtype=jnp.float32, mix_stage=3, mix_fn=mix)


def test_batch_norm_momentum_matches_pytorch():
  model, x, variables = initialized('small_cnn', (8, 8, 1), 8)
  _, state = run(model, variables, x + 1.0, train=True, mutable=['batch_stats', 'intermediates'],
                 capture_intermediates=lambda mdl, _: mdl.name == 'stem_conv')
  conv_out = state['intermediates']['stem_conv']['__call__'][0]
  stats = state['batch_stats']['stem_bn']
  # PyTorch's momentum 0.1: the running mean moves 10% of the way from 0 to the batch mean.
  np.testing.assert_allclose(stats['mean'], 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * conv_out.var(axis=(0, 1, 2)), rtol=1e-5)


def test_bn_axis_name_syncs_batch_statistics():
  model, x, variables = initialized('small_cnn', (8, 8, 1), 8)
  # Equal-size shards with statistics reduced over the 'data' axis see the statistics of the whole batch.
  synced = create_model('small_cnn', num_classes=10, bn_axis_name='data')
  apply = lambda x: synced.apply(variables, x, train=True, mutable=['batch_stats'])
  (_, logits), stats = jax.jit(jax.vmap(apply, axis_name='data'))(x.reshape(2, 4, *x.shape[1:]))
  (_, ref_logits), ref_stats = run(model, variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(logits.reshape(ref_logits.shape), ref_logits, atol=1e-5)
  jax.tree.map(lambda s, r: np.testing.assert_allclose(s[0], r, rtol=1e-4, atol=1e-6), stats, ref_stats)


def test_registry():
  assert {'small_cnn', 'preact_resnet18', 'wrn16_8', 'resnet50'} <= set(MODELS)
  assert all(issubclass(cls, common.Model) for cls in MODELS.values())  # the common interface
  with pytest.raises(ValueError, match='preact_resnet18.*resnet50.*small_cnn.*wrn16_8'):
    create_model('resnet18', num_classes=10)


# ------------------------------------------------------------------------------- the authors' definitions


def conv_same(x, kernel):
  """NumPy stride-1 'same' convolution: x (b, h, w, c_in), kernel (kh, kw, c_in, c_out), zero padding."""
  kh, kw = kernel.shape[:2]
  padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  h, w = x.shape[1:3]
  return sum(np.einsum('bhwc,cd->bhwd', padded[:, i:i + h, j:j + w], kernel[i, j]) for i in range(kh)
             for j in range(kw))


def test_preact_block_shortcut_is_the_preactivated_input():
  # The authors' PreActBlock: out = relu(bn1(x)); shortcut = self.shortcut(out), the identity when shapes match.
  from multimix_jax.models.preact_resnet import PreActBlock  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  b, size, c = 2, 5, 3
  x = rng.randn(b, size, size, c).astype(np.float32)
  conv = functools.partial(nn.Conv, padding=1, use_bias=False)
  block = PreActBlock(c, 1, common.batch_norm(False, jnp.float32, None), conv)
  bn = lambda: {'scale': rng.uniform(0.5, 1.5, c), 'bias': rng.randn(c), 'mean': rng.randn(c),
                'var': rng.uniform(0.5, 1.5, c)}
  bn1, bn2 = bn(), bn()
  k1, k2 = rng.randn(3, 3, c, c) / 3, rng.randn(3, 3, c, c) / 3
  variables = {'params': {'bn1': {'scale': bn1['scale'], 'bias': bn1['bias']}, 'conv1': {'kernel': k1},
                          'bn2': {'scale': bn2['scale'], 'bias': bn2['bias']}, 'conv2': {'kernel': k2}},
               'batch_stats': {'bn1': {'mean': bn1['mean'], 'var': bn1['var']},
                               'bn2': {'mean': bn2['mean'], 'var': bn2['var']}}}
  variables = jax.tree.map(lambda a: np.asarray(a, np.float32), variables)
  assert jax.tree.structure(variables) == jax.tree.structure(jax.eval_shape(block.init, KEY, x))

  def bn_eval(h, p):
    return (h - p['mean']) / np.sqrt(p['var'] + 1e-5) * p['scale'] + p['bias']

  relu = lambda h: np.maximum(h, 0)
  a = relu(bn_eval(x, bn1))
  expected = conv_same(relu(bn_eval(conv_same(a, k1), bn2)), k2) + a
  out = block.apply(variables, x)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # Not the other common variant, which adds x itself.
  assert np.abs(out - (expected - a + x)).max() > 0.1


def test_wrn_has_pytorch_default_init_and_final_bn_momentum():
  model = create_model('wrn16_8', num_classes=10)
  x = images((8, 8, 3), b=4)
  # unsafe_rbg: the quickest key to draw 11M parameters with on a CPU; only their distribution is checked.
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0, impl='unsafe_rbg'), x)
  convs = {'/'.join(k.key for k in path[:-1]): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(
      variables['params'])[0] if path[-1].key == 'kernel'}
  assert len(convs) == 1 + 3 * 2 * 2 + 3 + 1  # stem, two convs per block, three 1×1 shortcuts, the head
  for path, kernel in convs.items():
    bias = variables['params']
    for part in path.split('/'):
      bias = bias[part]
    bias = bias['bias']
    bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))  # PyTorch's fan_in: c_in · kh · kw
    # U(±bound): inside the bound, and spread over it (the authors' unused Xavier conv_init is over twice as wide;
    # flax's default bias is zero).
    assert np.abs(kernel).max() <= bound * (1 + 1e-6) and np.abs(bias).max() <= bound * (1 + 1e-6), path
    assert np.abs(kernel).max() > 0.9 * bound and np.abs(bias).max() > 0.25 * bound, path
    np.testing.assert_allclose(np.var(kernel), bound**2 / 3, rtol=0.2, err_msg=path)
  # Final BN: PyTorch momentum 0.9 (90% of the batch statistics); the others PyTorch's default 0.1.
  _, state = run(model, variables, x, train=True, mutable=['batch_stats', 'intermediates'],
                 capture_intermediates=lambda mdl, _: mdl.name in ('stem_conv', 'stage3_block1'))
  for name, bn, weight in (('stage3_block1', 'final_bn', 0.9), ('stem_conv', 'stage1_block0/bn1', 0.1)):
    h = state['intermediates'][name]['__call__'][0]
    stats = state['batch_stats']
    for part in bn.split('/'):
      stats = stats[part]
    np.testing.assert_allclose(stats['mean'], weight * h.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats['var'], 1 - weight + weight * h.var(axis=(0, 1, 2)), rtol=1e-4)


def random_variables(model, shape, seed=0):
  """float64 variables of `model` for inputs `shape`, none at its init value: kernels N(0, 1/fan_in), BN scale and
  running variance U(0.5, 1.5), BN bias and running mean N(0, 0.1²), biases N(0, 0.1²)."""
  rng = np.random.RandomState(seed)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), KEY, jnp.zeros((1, *shape)))

  def draw(path, s):
    name = path[-1].key
    if name == 'kernel':
      return rng.randn(*s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, s.shape)
    return 0.1 * rng.randn(*s.shape)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.fidelity
@pytest.mark.parametrize('name, shape', [('preact_resnet18', (32, 32, 3)), ('wrn16_8', (32, 32, 3)),
                                         ('resnet50', (64, 64, 3))])
def test_forward_matches_the_authors_pytorch_network(name, shape, torch):
  from multimix_jax.models import torch_reference  # pylint: disable=g-import-not-at-top
  b = 2
  x = np.random.RandomState(1).randn(b, *shape)
  reference = torch_reference.create_model(name, num_classes=10).double()
  with jax.enable_x64(True):
    model = create_model(name, num_classes=10, dtype=jnp.float64)
    variables = random_variables(model, shape)
    torch_reference.copy_flax_to_torch(reference, variables)
    features, logits = run(model, variables, x, train=False)
    (train_features, train_logits), state = run(model, variables, x, train=True, mutable=['batch_stats'])
  with torch.no_grad():
    ref_features, ref_logits = reference.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    ref_train_features, ref_train_logits = reference.train()(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  assert features.dtype == np.float64
  # Features to float64 precision; logits to float32's, as the head rounds the pooled features to float32.
  for ours, ref, precision in ((features, ref_features, 1e-10), (logits, ref_logits, 1e-6),
                               (train_features, ref_train_features, 1e-10), (train_logits, ref_train_logits, 1e-6)):
    ref = ref.numpy().transpose(0, 2, 3, 1) if ref.ndim == 4 else ref.numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=precision * np.abs(ref).max())
  # Running means after that training step, read back through the copier (PyTorch updates the running variance
  # with the unbiased batch variance, flax with the biased one: a factor n / (n − 1) on the update, not compared).
  updated = torch_reference.copy_flax_to_torch(torch_reference.create_model(name, num_classes=10).double(),
                                               {'params': variables['params'], 'batch_stats': state['batch_stats']})
  means = [(n, t.numpy()) for n, t in reference.named_buffers() if n.endswith('running_mean')]
  assert len(means) > 5
  for buffer_name, ref in means:
    np.testing.assert_allclose(updated.get_buffer(buffer_name).numpy(), ref, rtol=1e-9, atol=1e-12,
                               err_msg=buffer_name)
