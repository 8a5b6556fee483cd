"""Mixing methods of the trainer: each is a loss function, and the registry says how a step picks among them.

A loss function runs inside the per-device train step:

    loss_fn(ctx, images, targets, key) -> (loss, (logits, logit_targets, batch_stats))

with images (b, H, W, C) and one-hot targets (b, c) of this device, `key` unique to this step and device, and
`ctx` a `Context`. It returns the scalar loss and, for the training-accuracy metric, logits (b, c) of the
examples it forwarded with the targets they are scored against.

`METHODS[name](config)` returns the mixing schedule: a list of (probability, loss_fn). The host draws one entry
per step and runs a step compiled for it, so each compiled step holds one branch only (SPEC §2: a `lax.cond`
between branches made a small step 18x slower on CPU). A new method is one function and one registry line.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections

from multimix_jax import interpolation
from multimix_jax import losses


@dataclasses.dataclass(frozen=True)
class Context:
  """What a loss function may use besides its batch.

  forward: (images, *, dense=False, mix_stage=None, mix_fn=None) -> ((features, logits), batch_stats); the
    model in training mode (see multimix_jax.models for the arguments).
  config: the run's ConfigDict.
  alpha: MultiMix's Dirichlet concentration for this step (drawn per step when config gives a range).
  gather: all-gathers a per-device array over the data axis when MultiMix's scope is 'global', else identity.
  """
  forward: Callable[..., Any]
  config: ml_collections.ConfigDict
  alpha: Any
  gather: Callable[[jax.Array], jax.Array]

  def loss(self, logits, targets):
    return losses.soft_cross_entropy(logits, targets, label_smoothing=self.config.label_smoothing)

  def tuple_length(self, b):
    """MultiMix's m for a batch of b: config.multimix.m, where 0 means the whole batch."""
    return self.config.multimix.m or b


def erm(ctx, images, targets, key):
  del key
  (_, logits), batch_stats = ctx.forward(images)
  return ctx.loss(logits, targets), (logits, targets, batch_stats)


def input_mixup(ctx, images, targets, key):
  images, targets = interpolation.input_mixup(key, images, targets, ctx.config.mixup_alpha)
  (_, logits), batch_stats = ctx.forward(images)
  return ctx.loss(logits, targets), (logits, targets, batch_stats)


def cutmix(ctx, images, targets, key):
  images, targets = interpolation.cutmix(key, images, targets, ctx.config.mixup_alpha)
  (_, logits), batch_stats = ctx.forward(images)
  return ctx.loss(logits, targets), (logits, targets, batch_stats)


def manifold_mixup(ctx, images, targets, key, *, stage):
  """Pairwise mixup of the hidden state after `stage` (0: the input) (Verma et al. 2019)."""
  perm, lam = interpolation.sample_pairing(key, images.shape[0], ctx.config.mixup_alpha)
  mix = functools.partial(interpolation.mix_pair, perm=perm, lam=lam)
  (_, logits), batch_stats = ctx.forward(images, mix_stage=stage, mix_fn=mix)
  targets = mix(targets)
  return ctx.loss(logits, targets), (logits, targets, batch_stats)


def multimix(ctx, images, targets, key):
  """MultiMix on the logits of the clean batch (linear-head identity, SPEC §2)."""
  (_, logits), batch_stats = ctx.forward(images)
  mixed_logits, mixed_targets = ctx.gather(logits), ctx.gather(targets)
  cfg = ctx.config
  loss = losses.multimix_loss(key, mixed_logits, mixed_targets, ctx.tuple_length(mixed_logits.shape[0]), ctx.alpha,
                              n=cfg.multimix.n, label_smoothing=cfg.label_smoothing)
  return loss, (logits, targets, batch_stats)


def dense_multimix(ctx, images, targets, key):
  """Dense MultiMix on the dense logits, weighted by the confidence map (SPEC §3)."""
  (features, dense_logits), batch_stats = ctx.forward(images, dense=True)
  b, h, w, d = features.shape
  features = features.reshape(b, h * w, d)
  dense_logits = dense_logits.reshape(b, h * w, -1)
  cfg = ctx.config
  A = interpolation.confidence_map(features, cfg.multimix.confidence, logits=dense_logits, labels=targets)
  mixed_logits, mixed_targets, A = ctx.gather(dense_logits), ctx.gather(targets), ctx.gather(A)
  loss = losses.dense_multimix_loss(key, mixed_logits, mixed_targets, A, ctx.tuple_length(mixed_logits.shape[0]),
                                    ctx.alpha, n=cfg.multimix.n, chunk_size=cfg.multimix.chunk_size,
                                    label_smoothing=cfg.label_smoothing)
  # The mean over positions of the dense logits is the pooled logits (affine head).
  return loss, (dense_logits.mean(axis=1), targets, batch_stats)


def _multimix_schedule(loss_fn):
  """`loss_fn` with probability config.multimix.prob, else config.multimix.alternative (SPEC §2)."""

  def schedule(config):
    prob, alternative = config.multimix.prob, ALTERNATIVES[config.multimix.alternative]
    return [(p, fn) for p, fn in ((prob, loss_fn), (1.0 - prob, alternative)) if p > 0]

  return schedule


ALTERNATIVES = {'input_mixup': input_mixup, 'erm': erm}

METHODS = {
    'erm': lambda config: [(1.0, erm)],
    'input_mixup': lambda config: [(1.0, input_mixup)],
    'cutmix': lambda config: [(1.0, cutmix)],
    'manifold_mixup': lambda config: [(1 / 3, functools.partial(manifold_mixup, stage=k)) for k in range(3)],
    'multimix': _multimix_schedule(multimix),
    'dense_multimix': _multimix_schedule(dense_multimix),
    # SPEC §2's control: MultiMix's branch replaced by ERM, to tell MultiMix's effect from the coin flip's.
    'erm_or_input_mixup': _multimix_schedule(erm),
}
