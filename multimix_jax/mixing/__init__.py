"""The pure functions of MultiMix, Dense MultiMix and the baselines: jax only, no framework state.

`from multimix_jax import mixing` gives every function below; the modules group them by family:

- `multimix`: the interpolation matrix Λ, MultiMix and Dense MultiMix, confidence maps;
- `pairs`: partners and λ of the pairwise baselines, input (and manifold) mixup;
- `pasting`: CutMix, SaliencyMix, FMix, ResizeMix and TransMix's targets;
- `alignment`: AlignMixup's optimal-transport alignment of feature maps (`mixing.alignment.sinkhorn_plan`, ...);
- `losses`: soft-target cross-entropy, and the MultiMix and Dense MultiMix losses on logits.
"""

from multimix_jax.mixing import alignment
from multimix_jax.mixing.losses import DENSE_CHUNK_ELEMENTS
from multimix_jax.mixing.losses import dense_chunk_size
from multimix_jax.mixing.losses import dense_multimix_loss
from multimix_jax.mixing.losses import multimix_loss
from multimix_jax.mixing.losses import soft_cross_entropy
from multimix_jax.mixing.multimix import CONFIDENCE_KINDS
from multimix_jax.mixing.multimix import confidence_map
from multimix_jax.mixing.multimix import dense_weights
from multimix_jax.mixing.multimix import log_gamma
from multimix_jax.mixing.multimix import sample_dense_interpolation
from multimix_jax.mixing.multimix import sample_interpolation
from multimix_jax.mixing.multimix import sample_weights
from multimix_jax.mixing.pairs import MIXUP_MODES
from multimix_jax.mixing.pairs import input_mixup
from multimix_jax.mixing.pairs import mix_pair
from multimix_jax.mixing.pairs import sample_pairing
from multimix_jax.mixing.pasting import FMIX_SPECTRA
from multimix_jax.mixing.pasting import cutmix
from multimix_jax.mixing.pasting import cutmix_box
from multimix_jax.mixing.pasting import fmix
from multimix_jax.mixing.pasting import fourier_mask
from multimix_jax.mixing.pasting import fourier_noise
from multimix_jax.mixing.pasting import paste
from multimix_jax.mixing.pasting import resizemix
from multimix_jax.mixing.pasting import saliency_map
from multimix_jax.mixing.pasting import saliency_peak
from multimix_jax.mixing.pasting import saliency_sigma
from multimix_jax.mixing.pasting import saliencymix
from multimix_jax.mixing.pasting import transmix_targets
