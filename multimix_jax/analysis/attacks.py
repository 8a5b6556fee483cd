"""FGSM and PGD under an L∞ budget in pixel space, as pure jax functions of a classifier.

Images are attacked in pixel units: `pixels` (b, H, W, C) in [0, 1], the classifier `logits_fn(pixels) -> (b, c)`
normalising them itself. Every adversarial image stays within `eps` of the clean one and inside [0, 1]. The
loss attacked is the cross-entropy of the true class, summed over the batch so that each example's gradient is its
own (the model runs in evaluation mode: no example affects another).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
LogitsFn = Callable[[Array], Array]


def _loss(logits_fn: LogitsFn, pixels: Array, labels: Array) -> Array:
  logits = logits_fn(pixels).astype(jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()


def fgsm(logits_fn: LogitsFn, pixels: Array, labels: Array, eps: float | Array) -> Array:
  """Fast gradient sign method (Goodfellow et al., ICLR 2015): clip(x + ε sign ∇ₓ L(x, y), 0, 1).

  Args:
    logits_fn: pixels (b, H, W, C) in [0, 1] -> logits (b, c).
    pixels: (b, H, W, C) clean images in [0, 1].
    labels: (b,) int true classes.
    eps: L∞ budget in pixel units; may be traced.

  Returns:
    (b, H, W, C) adversarial images, |x_adv − x| ≤ ε and 0 ≤ x_adv ≤ 1.
  """
  grad = jax.grad(_loss, argnums=1)(logits_fn, pixels, labels)
  return jnp.clip(pixels + eps * jnp.sign(grad), 0.0, 1.0)


def pgd(logits_fn: LogitsFn, pixels: Array, labels: Array, eps: float | Array, key: Array, *, steps: int,
        step_size: float | Array, random_start: bool = True) -> Array:
  """Projected gradient descent on the loss (Madry et al., ICLR 2018), L∞ ball of radius ε intersected with [0, 1].

  x₀ = clip(x + U(−ε, ε), 0, 1) with `random_start` (else x), then `steps` times
  x ← clip(clip(x + step_size · sign ∇ₓ L, x_clean − ε, x_clean + ε), 0, 1).

  Args:
    logits_fn, pixels, labels, eps: as for `fgsm`.
    key: PRNG key of the random start.
    steps: number of gradient steps (static).
    step_size: in pixel units; may be traced.
    random_start: start from a uniform point of the ball.

  Returns:
    (b, H, W, C) adversarial images within ε of `pixels` and inside [0, 1].
  """
  lower, upper = jnp.clip(pixels - eps, 0.0, 1.0), jnp.clip(pixels + eps, 0.0, 1.0)
  x = pixels
  if random_start:
    x = jnp.clip(pixels + jax.random.uniform(key, pixels.shape, pixels.dtype, -1.0, 1.0) * eps, lower, upper)
  grad_fn = jax.grad(_loss, argnums=1)

  def step(_, x):
    return jnp.clip(x + step_size * jnp.sign(grad_fn(logits_fn, x, labels)), lower, upper)

  return jax.lax.fori_loop(0, steps, step, x)
