"""TinyImageNet (64×64), PreActResNet-18: the protocol of SPEC §5."""

import os
import runpy


def get_config():
  # Loaded by path, so that this file works from any working directory (config_flags loads it by path too).
  config = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'default.py'))['get_config']()

  config.dataset = 'tiny_imagenet'
  config.num_classes = 200
  config.image_size = 64
  config.shuffle_buffer = 100_000  # the whole training split: a uniform shuffle
  config.cache = True  # 1.2 GB decoded

  config.model = 'preact_resnet18'  # the CIFAR network on 64×64 inputs: an 8×8 final map (r = 64)

  # SPEC §5's protocol in full, so that tuning the digits default cannot move it. b = 128 per device in every
  # experiment of the paper: on k devices set batch_size = 128 * k.
  config.batch_size = 128
  config.num_epochs = 1200
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.schedule = 'piecewise'
  config.lr_boundaries_epochs = (600, 900)
  config.lr_decay_factor = 0.1
  # MultiMix keeps the default's n = 1000, m = b, alpha = 0.1, prob 0.5 else input mixup; mixup_alpha 1.0
  # (SPEC is silent on it). Dense MultiMix's n·r·c = 1000·64·200 logits fit without chunking.

  # Evaluation every epoch (the default): 10,000 validation images, about 1/30 of a training epoch's compute.
  return config
