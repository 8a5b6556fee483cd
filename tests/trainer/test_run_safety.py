"""Runs that survive faults: a damaged checkpoint, SIGKILLs during checkpoint writes, a second trainer, a full disk,
a read-only mount, a finished run rerun, values out of range. Each run is `python -m multimix_jax.main` on the
digits default, 12 steps, a checkpoint every step; each must end with the eval history of one uninterrupted run
(module-scoped), or stop with one `error:` line and the documented exit status.

The disk and mount tests need `mount` (root or CAP_SYS_ADMIN): elsewhere they are skipped with the reason.
"""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import orbax.checkpoint as ocp
import pytest

from multimix_jax import configs
from multimix_jax.trainer import checkpoints
from multimix_jax.trainer import errors
from multimix_jax.trainer import train
from multimix_jax.trainer import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = ('--config.num_train_steps=12', '--config.checkpoint_every_steps=1', '--config.eval_every_steps=4',
         '--config.log_every_steps=4', '--config.batch_size=64', '--config.multimix.n=64',
         '--config.keep_checkpoints=20')


def start(workdir, data_dir, *extra):
  return subprocess.Popen([sys.executable, '-m', 'multimix_jax.main', f'--workdir={workdir}',
                           f'--config.data_dir={data_dir}', *FLAGS, *extra],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
  output = proc.communicate(timeout=timeout)[0]
  return proc.returncode, output


def run(workdir, data_dir, *extra):
  return finish(start(workdir, data_dir, *extra))


def error_lines(output):
  return [line for line in output.splitlines() if line.startswith('error:')]


def history(workdir):
  with open(os.path.join(workdir, 'eval_history.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def reference(data_dir, tmp_path_factory):
  """The workdir of one uninterrupted run (every test compares with its eval history; copies start from it)."""
  workdir = tmp_path_factory.mktemp('reference') / 'run'
  returncode, output = run(workdir, data_dir)
  assert returncode == 0, output[-3000:]
  assert [h['step'] for h in history(workdir)] == [4, 8, 12]
  return workdir


def copy_of(reference, destination, keep_steps_up_to=12):
  """A copy of the reference run as a run stopped at `keep_steps_up_to` would have left it (no summary.json)."""
  shutil.copytree(reference, destination)
  os.remove(destination / 'summary.json')
  (destination / workdir_lib.LOCK).unlink(missing_ok=True)
  for step in os.listdir(destination / 'checkpoints'):
    if int(step) > keep_steps_up_to:
      shutil.rmtree(destination / 'checkpoints' / step)
  return destination


def truncate_a_data_file(step_dir):
  data = step_dir / 'default' / 'ocdbt.process_0' / 'd'
  largest = max(data.iterdir(), key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)


def overwrite_the_manifest(step_dir):
  (step_dir / 'default' / 'manifest.ocdbt').write_bytes(b'not a manifest' * 8)


def delete_the_metadata(step_dir):
  os.remove(step_dir / 'default' / '_METADATA')


DAMAGES = {'truncated data file': truncate_a_data_file, 'overwritten manifest.ocdbt': overwrite_the_manifest,
           'deleted _METADATA': delete_the_metadata}


def test_a_damaged_newest_step_is_reported_moved_aside_and_the_run_ends_as_uninterrupted(reference, data_dir, tmp_path):
  # A run stopped at step 10 whose step 10 (and, in the last case, step 9 too) was damaged afterwards.
  cases = {name: ([damage], copy_of(reference, tmp_path / name.replace(' ', '_'), 10))
           for name, damage in DAMAGES.items()}
  cases['two newest damaged'] = ([truncate_a_data_file, delete_the_metadata], copy_of(reference, tmp_path / 'two', 10))
  for damages, workdir in cases.values():
    for damage, step in zip(damages, (10, 9)):
      damage(workdir / 'checkpoints' / str(step))
  procs = {name: start(workdir, data_dir) for name, (_, workdir) in cases.items()}
  for name, proc in procs.items():
    damages, workdir = cases[name]
    returncode, output = finish(proc)
    assert returncode == 0 and 'Traceback' not in output, (name, output[-3000:])
    reports = [line for line in output.splitlines() if 'does not restore' in line]
    assert [line.split('checkpoint step ')[1].split(' ')[0] for line in reports] == ['10', '9'][:len(damages)], name
    resumed = 10 - len(damages)
    assert f'Resumed from the checkpoint at step {resumed}' in output, name
    assert history(workdir) == history(reference), name
    names = os.listdir(workdir / 'checkpoints')
    for step in (10, 9)[:len(damages)]:  # moved aside, kept, outside the names Orbax lists; the step saved again
      assert len([n for n in names if n.startswith(f'{step}{checkpoints.DAMAGED}')]) == 1, (name, names)
    with ocp.CheckpointManager(workdir / 'checkpoints') as manager:
      assert sorted(manager.all_steps()) == list(range(1, 13)), name


def test_no_restorable_step_is_one_error_line_naming_the_workdir(reference, data_dir, tmp_path):
  workdir = copy_of(reference, tmp_path / 'run', 2)
  for step in (1, 2):
    truncate_a_data_file(workdir / 'checkpoints' / str(step))
  returncode, output = run(workdir, data_dir)
  assert returncode == 2 and 'Traceback' not in output, output[-3000:]
  (line,) = error_lines(output)
  assert f'no checkpoint in {workdir}/checkpoints restores' in line and 'Rerun the same command' in line
  assert sorted(n.split('.')[0] for n in os.listdir(workdir / 'checkpoints')) == ['1', '2']  # both kept, aside


def test_damaged_steps_are_neither_listed_nor_deleted_by_orbax(tmp_path):
  with ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(max_to_keep=1)) as manager:
    manager.save(1, args=ocp.args.StandardSave({'x': 1}))
    manager.wait_until_finished()
    moved = checkpoints.move_aside(tmp_path, 1)
    assert moved.name.startswith(f'1{checkpoints.DAMAGED}')
    manager.reload()
    for step in (1, 2, 3):  # max_to_keep=1: Orbax deletes every older step it lists
      manager.save(step, args=ocp.args.StandardSave({'x': step}))
    manager.wait_until_finished()
    assert manager.all_steps() == [3]
  assert moved.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == sorted(['3', moved.name])


def test_sigkills_during_checkpoint_writes_then_a_resume_end_as_uninterrupted(reference, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  rng = random.Random(24)
  kills_while_writing = 0
  for kill in range(3):
    left = set(os.listdir(workdir / 'checkpoints')) if (workdir / 'checkpoints').is_dir() else set()
    proc = start(workdir, data_dir)
    # Kill at a random moment once this run writes a checkpoint (a new temporary folder of Orbax's exists).
    deadline, writing = time.time() + 120, None
    while writing is None and proc.poll() is None and time.time() < deadline:
      names = os.listdir(workdir / 'checkpoints') if (workdir / 'checkpoints').is_dir() else []
      writing = next((n for n in names if 'orbax-checkpoint-tmp' in n and n not in left), None)
      time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    still_writing = writing is not None and (workdir / 'checkpoints' / writing).exists()
    proc.send_signal(signal.SIGKILL)
    returncode, output = finish(proc)
    assert returncode == -signal.SIGKILL, output[-3000:]  # killed, not ended
    kills_while_writing += still_writing
  assert kills_while_writing >= 1
  returncode, output = run(workdir, data_dir)  # the kernel dropped every killed run's claim: this one is not refused
  assert returncode == 0, output[-3000:]
  assert history(workdir) == history(reference)


def test_two_trainers_started_together_one_is_refused_naming_the_other(reference, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  procs = [start(workdir, data_dir) for _ in range(2)]
  results = [finish(proc) for proc in procs]
  assert sorted(r for r, _ in results) == [0, 2], [o[-2000:] for _, o in results]
  winner, loser = (procs[0], procs[1]) if results[0][0] == 0 else (procs[1], procs[0])
  (line,) = error_lines(results[procs.index(loser)][1])
  assert 'is in use by another trainer' in line and f'pid {winner.pid},' in line, line
  assert history(workdir) == history(reference)


def test_a_trainer_started_mid_run_is_refused_and_touches_nothing(data_dir, reference, tmp_path):
  workdir, log = tmp_path / 'run', tmp_path / 'first.log'
  # log_every_steps=1: each step waits for the previous one (no long queue of asynchronous steps on a busy CPU).
  long_run = ('--config.num_train_steps=100000', '--config.checkpoint_every_steps=100000',
              '--config.eval_every_steps=100000', '--config.log_every_steps=1')
  with open(log, 'w') as output:
    first = subprocess.Popen([sys.executable, '-m', 'multimix_jax.main', f'--workdir={workdir}',
                              f'--config.data_dir={data_dir}', *FLAGS, *long_run],
                             cwd=REPO, stdout=output, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 120
  while 'Training ' not in log.read_text() and first.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  second = start(workdir, data_dir, *long_run)
  try:
    returncode, output = finish(second, timeout=120)  # a second trainer that is not refused runs 100000 steps
    assert first.poll() is None, 'the first run ended before the second was refused'
    assert returncode == 2 and 'Traceback' not in output, output[-3000:]
    (line,) = error_lines(output)
    assert f'--workdir={workdir} is in use by another trainer (host ' in line and f'pid {first.pid},' in line, line
    assert not any(name.startswith('events.out') and str(second.pid) in name for name in os.listdir(workdir))
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 0 and 'Preempted: checkpoint saved at step' in log.read_text()
  finally:
    for proc in (first, second):
      if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_finished_run_rerun_says_so_and_leaves_every_file_as_it_was(reference, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)

  def files():
    return {os.path.relpath(os.path.join(d, f), workdir): (os.stat(os.path.join(d, f)).st_mtime_ns,
                                                          open(os.path.join(d, f), 'rb').read())
            for d, _, names in os.walk(workdir) for f in names if f != workdir_lib.LOCK}
  before = files()
  returncode, output = run(workdir, data_dir)
  assert returncode == 0, output[-3000:]
  assert 'holds this run, finished at step 12 (summary.json): nothing to do' in output
  assert files() == before


def mount(*args):
  return subprocess.run(['mount', *args], capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path):
  """A tmpfs of 1.5 MB (six checkpoints of the digits CNN fit, not twelve); skipped where mounting is refused."""
  point = tmp_path / 'disk'
  point.mkdir()
  mounted = mount('-t', 'tmpfs', '-o', 'size=1536k', 'tmpfs', str(point))
  if mounted.returncode:
    pytest.skip(f'cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}')
  yield point
  subprocess.run(['umount', '-l', str(point)], check=False)


def test_a_disk_that_fills_mid_run_stops_it_in_one_line_and_the_rerun_ends_as_uninterrupted(reference, data_dir,
                                                                                            small_disk):
  workdir = small_disk / 'run'
  returncode, output = run(workdir, data_dir)
  assert returncode == 1 and 'Traceback' not in output, output[-3000:]
  (line,) = error_lines(output)
  assert f'{small_disk}/' in line and f'{os.strerror(errno.ENOSPC)} (ENOSPC)' in line, line
  assert 'its last committed checkpoint is step ' in line, line
  kept = int(line.split('its last committed checkpoint is step ')[1].split(' ')[0])
  assert 1 <= kept < 12
  assert mount('-o', 'remount,size=64m', str(small_disk)).returncode == 0  # the cause is gone
  returncode, output = run(workdir, data_dir)
  assert returncode == 0, output[-3000:]
  assert f'Resumed from the checkpoint at step {kept}' in output
  assert history(workdir) == history(reference)


@pytest.fixture
def read_only(tmp_path):
  """(source, mount point, remount): a bind mount of source, remount('ro') or remount('rw'); skipped where mounting
  is refused."""
  source, point = tmp_path / 'source', tmp_path / 'mount'
  source.mkdir()
  point.mkdir()
  mounted = mount('--bind', str(source), str(point))
  if mounted.returncode:
    pytest.skip(f'cannot bind-mount here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}')

  def remount(mode):
    assert mount('-o', f'remount,{mode},bind', str(point)).returncode == 0
  yield source, point, remount
  subprocess.run(['umount', '-l', str(point)], check=False)


def test_a_read_only_mount_is_refused_before_any_work_and_the_rerun_ends_as_uninterrupted(reference, data_dir,
                                                                                         read_only):
  source, point, remount = read_only
  copy_of(reference, source / 'run', 4)
  remount('ro')
  procs = {'new': start(point / 'new', data_dir), 'run': start(point / 'run', data_dir)}
  for name, proc in procs.items():
    returncode, output = finish(proc)
    assert returncode == 2 and 'Traceback' not in output, (name, output[-3000:])
    (line,) = error_lines(output)
    assert f'--workdir={point / name}' in line and f'{os.strerror(errno.EROFS)} (EROFS)' in line, line
    assert 'Training ' not in output  # refused before any work
  assert not (source / 'new').exists()
  remount('rw')
  returncode, output = run(point / 'run', data_dir)
  assert returncode == 0 and 'Resumed from the checkpoint at step 4' in output, output[-3000:]
  assert history(point / 'run') == history(reference)


def test_the_lock_file_names_its_holder_and_dies_with_the_claim(tmp_path):
  with workdir_lib.claim(tmp_path / 'run') as held:
    record = json.loads((tmp_path / 'run' / workdir_lib.LOCK).read_text())
    assert record['pid'] == os.getpid() and record['host'] and record['started']
    with pytest.raises(workdir_lib.WorkdirHeld, match=rf'in use by another trainer \(host .*pid {os.getpid()},'):
      workdir_lib.claim(tmp_path / 'run')
  assert held.fd is None
  workdir_lib.claim(tmp_path / 'run').release()  # released: claimable again


@pytest.mark.parametrize('exception, path, meaning', [
    (OSError(errno.ENOSPC, 'No space left on device', '/w/eval_history.json.tmp'), '/w/eval_history.json.tmp',
     'ENOSPC'),
    (ValueError('RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/3.orbax-checkpoint-tmp-1/d/abc": '
                'Error writing file: No space left on device [OS error 28: No space left on device]'),
     '/w/checkpoints/3.orbax-checkpoint-tmp-1/d/abc', 'ENOSPC'),
    (RuntimeError("UNKNOWN: /w/events.out.tfevents.1; Disk quota exceeded"), '/w', 'EDQUOT'),
    (PermissionError(errno.EACCES, 'Permission denied', '/w/scalars.jsonl'), '/w/scalars.jsonl', 'EACCES'),
])
def test_storage_errors_name_the_path_and_the_errno(exception, path, meaning):
  error = workdir_lib.storage_error(exception, '/w', 7)
  assert isinstance(error, errors.StorageError) and not isinstance(error, errors.ConfigError)
  assert str(error).startswith(f'{path}: ') and f'({meaning})' in str(error)
  assert 'last committed checkpoint is step 7 in /w/checkpoints' in str(error)
  assert workdir_lib.storage_error(ValueError('a shape mismatch'), '/w', 7) is None


def small_config(**overrides):
  config = configs.load('default')
  config.update_from_flattened_dict(overrides)
  return config


@pytest.mark.parametrize('overrides, message', [
    ({'batch_size': -4}, 'batch_size=-4 must be an int >= 1.'),
    ({'learning_rate': float('nan')}, 'learning_rate=nan must be a finite number.'),
    ({'learning_rate': -0.1}, 'learning_rate=-0.1 must be a number > 0.'),
    ({'mixup_alpha': float('inf')}, 'mixup_alpha=inf must be a finite number.'),
    ({'multimix.alpha': float('nan')}, 'multimix.alpha=nan must be a finite number.'),
    ({'momentum': 1.5}, 'momentum=1.5 must be in [0, 1).'),
    ({'log_every_steps': 0}, 'log_every_steps=0 must be an int >= 1.'),
    ({'seed': -1}, 'seed=-1 must be an int >= 0.'),
    ({'eval_batch_size': 0}, 'eval_batch_size=0 must be an int >= 1.'),
    ({'keep_checkpoints': 0}, 'keep_checkpoints=0 must be an int >= 1, or None (keep all).'),
    ({'weight_decay': float('-inf')}, 'weight_decay=-inf must be a finite number.'),
    ({'lr_boundaries_epochs': (50, -1)}, 'lr_boundaries_epochs=(50, -1) must be a tuple of numbers >= 0.'),
])
def test_a_value_out_of_range_is_one_line_naming_the_key_and_the_value(overrides, message):
  with pytest.raises(errors.ConfigError) as raised:
    train.validate_config(small_config(**overrides), num_devices=4)
  assert str(raised.value).splitlines()[1:] == [f'  {message}']  # no derived line on top (multimix.m, ...)


def test_every_refusal_exits_with_status_2(tmp_path):
  cases = {'bad flag': ['--bogus=1'], 'bad config': ['--config.learning_rate=nan']}  # was 2 and 1
  procs = {name: subprocess.Popen([sys.executable, '-m', 'multimix_jax.main', f'--workdir={tmp_path / "run"}', *args],
                                  cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for name, args in cases.items()}
  for name, proc in procs.items():
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2 and len(error_lines(output)) == 1, (name, output[-2000:])
  assert not (tmp_path / 'run').exists()
