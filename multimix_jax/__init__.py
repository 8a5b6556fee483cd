"""multimix_jax: MultiMix and Dense MultiMix (NeurIPS 2023) in JAX/Flax.

The pure interpolation functions import with jax and optax alone (`pip install multimix_jax`); the trainer lives in
`multimix_jax.train` and its input pipeline in `multimix_jax.data` (`pip install 'multimix_jax[train]'`, no
TensorFlow).
"""

from multimix_jax.interpolation import CONFIDENCE_KINDS
from multimix_jax.interpolation import confidence_map
from multimix_jax.interpolation import cutmix
from multimix_jax.interpolation import dense_weights
from multimix_jax.interpolation import fmix
from multimix_jax.interpolation import fourier_mask
from multimix_jax.interpolation import input_mixup
from multimix_jax.interpolation import log_gamma
from multimix_jax.interpolation import mix_pair
from multimix_jax.interpolation import resizemix
from multimix_jax.interpolation import saliency_map
from multimix_jax.interpolation import saliencymix
from multimix_jax.interpolation import sample_dense_interpolation
from multimix_jax.interpolation import sample_interpolation
from multimix_jax.interpolation import sample_pairing
from multimix_jax.interpolation import sample_weights
from multimix_jax.interpolation import transmix_targets
from multimix_jax.losses import dense_multimix_loss
from multimix_jax.losses import multimix_loss
from multimix_jax.losses import soft_cross_entropy

__version__ = '0.1.0'
