"""CIFAR-100, PreActResNet-18: cifar10_r18 with the other dataset (SPEC §5)."""

import os
import runpy


def get_config():
  config = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cifar10_r18.py'))['get_config']()
  config.dataset = 'cifar100'
  config.num_classes = 100
  return config
