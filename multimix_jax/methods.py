"""Mixing methods of the trainer: each is built from a run's config into the schedule a step draws from.

`METHODS[name](config)` returns the method's mixing schedule, a list of `Branch(probability, loss_fn)`. Building
binds every hyperparameter the method reads (n, m, α or its range, scope, confidence, label smoothing, ...) as
plain Python values, so no config object reaches traced code and the step knows nothing about any method. The host
draws one branch per step and runs a step compiled for it: each compiled step holds one branch only, since a
`lax.cond` between the branches made a small CNN step 18× slower on CPU.

A loss function runs inside the per-device train step (`multimix_jax.step.train_step`):

    loss_fn(forward, images, targets, key) -> (loss, (logits, logit_targets, updates))

- `forward(images, **kwargs) -> ((features, logits), updates)`: the model in training mode (the keyword
  arguments of `multimix_jax.models`: `dense`, `mix_stage`, `mix_fn`); `updates` are the model's new mutable
  collections (BatchNorm statistics, sown intermediates), returned as they are.
- images (b, H, W, C) and one-hot targets (b, c) of this device.
- `key`: this step's key, the same on every device; `_split(key)` gives the step-wide and per-device keys.
- It returns the scalar loss and, for the training-accuracy metric, logits (b, c) of the examples it forwarded
  with the targets they are scored against.

Adding a method is one builder (config -> schedule) and one line in `METHODS`.
"""

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from multimix_jax import alignment
from multimix_jax import interpolation
from multimix_jax import losses
from multimix_jax.step import AXIS


class Branch(NamedTuple):
  """One entry of a mixing schedule: the host runs `loss_fn` on a step with this probability."""
  probability: float
  loss_fn: Callable[..., Any]


def _split(key):
  """A step's key -> (key shared by every device, key of this device): one draw per step, one mix per device."""
  shared, mixing = jax.random.split(key)
  return shared, jax.random.fold_in(mixing, jax.lax.axis_index(AXIS))


LAMBDA_SCOPES = ('global', 'device')  # config.mixup_lambda


def _pairing_keys(key, mode, lam_scope):
  """(key of this device's partners, key of λ or None): with mode 'batch' and lam_scope 'global', λ (and CutMix's
  box, AlignMixup's direction) comes from the step's shared key, one draw for the global batch as in the authors'
  single-process DataParallel; otherwise every device draws its own."""
  shared, device = _split(key)
  return device, (jax.random.fold_in(shared, 1) if mode == 'batch' and lam_scope == 'global' else None)


def _gatherer(scope):
  """Mixing within this device's batch ('device', the paper), or within the batch all-gathered from every device."""
  if scope == 'global':
    return lambda x: jax.lax.all_gather(x, AXIS, tiled=True)
  return lambda x: x


def _draw_alpha(key, alpha):
  """α itself, or α ~ U(lo, hi) drawn once per step (the same on every device) when `alpha` is a range (lo, hi)."""
  if isinstance(alpha, tuple):
    lo, hi = alpha
    return jax.random.uniform(key, (), minval=lo, maxval=hi)
  return alpha


# ----------------------------------------------------------------------------------------------- loss functions


