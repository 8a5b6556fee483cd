"""CIFAR-10, PreActResNet-18: the paper's training protocol, which is the one of the authors' AlignMixup code.

The other paper configs derive from this one. Every protocol value is set here, so that tuning the digits
default cannot move it; docs/protocol.md gives the source of each.
"""

from multimix_jax.configs import default


def get_config():
  config = default.get_config()

  config.dataset = 'cifar10'
  config.num_classes = 10
  config.image_size = 32

  config.model = 'preact_resnet18'

  # b = 128 per device in every experiment of the paper: on k devices set batch_size = 128 * k.
  config.batch_size = 128
  config.num_epochs = 2000
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 1e-4
  config.schedule = 'piecewise'
  config.lr_boundaries_epochs = (500, 1000, 1500)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0

  # MultiMix: n = 1000, m = b, alpha = 0.1, on half of the mini-batches and input mixup on the others (the
  # default's values, restated). The pairwise path draws lambda ~ Beta(2, 2): the authors' --alpha is 2.0.
  config.multimix.n = 1000
  config.multimix.m = 0
  config.multimix.alpha = 0.1
  config.multimix.prob = 0.5
  config.multimix.alternative = 'input_mixup'
  config.mixup_alpha = 2.0
  config.mixup_mode = 'batch'

  # Robustness (the analysis): FGSM in an 8/255 L∞ ball, PGD in a 4/255 ball with steps of 2/255, the protocol of
  # the AlignMixup paper that the MultiMix paper reuses, for every dataset derived from this config (CIFAR,
  # TinyImageNet, ImageNet). The number of PGD steps and the random start are our choice (see docs/protocol.md).
  config.attack.fgsm_eps = 8 / 255
  config.attack.pgd_eps = 4 / 255
  config.attack.pgd_steps = 10
  config.attack.pgd_step_size = 2 / 255
  config.attack.pgd_random_start = True

  # Evaluation every epoch (the default), so that the median of the last 10 evaluations spans the last 10 epochs;
  # 10,000 test images cost about 1/15 of a training epoch.
  config.eval_every_steps = 0
  return config
