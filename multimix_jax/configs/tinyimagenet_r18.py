"""TinyImageNet (64×64), PreActResNet-18: cifar10_r18's protocol with TinyImageNet's schedule and batch."""

from multimix_jax.configs import cifar10_r18


def get_config():
  config = cifar10_r18.get_config()

  config.dataset = 'tiny_imagenet'
  config.num_classes = 200
  config.image_size = 64

  config.model = 'preact_resnet18'  # the CIFAR network on 64×64 inputs: an 8×8 final map (r = 64)

  # The authors trained TinyImageNet on 2 GPUs with 128 each: a global batch of 256, which fixes the number of
  # optimizer steps per epoch. On 2 devices this is b = 128 per device as in the paper; on 1 device b = 256.
  config.batch_size = 256
  config.num_epochs = 1200
  config.lr_boundaries_epochs = (600, 900)
  # Dense MultiMix's n·r·c = 1000·64·200 logits fit without chunking.

  # Evaluation every epoch: 10,000 validation images, about 1/30 of a training epoch's compute.
  return config
