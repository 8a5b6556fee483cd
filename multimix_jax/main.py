"""Entry point: `python -m multimix_jax.main --config=configs/imagenet_r50.py --workdir=DIR`.

Without --config it trains the embedded default (configs/default.py: a small CNN on handwritten digits, offline).
Override any config key on the command line, e.g. `--config.method=erm --config.multimix.n=10000`.
"""

import logging as std_logging  # absl.logging.WARNING is an absl verbosity, not a record level
import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from multimix_jax import data
from multimix_jax import train

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'default.py')

_CONFIG = config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'Training config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events and summary.json; '
                               'rerunning with the same workdir resumes.', required=True)
_DISTRIBUTED = flags.DEFINE_bool('jax_distributed', False, 'Multi-host: call jax.distributed.initialize() first. '
                                 'It detects TPU pods, SLURM and Open MPI by itself; elsewhere give the three below.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (or $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes of the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, in [0, num_processes).')


def _quiet_orbax(record):
  """Keeps Orbax's per-save INFO lines (dozens a checkpoint) out of the console; its warnings still show."""
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_quiet_orbax)
  if _DISTRIBUTED.value:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU collectives across processes
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (train.ConfigError, data.DatasetNotFoundError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
