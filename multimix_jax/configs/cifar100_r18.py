"""CIFAR-100, PreActResNet-18: cifar10_r18 on the other dataset."""

from multimix_jax.configs import cifar10_r18


def get_config():
  config = cifar10_r18.get_config()
  config.dataset = 'cifar100'
  config.num_classes = 100
  return config
