"""ERM and the pairwise interpolations: input mixup (Zhang et al. 2018), manifold mixup (Verma et al. 2019), and
the alternatives that MultiMix alternates with (`ALTERNATIVES`, multimix.prob), with the control that alternates
ERM with input mixup.

Every example is mixed with one partner of its device's batch and λ ~ Beta(α, α), per batch, pair or example
(mixup_mode); with mixup_lambda 'global' and mode 'batch', λ is drawn once for the global batch.
"""

import functools
from typing import Any, Callable

from multimix_jax import mixing
from multimix_jax.trainer.methods import common
from multimix_jax.trainer.methods.common import Branch

# ----------------------------------------------------------------------------------------------- loss functions


def erm(forward, images, targets, key, *, label_smoothing):
  """The cross-entropy of the clean batch (empirical risk minimisation)."""
  del key
  (_, logits), updates = forward(images)
  return common.scored(logits, targets, updates, label_smoothing=label_smoothing)


def input_mixup(forward, images, targets, key, *, alpha, mode, lam_scope, label_smoothing):
  """Mixup of the images with a permutation of the batch, λ ~ Beta(α, α) (Zhang et al. 2018)."""
  return common.mixed_inputs(mixing.input_mixup, forward, images, targets, key, alpha=alpha, mode=mode,
                             lam_scope=lam_scope, label_smoothing=label_smoothing)


def manifold_mixup(forward, images, targets, key, *, stage, alpha, mode, lam_scope, label_smoothing):
  """Pairwise mixup of the hidden state after `stage` (0: the input) (Verma et al. 2019)."""
  device_key, lam_key = common.pairing_keys(key, mode, lam_scope)
  perm, lam = mixing.sample_pairing(device_key, images.shape[0], alpha, mode=mode, lam_key=lam_key)
  mix = functools.partial(mixing.mix_pair, perm=perm, lam=lam)
  (_, logits), updates = forward(images, mix_stage=stage, mix_fn=mix)
  return common.scored(logits, mix(targets), updates, label_smoothing=label_smoothing)


# --------------------------------------------------------------------------------------------- the alternatives

# What MultiMix (and the control below) alternate with, by multimix.alternative: config -> loss function.
ALTERNATIVES: dict[str, Callable[[common.Config], Callable[..., Any]]] = {
    'input_mixup': lambda config: functools.partial(input_mixup, **common.pairwise_args(config)),
    'erm': lambda config: functools.partial(erm, label_smoothing=config.label_smoothing),
}


def alternative_problems(config):
  """multimix.prob and the alternative's own keys, for the methods that alternate with it."""
  mm = config.multimix
  problems = [] if 0.0 <= mm.prob <= 1.0 else [f'multimix.prob={mm.prob} must be in [0, 1].']
  if mm.alternative not in ALTERNATIVES:
    problems.append(f'multimix.alternative={mm.alternative!r} must be one of {sorted(ALTERNATIVES)}.')
  elif mm.alternative == 'input_mixup':
    problems += common.pairwise_problems(config)
  else:
    problems += common.smoothing_problems(config)
  return problems


def with_alternative(loss_fn, config):
  """`loss_fn` with probability multimix.prob, else multimix.alternative: the paper's protocol alternates MultiMix
  with input mixup, as Manifold Mixup's code alternates its stages."""
  return common.coin_flip(config.multimix.prob, loss_fn, ALTERNATIVES[config.multimix.alternative](config))


# ---------------------------------------------------------------------------------------------------- builders


def _erm(config):
  return [Branch(1.0, ALTERNATIVES['erm'](config))]


def _input_mixup(config):
  return [Branch(1.0, ALTERNATIVES['input_mixup'](config))]


def _manifold_mixup(config):
  return [Branch(1 / 3, functools.partial(manifold_mixup, stage=k, **common.pairwise_args(config))) for k in range(3)]


def _erm_or_input_mixup(config):
  return with_alternative(ALTERNATIVES['erm'](config), config)


ERM = common.Method(_erm, checks=(common.smoothing_problems,))
INPUT_MIXUP = common.Method(_input_mixup, checks=(common.pairwise_problems,))
MANIFOLD_MIXUP = common.Method(_manifold_mixup, checks=(common.pairwise_problems,))
# The control: MultiMix's branch replaced by ERM, to tell MultiMix's effect from the coin flip's.
ERM_OR_INPUT_MIXUP = common.Method(_erm_or_input_mixup, checks=(alternative_problems,))
