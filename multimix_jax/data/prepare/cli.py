"""The command line of `python -m multimix_jax.data.prepare` (see `multimix_jax.data.prepare`).

A command line that cannot work ends with one `error:` line on stderr and exit status 2 before any work; a
damaged TFRecord shard met while converting ends with one `error:` line and status 1.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from multimix_jax.data import prepare

_DATASET = flags.DEFINE_string('dataset', None, 'A TFDS catalog name (cifar10, svhn_cropped, oxford_flowers102, ...), '
                               'tiny_imagenet or imagenet2012 (from their manual files), or any name prepared as '
                               'TFRecord in --data_dir (converted in place).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, f'TFDS data_dir (default: {prepare.default_data_dir()}).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Where the manually downloaded files are (default: '
                                  '<data_dir>/downloads/manual).')


def _refuse(message, status=2):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def parse_flags(argv) -> list[str]:
  """absl's parsing (for `app.run`), with a bad command line reported as one `error:` line, exit status 2."""
  flags.FLAGS.unparse_flags()  # a fresh parse: the tests run the command more than once in a process
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    _refuse(e)
  if len(argv) > 1:
    _refuse(f'unexpected arguments {argv[1:]}; every option is a --flag (see --help).')
  if not _DATASET.value:
    _refuse('--dataset is required, e.g. --dataset=cifar10 (see --help).')
  return argv


def main(argv) -> None:
  del argv  # checked by parse_flags
  logging.set_verbosity(logging.WARNING)  # TFDS's INFO lines would bury the plan and the progress bars
  try:
    summary = prepare.prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)
  except prepare.PrepareRefused as e:
    _refuse(e)
  except prepare.CorruptRecordError as e:
    _refuse(f'{e} The shards converted before it are kept; replace the damaged copy and rerun.', status=1)
  print(summary)


def run(argv=None) -> None:
  """The command: `app.run` (so --help and --helpfull work), exiting with 0, 1 or 2 as the module docstring says."""
  app.run(main, argv=argv, flags_parser=parse_flags)
