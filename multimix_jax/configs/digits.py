"""The digits run: the embedded default itself, under the name of its dataset."""

from multimix_jax.configs import default


def get_config():
  return default.get_config()
