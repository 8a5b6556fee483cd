"""Joining a multi-host run, and ending it with a clear message when a host is lost.

`initialize` calls `jax.distributed.initialize` with its documented arguments and starts a watchdog thread. JAX's
own heartbeat ends every process when one stops answering, but with a C++ abort and a page of stack traces;
the watchdog notices first (after a quarter of the heartbeat timeout without a sign of life; JAX's service acts
after between half and all of it), prints one line naming the lost process, and exits with status 1. Each process
writes a counter to the coordination service's key-value store every second, and 'done' when it ends normally;
process 0 watches every counter and publishes a lost process for the others to read. When process 0 itself dies, the others' JAX clients lose the coordination service it ran
and abort at once, usually before the watchdog's next look; the watchdog reports it when it gets there first.
"""

import os
import sys
import threading
import time

import jax

_PREFIX = 'multimix_jax/alive/'
_LOST_KEY = 'multimix_jax/lost'


def initialize(coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None, *,
               initialization_timeout=300, heartbeat_timeout=40):
  """jax.distributed.initialize, then the watchdog; returns it (call `.stop()` before a normal exit)."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU collectives across processes
  jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids,
                             initialization_timeout=initialization_timeout,
                             heartbeat_timeout_seconds=heartbeat_timeout)
  watchdog = Watchdog(lost_after=max(3.0, heartbeat_timeout / 4))
  watchdog.start()
  return watchdog


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client  # the client Orbax also uses for its barriers


def _lost(process, why):
  sys.stderr.write(f'error: process {process} of {jax.process_count()} was lost ({why}); this process '
                   f'({jax.process_index()}) stops too. Rerun the same command on every host to resume from the '
                   'last checkpoint.\n')
  sys.stderr.flush()
  os._exit(1)  # pylint: disable=protected-access  (the main thread may be blocked in a collective)


class Watchdog(threading.Thread):
  """Ends this process, with one `error:` line, when another process of the run stops answering."""

  def __init__(self, lost_after, interval=1.0):
    super().__init__(name='multimix_jax-watchdog', daemon=True)
    self.lost_after, self.interval = lost_after, interval
    self._stopping = threading.Event()

  def stop(self):
    """Ends the watchdog and tells process 0 that this process finished (it may wait for the others)."""
    self._stopping.set()
    self.join(timeout=10)  # its last counter must not overwrite 'done'
    try:
      _client().key_value_set(f'{_PREFIX}{jax.process_index()}', 'done', allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except  (the service may be gone already)
      pass

  def run(self):
    client, me, count = _client(), jax.process_index(), jax.process_count()
    last_seen = {p: (None, time.monotonic()) for p in range(count) if p != me}
    beat = 0
    while not self._stopping.wait(self.interval):
      beat += 1
      try:
        client.key_value_set(f'{_PREFIX}{me}', str(beat), allow_overwrite=True)
        lost = client.key_value_try_get(_LOST_KEY) if me else None
      except Exception as e:  # pylint: disable=broad-except
        if not lost_is_missing(e):
          if self._stopping.is_set():
            return
          _lost(0, f'the coordination service it runs is unreachable: {str(e).splitlines()[0]}')
        lost = None
      if lost is not None and not self._stopping.is_set():
        _lost(int(lost), 'process 0 saw it stop answering')
      if me == 0:
        try:
          beats = dict(client.key_value_dir_get(_PREFIX))
        except Exception:  # pylint: disable=broad-except
          continue
        now = time.monotonic()
        for p, (value, since) in last_seen.items():
          current = beats.get(f'{_PREFIX}{p}')
          if current == 'done':
            continue
          if current != value:
            last_seen[p] = (current, now)
          elif now - since > self.lost_after and not self._stopping.is_set():
            client.key_value_set(_LOST_KEY, str(p), allow_overwrite=True)
            time.sleep(2 * self.interval)  # the others read the key before the service goes with this process
            _lost(p, f'no sign of life for {now - since:.0f} s')


def lost_is_missing(error):
  """key_value_try_get raises NOT_FOUND while no process is reported lost."""
  return 'NOT_FOUND' in str(error)
