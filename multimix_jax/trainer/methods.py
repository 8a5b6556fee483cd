"""Mixing methods of the trainer: each is built from a run's config into the schedule a step draws from.

`METHODS[name](config)` returns the method's mixing schedule, a list of `Branch(probability, loss_fn)`. Building
binds every hyperparameter the method reads (n, m, α or its range, scope, confidence, label smoothing, ...) as
plain Python values, so no config object reaches traced code and the step knows nothing about any method. The host
draws one branch per step and runs a step compiled for it: each compiled step holds one branch only, since a
`lax.cond` between the branches made a small CNN step 18× slower on CPU.

A loss function runs inside the per-device train step (`multimix_jax.trainer.step.train_step`):

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

from multimix_jax.mixing import alignment
from multimix_jax import mixing
from multimix_jax.mixing import losses
from multimix_jax.trainer.step import AXIS


class Branch(NamedTuple):
  """One entry of a mixing schedule: the host runs `loss_fn` on a step with this probability."""
  probability: float
  loss_fn: Callable[..., Any]


def _split(key):
  """A step's key -> (key shared by every device, key of this device): one draw per step, one mix per device."""
  shared, mixing = jax.random.split(key)
  return shared, jax.random.fold_in(mixing, jax.lax.axis_index(AXIS))


LAMBDA_SCOPES = ('global', 'device')  # config.mixup_lambda
SCOPES = ('device', 'global')  # config.multimix.scope


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
  images, targets = mixing.input_mixup(device_key, images, targets, alpha, mode=mode, lam_key=lam_key)
  (_, logits), updates = forward(images)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def cutmix(forward, images, targets, key, *, alpha, mode, lam_scope, label_smoothing):
  """A box of the partner pasted in, λ corrected to the pasted area (Yun et al. 2019)."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  images, targets = mixing.cutmix(device_key, images, targets, alpha, mode=mode, lam_key=lam_key)
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
  return _mixed_inputs(mixing.saliencymix, forward, images, targets, key, alpha=alpha, mode=mode,
                       lam_scope=lam_scope, label_smoothing=label_smoothing)


def fmix(forward, images, targets, key, *, alpha, decay_power, mode, lam_scope, label_smoothing):
  """A mask thresholded from low-frequency Fourier noise, λ its exact mean (Harris et al. 2020)."""
  return _mixed_inputs(mixing.fmix, forward, images, targets, key, alpha=alpha, decay_power=decay_power,
                       mode=mode, lam_scope=lam_scope, label_smoothing=label_smoothing)


def resizemix(forward, images, targets, key, *, scale, mode, lam_scope, label_smoothing):
  """The whole partner resized into a random box of side τ ~ U(scale) of the image's, λ from the box's exact area
  (Qin et al. 2020)."""
  return _mixed_inputs(mixing.resizemix, forward, images, targets, key, scale=scale, mode=mode,
                       lam_scope=lam_scope, label_smoothing=label_smoothing)


def transmix(forward, images, targets, key, *, alpha, mode, lam_scope, attention_weight, label_smoothing):
  """CutMix's inputs, the targets re-weighted by the attention the mixed image's tokens receive in the last block
  (Chen et al., CVPR 2022); Vision Transformers only (they sow that attention)."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  b, height, width, _ = images.shape
  perm, box = mixing.cutmix_box(device_key, b, height, width, alpha, mode=mode, lam_key=lam_key)
  images = jnp.where(box[..., None], images[perm], images)
  (features, logits), updates = forward(images)
  attention = updates.get('intermediates', {}).get('attention', (None,))[-1]
  if attention is None:
    raise ValueError('transmix needs the attention each token receives, which only a Vision Transformer provides '
                     "(models 'vit_*' sow it); with another model choose cutmix.")
  attention = attention.reshape(features.shape[:3])  # (b, r) -> the token grid (b, h, w)
  targets = mixing.transmix_targets(targets, perm, box, attention, attention_weight=attention_weight)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


def manifold_mixup(forward, images, targets, key, *, stage, alpha, mode, lam_scope, label_smoothing):
  """Pairwise mixup of the hidden state after `stage` (0: the input) (Verma et al. 2019)."""
  device_key, lam_key = _pairing_keys(key, mode, lam_scope)
  perm, lam = mixing.sample_pairing(device_key, images.shape[0], alpha, mode=mode, lam_key=lam_key)
  mix = functools.partial(mixing.mix_pair, perm=perm, lam=lam)
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
  A = mixing.confidence_map(features, confidence, logits=dense_logits, labels=targets, attention=attention)
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
  perm, lam = mixing.sample_pairing(pair_key, b, alpha, mode=mode, lam_key=lam_key)
  plan = alignment.sinkhorn_plan(alignment.squared_distances(features, features[perm]), epsilon=epsilon,
                                 max_iterations=max_iterations, threshold=threshold)
  direction = jax.random.bernoulli(direction_key).astype(jnp.int32)
  logits = alignment.aligned_mix(dense_logits.reshape(b, -1, c), perm, lam, plan, direction).mean(axis=1)
  targets = mixing.mix_pair(targets, perm, lam)
  return losses.soft_cross_entropy(logits, targets, label_smoothing=label_smoothing), (logits, targets, updates)


