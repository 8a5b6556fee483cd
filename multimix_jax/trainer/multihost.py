"""Joining a multi-host run, and ending it with a line that names a lost process.

`initialize` calls `jax.distributed.initialize` with its documented arguments. JAX watches the processes itself:
each sends heartbeats to the coordination service (in process 0) from C++ threads that need no Python lock, the
service declares a process lost when it has heard nothing from it for `heartbeat_timeout` seconds, and every other
process then aborts; when process 0 itself is lost, the others lose the service and abort at once. A host that
stalls for less than the timeout (a long compile, a slow filesystem, a dropped RPC) keeps the run.

JAX's abort is a page of C++ log lines and stack traces. `initialize` therefore routes this process's stderr through
a small relay process (multimix_jax/trainer/lost_host.py) that passes everything on and, when JAX aborted the process, adds
one line naming the lost process:

    error: process 1 of 2 was lost (...); this process (0) stops too. Rerun the same command on every host ...

No private JAX module is used: jax 0.10's public `jax.distributed` offers initialize, is_initialized and shutdown,
and nothing that reaches the coordination service's key-value store. Where the relay cannot start, a warning says so
and JAX's own abort message stands alone.
"""

import atexit
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
import traceback

import jax
from absl import logging

from multimix_jax.trainer import lost_host


def initialize(coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None, *,
               initialization_timeout=300, heartbeat_timeout=40):
  """jax.distributed.initialize, then the relay of stderr; returns the relay (None where it could not start)."""
  if _cpu_only():
    # The CPU backend's collectives across processes (JAX has none there by default); TPU and GPU use their own.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids,
                             initialization_timeout=initialization_timeout,
                             heartbeat_timeout_seconds=heartbeat_timeout)
  return Relay.start(jax.process_index(), jax.process_count(), heartbeat_timeout)


def _cpu_only():
  """Whether this process will compute on its CPU: JAX_PLATFORMS says so, or no accelerator plugin is installed."""
  platforms = jax.config.jax_platforms
  if platforms:
    return set(platforms.split(',')) <= {'cpu'}
  return (importlib.util.find_spec('libtpu') is None and importlib.util.find_spec('jax_plugins') is None
          and not importlib.metadata.entry_points(group='jax_plugins'))


class Relay:
  """This process's stderr, passed through multimix_jax/trainer/lost_host.py (a child process), which names a lost process
  when JAX aborts this one."""

  def __init__(self, child, saved_stderr, heartbeat_timeout):
    self.child, self._saved_stderr, self.heartbeat_timeout = child, saved_stderr, heartbeat_timeout

  @classmethod
  def start(cls, process, count, heartbeat_timeout):
    try:
      read_end, write_end = os.pipe()
      child = subprocess.Popen([sys.executable, '-I', lost_host.__file__, str(process), str(count)], stdin=read_end,
                               stdout=2, start_new_session=True)  # Ctrl-C and Jupyter's interrupt are not its own
      os.close(read_end)
      sys.stderr.flush()
      saved_stderr = os.dup(2)
      os.dup2(write_end, 2)  # C++ logs and Python's sys.stderr alike
      os.close(write_end)
    except OSError as e:
      logging.warning('Could not start the relay that names a lost process (%s); a lost process ends this one with '
                      "JAX's own message.", e)
      return None
    relay = cls(child, saved_stderr, heartbeat_timeout)
    atexit.register(relay.stop)
    return relay

  def stop(self):
    """Gives stderr back to this process and waits for the relay to write all it received (a normal exit)."""
    if self._saved_stderr is None:
      return
    sys.stderr.flush()
    os.dup2(self._saved_stderr, 2)  # the relay reads to the end: everything written so far is in the log
    os.close(self._saved_stderr)
    self._saved_stderr = None
    try:
      self.child.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a child of the trainer still holds the old stderr: leave the relay to it
      pass

  def await_verdict(self):
    """After an error in this process: prints it, then waits for JAX to say whether another process was lost.

    On a CPU a lost peer fails the next collective at once; JAX's verdict (its abort, which the relay turns into a
    line naming the lost process) comes up to the heartbeat timeout later. Returns if JAX does not abort by then:
    the error was this process's own."""
    traceback.print_exc()
    wait = self.heartbeat_timeout + 5
    sys.stderr.write(f'Waiting up to {wait} s for JAX to report whether another process of the run was lost.\n')
    sys.stderr.flush()
    time.sleep(wait)
