"""CIFAR-10, WRN-16-8: cifar10_r18 with the other network, same schedule."""

from multimix_jax.configs import cifar10_r18


def get_config():
  config = cifar10_r18.get_config()
  config.model = 'wrn16_8'
  return config
