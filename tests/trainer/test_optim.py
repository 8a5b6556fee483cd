"""The optimisers and learning-rate schedules (trainer/optim.py): PyTorch's SGD and AdamW step for step, the
piecewise and cosine schedules, weight decay of the kernels only when asked; their config checks."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimix_jax.configs import default
from multimix_jax.trainer import optim


def test_optimizer_is_pytorch_sgd_with_l2_weight_decay_and_piecewise_schedule():
  config = default.get_config()
  config.learning_rate, config.momentum, config.weight_decay = 0.1, 0.9, 1e-2
  config.lr_boundaries_epochs, config.lr_decay_factor = (1, 2), 0.1
  for nesterov in (False, True):
    config.nesterov = nesterov
    tx, schedule = optim.create_optimizer(config, steps_per_epoch=3)
    np.testing.assert_allclose([schedule(s) for s in (0, 2, 3, 5, 6)], [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)
    p = jnp.array([1.0, -2.0])
    opt_state, buf, ref = tx.init(p), np.zeros(2), np.array([1.0, -2.0])
    for s in range(5):
      g = jnp.array([0.5, 0.25]) * (s + 1)
      updates, opt_state = tx.update(g, opt_state, p)
      p = p + updates
      # torch.optim.SGD: d = g + wd * p; buf = momentum * buf + d; step = d + momentum * buf if nesterov else buf
      d = np.asarray(g) + config.weight_decay * ref
      buf = config.momentum * buf + d
      ref = ref - float(schedule(s)) * (d + config.momentum * buf if nesterov else buf)
    np.testing.assert_allclose(p, ref, rtol=1e-5)


def test_cosine_schedule_with_warmup():
  config = default.get_config()
  config.schedule, config.warmup_epochs, config.num_train_steps = 'cosine', 1.0, 20
  _, schedule = optim.create_optimizer(config, steps_per_epoch=5)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), config.learning_rate, rtol=1e-6)
  assert float(schedule(20)) < 1e-6


def test_adamw_is_pytorch_adamw_and_decays_kernels_only_when_asked():
  config = default.get_config()
  config.optimizer, config.learning_rate, config.weight_decay, config.adam_betas = 'adamw', 0.1, 0.05, (0.8, 0.9)
  config.schedule = 'cosine'
  params = {'dense': {'kernel': jnp.array([1.0, -2.0]), 'bias': jnp.array([0.5, 0.5])}, 'pos_embedding': jnp.ones(2)}
  for kernels_only in (False, True):
    config.weight_decay_kernels_only = kernels_only
    tx, schedule = optim.create_optimizer(config, steps_per_epoch=10)
    p, opt_state = params, tx.init(params)
    ref = jax.tree.map(np.asarray, params)
    m = v = jax.tree.map(np.zeros_like, ref)
    for s in range(3):
      g = jax.tree.map(lambda x: np.full_like(x, 0.3 * (s + 1)), ref)
      updates, opt_state = tx.update(jax.tree.map(jnp.asarray, g), opt_state, p)
      p = jax.tree.map(lambda a, u: a + u, p, updates)
      # torch.optim.AdamW: p -= lr * wd * p; m, v moments; p -= lr * m_hat / (sqrt(v_hat) + eps)
      lr, t = float(schedule(s)), s + 1
      m = jax.tree.map(lambda m, g: 0.8 * m + 0.2 * g, m, g)
      v = jax.tree.map(lambda v, g: 0.9 * v + 0.1 * g * g, v, g)
      decayed = {'dense': {'kernel': True, 'bias': not kernels_only}, 'pos_embedding': not kernels_only}
      ref = jax.tree.map(lambda x, m, v, d: x - lr * (0.05 * x * d + (m / (1 - 0.8**t)) / (np.sqrt(v / (1 - 0.9**t))
                                                                                             + 1e-8)),
                         ref, m, v, decayed)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), p, ref)


def test_num_train_steps_overrides_the_epochs():
  config = default.get_config()
  config.num_epochs, config.num_train_steps = 3, -1
  assert optim.num_train_steps(config, steps_per_epoch=10) == 30
  config.num_train_steps = 7
  assert optim.num_train_steps(config, steps_per_epoch=10) == 7


@pytest.mark.parametrize('overrides, message', [
    ({'optimizer': 'lamb'}, "optimizer='lamb' is unknown; choose one of ['adamw', 'sgd']."),
    ({'schedule': 'linear'}, "schedule='linear' is unknown; choose one of ['cosine', 'piecewise']."),
    ({'adam_betas': (0.9, 1.0)}, 'adam_betas=(0.9, 1.0) must be (b1, b2) with 0 <= b1, b2 < 1.'),
    ({'num_epochs': 0, 'num_train_steps': -1}, 'set num_epochs > 0 or num_train_steps > 0.'),
])
def test_config_problems_name_the_key(overrides, message):
  config = default.get_config()
  config.update_from_flattened_dict(overrides)
  assert optim.config_problems(config) == [message]
  if 'optimizer' in overrides or 'schedule' in overrides:  # built anyway: refused by name
    with pytest.raises(ValueError, match=re.escape(message)):
      optim.create_optimizer(config, steps_per_epoch=10)
