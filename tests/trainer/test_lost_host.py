"""The line that names a lost process, read from JAX's abort (the texts below are jaxlib 0.10.2's own)."""

import os
import pathlib
import subprocess
import sys

import pytest

from multimix_jax.trainer import lost_host

REPO = pathlib.Path(__file__).resolve().parents[2]
ABORT = ('F1202 09:03:19.461344   10820 client.h:80] Terminating process because the JAX distributed service detected '
         'fatal errors. This most likely indicates that another task died; see the other task logs for more details. ')
# Process 0 after process 1 stopped sending heartbeats (its service propagates the error to every client).
HEARTBEAT = (ABORT + "absl::Status: INTERNAL: Shutdown barrier has failed.\nBarrier result: 'INTERNAL: Barrier failed "
             'because: task is set to ERROR: UNAVAILABLE: Task 1 heartbeat timeout. This indicates that the remote '
             'task has failed, got preempted, or crashed unexpectedly.\n'
             'E1202 09:03:19.461746   10883 coordination_service.cc:1549] [18110278484923303388] Use error polling '
             'to propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped '
             'sending heartbeats):\n1\nThe tasks have crashed. Check the task logs for an earlier error.\n'
             '*** Check failure stack trace: ***\n    @     0x7fbac47064af  xla::CoordinationServiceAgent::Shutdown()\n')
# Process 1 after process 0, and with it the coordination service, was killed.
SERVICE_GONE = (ABORT + 'absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task '
                'was preempted/died/restarted unexpectedly or this task is experiencing network issues.\nAdditional '
                'GRPC error information from remote target coordination_service while calling /xla.coordination.'
                'CoordinationService/PollForError:\n:UNKNOWN:Error received from peer  {grpc_message:"Socket closed", '
                'grpc_status:14}\n*** Check failure stack trace: ***\n')


@pytest.mark.parametrize('text, process, count, expected', [
    (HEARTBEAT, 0, 2, 'error: process 1 of 2 was lost (it sent JAX no heartbeat within --heartbeat_timeout); this '
     'process (0) stops too.'),
    (SERVICE_GONE, 1, 2, "error: process 0 of 2 was lost (JAX's coordination service, which it runs, stopped "
     'answering); this process (1) stops too.'),
    (HEARTBEAT.replace('\n1\n', '\n/job:jax_worker/replica:0/task:3\n/job:jax_worker/replica:0/task:2\n')
     .replace('Task 1 heartbeat', 'Task 3 heartbeat'), 0, 4, 'error: processes 2, 3 of 4 were lost'),
    (ABORT + 'absl::Status: INTERNAL: something new', 2, 4, 'error: JAX ended this process (2 of 4) because of a '
     'fatal error in the distributed run (above), most likely another process was lost;'),
    (HEARTBEAT, 1, 2, 'error: JAX ended this process (1 of 2)'),  # never names this process itself as lost
])
def test_verdict_names_the_lost_process(text, process, count, expected):
  line = lost_host.verdict('I1202 training step 4\n' + text, process, count)
  assert line.startswith(expected) and line.endswith(lost_host.RERUN) and '\n' not in line, line


def test_verdict_says_nothing_without_jax_abort():
  assert lost_host.verdict('Traceback (most recent call last):\nValueError: Gloo all-reduce failed\n', 0, 2) is None
  assert lost_host.verdict(HEARTBEAT.replace(lost_host.JAX_ABORT, 'Terminating'), 0, 2) is None


def test_the_relay_passes_every_byte_through_and_ends_with_the_line():
  stream = b'\x1b[1mprogress 10%\r20%\r' + bytes(range(256)) + b'\n' + SERVICE_GONE.encode()
  result = subprocess.run([sys.executable, '-I', lost_host.__file__, '1', '2'], input=stream, capture_output=True,
                          timeout=30)
  assert result.returncode == 0 and result.stderr == b''
  assert result.stdout.startswith(stream)
  assert result.stdout[len(stream):] == (lost_host.verdict(SERVICE_GONE, 1, 2) + '\n').encode()
  clean = subprocess.run([sys.executable, '-I', lost_host.__file__, '0', '2'], input=b'done\n', capture_output=True,
                         timeout=30)
  assert clean.stdout == b'done\n'


def test_the_package_reads_no_private_jax_module():
  """jax._src changes without notice inside the jax versions the project allows."""
  offenders = [str(path.relative_to(REPO)) for path in (REPO / 'multimix_jax').rglob('*.py')
               if 'jax._src' in path.read_text() or 'from jax import _src' in path.read_text()]
  assert not offenders, offenders
