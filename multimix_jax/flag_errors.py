"""One `error:` line for a bad command line, shared by the benchmark's and the analysis's entry points."""

import sys

from absl import flags


def parse_flags(argv):
  """absl's parsing, with a bad flag reported as one `error:` line (absl prints a usage block)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}')
