"""Vision Transformers: published sizes, the forward against timm's (both placements of the final norm), the
linear-head identity on tokens, stochastic depth, the mixing stages, the `attention` confidence against a hand
computation, every confidence kind on tokens, and the step under both wrappers.

Networks of the registry are only traced (jax.eval_shape); everything that runs uses a tiny ViT.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimix_jax import mixing
from multimix_jax import models
from multimix_jax.configs import default
from multimix_jax.models import vit
from multimix_jax.trainer import methods
from multimix_jax.trainer import step as step_lib

B, SIZE, CLASSES = 8, 12, 5  # 3×3 = 9 tokens of a tiny ViT with 4×4 patches


@pytest.fixture(autouse=True, scope='module')
def fast_compilation():
  """Tiny networks: XLA's optimisations cost more compile time than they save (flax's imagenet example does so)."""
  previous = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)  # the suite's own setting (tests/conftest.py)


def tiny_vit(dtype=jnp.float32, **fields):
  return vit.ViT(num_classes=CLASSES, dtype=dtype, patch_size=4, width=16, depth=3, num_heads=2, mlp_dim=32,
                 **fields)


def images(b=B, seed=0):
  return jax.random.normal(jax.random.key(seed), (b, SIZE, SIZE, 3))


def init(model, x):
  """Parameters with a random head: the zero-initialised head would make every logit identity trivial."""
  params = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)['params']
  head = params['head']
  params['head'] = {'kernel': jax.random.normal(jax.random.key(1), head['kernel'].shape),
                    'bias': jax.random.normal(jax.random.key(2), head['bias'].shape)}
  return params


def vit_params(d, depth, mlp_dim, patch, tokens, classes, class_token):
  """Parameters of a ViT by arithmetic: patch embedding, position embeddings (+ class token and its position),
  per block two LayerNorms, q/k/v/out projections and the MLP, the final LayerNorm and the head."""
  block = 2 * 2 * d + (4 * d * d + 4 * d) + (d * mlp_dim + mlp_dim) + (mlp_dim * d + d)
  prefix = 2 * d if class_token else 0
  return (3 * patch**2 * d + d) + tokens * d + prefix + depth * block + 2 * d + (d * classes + classes)


# timm's `vit_{tiny,small,base}_patch16_224` (the DeiT-Ti/S/B networks, with a class token, 1000 classes) have
# 5,717,416, 22,050,664 and 86,567,656 parameters (also in timm's model results tables); with
# class_token=False, global_pool='avg' timm counts 2d fewer: 5,717,032, 22,049,896 and 86,566,120, our definition
# (timm normalises after pooling, big_vision and we before: the same parameters). ViT/4 of Lee et al. (2021):
# timm's VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=9, num_heads=12, mlp_ratio=2,
# num_classes=100, class_token=False, global_pool='avg') has 2,714,596.
@pytest.mark.parametrize('name,d,mlp_dim,depth,patch,size,classes,timm_class_token,expected', [
    ('vit_ti16', 192, 768, 12, 16, 224, 1000, 5_717_416, 5_717_032),
    ('vit_s16', 384, 1536, 12, 16, 224, 1000, 22_050_664, 22_049_896),
    ('vit_b16', 768, 3072, 12, 16, 224, 1000, 86_567_656, 86_566_120),
    ('vit_cifar', 192, 384, 9, 4, 32, 100, None, 2_714_596),
])
def test_parameter_counts_match_the_published_ones(name, d, mlp_dim, depth, patch, size, classes, timm_class_token,
                                                   expected):
  tokens = (size // patch)**2
  if timm_class_token is not None:
    assert vit_params(d, depth, mlp_dim, patch, tokens, classes, class_token=True) == timm_class_token
    assert timm_class_token - 2 * d == expected
  assert vit_params(d, depth, mlp_dim, patch, tokens, classes, class_token=False) == expected
  cls = models.MODELS[name]
  assert cls.example_input == (size, size, 3) and cls.example_classes == classes
  model = models.create_model(name, num_classes=classes, dtype=jnp.bfloat16)
  (features, logits), variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  params = jax.tree.leaves(variables['params'])
  assert sum(int(np.prod(p.shape)) for p in params) == expected
  assert {p.dtype for p in params} == {np.dtype('float32')}
  assert features.shape == (2, size // patch, size // patch, d) and features.dtype == jnp.bfloat16
  assert logits.shape == (2, classes) and logits.dtype == jnp.float32


def timm_state_dict(params):
  """Our parameters under the names and layouts of timm's `VisionTransformer` (float32 NumPy arrays)."""
  a = lambda x: np.array(x, np.float32)  # a writable copy, for torch.from_numpy
  linear = lambda p: {'weight': a(p['kernel']).T, 'bias': a(p['bias'])}
  ln = lambda p: {'weight': a(p['scale']), 'bias': a(p['bias'])}
  state = {'patch_embed.proj.weight': a(params['embedding']['kernel']).transpose(3, 2, 0, 1),
           'patch_embed.proj.bias': a(params['embedding']['bias']), 'pos_embed': a(params['pos_embedding'])}
  i = 0
  while f'block{i}' in params:
    p, att = params[f'block{i}'], params[f'block{i}']['attention']
    d = att['query']['kernel'].shape[0]
    parts = {
        'norm1': ln(p['norm1']), 'norm2': ln(p['norm2']), 'mlp.fc1': linear(p['mlp_in']),
        'mlp.fc2': linear(p['mlp_out']),
        # qkv: one Linear(d, 3d), rows [q; k; v], each (heads, d / heads) flattened head-major.
        'attn.qkv': {'weight': np.concatenate([a(att[n]['kernel']).reshape(d, d).T for n in ('query', 'key', 'value')]),
                     'bias': np.concatenate([a(att[n]['bias']).reshape(d) for n in ('query', 'key', 'value')])},
        'attn.proj': {'weight': a(att['out']['kernel']).reshape(d, d).T, 'bias': a(att['out']['bias'])}}
    state.update({f'blocks.{i}.{name}.{k}': v for name, part in parts.items() for k, v in part.items()})
    i += 1
  norm = 'norm' if 'encoder_norm' in params else 'fc_norm'
  state.update({f'{norm}.{k}': v for k, v in ln(params.get('encoder_norm', params.get('fc_norm'))).items()})
  state.update({f'head.{k}': v for k, v in linear(params['head']).items()})
  return state


