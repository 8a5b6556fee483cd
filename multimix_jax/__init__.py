"""multimix_jax: MultiMix and Dense MultiMix (NeurIPS 2023) in JAX/Flax.

The package in layers, each importing only those above it:

- `mixing`: the pure functions (jax and optax alone, `pip install multimix_jax`); re-exported here, so that
  `multimix_jax.sample_interpolation` is `multimix_jax.mixing.sample_interpolation`;
- `models`, `data`, `configs`: networks, the input pipeline (no TensorFlow) and the run configs;
- `trainer`: the training program, run by `python -m multimix_jax.main` (`pip install 'multimix_jax[train]'`);
- tools on top of the trainer: `analysis`, `benchmark`, `preflight` (compiling for hardware that is not here).
"""

from multimix_jax.mixing import CONFIDENCE_KINDS
from multimix_jax.mixing import confidence_map
from multimix_jax.mixing import cutmix
from multimix_jax.mixing import dense_weights
from multimix_jax.mixing import fmix
from multimix_jax.mixing import fourier_mask
from multimix_jax.mixing import input_mixup
from multimix_jax.mixing import log_gamma
from multimix_jax.mixing import mix_pair
from multimix_jax.mixing import resizemix
from multimix_jax.mixing import saliency_map
from multimix_jax.mixing import saliencymix
from multimix_jax.mixing import sample_dense_interpolation
from multimix_jax.mixing import sample_interpolation
from multimix_jax.mixing import sample_pairing
from multimix_jax.mixing import sample_weights
from multimix_jax.mixing import transmix_targets
from multimix_jax.mixing.losses import dense_multimix_loss
from multimix_jax.mixing.losses import multimix_loss
from multimix_jax.mixing.losses import soft_cross_entropy

__version__ = '0.1.0'
