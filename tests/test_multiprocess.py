"""Two processes of two CPU devices each, joined by jax.distributed (gloo collectives) on localhost."""

import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_hosts_train_read_their_shards_and_evaluate_every_example(tmp_path):
  workdir, data_dir = tmp_path / 'run', tmp_path / 'tfds'
  address = f'localhost:{free_port()}'
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  procs = [
      subprocess.Popen([
          sys.executable, '-m', 'multimix_jax.main', '--jax_distributed', f'--coordinator_address={address}',
          '--num_processes=2', f'--process_id={i}', f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          '--config.num_train_steps=4', '--config.eval_every_steps=2', '--config.checkpoint_every_steps=2',
          '--config.batch_size=64', '--config.eval_batch_size=128', '--config.multimix.n=64'
      ], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)
  ]
  outputs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, "\n=====\n".join(o[-2500:] for o in outputs)
  with open(workdir / 'summary.json') as f:
    summary = json.load(f)
  assert summary['steps'] == 4 and summary['num_devices'] == 4
  with open(workdir / 'eval_history.json') as f:
    history = json.load(f)
  assert [h['count'] for h in history] == [360, 360]  # every test example once, across both hosts
  assert sorted(os.listdir(workdir / 'checkpoints'))[-1] == '4'
