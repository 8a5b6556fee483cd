"""CIFAR-10, WRN-16-8: cifar10_r18 with the other network, same schedule (SPEC §5)."""

import os
import runpy


def get_config():
  config = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cifar10_r18.py'))['get_config']()
  config.model = 'wrn16_8'
  return config
