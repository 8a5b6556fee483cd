"""The pasting methods: a region of a partner pasted into every image, the targets mixed by its share.

CutMix (Yun et al. 2019), SaliencyMix (Uddin et al., ICLR 2021), FMix (Harris et al. 2020) and ResizeMix (Qin et
al. 2020) mix the inputs (`multimix_jax.mixing.pasting`) and score the forwarded mixed images against the targets
mixed by the pasted area, as input mixup does (`common.mixed_inputs`); TransMix (Chen et al., CVPR 2022) pastes
CutMix's box and re-weights the targets by the attention that the mixed image's tokens receive, which only a
Vision Transformer sows.
"""

import functools

import jax.numpy as jnp

from multimix_jax import mixing
from multimix_jax.trainer.methods import common
from multimix_jax.trainer.methods.common import Branch

# ----------------------------------------------------------------------------------------------- loss functions


def cutmix(forward, images, targets, key, *, alpha, mode, lam_scope, label_smoothing):
  """A box of the partner pasted in, λ corrected to the pasted area (Yun et al. 2019)."""
  return common.mixed_inputs(mixing.cutmix, forward, images, targets, key, alpha=alpha, mode=mode,
                             lam_scope=lam_scope, label_smoothing=label_smoothing)


def saliencymix(forward, images, targets, key, *, alpha, mode, lam_scope, label_smoothing):
  """CutMix's box centred on the peak of the partner's spectral-residual saliency (Uddin et al., ICLR 2021)."""
  return common.mixed_inputs(mixing.saliencymix, forward, images, targets, key, alpha=alpha, mode=mode,
                             lam_scope=lam_scope, label_smoothing=label_smoothing)


def fmix(forward, images, targets, key, *, alpha, decay_power, spectrum, mode, lam_scope, label_smoothing):
  """A mask thresholded from low-frequency Fourier noise of `spectrum` ('published', the authors' code, or
  'paper'), λ its exact mean (Harris et al. 2020)."""
  return common.mixed_inputs(mixing.fmix, forward, images, targets, key, alpha=alpha, decay_power=decay_power,
                             spectrum=spectrum, mode=mode, lam_scope=lam_scope, label_smoothing=label_smoothing)


def resizemix(forward, images, targets, key, *, scale, mode, lam_scope, label_smoothing):
  """The whole partner resized into a random box of side τ ~ U(scale) of the image's, λ from the box's exact area
  (Qin et al. 2020)."""
  return common.mixed_inputs(mixing.resizemix, forward, images, targets, key, scale=scale, mode=mode,
                             lam_scope=lam_scope, label_smoothing=label_smoothing)


def transmix(forward, images, targets, key, *, alpha, mode, lam_scope, attention_weight, label_smoothing):
  """CutMix's inputs, the targets re-weighted by the attention the mixed image's tokens receive in the last block
  (Chen et al., CVPR 2022); Vision Transformers only (they sow that attention)."""
  device_key, lam_key = common.pairing_keys(key, mode, lam_scope)
  b, height, width, _ = images.shape
  perm, box = mixing.cutmix_box(device_key, b, height, width, alpha, mode=mode, lam_key=lam_key)
  images = jnp.where(box[..., None], images[perm], images)
  (features, logits), updates = forward(images)
  attention = common.sown_attention(updates)
  if attention is None:
    raise ValueError('transmix needs the attention each token receives, which only a Vision Transformer provides '
                     "(models 'vit_*' sow it); with another model choose cutmix.")
  attention = attention.reshape(features.shape[:3])  # (b, r) -> the token grid (b, h, w)
  targets = mixing.transmix_targets(targets, perm, box, attention, attention_weight=attention_weight)
  return common.scored(logits, targets, updates, label_smoothing=label_smoothing)


# ------------------------------------------------------------------------------------------------------ checks


def _fmix_problems(config):
  fm, problems = config.fmix, []
  if not fm.decay_power > 0:
    problems.append(f'fmix.decay_power={fm.decay_power} must be > 0.')
  if fm.spectrum not in mixing.FMIX_SPECTRA:
    problems.append(f'fmix.spectrum={fm.spectrum!r} must be one of {mixing.FMIX_SPECTRA}.')
  return problems


def _resizemix_problems(config):
  scale = tuple(config.resizemix.scale_range)
  if len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1:
    return []
  return [f'resizemix.scale_range={scale} must be (lo, hi) with 0 < lo <= hi <= 1 (fractions of the image side).']


def _transmix_problems(config):
  weight = config.transmix.attention_weight
  return [] if 0.0 <= weight <= 1.0 else [f'transmix.attention_weight={weight} must be in [0, 1].']


# ---------------------------------------------------------------------------------------------------- builders


def _cutmix(config):
  return [Branch(1.0, functools.partial(cutmix, **common.pairwise_args(config)))]


def _saliencymix(config):
  return [Branch(1.0, functools.partial(saliencymix, **common.pairwise_args(config)))]


def _fmix(config):
  return [Branch(1.0, functools.partial(fmix, decay_power=float(config.fmix.decay_power),
                                        spectrum=config.fmix.spectrum, **common.pairwise_args(config)))]


def _resizemix(config):
  # ResizeMix draws its own scale, not λ: mixup_alpha is not read.
  pairwise = {k: v for k, v in common.pairwise_args(config).items() if k != 'alpha'}
  return [Branch(1.0, functools.partial(resizemix, scale=tuple(float(s) for s in config.resizemix.scale_range),
                                        **pairwise))]


def _transmix(config):
  return [Branch(1.0, functools.partial(transmix, attention_weight=float(config.transmix.attention_weight),
                                        **common.pairwise_args(config)))]


CUTMIX = common.Method(_cutmix, checks=(common.pairwise_problems,))
SALIENCYMIX = common.Method(_saliencymix, checks=(common.pairwise_problems,))
FMIX = common.Method(_fmix, checks=(common.pairwise_problems, _fmix_problems))
RESIZEMIX = common.Method(_resizemix, checks=(common.smoothing_problems, _resizemix_problems))
TRANSMIX = common.Method(_transmix, checks=(common.pairwise_problems, _transmix_problems), needs_attention=True)
