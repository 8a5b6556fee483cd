"""Input pipeline (the only part of multimix_jax that imports TensorFlow) and the TFDS builders it adds.

Importing this package registers the TFDS builders `digits` and `tiny_imagenet`.
"""

from multimix_jax.data.input_pipeline import DATASETS
from multimix_jax.data.input_pipeline import DatasetInfo
from multimix_jax.data.input_pipeline import DatasetNotFoundError
from multimix_jax.data.input_pipeline import RESIZE_METHODS
from multimix_jax.data.input_pipeline import SUPPORTED_DATASETS
from multimix_jax.data.input_pipeline import dataset_info
from multimix_jax.data.input_pipeline import eval_batches
from multimix_jax.data.input_pipeline import train_batches
