"""Resuming from the newest checkpoint that restores; a damaged one is reported, skipped and moved aside.

Orbax commits a step by renaming its temporary folder once every file is written, so a step cut short by a crash
is never listed. A committed step can still be damaged afterwards (a truncated data file, an overwritten
`manifest.ocdbt`, a deleted `_METADATA`): `restore_newest` tries the committed steps newest first, reports each
that fails in one line (which step, what was wrong) and resumes from the newest that restores. Since the trainer
makes batch k and the step key a pure function of (seed, step), a run resumed from an older step ends as an
uninterrupted one does.

A damaged step is renamed `<step>.damaged-<UTC time>` in the same folder, never deleted: Orbax lists (and, past
`keep_checkpoints`, deletes) only folders named by a step number alone, so the renamed one is neither met again
by a rerun nor removed. Every step newer than the one resumed from goes aside too: the resumed run saves those
steps again, and Orbax refuses to save a step that exists.

Multi-host: process 0 tries the steps, alone, and broadcasts the step it chose; every process restores that step;
only process 0 renames.
"""

import json
import logging as std_logging  # asyncio logs through the standard library
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from multimix_jax.trainer import errors

DAMAGED = '.damaged-'
# A manager that only reads: create=False writes nothing (read_only=True would log two warnings per use).
_READ = ocp.CheckpointManagerOptions(create=False)
# The same, for process 0 alone in a multi-host run (its restore's closing barrier waits for no other process).
_READ_ALONE = ocp.CheckpointManagerOptions(
    create=False, multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}))


def committed_steps(directory):
  """The steps Orbax lists in `directory` (committed ones), newest first; [] when there is none."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  with ocp.CheckpointManager(directory, options=_READ) as manager:
    return sorted(manager.all_steps(), reverse=True)


def _why(exc):
  """What was wrong, in one short line."""
  text = ' '.join(str(exc).split())
  return f'{type(exc).__name__}: {text[:300]}{"..." if len(text) > 300 else ""}'


def restore_step(directory, step, target, options=None):
  """The state saved at `step`, restored into `target`'s structure; raises if any of it does not restore.

  Besides the arrays, the step's tree metadata (`_METADATA`) must be readable: Orbax's other readers (the analysis,
  `CheckpointManager.restore(step)` without a target) need it. `options`: the manager's (every process by default).
  """
  with ocp.CheckpointManager(epath.Path(directory), options=options or _READ) as manager:
    state = manager.restore(step, args=ocp.args.StandardRestore(target))
  metadata = epath.Path(directory) / str(step) / 'default' / '_METADATA'
  try:
    json.loads(metadata.read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f'its tree metadata {metadata} is missing or unreadable ({type(e).__name__})') from e
  return state


def move_aside(directory, step):
  """Renames `directory/<step>` to `<step>.damaged-<UTC time>` (a name Orbax does not list); returns the new path."""
  source = epath.Path(directory) / str(step)
  stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
  destination = source.parent / f'{step}{DAMAGED}{stamp}'
  suffix = 1
  while destination.exists():
    destination = source.parent / f'{step}{DAMAGED}{stamp}-{suffix}'
    suffix += 1
  source.rename(destination)
  return destination


def quiet_abandoned_io():
  """Drops the errors of the reads and writes a failed restore or save left in flight.

  Orbax runs a restore (or a save's writes) on an event loop of its own and closes it when one read or write fails
  (a damaged file, a full disk); TensorStore then completes the others and their callbacks find the loop closed,
  each printed as a traceback (through sys.unraisablehook) on top of the one error that matters, and the writes
  that failed too but were never awaited are logged by asyncio as 'Future (or Task) exception was never retrieved',
  with a traceback each. Every other unraisable error and asyncio message still gets through.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'quiets_abandoned_io', False):
    return
  std_logging.getLogger('asyncio').addFilter(_unretrieved)

  def hook(unraisable):
    if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)

  hook.quiets_abandoned_io = True
  sys.unraisablehook = hook


def _unretrieved(record) -> bool:
  """A logging filter: False for asyncio's report of an exception no one awaited (a write a failed save abandoned)."""
  return not str(record.msg).startswith(('Future exception was never retrieved', 'Task exception was never retrieved'))


def _newest_that_restores(directory, steps, target, log, options):
  """(step, state, {step: what was wrong}) for the newest of `steps` that restores; (0, target, ...) if none does."""
  problems = {}
  for step in steps:
    try:
      return step, restore_step(directory, step, target, options), problems
    except Exception as e:  # pylint: disable=broad-except  (Orbax and TensorStore raise many kinds for one damage)
      quiet_abandoned_io()
      problems[step] = _why(e)
      log(f'checkpoint step {step} in {directory} does not restore ({problems[step]}); trying an older step.')
  return 0, target, problems


def restore_newest(directory, target, log=logging.warning):
  """(step, state): the newest committed step of `directory` that restores, and its state; (0, target) when the
  directory holds no step. Raises ConfigError when steps exist and none restores."""
  directory = epath.Path(directory)
  steps = committed_steps(directory)
  if jax.process_count() == 1:
    chosen, state, problems = _newest_that_restores(directory, steps, target, log, _READ)
  else:  # process 0 tries the steps alone (an Orbax restore ends on a barrier of its processes); all restore its pick
    chosen, problems = 0, {}
    if jax.process_index() == 0:
      chosen, _, problems = _newest_that_restores(directory, steps, target, log, _READ_ALONE)
    chosen = int(multihost_utils.broadcast_one_to_all(np.asarray(chosen, np.int64)))
    state = restore_step(directory, chosen, target) if chosen else target
  newer = [step for step in steps if step > chosen]
  if newer and jax.process_index() == 0:
    for step in newer:
      moved = move_aside(directory, step)
      log(f'checkpoint step {step} moved aside to {moved} (kept, not deleted); the run resumes from '
          f'{"step " + str(chosen) if chosen else "the start"}.')
  if steps and not chosen:
    why = '; '.join(f'step {s}: {p}' for s, p in problems.items()) or 'process 0 logged why'
    raise errors.ConfigError(
        f'no checkpoint in {directory} restores ({why}); each was moved aside as <step>{DAMAGED}<time>. Rerun the '
        'same command to train this run again from step 0, or put back a good copy of its checkpoints folder first.')
  return chosen, state
