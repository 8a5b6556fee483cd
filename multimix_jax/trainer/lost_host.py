"""The line that says which process of a multi-host run was lost, read from JAX's own abort.

When a process of a `jax.distributed` run stops answering, JAX's coordination service ends every other process with
a C++ abort: a page of log lines and stack traces whose one useful fact (which process) is buried in it. A
multi-host trainer routes its stderr through `python -I lost_host.py PROCESS COUNT` (see multihost.py), which copies
every byte through unchanged and, when the stream ends with JAX's abort in it, adds one line:

    error: process 1 of 2 was lost (...); this process (0) stops too. Rerun the same command on every host ...

Standard library only, run by path with `-I`: it starts in a few milliseconds and imports nothing of the project.
It ignores SIGINT, SIGTERM and SIGHUP (they are the trainer's to handle) and ends when the trainer's stderr closes.
"""

import os
import re
import signal
import sys

# The first words of the line JAX's client logs before it aborts the process (jaxlib 0.7 to 0.10).
JAX_ABORT = 'Terminating process because the JAX distributed service detected fatal errors'
_TAIL = 256 * 1024  # bytes of the stream kept for `verdict`: JAX's abort is at its end
# 'Task 1 heartbeat timeout' (the coordination service's status), also as a task name ('.../task:1').
_HEARTBEAT = re.compile(r'Task (?:\S*task:)?(\d+) heartbeat timeout')
# 'The following tasks are unhealthy (stopped sending heartbeats):\n1\n3\nThe tasks have crashed...'
_UNHEALTHY = re.compile(r'stopped sending heartbeats\):?((?:\s*(?:\S*task:)?\d+,?)+)')
# The client lost the service, which runs in process 0 ('Either the leader task was preempted/died...').
_SERVICE_GONE = ('Failed to send RPC to coordination service', 'leader task was preempted')
RERUN = 'Rerun the same command on every host to resume from the last checkpoint.'


def verdict(text, process, count):
  """The `error:` line for the stderr `text` of process `process` of `count`, or None when JAX did not abort it."""
  if JAX_ABORT not in text:
    return None
  lost = {int(p) for p in _HEARTBEAT.findall(text)}
  for listing in _UNHEALTHY.findall(text):
    lost.update(int(p) for p in re.findall(r'(\d+),?\s*$', listing, flags=re.MULTILINE))
  why = 'it sent JAX no heartbeat within --heartbeat_timeout'
  if not lost and any(phrase in text for phrase in _SERVICE_GONE):
    lost, why = {0}, "JAX's coordination service, which it runs, stopped answering"
  lost.discard(process)
  if not lost:
    return (f'error: JAX ended this process ({process} of {count}) because of a fatal error in the distributed '
            f'run (above), most likely another process was lost; {RERUN}')
  names = ', '.join(str(p) for p in sorted(lost))
  lost_text = f'process {names} of {count} was lost' if len(lost) == 1 else f'processes {names} of {count} were lost'
  return f'error: {lost_text} ({why}); this process ({process}) stops too. {RERUN}'


def relay(source, sink, process, count):
  """Copies `source` to `sink` (file descriptors) until it ends, then writes `verdict`'s line if there is one."""
  tail = b''
  while chunk := os.read(source, 65536):
    _write(sink, chunk)
    tail = (tail + chunk)[-_TAIL:]
  line = verdict(tail.decode('utf-8', 'replace'), process, count)
  if line:
    _write(sink, line.encode() + b'\n')


def _write(fd, data):
  while data:
    data = data[os.write(fd, data):]


if __name__ == '__main__':
  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
  try:
    relay(0, 1, int(sys.argv[1]), int(sys.argv[2]))
  except OSError:  # the destination went away (a closed terminal): nothing left to tell
    pass
