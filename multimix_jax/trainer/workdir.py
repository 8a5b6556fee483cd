"""One trainer per workdir, a finished run left as it is, and a failed write told as one line.

`claim(workdir)` takes an exclusive `fcntl.flock` on `<workdir>/.lock`, held on an open file descriptor for the
run's lifetime: the kernel drops it when the process ends in any way (SIGKILL included), so a claim is never stale.
The file records the holder (host, pid, start time) for the `error:` line a second trainer gets. A gs:// workdir
cannot be locked (an object store has no locks): the run logs a warning and goes on without one.

`finished_summary` recognises a rerun of a run that already ended, so that it is answered in one line without
rewriting anything. `storage_error` turns an OSError, or the error Orbax, TensorStore or TensorFlow raise for one
(often a `ValueError: RESOURCE_EXHAUSTED: ... Error writing ...`), into a StorageError naming the path and the
errno's meaning.
"""

import datetime
import errno
import fcntl
import json
import os
import re
import socket
import time

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from multimix_jax.trainer import errors

LOCK = '.lock'
# The errnos a full, read-only or forbidden filesystem gives; TensorStore and TensorFlow quote os.strerror's text.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                   errno.ENOENT)
_ERRNO_NUMBER = re.compile(r'\[Errno (\d+)\]|OS error (\d+)|errno[ =:]+(\d+)', re.IGNORECASE)
_QUOTED_PATH = re.compile(r'"((?:/|gs://)[^"]+)"|\'((?:/|gs://)[^\']+)\'')


class WorkdirHeld(errors.ConfigError):
  """Another trainer holds the workdir."""


class Claim:
  """This process's claim on a workdir: the open, flock-ed `.lock` (None where no lock could be taken), and what
  taking it created (folders, the lock file), so that a run refused later leaves nothing behind."""

  def __init__(self, fd, path, created=()):
    self.fd, self.path, self.created = fd, path, list(created)

  def release(self):
    """Drops the claim (the kernel does the same when the process ends, however it ends)."""
    if self.fd is not None:
      os.close(self.fd)  # closing the descriptor releases the flock
      self.fd = None

  def undo(self):
    """Releases the claim and removes what taking it created: the lock file, then each created folder if empty."""
    self.release()
    for path in self.created:
      try:
        os.remove(path) if os.path.basename(path) == LOCK else os.rmdir(path)
      except OSError:  # the run wrote something there: it stays
        pass
    self.created = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def _holder(fd):
  """'host H, pid P, started T' as the holder wrote it into the lock file (it may be a moment late)."""
  for _ in range(20):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode('utf-8', 'replace')
    try:
      record = json.loads(text)
      return f"host {record['host']}, pid {record['pid']}, started {record['started']}"
    except (ValueError, KeyError, TypeError):
      time.sleep(0.05)  # the holder took the lock and has not written its name yet
  return 'a process that has not written its name into the lock file'


def _same_file(fd, path):
  try:
    return os.fstat(fd).st_ino == os.stat(path).st_ino
  except FileNotFoundError:
    return False


def claim(workdir):
  """Creates `workdir` where needed and claims it for this process; returns the Claim.

  Raises WorkdirHeld when another process holds it, StorageRefused when it cannot be created or written (a
  read-only mount, no permission, a full disk), before anything else of the workdir is touched.
  """
  workdir = str(workdir)
  if '://' in workdir:
    logging.warning('%s is on an object store, where a run cannot lock its workdir: make sure that no other trainer '
                    'uses it at the same time.', workdir)
    return Claim(None, None)
  created, parent = [], os.path.abspath(workdir)
  while not os.path.isdir(parent):  # the folders makedirs will create, deepest first
    created.append(parent)
    parent = os.path.dirname(parent)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.StorageRefused(f'cannot create --workdir={workdir}: {e.filename or workdir}: '
                                f'{errors.strerror(e.errno)}. Choose a --workdir on a writable filesystem.') from e
  path = os.path.join(workdir, LOCK)
  if not os.path.exists(path):
    created.insert(0, path)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  except OSError as e:
    raise errors.StorageRefused(f'cannot write in --workdir={workdir}: {path}: {errors.strerror(e.errno)}. Choose '
                                'a --workdir on a writable filesystem, or make this one writable, and rerun.') from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if not _same_file(fd, path):  # a refused run removed the file we opened: lock the one at the path now
      os.close(fd)
      return claim(workdir)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)  # the lock file is the holder's: it stays
    raise WorkdirHeld(f'--workdir={workdir} is in use by another trainer ({holder}; {path}). Wait for it to end '
                      'or stop it, or choose another --workdir.') from None
  except OSError as e:  # ENOLCK: an NFS mount without a lock manager; EOPNOTSUPP: a filesystem without locks
    logging.warning('cannot lock %s (%s): make sure that no other trainer uses this workdir at the same time.', path,
                    errors.strerror(e.errno))
  record = {'host': socket.gethostname(), 'pid': os.getpid(),
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode() + b'\n', 0)
  except OSError as e:
    os.close(fd)
    raise errors.StorageRefused(f'cannot write in --workdir={workdir}: {path}: {errors.strerror(e.errno)}. Free '
                                'space or make the filesystem writable, then rerun.') from e
  return Claim(fd, path, created)


