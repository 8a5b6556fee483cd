"""The trainer end to end on the offline digits dataset: every method, both parallel wrappers, resume, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from multimix_jax import configs
from multimix_jax import data
from multimix_jax.trainer import methods
from multimix_jax.trainer import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def small_config(data_dir, **overrides):
  config = configs.load('default')
  config.data_dir = data_dir
  config.batch_size = 64
  config.num_train_steps = 6
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.log_every_steps = 3
  config.multimix.n = 64
  config.update_from_flattened_dict(overrides)  # keys such as 'multimix.n'
  return config


def final_params(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    restored = manager.restore(manager.latest_step())
  return restored['params'], manager.latest_step()


# On the small CNN; those that need a ViT's attention refuse it (tests/test_vit.py trains them on a tiny ViT).
# SaliencyMix, FMix and ResizeMix reach the trainer as CutMix does (one branch pasting on the input): CutMix stands
# for them here; each trains the digits default in the README's sweep.
@pytest.mark.parametrize('method', sorted(set(methods.METHODS) - set(methods.NEEDS_ATTENTION)
                                          - {'saliencymix', 'fmix', 'resizemix'}))
def test_every_method_trains_and_evaluates_every_example(method, data_dir, tmp_path):
  config = small_config(data_dir, method=method, eval_batch_size=128)  # 360 test examples: last batch padded
  summary = train.train_and_evaluate(config, str(tmp_path))
  info = data.dataset_info(config)
  with open(tmp_path / 'eval_history.json') as f:
    history = json.load(f)
  assert [h['step'] for h in history] == [3, 6]
  assert all(h['count'] == info.num_eval for h in history)
  with open(tmp_path / 'summary.json') as f:
    saved = json.load(f)
  assert saved['steps'] == 6 and saved['final_top1'] == history[-1]['top1']
  assert saved['median_last10_top1'] == np.median([h['top1'] for h in history])
  assert np.isfinite(history[-1]['loss'])
  assert summary['best_top1_over_training'] == max(h['top1'] for h in history)
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(tmp_path))


def test_eval_accuracy_matches_a_plain_forward_pass(data_dir, tmp_path):
  config = small_config(data_dir, method='erm', num_train_steps=3, eval_every_steps=3, eval_batch_size=64)
  train.train_and_evaluate(config, str(tmp_path))
  with ocp.CheckpointManager(os.path.join(tmp_path, 'checkpoints')) as manager:
    state = manager.restore(manager.latest_step())
  from multimix_jax import models  # pylint: disable=g-import-not-at-top
  model = models.create_model(config.model, num_classes=config.num_classes)
  images, labels = [], []
  for batch in data.eval_batches(config, local_batch_size=64, process_index=0, process_count=1):
    images.append(batch['image'][batch['mask']])
    labels.append(batch['label'][batch['mask']])
  images, labels = np.concatenate(images), np.concatenate(labels)
  logits = model.apply({'params': state['params'], 'batch_stats': state['batch_stats']}, images, train=False)[1]
  with open(tmp_path / 'eval_history.json') as f:
    top1 = json.load(f)[-1]['top1']
  assert len(labels) == data.dataset_info(config).num_eval
  np.testing.assert_allclose(top1, 100 * np.mean(np.argmax(logits, -1) == labels), atol=1e-4)


def test_global_scope_and_synced_batch_stats_train(data_dir, tmp_path):
  config = small_config(data_dir, method='multimix', **{'multimix.scope': 'global', 'multimix.prob': 1.0},
                        sync_batch_stats=True, num_train_steps=3)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 3 and np.isfinite(summary['final_top1'])


def test_sigterm_then_resume_equals_uninterrupted_run(data_dir, tmp_path, monkeypatch):
  config = small_config(data_dir, method='multimix', num_train_steps=8, checkpoint_every_steps=100)
  train.train_and_evaluate(config, str(tmp_path / 'straight'))
  reference, _ = final_params(str(tmp_path / 'straight'))

  train_batches = data.train_batches

  def preempted_batches(*args, **kwargs):  # a real SIGTERM while the 4th batch is read
    for i, batch in enumerate(train_batches(*args, **kwargs)):
      if i == 3 and kwargs.get('start_step', 0) == 0:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(data, 'train_batches', preempted_batches)
  summary = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert summary['preempted'] and summary['steps'] == 4
  assert final_params(str(tmp_path / 'resumed'))[1] == 4
  assert not (tmp_path / 'resumed' / 'summary.json').exists()
  summary = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert summary['resumed_from_step'] == 4 and summary['steps'] == 8
  resumed, step = final_params(str(tmp_path / 'resumed'))
  assert step == 8
  jax.tree.map(np.testing.assert_array_equal, resumed, reference)
  # scalars.jsonl holds what TensorBoard got, over both parts of the run (a repeated step: the last line counts).
  assert scalars_jsonl(tmp_path / 'resumed') == tensorboard_scalars(tmp_path / 'resumed')
  assert {'train_loss', 'learning_rate', 'eval_top1'} <= set(scalars_jsonl(tmp_path / 'resumed')[8])


def scalars_jsonl(workdir):
  scalars = {}
  for line in (workdir / 'scalars.jsonl').read_text().splitlines():
    record = json.loads(line)
    scalars.setdefault(record.pop('step'), {}).update(record)
  return {step: {k: pytest.approx(v, rel=1e-6) for k, v in values.items()} for step, values in scalars.items()}


def tensorboard_scalars(workdir):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={event_accumulator.SCALARS: 0})
  events.Reload()
  scalars = {}
  for tag in events.Tags()['scalars']:
    for event in events.Scalars(tag):  # a step written twice (a resumed run): the last event counts, as in JSON
      scalars.setdefault(event.step, {})[tag] = event.value
  return scalars


def test_sigterm_to_the_main_process_saves_and_exits(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'multimix_jax.main', f'--workdir={workdir}', f'--config.data_dir={data_dir}',
         '--config.num_train_steps=100000', '--config.checkpoint_every_steps=100000', '--config.eval_every_steps=100000']
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:  # wait until steps are running
    lines.append(line)
    if 'Training ' in line:
      break
  time.sleep(3)
  proc.send_signal(signal.SIGTERM)
  output = ''.join(lines) + proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, output
  assert 'Preempted: checkpoint saved at step' in output
  step = int(output.split('Preempted: checkpoint saved at step ')[1].split(';')[0])
  assert 0 < step < 100000
  assert final_params(str(workdir))[1] == step


def test_a_first_sigint_asks_to_save_and_a_second_stops_at_once():
  before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler, or SIG_IGN under `nohup ... &`
  with train._Preemption() as preemption:  # pylint: disable=protected-access
    os.kill(os.getpid(), signal.SIGINT)
    assert preemption.requested == 'SIGINT' and preemption.reached(1)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before


def run_cell_as_a_kernel(workdir, data_dir, num_train_steps, interrupt):
  """Runs the training cell of launch/colab_tpu.ipynb in a Python process of its own process group, as Jupyter runs
  a kernel: the trainer it starts shares the group, and an interrupt (SIGINT to the group) reaches both."""
  with open(os.path.join(REPO, 'launch', 'colab_tpu.ipynb')) as f:
    cell = next(''.join(c['source']) for c in json.load(f)['cells'] if 'train' in c['metadata'].get('tags', []))
  kernel = '\n'.join([
      'import json, os, re, signal, subprocess, sys', 'class Stop(Exception): pass',
      # Ctrl-C raises KeyboardInterrupt in a kernel, also where this test inherited an ignored SIGINT (`nohup ... &`).
      'signal.signal(signal.SIGINT, signal.default_int_handler)',
      f'PYTHON, HOME, RUN_ENV = {sys.executable!r}, {str(workdir.parent)!r}, {{"PYTHONPATH": {REPO!r}}}',
      f'CONFIG_PATH, WORKDIR, DATA_DIR = {os.path.join(REPO, "configs", "default.py")!r}, {str(workdir)!r}, {data_dir!r}',
      f'PER_DEVICE_BATCH_SIZE, DATASET, NUM_TRAIN_STEPS = 4, "", {num_train_steps}',
      'EXTRA_FLAGS = ["--config.log_every_steps=1", "--config.eval_every_steps=100000", "--config.multimix.n=16"]',
      'exec(sys.stdin.read())'])
  process = subprocess.Popen([sys.executable, '-u', '-c', kernel], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
  process.stdin.write(cell)
  process.stdin.close()
  lines = []
  for line in process.stdout:
    lines.append(line)
    if interrupt and 'train_loss' in line:  # steps are running
      os.killpg(process.pid, signal.SIGINT)  # what Jupyter's interrupt does
      break
  output = ''.join(lines) + process.stdout.read()
  process.wait(timeout=120)
  return process.returncode, output


def test_interrupting_a_notebook_run_saves_and_the_rerun_resumes(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  returncode, output = run_cell_as_a_kernel(workdir, data_dir, 100000, interrupt=True)
  assert returncode == 0, output
  step = int(output.split('Interrupted: checkpoint saved at step ')[-1].split(' ')[0])
  assert f'in {workdir}/checkpoints; run this cell again to resume.' in output
  assert 0 < step < 100000 and final_params(str(workdir))[1] == step
  returncode, output = run_cell_as_a_kernel(workdir, data_dir, step + 2, interrupt=False)
  assert returncode == 0, output
  assert f'Resumed from the checkpoint at step {step}' in output and 'Interrupted' not in output
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['resumed_from_step'] == step and summary['steps'] == step + 2


@pytest.mark.parametrize('overrides,message', [
    ({'method': 'mixmatch'}, r"method='mixmatch' is unknown"),
    ({'model': 'vit'}, r"model='vit' is unknown"),
    ({'multimix.m': 17}, r'multimix.m=17 must be in \[0, 16\].*per-device batch is 16'),
    ({'batch_size': 66}, r'batch_size=66 must be a positive multiple of the number of devices \(4\)'),
    ({'multimix.alpha': 0.0}, r'multimix.alpha=0.0 must be > 0'),
    ({'multimix.n': 0}, r'multimix.n=0 must be >= 1'),
    ({'multimix.confidence': 'attention'}, r"multimix.confidence='attention'"),
    ({'method': 'fmix', 'fmix.decay_power': 0.0}, r'fmix.decay_power=0.0 must be > 0'),
    ({'method': 'transmix'}, r"method='transmix' needs a Vision Transformer .*model='small_cnn' does not"),
    ({'method': 'resizemix', 'resizemix.scale_range': (0.5, 1.5)}, r'resizemix.scale_range=\(0.5, 1.5\) must be \(lo, hi\)'),
    ({'num_classes': 100}, r'num_classes=100 but digits has 10 classes'),
    ({'image_size': 32}, r'image_size=32 but digits images are 8x8'),
    ({'optimizer': 'lamb'}, r"optimizer='lamb' is unknown; choose one of \['adamw', 'sgd'\]"),
    ({'schedule': 'linear'}, r"schedule='linear' is unknown; choose one of \['cosine', 'piecewise'\]"),
    ({'parallelism': 'pjit'}, r"parallelism='pjit' must be one of \('shard_map', 'pmap'\)"),
])
def test_bad_config_fails_before_any_work(overrides, message, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(small_config(data_dir, **overrides), str(workdir))
  assert not workdir.exists()


def test_workdir_of_another_run_or_unrelated_files_is_refused(data_dir, tmp_path):
  config = small_config(data_dir, method='erm', num_train_steps=3)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  before = sorted(os.listdir(tmp_path / 'run'))
  config.method = 'multimix'
  with pytest.raises(train.ConfigError, match=r"(?s)holds a run with another config.*method: 'erm' in the workdir"):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert sorted(os.listdir(tmp_path / 'run')) == before
  (tmp_path / 'mine').mkdir()
  (tmp_path / 'mine' / 'notes.txt').write_text('precious')
  with pytest.raises(train.ConfigError, match='not empty and holds no multimix_jax run'):
    train.train_and_evaluate(config, str(tmp_path / 'mine'))
  assert os.listdir(tmp_path / 'mine') == ['notes.txt']


def test_resuming_may_change_bookkeeping_length_and_attacks_but_not_the_seed(tmp_path):
  config = small_config(str(tmp_path))
  saved = config.to_dict()
  del saved['attack']  # a run saved before the attack keys existed
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'config.json').write_text(json.dumps(saved))
  config.update_from_flattened_dict({'data_dir': '/elsewhere', 'num_train_steps': 600, 'attack.pgd_steps': 20,
                                     'keep_checkpoints': 1})
  train.check_workdir(config, str(tmp_path / 'run'))
  config.seed = 1
  with pytest.raises(train.ConfigError, match="seed: 0 in the workdir, 1 now"):
    train.check_workdir(config, str(tmp_path / 'run'))


@pytest.mark.parametrize('method, learning_rate', [
    ('erm', 1e30),  # the loss and the parameters overflow at once
    ('multimix', 300.0),  # BatchNorm's running variance overflows a step before the loss (the default model)
])
def test_a_diverging_run_stops_before_writing_a_non_finite_checkpoint(data_dir, tmp_path, method, learning_rate):
  config = small_config(data_dir, method=method, learning_rate=learning_rate, num_train_steps=20,
                        checkpoint_every_steps=1, log_every_steps=1, eval_every_steps=100)
  with pytest.raises(train.NonFiniteError, match=r'became NaN or infinite at step (\d+).*last good checkpoint is step'
                     ) as raised:
    train.train_and_evaluate(config, str(tmp_path))
  bad_step = int(raised.value.args[0].split('at step ')[1].split(' ')[0])
  with ocp.CheckpointManager(os.path.join(tmp_path, 'checkpoints')) as manager:
    steps = manager.all_steps()
    assert steps and max(steps) == bad_step - 1  # every step before the bad one was saved, and nothing after
    for step in steps:  # every floating value a checkpoint holds: parameters, BatchNorm statistics, optimiser state
      leaves = [np.asarray(x) for x in jax.tree.leaves(manager.restore(step))]
      assert all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.inexact)), step
  assert not (tmp_path / 'summary.json').exists()
