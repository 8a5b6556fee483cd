"""The embedded default: a small CNN on scikit-learn's handwritten digits, offline, a few minutes on a CPU.

Every key a run reads is here; derived configs import this one and override a few keys. Override any key
from the command line: `python -m multimix_jax.main --config=configs/default.py --config.method=erm`.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # Data: a TFDS name ('digits', 'cifar10', 'cifar100', 'tiny_imagenet', 'imagenet2012'), read from data_dir
  # (None: TFDS's default, ~/tensorflow_datasets). The dataset fixes the augmentation and normalisation.
  config.dataset = 'digits'
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.num_classes = 10
  config.image_size = 8  # training crop and evaluation size
  config.shuffle_buffer = 10_000
  config.cache = True  # cache decoded examples in memory (small datasets only)

  # Model: a name from multimix_jax.models.MODELS; compute dtype 'float32' or 'bfloat16' (params stay float32).
  config.model = 'small_cnn'
  config.dtype = 'float32'

  # Mixing: one of multimix_jax.methods.METHODS.
  config.method = 'multimix'
  config.mixup_alpha = 1.0  # Beta(alpha, alpha) of input_mixup, cutmix, manifold_mixup and MultiMix's other path
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
  config.multimix.confidence = 'gap'  # dense_multimix: 'gap', 'gap_relu', 'cam' or 'uniform'
  # Dense loss over chunks of this many of the n rows: bounds its memory at large n (0: all at once; -1: automatic,
  # chunks when an (n, r, c) array would pass 256 MiB).
  config.multimix.chunk_size = -1

  # Optimisation (SPEC §5: SGD with momentum, L2 weight decay added to the gradient, piecewise schedule).
  config.batch_size = 128  # global; split evenly over devices
  config.num_epochs = 100
  config.num_train_steps = -1  # > 0 overrides num_epochs
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 1e-4
  config.schedule = 'piecewise'  # or 'cosine'
  config.lr_boundaries_epochs = (50, 75)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0

  # Parallelism: 'shard_map' (jax.jit + jax.shard_map over a 'data' mesh axis) or 'pmap'.
  config.parallelism = 'shard_map'
  config.sync_batch_stats = False

  # Run management.
  config.seed = 0
  config.log_every_steps = 50
  config.eval_every_steps = 0  # 0: once per epoch
  config.eval_batch_size = 256
  config.checkpoint_every_steps = 0  # 0: once per epoch
  config.keep_checkpoints = 3
  config.profile = False  # clu periodic_actions.Profile around a few steps
  return config
