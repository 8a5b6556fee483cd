"""What the methods share: the registry's entry (`Method`), a schedule's `Branch`, keys, pairing and the checks of
the keys that several methods read.

A step's key is the same on every device; `split` gives a key shared by every device (one draw per step, e.g. α)
and one of this device (its own mix). The checks return the problems of the keys one part of a method reads, one
sentence per bad value naming its key ('mixup_alpha=0.0 must be > 0.'); a `Method` runs those of every part it
builds.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import ml_collections

from multimix_jax import mixing
from multimix_jax import models
from multimix_jax.mixing import losses
from multimix_jax.trainer.step import AXIS

Config = ml_collections.ConfigDict
Check = Callable[[Config], list[str]]

MIXUP_LAMBDA_SCOPES = ('global', 'device')  # config.mixup_lambda: who draws λ of the pairwise methods


class Branch(NamedTuple):
  """One entry of a mixing schedule: the host runs `loss_fn` on a step with this probability."""
  probability: float
  loss_fn: Callable[..., Any]


class HyperparameterError(ValueError):
  """Hyperparameters a method's builder refuses: `problems` holds one sentence per bad value, naming its key."""

  def __init__(self, problems):
    self.problems = tuple(problems)
    super().__init__(' '.join(self.problems))


@dataclasses.dataclass(frozen=True)
class Method:
  """A method of the registry: its builder, the checks of every key the builder reads, what it needs of the model.

  Calling it builds the method's schedule, `method(config) -> list[Branch]`, after its checks, which refuse bad
  values with a HyperparameterError; `problems(config)` runs the checks alone (the trainer's config validation).
  `needs_attention`: the method reads the attention a Vision Transformer sows, which the validation requires of
  `config.model` (`attention_problems`); the builder itself builds for any model.
  """
  build: Callable[[Config], list[Branch]]
  checks: tuple[Check, ...]
  needs_attention: bool = False

  def problems(self, config: Config) -> list[str]:
    """Every check's sentences, each once: a key read by two parts of a method (its own and an alternative's) is
    told once."""
    return list(dict.fromkeys(problem for check in self.checks for problem in check(config)))

  def __call__(self, config: Config) -> list[Branch]:
    problems = self.problems(config)
    if problems:
      raise HyperparameterError(problems)
    return self.build(config)


# ------------------------------------------------------------------------------------------------- in the step


def split(key):
  """A step's key -> (key shared by every device, key of this device): one draw per step, one mix per device."""
  shared, mixing_key = jax.random.split(key)
  return shared, jax.random.fold_in(mixing_key, jax.lax.axis_index(AXIS))


def pairing_keys(key, mode, lam_scope):
  """(key of this device's partners, key of λ or None): with mode 'batch' and lam_scope 'global', λ (and CutMix's
  box, AlignMixup's direction) comes from the step's shared key, one draw for the global batch as in the authors'
  single-process DataParallel; otherwise every device draws its own."""
  shared, device = split(key)
  return device, (jax.random.fold_in(shared, 1) if mode == 'batch' and lam_scope == 'global' else None)


def scored(logits, targets, updates, *, label_smoothing):
  """A loss function's result when its loss is the cross-entropy of the logits (b, c) it forwarded against the
  targets (b, c) they are scored against: (loss, (logits, targets, updates))."""
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def mixed_inputs(mix, forward, images, targets, key, *, mode, lam_scope, label_smoothing, **hyperparameters):
  """The images (b, H, W, C) and targets (b, c) mixed by `mix(key, images, targets, mode=, lam_key=,
  **hyperparameters)` (a function of `multimix_jax.mixing`), then the cross-entropy of the forwarded mixed images:
  the shape of every input-space method."""
  device_key, lam_key = pairing_keys(key, mode, lam_scope)
  images, targets = mix(device_key, images, targets, mode=mode, lam_key=lam_key, **hyperparameters)
  (_, logits), updates = forward(images)
  return scored(logits, targets, updates, label_smoothing=label_smoothing)


def sown_attention(updates):
  """The attention (b, r) each token received in the last block, which a Vision Transformer sows into the
  'intermediates' of `updates` (models/vit.py); None from a model that sows none."""
  return updates.get('intermediates', {}).get('attention', (None,))[-1]


# ------------------------------------------------------------------------------------------------------ checks


def smoothing_problems(config):
  return [] if 0.0 <= config.label_smoothing < 1.0 else [
      f'label_smoothing={config.label_smoothing} must be in [0, 1).']


def pairwise_problems(config, alpha_key='mixup_alpha', alpha=None):
  """The keys of the pairwise path: α (mixup_alpha, or `alpha_key`'s `alpha`), mixup_mode, mixup_lambda, and label
  smoothing."""
  alpha = config.mixup_alpha if alpha is None else alpha
  problems = smoothing_problems(config)
  if not alpha > 0:
    problems.append(f'{alpha_key}={alpha} must be > 0.')
  if config.mixup_mode not in mixing.MIXUP_MODES:
    problems.append(f'mixup_mode={config.mixup_mode!r} must be one of {mixing.MIXUP_MODES}.')
  if config.mixup_lambda not in MIXUP_LAMBDA_SCOPES:
    problems.append(f'mixup_lambda={config.mixup_lambda!r} must be one of {MIXUP_LAMBDA_SCOPES}.')
  return problems


def attention_problems(config, reader, remedy):
  """[] when `config.model` (a known one) sows the attention `reader` reads, else one sentence saying so and
  `remedy`: written once for every reader of the attention (TransMix, Dense MultiMix's 'attention' confidence)."""
  if models.sows_attention(config.model):
    return []
  return [f'{reader} needs a Vision Transformer (model=vit_*), which provides its attention; model={config.model!r} '
          f'does not: {remedy}.']


# ---------------------------------------------------------------------------------------------------- building


def pairwise_args(config):
  """The hyperparameters of the pairwise path, as the loss functions take them."""
  return dict(alpha=config.mixup_alpha, mode=config.mixup_mode, lam_scope=config.mixup_lambda,
              label_smoothing=config.label_smoothing)


def coin_flip(prob, loss_fn, other):
  """`loss_fn` on a mini-batch with probability `prob`, else `other`; a branch of probability 0 is left out."""
  return [Branch(p, fn) for p, fn in ((prob, loss_fn), (1.0 - prob, other)) if p > 0]
