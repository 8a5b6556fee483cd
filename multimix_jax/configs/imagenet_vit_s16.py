"""ImageNet, ViT-S/16 (global-average pooled): DeiT-S's optimisation and augmentation with the paper's MultiMix.

DeiT (Touvron et al. 2021, facebookresearch/deit `main.py` defaults and Table 9): AdamW, lr 5e-4 · batch / 512
with a 5-epoch linear warmup and cosine decay, weight decay 0.05 on weights only (not biases, LayerNorm
parameters or position embeddings), label smoothing 0.1, stochastic depth 0.1, 300 epochs at batch 1024. Its
augmentation (timm's `create_transform` as DeiT calls it): random-resized crop resized bicubically, flip,
RandAugment 'rand-m9-mstd0.5-inc1', random erasing 0.25; no colour jitter (timm turns it off under RandAugment)
and no PCA lighting (AlignMixup's ImageNet recipe, which `imagenet_r50` keeps). The evaluation resize is bicubic as
well. docs/vit.md lists what still differs from DeiT-S. Dense MultiMix over
tokens: `--config.method=dense_multimix --config.multimix.confidence=attention`.
"""

import ml_collections

from multimix_jax.configs import imagenet_r50


def get_config():
  config = imagenet_r50.get_config()  # dataset, evaluation and run management of ImageNet

  config.model = 'vit_s16'
  config.dtype = 'bfloat16'  # compute only; parameters and logits stay float32
  config.vit.drop_path = 0.1

  config.augment.resize = 'bicubic'
  config.augment.color_jitter = 0.0
  config.augment.lighting_std = 0.0
  config.augment.randaugment_layers = 2
  config.augment.randaugment_magnitude = 9.0
  config.augment.randaugment_magnitude_std = 0.5
  config.augment.random_erasing = 0.25

  config.optimizer = 'adamw'
  config.adam_betas = (0.9, 0.999)
  config.batch_size = 1024  # 128 per device on 8 devices, as the paper's b
  # 5e-4 · batch_size / 512, also when --config.batch_size or --per_device_batch_size changes the batch; a
  # --config.learning_rate on the command line replaces the rule.
  config.learning_rate = ml_collections.FieldReference(5e-4 / 512) * config.get_ref('batch_size')
  config.weight_decay = 0.05
  config.weight_decay_kernels_only = True
  config.schedule = 'cosine'  # to 0 (DeiT ends at 1e-5: 1% of the peak)
  config.warmup_epochs = 5.0
  config.num_epochs = 300
  config.label_smoothing = 0.1

  # MultiMix as in the paper's configs (n = 1000, m = b, alpha = 0.1, half of the mini-batches); the other half
  # input mixup with DeiT's mixup alpha.
  config.mixup_alpha = 0.8
  # Dense MultiMix: n · r · c = 1000 · 196 · 1000 logits per device; the automatic chunking keeps each chunk's
  # arrays under 256 MiB (3 chunks of 334 rows).
  config.multimix.chunk_size = -1
  return config
