"""ImageNet, ViT-S/16 (global-average pooled): DeiT-S's optimisation with the paper's MultiMix protocol.

DeiT (Touvron et al. 2021, facebookresearch/deit `main.py` defaults and Table 9): AdamW, lr 5e-4 · batch / 512
with a 5-epoch linear warmup and cosine decay, weight decay 0.05 on weights only (not biases, LayerNorm
parameters or position embeddings), label smoothing 0.1, 300 epochs at batch 1024. The README's "Vision
Transformers" section lists what of DeiT's recipe the input pipeline lacks (RandAugment, random erasing, repeated
augmentation, stochastic depth, DeiT's mixup/CutMix schedule). Dense MultiMix over tokens:
`--config.method=dense_multimix --config.multimix.confidence=attention`.
"""

from multimix_jax.configs import imagenet_r50


def get_config():
  config = imagenet_r50.get_config()  # dataset, augmentation, evaluation and run management of ImageNet

  config.model = 'vit_s16'
  config.dtype = 'bfloat16'  # compute only; parameters and logits stay float32

  config.optimizer = 'adamw'
  config.adam_betas = (0.9, 0.999)
  config.batch_size = 1024  # 128 per device on 8 devices, as the paper's b
  config.learning_rate = 5e-4 * config.batch_size / 512
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
