"""`python -m multimix_jax.data.prepare --dataset=NAME --data_dir=DIR`: the command line of `multimix_jax.data.prepare`.

A command line that cannot work ends with one `error:` line on stderr and exit status 2 before any work; a
damaged TFRecord shard met while converting ends with one `error:` line and status 1.
"""

from absl import flags
from absl import logging

from multimix_jax import command_line
from multimix_jax.data import prepare

_DATASET = flags.DEFINE_string('dataset', None, 'A TFDS catalog name (cifar10, svhn_cropped, oxford_flowers102, ...), '
                               'tiny_imagenet or imagenet2012 (from their manual files), or any name prepared as '
                               'TFRecord in --data_dir (converted in place).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, f'TFDS data_dir (default: {prepare.default_data_dir()}).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Where the manually downloaded files are (default: '
                                  '<data_dir>/downloads/manual).')


def parse_flags(argv) -> list[str]:
  """The shared parsing (`command_line.parse_flags`), and --dataset required."""
  argv = command_line.parse_flags(argv)
  if not _DATASET.value:
    command_line.fail('--dataset is required, e.g. --dataset=cifar10 (see --help).')
  return argv


def main(argv) -> None:
  del argv  # checked by parse_flags
  logging.set_verbosity(logging.WARNING)  # TFDS's INFO lines would bury the plan and the progress bars
  try:
    summary = prepare.prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)
  except prepare.PrepareRefused as e:
    command_line.fail(e)
  except prepare.CorruptRecordError as e:
    command_line.fail(f'{e} The shards converted before it are kept; replace the damaged copy and rerun.',
                      status=command_line.FAILED)
  print(summary)


def run(argv=None) -> None:
  """The command: `app.run` (so --help and --helpfull work), exiting with 0, 1 or 2 as the module docstring says."""
  command_line.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
