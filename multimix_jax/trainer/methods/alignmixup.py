"""AlignMixup (Venkataramanan et al., CVPR 2022): feature maps aligned by optimal transport, then mixed; with the
authors' protocol, a fair coin per mini-batch between that and input mixup."""

import functools

import jax
import jax.numpy as jnp

from multimix_jax import mixing
from multimix_jax.mixing import alignment
from multimix_jax.trainer.methods import common
from multimix_jax.trainer.methods import pairwise


def alignmixup(forward, images, targets, key, *, alpha, mode, lam_scope, epsilon, max_iterations, threshold,
               label_smoothing):
  """AlignMixup (Venkataramanan et al. 2022) on the last feature map before pooling, as the authors' code.

  Each map is paired with a random partner, an entropic transport plan between their positions (squared Euclidean
  cost, no gradient) aligns one to the other (which, a fair coin per step), and the two are mixed with
  λ ~ Beta(α, α), pooled and classified; targets mix with the same λ (`alignment.aligned_mix`). The mix is applied
  to the dense logits, which equals classifying the mixed map for the affine head: every model thus mixes where the
  authors' do, at the map it pools (after WideResNet's final BN-ReLU, which `mix_stage` would precede).
  """
  device_key, lam_key = common.pairing_keys(key, mode, lam_scope)
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
  return common.scored(logits, mixing.mix_pair(targets, perm, lam), updates, label_smoothing=label_smoothing)


def _alignmixup_problems(config):
  al = config.alignmixup
  problems = common.pairwise_problems(config, 'alignmixup.alpha', al.alpha)
  if not 0.0 <= al.prob <= 1.0:
    problems.append(f'alignmixup.prob={al.prob} must be in [0, 1].')
  if not al.epsilon > 0:
    problems.append(f'alignmixup.epsilon={al.epsilon} must be > 0 (the entropic regularisation).')
  if not (isinstance(al.max_iterations, int) and al.max_iterations >= 1):
    problems.append(f'alignmixup.max_iterations={al.max_iterations!r} must be an int >= 1.')
  if not al.threshold >= 0:
    problems.append(f'alignmixup.threshold={al.threshold} must be >= 0 (0: always max_iterations).')
  return problems


def _alignmixup(config):
  """The authors' protocol: per mini-batch, a fair coin (alignmixup.prob) between the aligned mix at the last
  feature map and input mixup, both with λ ~ Beta(alignmixup.alpha, alignmixup.alpha)."""
  al = config.alignmixup
  pairwise_args = dict(common.pairwise_args(config), alpha=float(al.alpha))
  aligned = functools.partial(alignmixup, epsilon=float(al.epsilon), max_iterations=int(al.max_iterations),
                              threshold=float(al.threshold), **pairwise_args)
  return common.coin_flip(al.prob, aligned, functools.partial(pairwise.input_mixup, **pairwise_args))


ALIGNMIXUP = common.Method(_alignmixup, checks=(_alignmixup_problems,))