def torch_reference_logits(state, x, *, num_heads, patch_size, pool_norm):
  """timm's VisionTransformer(class_token=False, global_pool='avg', fc_norm=pool_norm == 'after_pool') forward, in
  float64 torch: x (b, H, W, C) NumPy -> logits (b, c)."""
  torch = pytest.importorskip('torch')
  F = torch.nn.functional
  w = {k: torch.from_numpy(v).double() for k, v in state.items()}
  ln = lambda h, name: F.layer_norm(h, h.shape[-1:], w[f'{name}.weight'], w[f'{name}.bias'], eps=1e-6)
  h = F.conv2d(torch.from_numpy(np.array(x)).double().permute(0, 3, 1, 2), w['patch_embed.proj.weight'],
               w['patch_embed.proj.bias'], stride=patch_size)
  h = h.flatten(2).transpose(1, 2) + w['pos_embed']
  b, r, d = h.shape
  for i in range(sum(k.endswith('.attn.qkv.weight') for k in w)):
    blk = lambda name: (w[f'blocks.{i}.{name}.weight'], w[f'blocks.{i}.{name}.bias'])
    qkv = F.linear(ln(h, f'blocks.{i}.norm1'), *blk('attn.qkv')).reshape(b, r, 3, num_heads, d // num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-2, -1) * (d // num_heads)**-0.5, dim=-1)
    h = h + F.linear((att @ v).transpose(1, 2).reshape(b, r, d), *blk('attn.proj'))
    h = h + F.linear(F.gelu(F.linear(ln(h, f'blocks.{i}.norm2'), *blk('mlp.fc1'))), *blk('mlp.fc2'))
  norm = 'norm' if 'norm.weight' in w else 'fc_norm'  # the final norm's parameters, placed by pool_norm
  pooled = ln(h, norm).mean(1) if pool_norm == 'tokens' else ln(h.mean(1), norm)
  return F.linear(pooled, w['head.weight'], w['head.bias']).numpy()


@pytest.mark.fidelity
@pytest.mark.parametrize('pool_norm', vit.POOL_NORMS)
def test_forward_equals_timms_vision_transformer(pool_norm, torch):  # pylint: disable=unused-argument
  """Our weights copied into timm's layout give our logits: 'tokens' is timm's fc_norm=False, 'after_pool' its
  global_pool='avg' default. Against timm itself where it is installed, else against the same forward written in
  torch here."""
  model, x = tiny_vit(pool_norm=pool_norm), images()
  params = init(model, x)
  logits = jax.jit(lambda p: model.apply({'params': p}, x, train=False))(params)[1]
  state = timm_state_dict(params)
  expected = torch_reference_logits(state, x, num_heads=2, patch_size=4, pool_norm=pool_norm)
  np.testing.assert_allclose(logits, expected, rtol=2e-5, atol=2e-5)
  other = 'after_pool' if pool_norm == 'tokens' else 'tokens'  # the same weights, the other placement: the test
  assert not np.allclose(expected, torch_reference_logits(state, x, num_heads=2, patch_size=4, pool_norm=other),
                         atol=1e-3)  # tells them apart
  try:
    from timm.models import vision_transformer  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  torch = pytest.importorskip('torch')
  net = vision_transformer.VisionTransformer(
      img_size=SIZE, patch_size=4, embed_dim=16, depth=3, num_heads=2, mlp_ratio=2, num_classes=CLASSES,
      class_token=False, global_pool='avg', fc_norm=pool_norm == 'after_pool').eval()
  net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  with torch.no_grad():
    timm_logits = net(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(logits, timm_logits, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('dtype,pool_norm', [(jnp.float32, 'tokens'), (jnp.bfloat16, 'tokens'),
                                             (jnp.float32, 'after_pool')])
def test_dense_logits_average_to_the_logits(dtype, pool_norm):
  model, x = tiny_vit(dtype, pool_norm=pool_norm), images()
  params = init(model, x)
  features, logits = jax.jit(lambda p: model.apply({'params': p}, x, train=True))(params)
  _, dense_logits = jax.jit(lambda p: model.apply({'params': p}, x, train=True, dense=True))(params)
  assert features.shape == (B, 3, 3, 16) and features.dtype == dtype
  assert dense_logits.shape == (B, 3, 3, CLASSES) and dense_logits.dtype == jnp.float32
  np.testing.assert_allclose(dense_logits.mean(axis=(1, 2)), logits, rtol=1e-5, atol=1e-5)
  # The logits are the head of the mean token: no class token, the features are the pooled tokens.
  head = params['head']
  np.testing.assert_allclose(features.astype(jnp.float32).mean(axis=(1, 2)) @ head['kernel'] + head['bias'], logits,
                             rtol=1e-5, atol=1e-5)
  if pool_norm == 'after_pool':
    # The features average to LN(mean of the raw tokens), timm's pooled embedding; the per-token LN(t_j) would not.
    _, state = model.apply({'params': params}, x, train=False, capture_intermediates=True)
    tokens = np.asarray(state['intermediates']['block2']['__call__'][0][0], np.float64)  # (b, r, d), raw
    ln = lambda t: ((t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
                    * params['fc_norm']['scale'] + params['fc_norm']['bias'])
    np.testing.assert_allclose(features.mean(axis=(1, 2)), ln(tokens.mean(1)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(ln(tokens).mean(1), ln(tokens.mean(1)), atol=1e-3)


def test_drop_path_drops_whole_examples_at_its_rate():
  x = jnp.ones((2000, 3, 4))
  out = vit.DropPath(0.25).apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(0)})
  kept = np.asarray(out[:, 0, 0]) > 0
  np.testing.assert_allclose(out, np.where(kept[:, None, None], 1 / 0.75, 0.0) * np.ones(x.shape), rtol=1e-6)
  assert abs(1 - kept.mean() - 0.25) < 0.03
  np.testing.assert_array_equal(vit.DropPath(0.25).apply({}, x, deterministic=True), x)
  assert vit.drop_path_rates(3, 0.1) == pytest.approx([0.0, 0.05, 0.1])  # timm's linear rule over the blocks


def test_stochastic_depth_only_in_training():
  model, x = tiny_vit(drop_path=0.5), images()
  params = init(model, x)
  plain = tiny_vit().apply({'params': params}, x, train=False)[1]
  np.testing.assert_array_equal(model.apply({'params': params}, x, train=False)[1], plain)
  train = lambda seed: model.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.key(seed)})[1]
  np.testing.assert_array_equal(train(0), train(0))
  assert not np.allclose(train(0), plain, atol=1e-4) and not np.allclose(train(0), train(1), atol=1e-4)
  with pytest.raises(Exception, match='dropout'):  # no random stream: an error, not a silent no-op
    model.apply({'params': params}, x, train=True)
  with pytest.raises(ValueError, match=r'drop_path=1.0 must be in \[0, 1\)'):
    tiny_vit(drop_path=1.0).apply({'params': params}, x, train=False)
  with pytest.raises(ValueError, match='pool_norm=.cls. must be one of'):
    tiny_vit(pool_norm='cls').apply({'params': params}, x, train=False)


def test_big_vision_initialisation():
  model, x = tiny_vit(), images()
  params = model.init(jax.random.key(0), x, train=False)['params']
  assert not params['head']['kernel'].any() and not params['head']['bias'].any()
  assert 0.5 / 4 < params['pos_embedding'].std() < 2 / 4  # N(0, 1/d), d = 16
  attention = params['block0']['attention']
  assert attention['query']['kernel'].shape == (16, 2, 8) and not attention['query']['bias'].any()
  assert 0 < np.abs(params['block0']['mlp_in']['bias']).max() < 1e-5  # N(0, 1e-6²)
  bound = np.sqrt(6 / (16 + 32))  # Xavier uniform of the (16, 32) MLP kernel
  assert np.abs(params['block0']['mlp_in']['kernel']).max() <= bound


def test_mixing_stages():
  model, x = tiny_vit(), images()
  params = init(model, x)
  reference = model.apply({'params': params}, x, train=True)[1]
  for stage, shape in enumerate([(B, SIZE, SIZE, 3), (B, 9, 16), (B, 9, 16), (B, 9, 16)]):
    seen = []
    logits = model.apply({'params': params}, x, train=True, mix_stage=stage,
                         mix_fn=lambda h, seen=seen: seen.append(h.shape) or h)[1]
    assert seen == [shape]
    np.testing.assert_allclose(logits, reference, rtol=1e-6)  # an identity mix changes nothing
  # Mixing a later stage leaves the earlier blocks' output alone: the last stage is the one before the final norm.
  flipped = model.apply({'params': params}, x, train=True, mix_stage=3, mix_fn=lambda h: h[::-1])[1]
  np.testing.assert_allclose(flipped, reference[::-1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r'mix_stage must be None or a Python int in \[0, 3\]'):
    model.apply({'params': params}, x, train=True, mix_stage=4, mix_fn=lambda h: h)


def test_attention_confidence_is_the_attention_each_token_receives():
  """Recomputed by hand from the last block's parameters and its input (the output of the block before)."""
  model, x = tiny_vit(), images()
  params = init(model, x)
  _, state = model.apply({'params': params}, x, train=True, mutable=['intermediates'], capture_intermediates=True)
  sown = state['intermediates']['attention'][0]
  tokens = state['intermediates']['block1']['__call__'][0][0]  # (b, r, d): the input of block2
  p = params['block2']
  mu, var = tokens.mean(-1, keepdims=True), tokens.var(-1, keepdims=True)
  y = (tokens - mu) / np.sqrt(var + 1e-6) * p['norm1']['scale'] + p['norm1']['bias']
  att = p['attention']
  q = np.einsum('brd,dhe->brhe', y, att['query']['kernel']) + att['query']['bias']
  k = np.einsum('brd,dhe->brhe', y, att['key']['kernel']) + att['key']['bias']
  weights = jax.nn.softmax(np.einsum('bqhe,bkhe->bhqk', q, k) / np.sqrt(q.shape[-1]), axis=-1)
  expected = weights.mean(axis=(1, 2))  # over heads and queries: the attention token j receives
  np.testing.assert_allclose(sown, expected, rtol=1e-5, atol=1e-7)

  A = mixing.confidence_map(jnp.zeros((B, 9, 16)), 'attention', attention=sown)
  assert A.shape == (B, 9) and (A >= 0).all()
  np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(A, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
  assert not (A == A[:, :1]).all()  # not uniform: the test can tell attention from 1/r
  # No gradient flows through the confidence, as for the other kinds.
  grad = jax.grad(lambda a: (mixing.confidence_map(jnp.zeros((B, 9, 16)), 'attention', attention=a)
                             * jnp.arange(9)).sum())(sown)
  assert not grad.any()


def dense_multimix_losses(model, params, x, labels):
  """Dense MultiMix's loss function, as the step calls it, with each confidence kind: float32 (kinds,).

  One compiled function for every kind (the forward is shared); the step's gradients are checked below.
  """
  targets = jax.nn.one_hot(labels, CLASSES)
  loss_fns = []
  for kind in mixing.CONFIDENCE_KINDS:
    config = default.get_config()
    config.multimix.n, config.multimix.confidence = 20, kind
    loss_fns.append(methods.METHODS['dense_multimix'](config)[0].loss_fn)

  def losses(params):
    def forward(images, **kwargs):
      return model.apply({'params': params}, images, train=True, mutable=['batch_stats', 'intermediates'], **kwargs)

    key = jax.random.key_data(jax.random.key(3))
    return jnp.stack([loss_fn(forward, x, targets, key)[0] for loss_fn in loss_fns])

  # The loss functions mix per device: give them a device axis of size 1.
  return jax.jit(jax.vmap(losses, in_axes=None, axis_name=step_lib.AXIS, axis_size=1))(params)[0]


def test_every_confidence_kind_on_tokens():
  model, x = tiny_vit(), images()
  params = init(model, x)
  labels = jnp.arange(B) % CLASSES
  (features, dense_logits), state = jax.jit(lambda p: model.apply({'params': p}, x, train=True, dense=True,
                                                                  mutable=['intermediates']))(params)
  tokens, dense_logits = features.reshape(B, 9, 16), dense_logits.reshape(B, 9, CLASSES)
  maps = {}
  for kind in mixing.CONFIDENCE_KINDS:
    A = maps[kind] = mixing.confidence_map(tokens, kind, logits=dense_logits, labels=labels,
                                                  attention=state['intermediates']['attention'][0])
    assert A.shape == (B, 9) and (A >= 0).all(), kind
    np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-5, err_msg=kind)
  assert len({np.asarray(A).tobytes() for A in maps.values()}) == len(maps)  # five different maps
  losses = dense_multimix_losses(model, params, x, labels)
  assert losses.shape == (len(maps),) and np.isfinite(losses).all() and (losses > 0).all()
  # The same mixing draws weighted by different confidences give different losses.
  assert len(set(np.asarray(losses).tolist())) == len(maps)


def test_attention_confidence_needs_a_vision_transformer():
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top  # TensorFlow: only here
  cnn = models.create_model('small_cnn', num_classes=CLASSES)
  x = jnp.zeros((4, 8, 8, 1))
  params = cnn.init(jax.random.key(0), x, train=False)
  config = default.get_config()
  config.multimix.confidence = 'attention'
  loss_fn = methods.METHODS['dense_multimix'](config)[0].loss_fn

  def forward(images, **kwargs):
    return cnn.apply(params, images, train=True, mutable=['batch_stats', 'intermediates'], **kwargs)

  with pytest.raises(ValueError, match="'attention' needs .* Vision Transformer"):
    jax.vmap(lambda k: loss_fn(forward, x, jnp.eye(CLASSES)[:4], k), axis_name=step_lib.AXIS)(
        jax.random.key_data(jax.random.key(0))[None])
  with pytest.raises(train.ConfigError, match=r"confidence='attention' needs a Vision Transformer.*'small_cnn'"):
    train.validate_config(config, 1)
  config.model = 'vit_cifar'
  train.validate_config(config, 1)


def test_transmix_reweights_cutmix_targets_by_the_attention_of_the_mixed_image():
  model, x = tiny_vit(), images()
  params = init(model, x)
  targets = jax.nn.one_hot(jnp.arange(B) % CLASSES, CLASSES)
  config = default.get_config()
  config.mixup_mode = 'elem'
  loss_fn = methods.METHODS['transmix'](config)[0].loss_fn
  assert loss_fn.keywords['attention_weight'] == 0.5 and loss_fn.keywords['mode'] == 'elem'
  key = jax.random.key_data(jax.random.key(5))

  def forward(images, **kwargs):
    return model.apply({'params': params}, images, train=True, mutable=['batch_stats', 'intermediates'], **kwargs)

  @jax.jit
  def run_and_reference():
    loss, (logits, mixed_targets, _) = jax.vmap(lambda _: loss_fn(forward, x, targets, key), axis_name=step_lib.AXIS,
                                                axis_size=1)(jnp.zeros(1))
    # What the loss should have done: CutMix's boxes with this device's key, the attention of the mixed images.
    device_key = jax.random.fold_in(jax.random.split(jax.random.wrap_key_data(key))[1], 0)
    perm, box = mixing.cutmix_box(device_key, B, SIZE, SIZE, 1.0, mode='elem')
    mixed = jnp.where(box[..., None], x[perm], x)
    (_, expected_logits), state = forward(mixed)
    attention = state['intermediates']['attention'][0].reshape(B, 3, 3)
    by_area = mixing.paste(x, targets, perm, box)[1]  # CutMix's targets
    return (loss[0], logits[0], mixed_targets[0], expected_logits, perm, box,
            mixing.transmix_targets(targets, perm, box, attention), by_area)

  loss, logits, got, expected_logits, perm, box, expected, by_area = run_and_reference()
  np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(loss, optax_ce(expected_logits, expected), rtol=1e-5)
  mixed = (np.asarray(perm) != np.arange(B)) & np.asarray(box).any((1, 2)) & ~np.asarray(box).all((1, 2))
  assert mixed.any() and not np.allclose(got[mixed], by_area[mixed], atol=1e-4)  # the attention moved the targets

  # A model without attention is refused while tracing (validate_config refuses it before: tests/test_train.py).
  cnn = models.create_model('small_cnn', num_classes=CLASSES)
  cnn_params = jax.eval_shape(lambda: cnn.init(jax.random.key(0), jnp.zeros((4, 8, 8, 1)), train=False))

  def cnn_loss(params, k):
    cnn_forward = lambda im, **kw: cnn.apply(params, im, train=True, mutable=['batch_stats', 'intermediates'], **kw)
    return loss_fn(cnn_forward, jnp.zeros((4, 8, 8, 1)), jnp.eye(CLASSES)[:4], k)

  with pytest.raises(ValueError, match='transmix needs the attention .* Vision Transformer'):
    jax.eval_shape(jax.vmap(cnn_loss, in_axes=(None, 0), axis_name=step_lib.AXIS), cnn_params, key[None])


def optax_ce(logits, targets):
  return -(targets * jax.nn.log_softmax(logits)).sum(-1).mean()


def test_vit_and_augment_keys_are_checked_and_reach_the_model():
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top  # TensorFlow: only here
  config = default.get_config()
  assert models.config_fields(config) == {}  # the default's small CNN has no such fields
  config.vit.drop_path = 0.1
  with pytest.raises(train.ConfigError, match=r'vit.pool_norm and vit.drop_path apply to Vision Transformers'):
    train.validate_config(config, 1)
  config.model, config.vit.pool_norm = 'vit_cifar', 'after_pool'
  train.validate_config(config, 1)
  model = models.create_model(config.model, num_classes=100, **models.config_fields(config))
  assert (model.pool_norm, model.drop_path) == ('after_pool', 0.1)
  config.vit.pool_norm, config.vit.drop_path = 'cls', 1.0
  with pytest.raises(train.ConfigError, match=r"vit.pool_norm='cls' must be one of .*\n.*vit.drop_path=1.0 must"):
    train.validate_config(config, 1)
  # The augmentation keys of the ViT recipes: checked too, and refused on the digits, which are not augmented.
  config = default.get_config()
  config.augment.update(resize='lanczos', randaugment_layers=2, randaugment_magnitude=11.0, random_erasing=1.5)
  with pytest.raises(train.ConfigError, match=(r"(?s)augment.resize='lanczos' must be one of \('bilinear', 'bicubic'\)"
                                               r".*randaugment_magnitude=11.0.*random_erasing=1.5 must be in \[0, 1\]\.$")):
    train.validate_config(config, 1)
  # Combined with the dataset once each value is valid (not on top of a value's own error).
  config.augment.update(resize='bicubic', randaugment_magnitude=9.0, random_erasing=0.25)
  with pytest.raises(train.ConfigError, match=r"dataset='digits' is not augmented"):
    train.validate_config(config, 1)