# ---------------------------------------------------------------------------------------------------- builders


class HyperparameterError(ValueError):
  """Hyperparameters a method's builder refuses: `problems` holds one sentence per bad value, naming its key."""

  def __init__(self, problems):
    self.problems = tuple(dict.fromkeys(problems))  # a key read by two parts of a method is told once
    super().__init__(' '.join(self.problems))


# Each check returns the problems of the keys one part of a method reads; a builder runs the checks of every part
# it builds before building (`_require`). multimix.m is checked by the trainer: its range depends on the batch.


def _smoothing_problems(config):
  return [] if 0.0 <= config.label_smoothing < 1.0 else [
      f'label_smoothing={config.label_smoothing} must be in [0, 1).']


def _pairwise_problems(config, alpha_key='mixup_alpha', alpha=None):
  alpha = config.mixup_alpha if alpha is None else alpha
  problems = _smoothing_problems(config)
  if not alpha > 0:
    problems.append(f'{alpha_key}={alpha} must be > 0.')
  if config.mixup_mode not in mixing.MIXUP_MODES:
    problems.append(f'mixup_mode={config.mixup_mode!r} must be one of {mixing.MIXUP_MODES}.')
  if config.mixup_lambda not in LAMBDA_SCOPES:
    problems.append(f'mixup_lambda={config.mixup_lambda!r} must be one of {LAMBDA_SCOPES}.')
  return problems


def _multimix_problems(config):
  mm = config.multimix
  problems = _smoothing_problems(config)
  if not mm.n >= 1:
    problems.append(f'multimix.n={mm.n} must be >= 1.')
  if not mm.alpha > 0:
    problems.append(f'multimix.alpha={mm.alpha} must be > 0.')
  if mm.alpha_range is not None and not (len(mm.alpha_range) == 2 and 0 < mm.alpha_range[0] <= mm.alpha_range[1]):
    problems.append(f'multimix.alpha_range={mm.alpha_range} must be (lo, hi) with 0 < lo <= hi.')
  if mm.scope not in SCOPES:
    problems.append(f'multimix.scope={mm.scope!r} must be one of {SCOPES}.')
  return problems


def _dense_multimix_problems(config):
  mm = config.multimix
  problems = _multimix_problems(config)
  if mm.confidence not in mixing.CONFIDENCE_KINDS:
    problems.append(f'multimix.confidence={mm.confidence!r} must be one of {mixing.CONFIDENCE_KINDS}.')
  if not mm.chunk_size >= -1:
    problems.append(f'multimix.chunk_size={mm.chunk_size} must be -1 (automatic), 0 (no chunks) or positive.')
  return problems


def _alternative_problems(config):
  """multimix.prob and the alternative's own keys, for the methods that alternate with it."""
  mm = config.multimix
  problems = [] if 0.0 <= mm.prob <= 1.0 else [f'multimix.prob={mm.prob} must be in [0, 1].']
  if mm.alternative not in ALTERNATIVES:
    problems.append(f'multimix.alternative={mm.alternative!r} must be one of {sorted(ALTERNATIVES)}.')
  elif mm.alternative == 'input_mixup':
    problems += _pairwise_problems(config)
  else:
    problems += _smoothing_problems(config)
  return problems


def _alignmixup_problems(config):
  al = config.alignmixup
  problems = _pairwise_problems(config, 'alignmixup.alpha', al.alpha)
  if not 0.0 <= al.prob <= 1.0:
    problems.append(f'alignmixup.prob={al.prob} must be in [0, 1].')
  if not al.epsilon > 0:
    problems.append(f'alignmixup.epsilon={al.epsilon} must be > 0 (the entropic regularisation).')
  if not (isinstance(al.max_iterations, int) and al.max_iterations >= 1):
    problems.append(f'alignmixup.max_iterations={al.max_iterations!r} must be an int >= 1.')
  if not al.threshold >= 0:
    problems.append(f'alignmixup.threshold={al.threshold} must be >= 0 (0: always max_iterations).')
  return problems


def _require(config, *checks):
  """Raises HyperparameterError listing every problem the checks find in `config`."""
  problems = [problem for check in checks for problem in check(config)]
  if problems:
    raise HyperparameterError(problems)


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


