"""The errors a run reports to its user as one `error:` line (`main` prints them), and the exit status of each kind.

A *refusal* (ConfigError) comes before any work: a bad config value, a workdir that holds another run, is held by
another trainer, is read-only or holds no checkpoint that restores. It exits with status 2, as a bad command-line
flag does. Any other RunError stops a run that was working (its state diverged, its storage failed): status 1.
"""

import errno
import os

from multimix_jax import command_line


class RunError(Exception):
  """A problem the user can fix, told in one message (`main` prints it as a single `error:` line)."""

  exit_status = command_line.FAILED


class ConfigError(RunError, ValueError):
  """A config value or workdir that cannot work; raised before any work starts."""

  exit_status = command_line.REFUSED


class StorageError(RunError):
  """Writing or reading the workdir failed (disk full, read-only, permission, quota): the run stopped, its last
  committed checkpoint stands, and rerunning once the cause is gone resumes from it."""


class StorageRefused(StorageError, ConfigError):
  """The workdir cannot be written at all (read-only, no permission): refused before any work."""

  exit_status = command_line.REFUSED


def strerror(code):
  """`os.strerror` with the errno's name, e.g. 'No space left on device (ENOSPC)'."""
  return f'{os.strerror(code)} ({errno.errorcode.get(code, code)})'
