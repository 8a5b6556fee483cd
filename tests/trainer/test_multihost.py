"""Two processes of two CPU devices each, joined by jax.distributed (gloo collectives) on localhost.

Every run is started as real processes of `python -m multimix_jax.main`, each bounded by a timeout.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300  # seconds for any one run of two processes
STEPS = 20
ARGS = ['--config.parallelism=pmap', f'--config.num_train_steps={STEPS}', f'--config.eval_every_steps={STEPS // 2}',
        f'--config.checkpoint_every_steps={STEPS}']
COMMON = ['--config.batch_size=64', '--config.eval_batch_size=128', '--config.multimix.n=64',
          '--config.log_every_steps=10', '--heartbeat_timeout=40']


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class Run:
  """Two processes of one run; their output goes to files (no pipe to fill up)."""

  def __init__(self, tmp_path, name, workdirs, data_dir, args):
    address = f'localhost:{free_port()}'
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2', 'TF_CPP_MIN_LOG_LEVEL': '2'}
    self.logs = [tmp_path / f'{name}.{i}.log' for i in range(2)]
    self.procs = []
    for i in range(2):
      with open(self.logs[i], 'w') as log:
        self.procs.append(subprocess.Popen([
            sys.executable, '-m', 'multimix_jax.main', '--jax_distributed', f'--coordinator_address={address}',
            '--num_processes=2', f'--process_id={i}', f'--workdir={workdirs[i]}', f'--config.data_dir={data_dir}',
            *COMMON, *args
        ], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))

  def output(self, i):
    return self.logs[i].read_text()

  def wait_for(self, text, timeout=TIMEOUT):
    """Waits until both processes have printed `text`."""
    deadline = time.time() + timeout
    while not all(text in self.output(i) for i in range(2)):
      if time.time() > deadline or any(p.poll() is not None for p in self.procs):
        self.kill()
        pytest.fail(f'no {text!r} in both logs:\n' + self.tails())
      time.sleep(0.2)

  def wait(self, timeout=TIMEOUT):
    deadline = time.time() + timeout
    for p in self.procs:
      try:
        p.wait(timeout=max(1, deadline - time.time()))
      except subprocess.TimeoutExpired:
        self.kill()
        pytest.fail(f'the run did not end within {timeout} s:\n' + self.tails())
    return [p.returncode for p in self.procs]

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()

  def tails(self):
    return '\n=====\n'.join(self.output(i)[-3000:] for i in range(2))


def final_params(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    return manager.restore(manager.latest_step())['params'], manager.latest_step()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir):
  """An uninterrupted run of STEPS steps with parallelism=pmap across the processes, shared by the tests below.
  (The default, shard_map, runs across processes in the lost-process test.)"""
  tmp = tmp_path_factory.mktemp('reference')
  workdir = tmp / 'run'
  run = Run(tmp, 'reference', [workdir] * 2, data_dir,
            ARGS)
  assert run.wait() == [0, 0], run.tails()
  return workdir


def test_pmap_across_two_hosts_trains_and_evaluates_every_example(reference):
  with open(reference / 'summary.json') as f:
    summary = json.load(f)
  assert summary['steps'] == STEPS and summary['num_devices'] == 4
  with open(reference / 'eval_history.json') as f:
    history = json.load(f)
  assert [h['count'] for h in history] == [360, 360]  # every test example once, across both hosts
  assert final_params(reference)[1] == STEPS


def test_sigterm_to_both_saves_the_same_step_and_resuming_equals_an_uninterrupted_run(tmp_path, data_dir, reference):
  workdir = tmp_path / 'run'
  run = Run(tmp_path, 'preempted', [workdir] * 2, data_dir, ARGS)
  run.wait_for('Training ')
  for p in run.procs:
    p.send_signal(signal.SIGTERM)
  assert run.wait() == [0, 0], run.tails()
  steps = []
  for i in range(2):
    assert 'Preempted: checkpoint saved at step' in run.output(i), run.tails()
    steps.append(int(run.output(i).split('Preempted: checkpoint saved at step ')[1].split(';')[0]))
  assert steps[0] == steps[1] and 0 < steps[0] < STEPS, steps
  assert final_params(workdir)[1] == steps[0]
  assert not (workdir / 'summary.json').exists()

  rerun = Run(tmp_path, 'resumed', [workdir] * 2, data_dir, ARGS)
  assert rerun.wait() == [0, 0], rerun.tails()
  assert f'Resumed from the checkpoint at step {steps[0]}' in rerun.output(0)
  resumed, step = final_params(workdir)
  assert step == STEPS
  jax.tree.map(np.testing.assert_array_equal, resumed, final_params(reference)[0])


@pytest.mark.parametrize('victim', [1, 0])  # 0 runs JAX's coordination service: the other loses it at once
def test_a_lost_process_ends_the_other_within_a_minute_naming_it(tmp_path, data_dir, victim):
  run = Run(tmp_path, 'lost', [tmp_path / 'run'] * 2, data_dir,
            ['--config.num_train_steps=100000', '--config.eval_every_steps=100000', '--heartbeat_timeout=20'])
  run.wait_for('Training ')
  run.procs[victim].kill()
  killed = time.time()
  survivor = run.procs[1 - victim]
  try:
    survivor.wait(timeout=60)
  except subprocess.TimeoutExpired:
    run.kill()
    pytest.fail('the surviving process still runs 60 s after the other was killed:\n' + run.tails())
  elapsed = time.time() - killed
  line = f'error: process {victim} of 2 was lost'
  deadline = time.time() + 5  # the relay writes its line as the survivor's stderr closes
  while line not in run.output(1 - victim) and time.time() < deadline:
    time.sleep(0.1)
  output = run.output(1 - victim)
  assert survivor.returncode != 0
  assert line in output, output[-3000:]
  assert output.rstrip().endswith('Rerun the same command on every host to resume from the last checkpoint.')
  assert elapsed < 60


def test_a_host_that_stalls_for_less_than_the_heartbeat_timeout_keeps_the_run(tmp_path, data_dir):
  """A busy host (a long compile, a slow filesystem, dropped RPCs) that answers again within the timeout: silent for
  12 of the 40 s here, longer than a quarter of the timeout, after which this project's earlier watchdog declared
  a process lost."""
  run = Run(tmp_path, 'stalled', [tmp_path / 'run'] * 2, data_dir,
            ['--config.method=erm', '--config.num_train_steps=4', '--config.eval_every_steps=4',
             '--heartbeat_timeout=40'])  # one train step to compile
  run.wait_for('Training ')
  run.procs[1].send_signal(signal.SIGSTOP)
  time.sleep(12)
  run.procs[1].send_signal(signal.SIGCONT)
  assert run.wait() == [0, 0], run.tails()
  for i in range(2):
    assert 'error:' not in run.output(i) and 'Terminating process' not in run.output(i), run.tails()
  assert (tmp_path / 'run' / 'summary.json').exists()


def test_hosts_that_do_not_share_the_workdir_stop_before_training(tmp_path, data_dir):
  run = Run(tmp_path, 'unshared', [tmp_path / 'host0', tmp_path / 'host1'], data_dir,
            ['--config.num_train_steps=4'])
  assert run.wait() == [2, 2], run.tails()  # refused before training: status 2, as every refusal
  for i in range(2):
    output = run.output(i)
    assert 'error: the workdir must be shared by all hosts' in output, output[-3000:]
    assert 'Training ' not in output and 'Traceback' not in output
  assert not (tmp_path / 'host0' / 'checkpoints').exists()