def _erm(config):
  _require(config, _smoothing_problems)
  return [Branch(1.0, ALTERNATIVES['erm'](config))]


def _input_mixup(config):
  _require(config, _pairwise_problems)
  return [Branch(1.0, ALTERNATIVES['input_mixup'](config))]


def _cutmix(config):
  _require(config, _pairwise_problems)
  return [Branch(1.0, functools.partial(cutmix, **_pairwise_args(config)))]


def _manifold_mixup(config):
  _require(config, _pairwise_problems)
  return [Branch(1 / 3, functools.partial(manifold_mixup, stage=k, **_pairwise_args(config))) for k in range(3)]


def _multimix(config):
  _require(config, _multimix_problems, _alternative_problems)
  return _with_alternative(functools.partial(multimix, **_multimix_args(config)), config)


def _dense_multimix(config):
  _require(config, _dense_multimix_problems, _alternative_problems)
  return _with_alternative(functools.partial(dense_multimix, confidence=config.multimix.confidence,
                                             chunk_size=config.multimix.chunk_size, **_multimix_args(config)), config)


def _erm_or_input_mixup(config):
  _require(config, _alternative_problems)
  return _with_alternative(ALTERNATIVES['erm'](config), config)


def _alignmixup(config):
  """The authors' protocol: per mini-batch, a fair coin (alignmixup.prob) between the aligned mix at the last
  feature map and input mixup, both with λ ~ Beta(alignmixup.alpha, alignmixup.alpha)."""
  _require(config, _alignmixup_problems)
  al = config.alignmixup
  pairwise = dict(alpha=float(al.alpha), mode=config.mixup_mode, lam_scope=config.mixup_lambda,
                  label_smoothing=config.label_smoothing)
  aligned = functools.partial(alignmixup, epsilon=float(al.epsilon), max_iterations=int(al.max_iterations),
                              threshold=float(al.threshold), **pairwise)
  return _coin_flip(al.prob, aligned, functools.partial(input_mixup, **pairwise))


def _saliencymix(config):
  _require(config, _pairwise_problems)
  return [Branch(1.0, functools.partial(saliencymix, **_pairwise_args(config)))]


def _fmix(config):
  def problems(config):
    return [] if config.fmix.decay_power > 0 else [f'fmix.decay_power={config.fmix.decay_power} must be > 0.']
  _require(config, _pairwise_problems, problems)
  return [Branch(1.0, functools.partial(fmix, decay_power=float(config.fmix.decay_power), **_pairwise_args(config)))]


def _resizemix(config):
  def problems(config):
    scale = tuple(config.resizemix.scale_range)
    if len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1:
      return []
    return [f'resizemix.scale_range={scale} must be (lo, hi) with 0 < lo <= hi <= 1 (fractions of the image side).']
  # ResizeMix draws its own scale, not λ: mixup_alpha is not read.
  _require(config, _smoothing_problems, problems)
  return [Branch(1.0, functools.partial(resizemix, scale=tuple(float(s) for s in config.resizemix.scale_range),
                                        **{k: v for k, v in _pairwise_args(config).items() if k != 'alpha'}))]


def _transmix(config):
  def problems(config):
    weight = config.transmix.attention_weight
    return [] if 0.0 <= weight <= 1.0 else [f'transmix.attention_weight={weight} must be in [0, 1].']
  _require(config, _pairwise_problems, problems)
  return [Branch(1.0, functools.partial(transmix, attention_weight=float(config.transmix.attention_weight),
                                        **_pairwise_args(config)))]


ALTERNATIVES: dict[str, Callable[[ml_collections.ConfigDict], Callable[..., Any]]] = {
    'input_mixup': lambda config: functools.partial(input_mixup, **_pairwise_args(config)),
    'erm': lambda config: functools.partial(erm, label_smoothing=config.label_smoothing),
}

# Each builder refuses bad values of the keys it reads with a HyperparameterError (the trainer's `error:` line).
METHODS: dict[str, Callable[[ml_collections.ConfigDict], list[Branch]]] = {
    'erm': _erm,
    'input_mixup': _input_mixup,
    'cutmix': _cutmix,
    'manifold_mixup': _manifold_mixup,
    'multimix': _multimix,
    'dense_multimix': _dense_multimix,
    # The control: MultiMix's branch replaced by ERM, to tell MultiMix's effect from the coin flip's.
    'erm_or_input_mixup': _erm_or_input_mixup,
    'alignmixup': _alignmixup,
    'saliencymix': _saliencymix,
    'fmix': _fmix,
    'resizemix': _resizemix,
    'transmix': _transmix,
}

# Methods that read the attention a Vision Transformer sows: config validation refuses them with other models.
NEEDS_ATTENTION = ('transmix',)
