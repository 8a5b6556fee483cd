"""The embedded default: a small CNN on scikit-learn's handwritten digits, offline, a few minutes on a CPU.

Every key a run reads is here; derived configs import this one (or a config derived from it) and override a few
keys. Override any key from the command line: `python -m multimix_jax.main --config.method=erm`.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # Data: one of multimix_jax.data.catalog.DATASETS ('digits', 'cifar10', 'cifar100', 'tiny_imagenet',
  # 'imagenet2012'), any other TFDS image-classification dataset prepared as ArrayRecord in data_dir (None: TFDS's
  # default, ~/tensorflow_datasets; `python -m multimix_jax.data.prepare` prepares one), or the path of a folder
  # <root>/train/<class>/<image> with <root>/val (or validation, test) beside it. num_classes and image_size: None
  # takes them from the data (a value given must agree with it). The run's config.json states what was used.
  config.dataset = 'digits'
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.num_classes = ml_collections.config_dict.placeholder(int)
  config.image_size = ml_collections.config_dict.placeholder(int)  # training crop and evaluation size
  config.input_threads = 0  # host threads that decode and crop (0: one per CPU core)
  # Augmentation. None means the dataset's: the named datasets' follow their papers; any other gets one chosen by
  # rule from its image size (multimix_jax/data/catalog.py, `by_rule`). On the host: crop ('none', 'pad_crop_flip':
  # pad by `padding` and crop at the image's own size, 'random_resized_crop': torchvision's, to image_size), flip.
  # On the accelerator: normalisation by mean and std (per channel, [0, 1] pixel units), then as below.
  config.augment = ml_collections.ConfigDict()
  config.augment.crop = ml_collections.config_dict.placeholder(str)
  config.augment.padding = ml_collections.config_dict.placeholder(int)
  config.augment.flip = ml_collections.config_dict.placeholder(bool)
  config.augment.mean = ml_collections.config_dict.placeholder(tuple)
  config.augment.std = ml_collections.config_dict.placeholder(tuple)
  # resize: how random-resized crops (and evaluation's center crops) are resized, 'bilinear' (AlignMixup,
  # torchvision's default) or 'bicubic' (DeiT). color_jitter, lighting_std: None means the dataset's (ImageNet
  # 0.4 and 0.1, AlignMixup's; none elsewhere). RandAugment as timm's 'rand-m9-mstd0.5-inc1' (DeiT):
  # randaugment_layers ops per image (0: off; timm's 2), each applied with probability 0.5 at magnitude
  # ~ N(randaugment_magnitude, randaugment_magnitude_std²) clipped to [0, 10]. random_erasing: probability of
  # erasing one rectangle with per-pixel noise (timm's RandomErasing, 'pixel').
  config.augment.resize = 'bilinear'
  config.augment.color_jitter = ml_collections.config_dict.placeholder(float)
  config.augment.lighting_std = ml_collections.config_dict.placeholder(float)
  config.augment.randaugment_layers = 0
  config.augment.randaugment_magnitude = 9.0
  config.augment.randaugment_magnitude_std = 0.5
  config.augment.random_erasing = 0.0

  # Model: a name from multimix_jax.models.MODELS; compute dtype 'float32' or 'bfloat16' (params stay float32).
  config.model = 'small_cnn'
  config.dtype = 'float32'
  # Vision Transformers only (models 'vit_*'; the config check refuses these set on another model). pool_norm:
  # 'tokens' normalises every token then averages (big_vision; the head's dense logits average to the logits),
  # 'after_pool' averages then normalises (timm's global_pool='avg'); see docs/vit.md.
  # drop_path: stochastic depth of the last block, rising linearly from 0 over the blocks (timm's drop_path_rate).
  config.vit = ml_collections.ConfigDict()
  config.vit.pool_norm = 'tokens'
  config.vit.drop_path = 0.0

  # Mixing: one of multimix_jax.trainer.methods.METHODS (a module per family there holds each method's loss, builder
  # and the checks of the keys below that it reads).
  config.method = 'multimix'
  # Beta(alpha, alpha) of the pairwise path: input_mixup, cutmix, manifold_mixup, saliencymix, fmix, transmix and
  # MultiMix's other branch.
  config.mixup_alpha = 1.0
  # 'batch': one lambda per mini-batch (the paper); 'elem': one per example; 'pair': one per pair of partners.
  config.mixup_mode = 'batch'
  # With mixup_mode 'batch': 'global' draws one lambda (and CutMix's box, AlignMixup's direction) per global batch,
  # the same on every device, as the authors' single-process DataParallel does; 'device' draws one per device.
  # Partners are drawn within each device's batch either way.
  config.mixup_lambda = 'global'
  config.label_smoothing = 0.0
  config.multimix = ml_collections.ConfigDict()
  config.multimix.n = 1000  # interpolated examples per mini-batch
  config.multimix.m = 0  # tuple length; 0 means the whole per-device batch (m = b), as in the paper
  config.multimix.alpha = 0.1  # Dirichlet concentration
  # (lo, hi): draw alpha ~ U(lo, hi) once per step instead of the fixed value above.
  config.multimix.alpha_range = ml_collections.config_dict.placeholder(tuple)
  config.multimix.prob = 0.5  # probability a mini-batch uses MultiMix; otherwise `alternative`
  config.multimix.alternative = 'input_mixup'  # or 'erm'
  config.multimix.scope = 'device'  # 'device': tuples within a device's batch (paper); 'global': whole batch
  # dense_multimix: 'gap', 'gap_relu', 'cam', 'uniform', or 'attention' (Vision Transformers only).
  config.multimix.confidence = 'gap'
  # Dense loss over chunks of this many of the n rows: bounds its memory at large n (0: all at once; -1: automatic,
  # chunks when an (n, r, c) array would pass 256 MiB).
  config.multimix.chunk_size = -1
  # alignmixup (Venkataramanan et al. 2022), as the authors' code: per mini-batch, with probability `prob` the last
  # feature maps are aligned by entropic optimal transport and mixed, else the images are (input mixup); both draw
  # lambda ~ Beta(alpha, alpha) (their --alpha 2.0; mixup_mode applies). The plan: Sinkhorn on the raw squared
  # distances, absolute epsilon, at most max_iterations, stopping early when the batch mean of the row potential's
  # L1 change is below threshold (0: never early).
  config.alignmixup = ml_collections.ConfigDict()
  config.alignmixup.alpha = 2.0
  config.alignmixup.prob = 0.5
  config.alignmixup.epsilon = 0.1
  config.alignmixup.max_iterations = 100
  config.alignmixup.threshold = 0.1

  # fmix (Harris et al. 2020): decay power δ of the Fourier noise its masks are thresholded from (the authors' 3).
  config.fmix = ml_collections.ConfigDict()
  config.fmix.decay_power = 3.0
  # 'published': the authors' code, which every published FMix number used; 'paper': the spectrum the paper describes.
  config.fmix.spectrum = 'published'
  # resizemix (Qin et al. 2020): the pasted partner's side is τ ~ U(lo, hi) of the image's (the authors' 0.1, 0.8).
  config.resizemix = ml_collections.ConfigDict()
  config.resizemix.scale_range = (0.1, 0.8)
  # transmix (Chen et al. 2022; Vision Transformers only): the targets' pasted share is (1 − w) · its area + w · the
  # attention its tokens receive in the last block; the authors' code averages the two (w = 0.5).
  config.transmix = ml_collections.ConfigDict()
  config.transmix.attention_weight = 0.5

  # Optimisation: SGD with momentum, L2 weight decay added to the gradient (PyTorch's SGD), piecewise schedule.
  # optimizer and schedule: one of multimix_jax.trainer.optim.OPTIMIZERS and SCHEDULES.
  config.optimizer = 'sgd'  # or 'adamw' (decoupled weight decay, as PyTorch's AdamW)
  config.batch_size = 128  # global; split evenly over devices
  config.num_epochs = 100
  config.num_train_steps = -1  # > 0 overrides num_epochs
  config.learning_rate = 0.1
  config.momentum = 0.9  # sgd only
  config.nesterov = False  # sgd only
  config.adam_betas = (0.9, 0.999)  # adamw only
  config.weight_decay = 1e-4
  # True: decay only weight matrices and convolution kernels, not biases, normalisation parameters or position
  # embeddings (DeiT's AdamW); False: every parameter (PyTorch's default, the paper's SGD).
  config.weight_decay_kernels_only = False
  config.schedule = 'piecewise'  # or 'cosine'
  config.lr_boundaries_epochs = (50, 75)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0

  # Parallelism: 'shard_map' (jax.jit + jax.shard_map over a 'data' mesh axis) or 'pmap'.
  config.parallelism = 'shard_map'
  config.sync_batch_stats = False

  # Robustness protocol of the analysis (`python -m multimix_jax.analysis`; training never reads it): FGSM with an
  # L∞ budget of fgsm_eps and PGD with pgd_eps, pgd_steps steps of pgd_step_size (from a uniform random start in the
  # ball), all in pixel units [0, 1]. Digits have 17 grey levels (steps of 1/16): 0.1 is about 1.6 of them, the
  # smallest of the budgets used on MNIST (0.1-0.3); PGD takes 10 steps of a quarter of it. Our choice, as no paper
  # of the method attacks digits; the CIFAR, TinyImageNet and ImageNet configs follow the papers (cifar10_r18.py).
  config.attack = ml_collections.ConfigDict()
  config.attack.fgsm_eps = 0.1
  config.attack.pgd_eps = 0.1
  config.attack.pgd_steps = 10
  config.attack.pgd_step_size = 0.025
  config.attack.pgd_random_start = True

  # Run management.
  config.seed = 0
  config.log_every_steps = 50
  config.eval_every_steps = 0  # 0: once per epoch
  config.eval_batch_size = 256
  config.checkpoint_every_steps = 0  # 0: once per epoch
  config.keep_checkpoints = 3
  config.profile = False  # clu periodic_actions.Profile around a few steps
  return config
