"""The model zoo: the backbones of the paper's experiments, each with a linear head.

Every model is a `common.Model`: `Model(num_classes, dtype=float32, bn_axis_name=None)` applied to images
(b, H, W, C) returns `(features, logits)`, the last feature map and the float32 logits of its pooled (or, with
`dense=True`, every) position, and replaces the hidden state after stage `mix_stage` by `mix_fn` of it (manifold
mixup); `common.Model` states the shapes and dtypes.

A new model is one subclass of `common.Model` (with its `example_input` and `example_classes`; a CNN lists its
stem and stages and hands them to `common.run_stages`, which applies the mixing) plus one line in `MODELS`.
`config_problems` checks the keys of a run's config that choose and configure the model (`model`, `vit.*`).
"""

import jax.numpy as jnp

from multimix_jax.models import common
from multimix_jax.models.preact_resnet import PreActResNet18
from multimix_jax.models.resnet import ResNet50
from multimix_jax.models.small_cnn import SmallCNN
from multimix_jax.models.vit import POOL_NORMS, ViT, ViTB16, ViTCifar, ViTS16, ViTTi16
from multimix_jax.models.wide_resnet import WRN16_8

MODELS: dict[str, type[common.Model]] = {
    'small_cnn': SmallCNN,
    'preact_resnet18': PreActResNet18,
    'wrn16_8': WRN16_8,
    'resnet50': ResNet50,
    'vit_ti16': ViTTi16,
    'vit_s16': ViTS16,
    'vit_b16': ViTB16,
    'vit_cifar': ViTCifar,
}


def create_model(name: str, *, num_classes: int, dtype=jnp.float32, bn_axis_name: str | None = None,
                 **fields) -> common.Model:
  """The model registered as `name`, with `num_classes` outputs, compute `dtype`, BN `bn_axis_name`, and the
  further `fields` of that model (`config_fields`)."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; known models: {", ".join(sorted(MODELS))}.')
  return MODELS[name](num_classes=num_classes, dtype=dtype, bn_axis_name=bn_axis_name, **fields)


def config_fields(config) -> dict:
  """The model fields a run config sets beyond the common ones: `config.vit` (`pool_norm`, `drop_path`) for a
  Vision Transformer, none for the others. A config saved before these keys existed gives the defaults."""
  if config.model in MODELS and issubclass(MODELS[config.model], ViT) and 'vit' in config:
    return dict(config.vit)
  return {}


def sows_attention(name: str) -> bool:
  """Whether the model registered as `name` sows the attention each token receives in its last block (the Vision
  Transformers), which TransMix and Dense MultiMix's 'attention' confidence read."""
  return getattr(MODELS[name], 'sows_attention', False)


def config_problems(config) -> list[str]:
  """One sentence per bad value of the model keys of a run's config: `model`, `vit.pool_norm`, `vit.drop_path`;
  once each is valid, the `vit.*` keys set on a model that is not a Vision Transformer."""
  problems = []
  if config.model not in MODELS:
    problems.append(f'model={config.model!r} is unknown; choose one of {sorted(MODELS)}.')
  if config.vit.pool_norm not in POOL_NORMS:
    problems.append(f'vit.pool_norm={config.vit.pool_norm!r} must be one of {POOL_NORMS}.')
  if not 0 <= config.vit.drop_path < 1:
    problems.append(f'vit.drop_path={config.vit.drop_path} must be in [0, 1).')
  if not problems and not issubclass(MODELS[config.model], ViT):
    if config.vit.pool_norm != 'tokens' or config.vit.drop_path != 0:
      problems.append(f'vit.pool_norm and vit.drop_path apply to Vision Transformers (model=vit_*) only; '
                      f"model={config.model!r}: leave them at 'tokens' and 0.")
  return problems