def finished_summary(config, workdir, latest_step):
  """The saved summary when `workdir` holds this run already finished: summary.json of a run that reached its last
  step with the same length (num_epochs, num_train_steps), whose newest checkpoint is that step. None otherwise."""
  path = epath.Path(workdir) / 'summary.json'
  if not path.exists():
    return None
  try:
    summary = json.loads(path.read_text())
    saved = summary['config']
    done = (not summary.get('preempted') and summary['steps'] == summary['num_train_steps'] == latest_step and
            saved.get('num_epochs') == config.num_epochs and saved.get('num_train_steps') == config.num_train_steps)
  except (ValueError, KeyError, TypeError):  # an unreadable summary: the run is trained (again) to its end
    return None
  return summary if done else None


def _errno_of(exc):
  """The errno an exception reports, read from an OSError or from the message of one that wraps it."""
  if isinstance(exc, OSError) and exc.errno:
    return exc.errno
  text = str(exc)
  for match in _ERRNO_NUMBER.finditer(text):
    number = int(next(g for g in match.groups() if g))
    if number in errno.errorcode:
      return number
  return next((code for code in _STORAGE_ERRNOS if os.strerror(code).lower() in text.lower()), None)


def _path_of(exc, default):
  if isinstance(exc, OSError) and exc.filename:
    return str(exc.filename)
  match = _QUOTED_PATH.search(str(exc))
  return next(g for g in match.groups() if g) if match else str(default)


def storage_error(exc, workdir, last_checkpoint=None):
  """A StorageError for `exc` (or an exception it was raised from) when it reports a failed read or write of a file,
  else None. `last_checkpoint`: the newest committed step, named in the message."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    code = _errno_of(exc)
    if code is not None and (isinstance(exc, OSError) or code in _STORAGE_ERRNOS):
      kept = (f'its last committed checkpoint is step {last_checkpoint} in {epath.Path(workdir) / "checkpoints"}'
              if last_checkpoint else 'no checkpoint was committed')
      return errors.StorageError(
          f'{_path_of(exc, workdir)}: {errors.strerror(code)}. The run stopped and {kept}; once the cause is gone '
          '(free space, a writable mount, permissions), rerun the same command to resume.')
    exc = exc.__cause__ or exc.__context__
  return None


def claim_run(workdir):
  """`claim` for a run of one or several processes: process 0 claims, and every process stops when it cannot."""
  held, refused = Claim(None, None), None
  if jax.process_index() == 0:
    try:
      held = claim(workdir)
    except errors.ConfigError as e:
      refused = e
  if jax.process_count() > 1:
    if int(multihost_utils.broadcast_one_to_all(np.int32(refused is not None))) and refused is None:
      raise errors.ConfigError(f'process 0 could not claim --workdir={workdir}; its error line says why.')
  if refused is not None:
    raise refused
  return held


def newest_step(directory):
  """The newest committed checkpoint step in `directory`, None when there is none or it cannot be listed."""
  try:
    steps = [int(p.name) for p in epath.Path(directory).iterdir() if p.name.isdigit() and p.is_dir()]
  except OSError:
    return None
  return max(steps, default=None)
