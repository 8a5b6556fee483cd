"""MultiMix and Dense MultiMix: n interpolations of tuples of m examples per mini-batch, on the logits.

Both interpolate the logits of the clean batch (pooled, or dense with Dense MultiMix) rather than embeddings: for
an affine head the two are equal, at the cost of O(n·b·c). Each alternates with multimix.alternative (probability
1 − multimix.prob), as the paper's protocol alternates MultiMix with input mixup (`pairwise.ALTERNATIVES`).
"""

import functools

import jax

from multimix_jax import mixing
from multimix_jax.mixing import losses
from multimix_jax.trainer.methods import common
from multimix_jax.trainer.methods import pairwise
from multimix_jax.trainer.step import AXIS

MULTIMIX_SCOPES = ('device', 'global')  # config.multimix.scope: the batch MultiMix's tuples are drawn from


def _gatherer(scope):
  """Mixing within this device's batch ('device', the paper), or within the batch all-gathered from every device."""
  if scope == 'global':
    return lambda x: jax.lax.all_gather(x, AXIS, tiled=True)
  return lambda x: x


def draw_alpha(key, alpha):
  """α itself, or α ~ U(lo, hi) drawn once per step (the same on every device) when `alpha` is a range (lo, hi)."""
  if isinstance(alpha, tuple):
    lo, hi = alpha
    return jax.random.uniform(key, (), minval=lo, maxval=hi)
  return alpha


# ----------------------------------------------------------------------------------------------- loss functions


def multimix(forward, images, targets, key, *, n, m, alpha, scope, label_smoothing):
  """MultiMix on the logits of the clean batch: interpolating logits equals classifying interpolated embeddings
  for an affine head, at the cost of O(n·b·c).

  m = 0 mixes the whole batch (m = b); scope 'global' mixes the all-gathered batch of every device.
  """
  alpha_key, mix_key = common.split(key)
  (_, logits), updates = forward(images)
  gather = _gatherer(scope)
  all_logits, all_targets = gather(logits), gather(targets)
  loss = losses.multimix_loss(mix_key, all_logits, all_targets, m or all_logits.shape[0],
                              draw_alpha(alpha_key, alpha), n=n, label_smoothing=label_smoothing)
  return loss, (logits, targets, updates)


def dense_multimix(forward, images, targets, key, *, n, m, alpha, scope, confidence, chunk_size, label_smoothing):
  """Dense MultiMix on the dense logits (the head at every position), weighted by the confidence map."""
  alpha_key, mix_key = common.split(key)
  (features, dense_logits), updates = forward(images, dense=True)
  b, c = targets.shape
  features = features.reshape(b, -1, features.shape[-1])
  dense_logits = dense_logits.reshape(b, -1, c)
  A = mixing.confidence_map(features, confidence, logits=dense_logits, labels=targets,
                            attention=common.sown_attention(updates))  # the 'attention' confidence: ViTs only
  gather = _gatherer(scope)
  all_logits, all_targets, A = gather(dense_logits), gather(targets), gather(A)
  loss = losses.dense_multimix_loss(mix_key, all_logits, all_targets, A, m or all_logits.shape[0],
                                    draw_alpha(alpha_key, alpha), n=n, chunk_size=chunk_size,
                                    label_smoothing=label_smoothing)
  # The mean over positions of the dense logits is the pooled logits (affine head).
  return loss, (dense_logits.mean(axis=1), targets, updates)


# ------------------------------------------------------------------------------------------------------ checks
# multimix.m is checked by the trainer: its range depends on the batch and the devices.


def _multimix_problems(config):
  mm = config.multimix
  problems = common.smoothing_problems(config)
  if not mm.n >= 1:
    problems.append(f'multimix.n={mm.n} must be >= 1.')
  if not mm.alpha > 0:
    problems.append(f'multimix.alpha={mm.alpha} must be > 0.')
  if mm.alpha_range is not None and not (len(mm.alpha_range) == 2 and 0 < mm.alpha_range[0] <= mm.alpha_range[1]):
    problems.append(f'multimix.alpha_range={mm.alpha_range} must be (lo, hi) with 0 < lo <= hi.')
  if mm.scope not in MULTIMIX_SCOPES:
    problems.append(f'multimix.scope={mm.scope!r} must be one of {MULTIMIX_SCOPES}.')
  return problems


def _dense_multimix_problems(config):
  mm = config.multimix
  problems = _multimix_problems(config)
  if mm.confidence not in mixing.CONFIDENCE_KINDS:
    problems.append(f'multimix.confidence={mm.confidence!r} must be one of {mixing.CONFIDENCE_KINDS}.')
  if not mm.chunk_size >= -1:
    problems.append(f'multimix.chunk_size={mm.chunk_size} must be -1 (automatic), 0 (no chunks) or positive.')
  return problems


def confidence_problems(config):
  """multimix.confidence='attention' against the model, which must sow its attention."""
  if config.multimix.confidence != 'attention':
    return []
  return common.attention_problems(config, "multimix.confidence='attention'", 'choose another confidence')


# ---------------------------------------------------------------------------------------------------- builders


def _multimix_args(config):
  mm = config.multimix
  alpha = tuple(float(a) for a in mm.alpha_range) if mm.alpha_range is not None else float(mm.alpha)
  return dict(n=mm.n, m=mm.m, alpha=alpha, scope=mm.scope, label_smoothing=config.label_smoothing)


def _multimix(config):
  return pairwise.with_alternative(functools.partial(multimix, **_multimix_args(config)), config)


def _dense_multimix(config):
  mm = config.multimix
  dense = functools.partial(dense_multimix, confidence=mm.confidence, chunk_size=mm.chunk_size,
                            **_multimix_args(config))
  return pairwise.with_alternative(dense, config)


MULTIMIX = common.Method(_multimix, checks=(_multimix_problems, pairwise.alternative_problems))
DENSE_MULTIMIX = common.Method(_dense_multimix, checks=(_dense_multimix_problems, pairwise.alternative_problems))
