"""What every model shares: its interface (`Model`), PyTorch-default initialisation and BatchNorm, the linear head,
the stages with the manifold-mixup hook (`run_stages`).

Shapes: x (b, H, W, C) images; features (b, h, w, d) the last map before pooling; logits (b, c) pooled or
(b, h, w, c) dense.
"""

import functools
from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = Any
ModuleDef = Any


class Model(nn.Module):
  """The interface of every model: `Model(num_classes, dtype=float32, bn_axis_name=None)`, called as
  `model.apply(variables, x, train=..., dense=False, mix_stage=None, mix_fn=None)` -> (features, logits).

  x (b, H, W, C) images; features (b, h, w, d) the last map before global average pooling, in `dtype`; float32
  logits (b, c) of the pooled features, or (b, h, w, c) with the same head at every position when `dense=True`.
  `mix_stage = k` replaces the hidden state after stage k (0: the input) by `mix_fn` of it (see `run_stages`).
  Parameters are float32 whatever `dtype`; `bn_axis_name` names the device axis BatchNorm statistics are reduced
  over. A subclass declares the input and classes it is built for, which the benchmark times it at.
  """
  example_input: ClassVar[tuple[int, int, int]]  # (H, W, C)
  example_classes: ClassVar[int]
  num_classes: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None


# PyTorch's default for Conv2d and Linear weights (kaiming_uniform with a = sqrt(5)): U(±1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int) -> Callable[..., Array]:
  """PyTorch's default for Conv2d and Linear biases: U(±1/sqrt(fan_in)), fan_in that of the layer's weight.

  A bias initializer only sees the bias shape (c_out,), so the layer's fan_in (c_in · kh · kw) is bound here.
  """
  bound = 1 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def batch_norm(train: bool, dtype: Any, axis_name: str | None) -> ModuleDef:
  """nn.BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5); scale 1, bias 0.

  Statistics are reduced in float32 whatever `dtype`; `axis_name` syncs them across devices.
  """
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                           dtype=dtype, param_dtype=jnp.float32, axis_name=axis_name)


def batch_norm_momentum(train: bool, dtype: Any, axis_name: str | None, torch_momentum: float) -> ModuleDef:
  """`batch_norm` with PyTorch momentum `torch_momentum`: running ← (1 − m) · running + m · batch."""
  return functools.partial(batch_norm(train, dtype, axis_name), momentum=1 - torch_momentum)


class Head(nn.Module):
  """The linear classifier (b, ..., d) -> (b, ..., c), in float32, initialised as PyTorch's nn.Linear(d, c):
  kernel and bias U(±1/sqrt(d)). Parameters 'kernel' (d, c) and 'bias' (c,), as nn.Dense."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    kernel = self.param('kernel', torch_default_init, (d, self.num_classes), jnp.float32)
    bias = self.param('bias', torch_bias_init(d), (self.num_classes,), jnp.float32)
    return jnp.dot(x.astype(jnp.float32), kernel) + bias


def head(num_classes: int) -> Head:
  """The linear classifier, in float32 so that pooled and dense logits agree to float32 precision."""
  return Head(num_classes, name='head')


def classify(head_module: nn.Module, features: Array, dense: bool) -> Array:
  """features (b, h, w, d) -> float32 logits: (b, c) of the pooled map, or (b, h, w, c) at every position.

  The head is affine, so the mean over positions of the dense logits equals the pooled logits.
  """
  features = features.astype(jnp.float32)
  return head_module(features if dense else features.mean(axis=(1, 2)))


def check_mix(mix_stage: int | None, mix_fn: Callable[[Array], Array] | None, num_stages: int) -> None:
  """mix_stage must be a static int in [0, num_stages] (0 = input image, k = after stage k) with a mix_fn."""
  if mix_stage is None:
    return
  if isinstance(mix_stage, bool) or not isinstance(mix_stage, int) or not 0 <= mix_stage <= num_stages:
    raise ValueError(f'mix_stage must be None or a Python int in [0, {num_stages}], got {mix_stage!r}.')
  if mix_fn is None:
    raise ValueError(f'mix_stage = {mix_stage} needs a mix_fn.')


Layer = Callable[[Array], Array]


def run_stages(x: Array, stem: Sequence[Layer], stages: Sequence[Sequence[Layer]], *, dtype: Any,
               mix_stage: int | None, mix_fn: Callable[[Array], Array] | None) -> Array:
  """x (b, H, W, C) cast to `dtype`, then the stem's and each stage's layers in order: the last stage's output.

  mix_stage k replaces the hidden state after stage k by mix_fn of it: 0 the input x (before the cast, so in its
  own dtype), k ≥ 1 the output of stage k (the stem belongs to stage 1). `check_mix` validates it against
  len(stages) first. The layers are any callables h -> h: Linen submodules, activations, pooling.
  """
  check_mix(mix_stage, mix_fn, len(stages))
  h = mix_fn(x) if mix_stage == 0 else x
  h = h.astype(dtype)
  for k, layers in enumerate(stages, 1):
    for layer in (*stem, *layers) if k == 1 else layers:
      h = layer(h)
    if mix_stage == k:
      h = mix_fn(h)
  return h
