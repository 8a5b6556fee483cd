"""Vision Transformers with global-average pooling: ViT-Ti/16, ViT-S/16, ViT-B/16 (224×224) and ViT/4 (32×32).

The encoder of Dosovitskiy et al. (2021): patch embedding (a p×p convolution of stride p), learnt position
embeddings, pre-LayerNorm blocks (multi-head self-attention, then a GELU MLP, each added to its input), a final
LayerNorm, no class token, and a linear head on the mean token. Where the final LayerNorm sits is `pool_norm`:

- 'tokens' (the default; big_vision's `models/vit.py` with `pool_type='gap'`, and timm's `VisionTransformer(
  class_token=False, global_pool='avg', fc_norm=False)`): every token is normalised, then the tokens are averaged.
  The features are the normalised tokens on the patch grid, (b, H/p, W/p, d); the logits are the head of their
  mean, so the head at every token gives dense logits whose mean is the logits, exactly as on a CNN's last map.
  This is what lets Dense MultiMix run on tokens unchanged (Beyer et al. 2022, "Better plain ViT baselines", also
  pool by averaging).
- 'after_pool' (timm's `global_pool='avg'` with its default `fc_norm`): the raw tokens t_j are averaged,
  p = mean_j t_j, and the LayerNorm (`fc_norm`) normalises p; the logits are head(LN(p)), timm's. A LayerNorm does
  not commute with the mean, so the head at LN(t_j) would give dense logits whose mean is NOT the logits. The
  features are instead e_j = (t_j − μ(t_j)) / sqrt(σ²(p) + ε) · γ + β: each token centred on its own mean over
  channels (linear, so it commutes with the mean over tokens) and divided by the pooled vector's standard
  deviation, one scalar per example. Then mean_j e_j = LN(p) exactly: the dense logits head(e_j) average to the
  logits, and Dense MultiMix and AlignMixup mix e, an additive decomposition of the pooled embedding, as they mix
  a CNN's map.

Both placements have the same parameters; the norm is named `encoder_norm` or `fc_norm`, so a checkpoint of one
does not load into the other.

Initialisation as big_vision: patch-embedding kernel LeCun normal, position embeddings N(0, 1/d), attention and
MLP kernels Xavier uniform, MLP biases N(0, 1e-6²), other biases zero, head zero. The GELU is the exact one of
timm / DeiT (big_vision uses its tanh approximation). No dropout. Stochastic depth (`drop_path`, timm's
`drop_path_rate`): in training each block's attention and MLP branches are dropped per example, each with
probability rising linearly over the blocks from 0 (first block) to `drop_path` (last), and kept ones scaled by
1 / (1 − rate), as timm's `DropPath`; the draws come from the 'dropout' random stream.

Parameters with 1000 classes: ViT-Ti/16 5,717,032, ViT-S/16 22,049,896, ViT-B/16 86,566,120: timm's counts of
the class-token models (5,717,416, 22,050,664, 86,567,656; the DeiT paper's 5M / 22M / 86M) less the class token
and its position embedding (2d): timm's `class_token=False, global_pool='avg'`, with either `fc_norm`.

The last block's attention is sown as `intermediates/attention`, (b, r) float32: the attention each token
receives, averaged over heads and queries (Dense MultiMix's `attention` confidence, see
`interpolation.confidence_map`).
"""

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimix_jax.models import common

NUM_STAGES = 3  # mix_stage k in {1, 2, 3}: after k thirds of the blocks; 0: the input image
POOL_NORMS = ('tokens', 'after_pool')  # where the final LayerNorm sits (module docstring)
LAYER_NORM_EPSILON = 1e-6  # flax's default, and timm's ViT norm_layer
xavier = nn.initializers.xavier_uniform()


def drop_path_rates(depth: int, drop_path: float) -> list[float]:
  """Stochastic-depth rate of each block: linear from 0 (first) to `drop_path` (last), timm's `dpr`."""
  return np.linspace(0.0, drop_path, depth).tolist()


