"""CIFAR-100, the small-image ViT (4×4 patches, 64 tokens): the recipe of Lee et al. (2021) with MultiMix.

Lee, Lee and Song, "Vision Transformer for Small-Size Datasets" (arXiv:2112.13492), code
github.com/aanna0701/SPT_LSA_ViT (`main.py` defaults): AdamW on every parameter, lr 1e-3, weight decay 0.05,
batch 128, 100 epochs, a 10-epoch warmup then cosine decay, label smoothing 0.1, stochastic depth 0.1 (`--sd`),
random erasing 0.25 (`--re`; theirs fills with the mean colour and erases at most 0.4 of the image, ours is timm's:
noise, at most 1/3). Their CIFAR AutoAugment policy, repeated augmentation and their mixup / CutMix are not here:
see docs/vit.md. Their ViT has a class token; `vit_cifar` pools by averaging.
"""

from multimix_jax.configs import cifar100_r18


def get_config():
  config = cifar100_r18.get_config()  # CIFAR-100 data, b = 128, the paper's MultiMix protocol

  config.model = 'vit_cifar'
  config.vit.drop_path = 0.1
  config.augment.random_erasing = 0.25

  config.optimizer = 'adamw'
  config.adam_betas = (0.9, 0.999)
  config.batch_size = 128
  config.learning_rate = 1e-3
  config.weight_decay = 0.05
  config.weight_decay_kernels_only = False  # torch.optim.AdamW(model.parameters(), ...): every parameter
  config.schedule = 'cosine'
  config.warmup_epochs = 10.0
  config.num_epochs = 100
  config.label_smoothing = 0.1
  config.mixup_alpha = 1.0  # their mixup alpha, for MultiMix's input-mixup half
  return config
