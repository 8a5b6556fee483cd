"""CIFAR-10, PreActResNet-18: the protocol of SPEC §5 (AlignMixup's code, which MultiMix follows)."""

import os
import runpy


def get_config():
  # Loaded by path, so that this file works from any working directory (config_flags loads it by path too).
  config = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'default.py'))['get_config']()

  config.dataset = 'cifar10'
  config.num_classes = 10
  config.image_size = 32
  config.shuffle_buffer = 50_000  # the whole training split: a uniform shuffle
  config.cache = True  # 150 MB decoded

  config.model = 'preact_resnet18'

  # SPEC §5's protocol in full, so that tuning the digits default cannot move it. b = 128 per device in every
  # experiment of the paper: on k devices set batch_size = 128 * k.
  config.batch_size = 128
  config.num_epochs = 2000
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.schedule = 'piecewise'
  config.lr_boundaries_epochs = (500, 1000, 1500)
  config.lr_decay_factor = 0.1
  # MultiMix keeps the default's n = 1000, m = b, alpha = 0.1, prob 0.5 else input mixup (SPEC §5). mixup_alpha
  # stays 1.0: SPEC is silent on the Beta of input mixup, and 1.0 is mixup's own CIFAR value (Zhang et al.).

  # Evaluation every epoch (the default), so that the median of the last 10 evaluations (SPEC §6) spans
  # the last 10 epochs; 10,000 test images cost about 1/15 of a training epoch.
  return config
