"""The shape every command shares: absl flags, one `error:` line for what it refuses, three exit statuses.

`python -m multimix_jax.main`, `.analysis`, `.benchmark` and `.data.prepare` all exit with

- 0 when the work is done;
- 2 (`REFUSED`) when the command line or its input cannot work, found before any work starts: an unknown or
  malformed flag, a positional argument, a config key or value out of range, a dataset not prepared, a workdir
  that belongs to another run. Nothing is written;
- 1 (`FAILED`) when the work itself stopped: a damaged record, a full disk, a non-finite loss, a lost host.

Either failure is one line on stderr that starts with `error:` and says how to fix it.
"""

import sys

from absl import app
from absl import flags

REFUSED = 2
FAILED = 1


def fail(message, status: int = REFUSED):
  """Ends the command with `error: message` (on one line) and `status`."""
  sys.stderr.write(f'error: {" ".join(str(message).split())}\n')
  sys.stderr.flush()
  sys.exit(status)


def parse_flags(argv) -> list[str]:
  """absl's parsing, for `app.run`: a bad flag or a positional argument ends the command as `fail` does."""
  flags.FLAGS.unparse_flags()  # a fresh parse: tests run a command more than once in a process
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    fail(e)
  if len(rest) > 1:
    fail(f'unexpected arguments {rest[1:]}; every option is a --flag (see --help).')
  return rest


def run(main, argv=None, flags_parser=parse_flags):
  """`app.run(main)` with `parse_flags` (so --help and --helpfull work as absl's)."""
  app.run(main, argv=argv, flags_parser=flags_parser)
