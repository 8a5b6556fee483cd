"""The digits run: the embedded default itself (configs/default.py), under the name of its dataset."""

import os
import runpy


def get_config():
  # Loaded by path, so that this file works from any working directory (config_flags loads it by path too).
  return runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'default.py'))['get_config']()