def erm(forward, images, targets, key, *, label_smoothing):
  del key
  (_, logits), updates = forward(images)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def input_mixup(forward, images, targets, key, *, alpha, mode, lam_scope, label_smoothing):
  """Mixup of the images with a permutation of the batch, λ ~ Beta(α, α) (Zhang et al. 2018)."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  images, targets = interpolation.input_mixup(device_key, images, targets, alpha, mode=mode, lam_key=lam_key)
  (_, logits), updates = forward(images)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def cutmix(forward, images, targets, key, *, alpha, mode, lam_scope, label_smoothing):
  """A box of the partner pasted in, λ corrected to the pasted area (Yun et al. 2019)."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  images, targets = interpolation.cutmix(device_key, images, targets, alpha, mode=mode, lam_key=lam_key)
  (_, logits), updates = forward(images)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def _mixed_inputs(mix, forward, images, targets, key, *, mode, lam_scope, label_smoothing, **hyperparameters):
  """The images and targets mixed by `mix(key, images, targets, ..., mode=, lam_key=)` of `interpolation`, then
  the cross-entropy of the forwarded mixed images: the shape of every input-space method."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  images, targets = mix(device_key, images, targets, mode=mode, lam_key=lam_key, **hyperparameters)
  (_, logits), updates = forward(images)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def saliencymix(forward, images, targets, key, *, alpha, mode, lam_scope, label_smoothing):
  """CutMix's box centred on the peak of the partner's spectral-residual saliency (Uddin et al., ICLR 2021)."""
  return _mixed_inputs(interpolation.saliencymix, forward, images, targets, key, alpha=alpha, mode=mode,
                       lam_scope=lam_scope, label_smoothing=label_smoothing)


def fmix(forward, images, targets, key, *, alpha, decay_power, mode, lam_scope, label_smoothing):
  """A mask thresholded from low-frequency Fourier noise, λ its exact mean (Harris et al. 2020)."""
  return _mixed_inputs(interpolation.fmix, forward, images, targets, key, alpha=alpha, decay_power=decay_power,
                       mode=mode, lam_scope=lam_scope, label_smoothing=label_smoothing)


def resizemix(forward, images, targets, key, *, scale, mode, lam_scope, label_smoothing):
  """The whole partner resized into a random box of side τ ~ U(scale) of the image's, λ from the box's exact area
  (Qin et al. 2020)."""
  return _mixed_inputs(interpolation.resizemix, forward, images, targets, key, scale=scale, mode=mode,
                       lam_scope=lam_scope, label_smoothing=label_smoothing)


def transmix(forward, images, targets, key, *, alpha, mode, lam_scope, attention_weight, label_smoothing):
  """CutMix's inputs, the targets re-weighted by the attention the mixed image's tokens receive in the last block
  (Chen et al., CVPR 2022); Vision Transformers only (they sow that attention)."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  b, height, width, _ = images.shape
  perm, box = interpolation.cutmix_box(device_key, b, height, width, alpha, mode=mode, lam_key=lam_key)
  images = jnp.where(box[..., None], images[perm], images)
  (features, logits), updates = forward(images)
  attention = updates.get('intermediates', {}).get('attention', (None,))[-1]
  if attention is None:
    raise ValueError('transmix needs the attention each token receives, which only a Vision Transformer provides '
                     "(models 'vit_*' sow it); with another model choose cutmix.")
  attention = attention.reshape(features.shape[:3])  # (b, r) -> the token grid (b, h, w)
  targets = interpolation.transmix_targets(targets, perm, box, attention, attention_weight=attention_weight)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def manifold_mixup(forward, images, targets, key, *, stage, alpha, mode, lam_scope, label_smoothing):
  """Pairwise mixup of the hidden state after `stage` (0: the input) (Verma et al. 2019)."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  perm, lam = interpolation.sample_pairing(device_key, images.shape[0], alpha, mode=mode, lam_key=lam_key)
  mix = functools.partial(interpolation.mix_pair, perm=perm, lam=lam)
  (_, logits), updates = forward(images, mix_stage=stage, mix_fn=mix)
  targets = mix(targets)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def multimix(forward, images, targets, key, *, n, m, alpha, scope, label_smoothing):
  """MultiMix on the logits of the clean batch: interpolating logits equals classifying interpolated embeddings
  for an affine head, at the cost of O(n·b·c).

  m = 0 mixes the whole batch (m = b); scope 'global' mixes the all-gathered batch of every device.
  """
  alpha_key, mix_key = _split(key)
  (_, logits), updates = forward(images)
  gather = _gatherer(scope)
  all_logits, all_targets = gather(logits), gather(targets)
  loss = losses.multimix_loss(mix_key, all_logits, all_targets, m or all_logits.shape[0],
                              _draw_alpha(alpha_key, alpha), n=n, label_smoothing=label_smoothing)
  return loss, (logits, targets, updates)


def dense_multimix(forward, images, targets, key, *, n, m, alpha, scope, confidence, chunk_size, label_smoothing):
  """Dense MultiMix on the dense logits (the head at every position), weighted by the confidence map."""
  alpha_key, mix_key = _split(key)
  (features, dense_logits), updates = forward(images, dense=True)
  b, c = targets.shape
  features = features.reshape(b, -1, features.shape[-1])
  dense_logits = dense_logits.reshape(b, -1, c)
  # A ViT sows the attention each token receives in its last block (the 'attention' confidence); other models none.
  attention = updates.get('intermediates', {}).get('attention', (None,))[-1]
  A = interpolation.confidence_map(features, confidence, logits=dense_logits, labels=targets, attention=attention)
  gather = _gatherer(scope)
  all_logits, all_targets, A = gather(dense_logits), gather(targets), gather(A)
  loss = losses.dense_multimix_loss(mix_key, all_logits, all_targets, A, m or all_logits.shape[0],
                                    _draw_alpha(alpha_key, alpha), n=n, chunk_size=chunk_size,
                                    label_smoothing=label_smoothing)
  # The mean over positions of the dense logits is the pooled logits (affine head).
  return loss, (dense_logits.mean(axis=1), targets, updates)


def alignmixup(forward, images, targets, key, *, alpha, mode, lam_scope, epsilon, max_iterations, threshold,
               label_smoothing):
  """AlignMixup (Venkataramanan et al. 2022) on the last feature map before pooling, as the authors' code.

  Each map is paired with a random partner, an entropic transport plan between their positions (squared Euclidean
  cost, no gradient) aligns one to the other (which, a fair coin per step), and the two are mixed with
  λ ~ Beta(α, α), pooled and classified; targets mix with the same λ (`alignment.aligned_mix`). The mix is applied
  to the dense logits, which equals classifying the mixed map for the affine head: every model thus mixes where the
  authors' do, at the map it pools (after WideResNet's final BN-ReLU, which `mix_stage` would precede).
  """
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  direction_key, pair_key = jax.random.split(device_key)
  if lam_key is not None:  # the direction, as λ, once for the global batch
    direction_key, lam_key = jax.random.split(lam_key)
  (features, dense_logits), updates = forward(images, dense=True)
  b, c = targets.shape
  features = features.reshape(b, -1, features.shape[-1])
  perm, lam = interpolation.sample_pairing(pair_key, b, alpha, mode=mode, lam_key=lam_key)
  plan = alignment.sinkhorn_plan(alignment.squared_distances(features, features[perm]), epsilon=epsilon,
                                 max_iterations=max_iterations, threshold=threshold)
  direction = jax.random.bernoulli(direction_key).astype(jnp.int32)
  logits = alignment.aligned_mix(dense_logits.reshape(b, -1, c), perm, lam, plan, direction).mean(axis=1)
  targets = interpolation.mix_pair(targets, perm, lam)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


# ---------------------------------------------------------------------------------------------------- builders


def _pairwise_args(config):
  return dict(alpha=config.mixup_alpha, mode=config.mixup_mode, lam_scope=config.mixup_lambda,
              label_smoothing=config.label_smoothing)


def _multimix_args(config):
  mm = config.multimix
  alpha = tuple(float(a) for a in mm.alpha_range) if mm.alpha_range is not None else float(mm.alpha)
  return dict(n=mm.n, m=mm.m, alpha=alpha, scope=mm.scope, label_smoothing=config.label_smoothing)


def _coin_flip(prob, loss_fn, other):
  """`loss_fn` on a mini-batch with probability `prob`, else `other`; a branch of probability 0 is left out."""
  return [Branch(p, fn) for p, fn in ((prob, loss_fn), (1.0 - prob, other)) if p > 0]


def _with_alternative(loss_fn, config):
  """`loss_fn` with probability multimix.prob, else multimix.alternative: the paper's protocol alternates MultiMix
  with input mixup, as Manifold Mixup's code alternates its stages."""
  return _coin_flip(config.multimix.prob, loss_fn, ALTERNATIVES[config.multimix.alternative](config))