class DropPath(nn.Module):
  """Stochastic depth: (b, ...) -> the same, each example's branch zeroed with probability `rate`, else scaled by
  1 / (1 − rate) (timm's `DropPath`, `scale_by_keep=True`). The identity when `deterministic` or rate = 0."""
  rate: float

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    if deterministic or self.rate == 0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class PooledLayerNorm(nn.Module):
  """timm's `fc_norm` after average pooling, as a map of tokens: (b, r, d) -> (b, r, d) whose mean over r is
  LayerNorm(mean over r of the input) (module docstring). Statistics in float32; parameters `scale` and `bias`
  (d,), as nn.LayerNorm's."""
  dtype: Any
  epsilon: float = LAYER_NORM_EPSILON

  @nn.compact
  def __call__(self, t):
    d = t.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (d,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (d,), jnp.float32)
    t = t.astype(jnp.float32)
    pooled_var = t.mean(axis=1, keepdims=True).var(axis=-1, keepdims=True)  # (b, 1, 1): σ² of p
    e = (t - t.mean(axis=-1, keepdims=True)) * jax.lax.rsqrt(pooled_var + self.epsilon) * scale + bias
    return e.astype(self.dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention (b, r, d) -> ((b, r, d), attention weights float32 (b, heads, r, r)).

  Queries, keys and values are `nn.DenseGeneral` maps to (heads, d / heads), as flax's
  `MultiHeadDotProductAttention` (the same parameters, 4·d² + 4·d); the softmax runs in float32 whatever `dtype`.
  """
  num_heads: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f'width {d} must be a multiple of num_heads = {self.num_heads}.')
    dense = lambda name: nn.DenseGeneral((self.num_heads, d // self.num_heads), dtype=self.dtype,
                                         param_dtype=jnp.float32, kernel_init=xavier, name=name)
    q, k, v = dense('query')(x), dense('key')(x), dense('value')(x)  # (b, r, heads, d / heads)
    logits = jnp.einsum('bqhe,bkhe->bhqk', q, k, preferred_element_type=jnp.float32) / np.sqrt(q.shape[-1])
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum('bhqk,bkhe->bqhe', weights.astype(self.dtype), v)
    out = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, param_dtype=jnp.float32, kernel_init=xavier,
                          name='out')(out)
    return out, weights


class EncoderBlock(nn.Module):
  """x + attention(LN(x)), then + MLP(LN(·)): (b, r, d) -> ((b, r, d), attention weights (b, heads, r, r)).

  In training each branch is dropped per example with probability `drop_path` (stochastic depth)."""
  num_heads: int
  mlp_dim: int
  dtype: Any
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda name: nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                                     name=name)
    drop = lambda y: DropPath(self.drop_path)(y, deterministic=not train)
    y, weights = SelfAttention(self.num_heads, self.dtype, name='attention')(norm('norm1')(x))
    x = x + drop(y)
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=xavier,
                                            bias_init=nn.initializers.normal(1e-6), name=name)
    y = dense(self.mlp_dim, 'mlp_in')(norm('norm2')(x))
    y = dense(x.shape[-1], 'mlp_out')(nn.gelu(y, approximate=False))
    return x + drop(y), weights


class ViT(common.Model):
  """ViT-S/16 (width 384, depth 12, 6 heads, MLP 1536, 16×16 patches) unless a subclass says otherwise.

  `pool_norm`: where the final LayerNorm sits, 'tokens' or 'after_pool' (module docstring). `drop_path`: the
  stochastic-depth rate of the last block (timm's `drop_path_rate`; 0.1 for DeiT-S); with it > 0, training needs a
  'dropout' random stream (`rngs={'dropout': key}`). `bn_axis_name` is accepted for the models' common interface
  and unused: there is no BatchNorm.
  """
  patch_size: int = 16
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  pool_norm: str = 'tokens'
  drop_path: float = 0.0

  example_input: ClassVar[tuple[int, int, int]] = (224, 224, 3)  # (H, W, C) of ImageNet
  example_classes: ClassVar[int] = 1000
  sows_attention: ClassVar[bool] = True  # the `attention` confidence of Dense MultiMix is available

  @nn.compact
  def __call__(self, x, *, train: bool, dense: bool = False, mix_stage: int | None = None, mix_fn=None):
    """x (b, H, W, C) -> (features (b, H/p, W/p, d) in dtype, float32 logits (b, c) or dense (b, H/p, W/p, c)).

    mix_stage k in {0, 1, 2, 3} replaces the hidden state after stage k by mix_fn of it: 0 the input image, k the
    tokens (b, r, d) after k thirds of the blocks (blocks 4, 8, 12 of 12). `train` turns stochastic depth on.
    """
    common.check_mix(mix_stage, mix_fn, NUM_STAGES)
    if self.pool_norm not in POOL_NORMS:
      raise ValueError(f'pool_norm={self.pool_norm!r} must be one of {POOL_NORMS}.')
    if not 0 <= self.drop_path < 1:
      raise ValueError(f'drop_path={self.drop_path} must be in [0, 1).')
    if self.depth % NUM_STAGES:
      raise ValueError(f'depth = {self.depth} must be a multiple of {NUM_STAGES} (the mixing stages).')
    p = self.patch_size
    if x.shape[1] % p or x.shape[2] % p:
      raise ValueError(f'image size {x.shape[1:3]} must be a multiple of the patch size {p}.')
    h = mix_fn(x) if mix_stage == 0 else x
    h = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype, param_dtype=jnp.float32,
                name='embedding')(h.astype(self.dtype))
    b, grid_h, grid_w, d = h.shape
    h = h.reshape(b, grid_h * grid_w, d)
    pos = self.param('pos_embedding', nn.initializers.normal(1 / np.sqrt(d)), (1, grid_h * grid_w, d), jnp.float32)
    h = h + pos.astype(self.dtype)
    per_stage = self.depth // NUM_STAGES
    for i, rate in enumerate(drop_path_rates(self.depth, self.drop_path)):
      h, weights = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype, rate, name=f'block{i}')(h, train=train)
      if (i + 1) % per_stage == 0 and mix_stage == (i + 1) // per_stage:
        h = mix_fn(h)
    # weights: the last block's (b, heads, r, r); the rows (queries) sum to one over keys, so the mean over heads and
    # queries does too; renormalised against rounding.
    received = weights.mean(axis=(1, 2))
    self.sow('intermediates', 'attention', received / received.sum(axis=-1, keepdims=True))
    if self.pool_norm == 'tokens':
      h = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, param_dtype=jnp.float32, name='encoder_norm')(h)
    else:
      h = PooledLayerNorm(self.dtype, name='fc_norm')(h)
    features = h.reshape(b, grid_h, grid_w, d)
    head = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                    name='head')  # big_vision's zero-initialised head
    return features, common.classify(head, features, dense)


class ViTTi16(ViT):
  """ViT-Ti/16 (DeiT-Ti): width 192, depth 12, 3 heads, MLP 768."""
  width: int = 192
  num_heads: int = 3
  mlp_dim: int = 768


class ViTS16(ViT):
  """ViT-S/16 (DeiT-S): width 384, depth 12, 6 heads, MLP 1536."""


class ViTB16(ViT):
  """ViT-B/16: width 768, depth 12, 12 heads, MLP 3072."""
  width: int = 768
  num_heads: int = 12
  mlp_dim: int = 3072


class ViTCifar(ViT):
  """The small-image ViT of Lee et al. (2021, "Vision Transformer for Small-Size Datasets", the `vit` of
  github.com/aanna0701/SPT_LSA_ViT): 4×4 patches (8×8 = 64 tokens on 32×32), width 192, depth 9, 12 heads, MLP 384;
  with GAP instead of its class token. Mixing stages after blocks 3, 6, 9."""
  patch_size: int = 4
  width: int = 192
  depth: int = 9
  num_heads: int = 12
  mlp_dim: int = 384

  example_input: ClassVar[tuple[int, int, int]] = (32, 32, 3)  # (H, W, C) of CIFAR-100
  example_classes: ClassVar[int] = 100