def _alignmixup(config):
  """The authors' protocol: per mini-batch, a fair coin (alignmixup.prob) between the aligned mix at the last
  feature map and input mixup, both with λ ~ Beta(alignmixup.alpha, alignmixup.alpha)."""
  al = config.alignmixup
  pairwise = dict(alpha=float(al.alpha), mode=config.mixup_mode, lam_scope=config.mixup_lambda,
                  label_smoothing=config.label_smoothing)
  aligned = functools.partial(alignmixup, epsilon=float(al.epsilon), max_iterations=int(al.max_iterations),
                              threshold=float(al.threshold), **pairwise)
  return _coin_flip(al.prob, aligned, functools.partial(input_mixup, **pairwise))


ALTERNATIVES: dict[str, Callable[[ml_collections.ConfigDict], Callable[..., Any]]] = {
    'input_mixup': lambda config: functools.partial(input_mixup, **_pairwise_args(config)),
    'erm': lambda config: functools.partial(erm, label_smoothing=config.label_smoothing),
}

METHODS: dict[str, Callable[[ml_collections.ConfigDict], list[Branch]]] = {
    'erm': lambda config: [Branch(1.0, ALTERNATIVES['erm'](config))],
    'input_mixup': lambda config: [Branch(1.0, ALTERNATIVES['input_mixup'](config))],
    'cutmix': lambda config: [Branch(1.0, functools.partial(cutmix, **_pairwise_args(config)))],
    'manifold_mixup': lambda config: [
        Branch(1 / 3, functools.partial(manifold_mixup, stage=k, **_pairwise_args(config))) for k in range(3)],
    'multimix': lambda config: _with_alternative(functools.partial(multimix, **_multimix_args(config)), config),
    'dense_multimix': lambda config: _with_alternative(
        functools.partial(dense_multimix, confidence=config.multimix.confidence,
                          chunk_size=config.multimix.chunk_size, **_multimix_args(config)), config),
    # The control: MultiMix's branch replaced by ERM, to tell MultiMix's effect from the coin flip's.
    'erm_or_input_mixup': lambda config: _with_alternative(ALTERNATIVES['erm'](config), config),
    'alignmixup': _alignmixup,
    'saliencymix': lambda config: [Branch(1.0, functools.partial(saliencymix, **_pairwise_args(config)))],
    'fmix': lambda config: [Branch(1.0, functools.partial(fmix, decay_power=float(config.fmix.decay_power),
                                                          **_pairwise_args(config)))],
    'resizemix': lambda config: [Branch(1.0, functools.partial(
        resizemix, scale=tuple(float(s) for s in config.resizemix.scale_range),
        **{k: v for k, v in _pairwise_args(config).items() if k != 'alpha'}))],
    'transmix': lambda config: [Branch(1.0, functools.partial(
        transmix, attention_weight=float(config.transmix.attention_weight), **_pairwise_args(config)))],
}

# Methods that read the attention a Vision Transformer sows: config validation refuses them with other models.
NEEDS_ATTENTION = ('transmix',)
