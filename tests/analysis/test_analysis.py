"""The analysis: each figure against a hand computation on small fixed inputs, then one tiny trained run end to end.

The run (30 steps of the digits default over 4 host devices) is trained once for the module.
"""

import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimix_jax import analysis
from multimix_jax import configs
from multimix_jax.analysis import attacks
from multimix_jax.analysis import metrics
from multimix_jax.analysis import outputs
from multimix_jax.analysis import runs as runs_lib


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------------------------- calibration


def test_ece_of_constructed_predictions():
  # Bin (0.8, 0.8667]: 4 examples at confidence 0.85, 2 right -> |0.5 - 0.85| = 0.35, weight 4/10.
  # Bin (0.6, 0.6667]: 6 examples at confidence 0.65, 6 right -> |1 - 0.65| = 0.35, weight 6/10.
  probs = np.array([[0.85, 0.15]] * 4 + [[0.35, 0.65]] * 6)
  labels = np.array([0, 0, 1, 1] + [1] * 6)
  result = metrics.calibration(probs, labels)
  assert result['ece'] == pytest.approx(0.4 * 0.35 + 0.6 * 0.35)
  counts = {round(b['lower'] * 15): b['count'] for b in result['bins'] if b['count']}
  assert counts == {12: 4, 9: 6}
  assert len(result['bins']) == 15 and sum(b['count'] for b in result['bins']) == 10


def test_ece_is_zero_when_accuracy_equals_confidence_in_every_bin():
  probs = np.array([[0.8, 0.2]] * 10 + [[0.5, 0.5]] * 2)  # 8 of 10 right at 0.8; 1 of 2 at 0.5
  labels = np.array([0] * 8 + [1] * 2 + [0, 1])
  assert metrics.calibration(probs, labels)['ece'] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ embedding space


def test_alignment_and_uniformity_of_known_points():
  # Scaled copies of e1, e1 (class 0) and e2, -e2 (class 1): normalised first.
  z = np.array([[3.0, 0.0], [0.5, 0.0], [0.0, 2.0], [0.0, -1.0]])
  labels = np.array([0, 0, 1, 1])
  # Ordered positive pairs: (0,1), (1,0) at distance 0; (2,3), (3,2) at distance 2 -> mean of 0, 0, 4, 4.
  assert metrics.alignment(z, labels) == pytest.approx(2.0)
  # Distinct pairs: d² = 0 (class 0), 4 (class 1) and 2 for the four cross pairs.
  figures = metrics.pairwise_figures(z, labels)
  assert figures['uniformity'] == pytest.approx(np.log((np.exp(0) + np.exp(-8) + 4 * np.exp(-4)) / 6))
  assert figures['intra_class_distance'] == pytest.approx(1.0)  # (0 + 2) / 2
  assert figures['inter_class_distance'] == pytest.approx(np.sqrt(2))
  assert figures['intra_inter_ratio'] == pytest.approx(1 / np.sqrt(2))


def test_embedding_figures_agree_with_brute_force_over_pairs():
  rng = np.random.default_rng(0)
  z, labels = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
  u = z / np.linalg.norm(z, axis=1, keepdims=True)
  pairs = [(i, j) for i, j in itertools.permutations(range(40), 2) if labels[i] == labels[j]]
  assert metrics.alignment(z, labels) == pytest.approx(np.mean([np.sum((u[i] - u[j])**2) for i, j in pairs]))
  assert metrics.alignment(z, labels, alpha=1.0) == pytest.approx(
      np.mean([np.linalg.norm(u[i] - u[j]) for i, j in pairs]))
  distinct = list(itertools.combinations(range(40), 2))
  d = {p: np.linalg.norm(u[p[0]] - u[p[1]]) for p in distinct}
  figures = metrics.pairwise_figures(z, labels, block=7)  # blocks that do not divide the points
  assert figures['uniformity'] == pytest.approx(np.log(np.mean([np.exp(-2 * d[p]**2) for p in distinct])))
  intra = np.mean([d[p] for p in distinct if labels[p[0]] == labels[p[1]]])
  inter = np.mean([d[p] for p in distinct if labels[p[0]] != labels[p[1]]])
  assert figures['intra_inter_ratio'] == pytest.approx(intra / inter)


# ------------------------------------------------------------------------------------------------- attacks


def _linear(w, b):
  return lambda x: x.reshape(x.shape[0], -1) @ w + b


def test_fgsm_on_a_linear_model_is_the_closed_form_worst_case():
  # Two classes, logits W x + b: the margin z_y - z_o falls by at most eps * ||w_y - w_o||_1 over the L∞ ball,
  # reached at x - eps sign(w_y - w_o); pixels in [0.3, 0.7] so that [0, 1] does not bind at eps = 0.1.
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.standard_normal((12, 2)), jnp.float32)
  b = jnp.asarray([0.1, -0.2], jnp.float32)
  x = jnp.asarray(rng.uniform(0.3, 0.7, (6, 2, 2, 3)), jnp.float32)
  y = jnp.asarray([0, 1, 0, 1, 1, 0])
  eps = 0.1
  fn = _linear(w, b)
  direction = w[:, y].T - w[:, 1 - y].T  # (6, 12): w_y - w_o per example
  expected = x - eps * jnp.sign(direction).reshape(x.shape)
  x_adv = jax.jit(attacks.fgsm, static_argnums=0)(fn, x, y, eps)
  np.testing.assert_allclose(x_adv, expected, atol=1e-6)

  def margin(images):
    z = fn(images)
    return z[jnp.arange(6), y] - z[jnp.arange(6), 1 - y]

  np.testing.assert_allclose(margin(x_adv), margin(x) - eps * jnp.abs(direction).sum(1), rtol=1e-5, atol=1e-5)
  # PGD cannot do better than the closed form, and with 10 steps of eps / 4 it reaches it.
  pgd = jax.jit(functools.partial(attacks.pgd, fn, steps=10, step_size=eps / 4))
  x_pgd = pgd(x, y, eps, jax.random.key(0))
  np.testing.assert_allclose(margin(x_pgd), margin(x_adv), rtol=1e-5, atol=1e-5)


def test_attacks_stay_in_the_eps_ball_and_in_pixel_range():
  rng = np.random.default_rng(2)
  w1 = jnp.asarray(rng.standard_normal((48, 16)), jnp.float32)
  w2 = jnp.asarray(rng.standard_normal((16, 5)), jnp.float32)
  fn = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2
  x = jnp.asarray(rng.choice([0.0, 0.02, 0.5, 0.99, 1.0], (8, 4, 4, 3)), jnp.float32)  # at and near the bounds
  y = jnp.asarray(rng.integers(0, 5, 8))
  fgsm = jax.jit(functools.partial(attacks.fgsm, fn))
  pgd = jax.jit(functools.partial(attacks.pgd, fn, steps=5, step_size=0.02))
  for x_adv in (fgsm(x, y, 0.05), pgd(x, y, 0.05, jax.random.key(1))):
    assert float(jnp.abs(x_adv - x).max()) <= 0.05 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


# ----------------------------------------------------------------------------------------- a trained run


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top

  config = configs.load('default')
  config.data_dir = str(tmp_path_factory.mktemp('tfds'))
  config.batch_size = 64
  config.num_train_steps = 30
  config.eval_every_steps = 15
  config.checkpoint_every_steps = 15
  config.log_every_steps = 5
  config.eval_batch_size = 128  # 360 test examples over 4 devices: the last batch is padded
  config.multimix.n = 64
  workdir = str(tmp_path_factory.mktemp('run') / 'multimix' / 'seed0')
  train.train_and_evaluate(config, workdir)
  return workdir


FAST = analysis.Options(tsne_points=120, tsne_iterations=250, interpolations=30, attack_examples=100)


def _files(directory):
  return {os.path.relpath(os.path.join(root, name), directory)
          for root, _, names in os.walk(directory) for name in names}


@pytest.fixture(scope='module')
def analysed(run_dir):
  before = _files(run_dir)
  result = analysis.analyze([run_dir], options=FAST)
  return result, before


def test_analysis_writes_every_file_and_nothing_else(run_dir, analysed):
  result, before = analysed
  out = os.path.join(run_dir, 'analysis')
  expected = {'analysis.json', 'report.md', 'reliability.png', 'projection.png', 'curves.png'}
  assert set(result['outputs'][out]) == expected
  assert _files(out) == expected
  assert all(os.path.getsize(os.path.join(out, name)) > 0 for name in expected)
  assert _files(run_dir) - before == {f'analysis/{name}' for name in expected}
  with open(os.path.join(out, 'report.md')) as f:
    report = f.read()
  assert all(f'({name})' in report for name in expected if name.endswith('.png'))
  assert ('Attacks in pixel units [0, 1], from config.json: FGSM ε = 0.1; PGD ε = 0.1, 10 steps of 0.025 from a '
          'uniform random start in the ball; on 128 examples') in report


def test_accuracy_and_nll_equal_the_trainers_final_evaluation(run_dir, analysed):
  figures = analysed[0]['runs'][0]
  with open(os.path.join(run_dir, 'eval_history.json')) as f:
    final = json.load(f)[-1]
  assert figures['checkpoint_step'] == final['step'] == 30
  assert figures['examples'] == final['count'] == 360
  assert figures['top1'] == final['top1'] and figures['top5'] == final['top5']
  assert figures['nll'] == pytest.approx(final['loss'], rel=1e-6)
  with open(os.path.join(run_dir, 'analysis', 'analysis.json')) as f:
    saved = json.load(f)
  assert saved['top1'] == figures['top1'] and saved['devices'] == jax.device_count() == 4


def test_a_relative_workdir_is_analysed(run_dir, analysed, monkeypatch, tmp_path):
  """`--workdir=runs/default`, as the README writes it: Orbax wants absolute paths, the analysis makes them so."""
  monkeypatch.chdir(os.path.dirname(run_dir))
  options = analysis.Options(metrics=('accuracy',))
  figures = analysis.analyze([os.path.basename(run_dir)], out=str(tmp_path), options=options)['runs'][0]
  assert figures['top1'] == analysed[0]['runs'][0]['top1']


def test_figures_of_the_run_are_in_range(analysed):
  figures = analysed[0]['runs'][0]
  assert 0 <= figures['ece'] <= 100
  assert 0 <= figures['alignment'] <= 4  # squared distances of unit vectors
  assert -4 * 2 <= figures['uniformity'] <= 0  # log E exp(-2 d²), d² in [0, 4]
  assert 0 < figures['intra_inter_ratio']
  assert figures['attack_examples'] == 128  # one batch
  assert figures['attack'] == {**configs.load('default').attack.to_dict(), 'source': 'config.json'}  # the run's own
  # PGD is at least as strong as FGSM at the same eps, and neither is weaker than no attack.
  assert figures['clean_error'] <= figures['fgsm_error'] <= figures['pgd_error']
  curves = figures['curves']
  assert curves['eval_steps'] == [15, 30] and curves['train_steps'] == [5, 10, 15, 20, 25, 30]
  assert len(figures['projection']) and figures['projection']['interpolations'] == 30


def test_comparison_groups_seeds_and_writes_its_files(run_dir, tmp_path):
  root = tmp_path / 'sweep'
  for name, seed, method in (('multimix', 0, None), ('multimix', 1, None), ('erm', 0, 'erm')):
    copy = root / name / f'seed{seed}'
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns('analysis'))
    config = json.loads((copy / 'config.json').read_text())
    config['seed'] = seed
    config['method'] = method or config['method']
    if seed == 1:  # a config.json written before the attack keys: it gets the shipped digits config's
      del config['attack']
    (copy / 'config.json').write_text(json.dumps(config))
  out = tmp_path / 'compare'
  workdirs = [str(root / 'multimix' / 'seed0'), str(root / 'multimix' / 'seed1'), str(root / 'erm' / 'seed0')]
  result = analysis.analyze(workdirs, str(out), analysis.Options(
      metrics=('accuracy', 'embedding', 'projection', 'curves'), tsne_points=80, tsne_iterations=250,
      interpolations=10))
  assert _files(out) == {'analysis.json', 'report.md', 'curves.png', 'projections.png'}
  summary = json.loads((out / 'analysis.json').read_text())
  groups = {g['label']: g for g in summary['groups']}
  assert set(groups) == {'multimix', 'erm'} and groups['multimix']['seeds'] == [0, 1]
  top1 = groups['multimix']['top1']
  assert top1['mean'] == pytest.approx(result['runs'][0]['top1']) and top1['sd'] == pytest.approx(0.0)
  assert groups['erm']['top1']['sd'] is None
  report = (out / 'report.md').read_text()
  assert '| multimix | 2 |' in report and ' ± ' in report and '| erm | 1 |' in report
  for workdir in workdirs:
    assert _files(os.path.join(workdir, 'analysis')) >= {'analysis.json', 'report.md'}


# ---------------------------------------------------------------------------------------------- errors


def _copy(run_dir, tmp_path, name='copy'):
  copy = tmp_path / name
  shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns('analysis'))
  return copy


def test_a_workdir_without_checkpoint_stops_with_one_error_line(run_dir, tmp_path):
  command = 'multimix_jax.analysis'
  copy = _copy(run_dir, tmp_path)
  shutil.rmtree(copy / 'checkpoints')
  before = _files(copy)
  proc = subprocess.run([sys.executable, '-m', command, f'--workdir={copy}'], capture_output=True,
                        text=True, cwd=REPO, check=False, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and 'has no checkpoint' in errors[0]
  assert _files(copy) == before


def test_a_checkpoint_of_another_model_is_refused_before_any_work(run_dir, tmp_path):
  copy = _copy(run_dir, tmp_path)
  config = json.loads((copy / 'config.json').read_text())
  (copy / 'config.json').write_text(json.dumps({**config, 'model': 'preact_resnet18', 'image_size': 8}))
  good = _copy(run_dir, tmp_path, 'good')
  with pytest.raises(analysis.AnalysisError, match='is not a preact_resnet18 of this code'):
    analysis.analyze([str(good), str(copy)], str(tmp_path / 'out'))
  (copy / 'config.json').write_text(json.dumps({**config, 'model': 'no_such_model'}))
  with pytest.raises(analysis.AnalysisError, match='is not a model of this code'):
    analysis.analyze([str(copy)])
  assert not (tmp_path / 'out').exists() and not (good / 'analysis').exists()  # nothing written for the good run


def test_bad_requests_are_refused(run_dir, tmp_path):
  with pytest.raises(analysis.AnalysisError, match="unknown metric 'sharpness'"):
    analysis.analyze([run_dir], options=analysis.Options(metrics=('accuracy', 'sharpness')))
  with pytest.raises(analysis.AnalysisError, match='give --out'):
    analysis.analyze([run_dir, run_dir])
  with pytest.raises(analysis.AnalysisError, match='holds no multimix_jax run'):
    analysis.analyze([str(tmp_path)])
  with pytest.raises(analysis.AnalysisError, match=re.escape('attack.pgd_steps=0 must be an int >= 1 (--pgd_steps)')):
    analysis.analyze([run_dir], options=analysis.Options(pgd_steps=0))
  with pytest.raises(analysis.AnalysisError, match=re.escape('attack.fgsm_eps=2.0 must be in (0, 1]')):
    analysis.analyze([run_dir], options=analysis.Options(fgsm_eps=2.0))


# ------------------------------------------------------------------------------------------- run files


def test_train_loss_is_read_from_scalars_jsonl_without_tensorboard(tmp_path, monkeypatch):
  lines = [{'step': 5, 'train_loss': 2.0, 'train_accuracy': 10.0}, {'step': 10, 'train_loss': 1.5},
           {'step': 10, 'eval_accuracy': 50.0},  # no train loss at this record
           {'step': 10, 'train_loss': 1.25},  # a resumed run logs step 10 again: the last value is kept
           {'step': 15, 'train_loss': 1.0}]
  (tmp_path / 'scalars.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines) + '{"step": 20, "tr')
  (tmp_path / 'events.out.tfevents.0.host').write_bytes(b'')  # present, but scalars.jsonl comes first
  monkeypatch.setitem(sys.modules, 'tensorboard', None)  # any import of tensorboard now fails
  steps, values, source = runs_lib.train_scalar(str(tmp_path), 'train_loss')
  assert source == 'scalars.jsonl' and steps.tolist() == [5, 10, 15] and values.tolist() == [2.0, 1.25, 1.0]
  (tmp_path / 'scalars.jsonl').write_text('{"step": 1, "train_loss": 1.0}\nnot json\n{"step": 2}\n')
  with pytest.raises(analysis.AnalysisError, match='scalars.jsonl, line 2: not JSON'):  # only the last may be cut
    runs_lib.train_scalar(str(tmp_path), 'train_loss')


def test_train_loss_falls_back_to_the_tensorboard_events(tmp_path):
  from multimix_jax.trainer import summaries  # pylint: disable=g-import-not-at-top

  writer = summaries.Writer(tmp_path, write_files=True)  # as the trainer writes them
  for step, loss in ((5, 2.0), (10, 1.5), (10, 1.25), (15, 1.0)):
    writer.write_scalars(step, {'train_loss': loss, 'train_accuracy': 3.0})
  writer.close()
  os.remove(tmp_path / summaries.SCALARS_FILE)  # the events alone
  steps, values, source = runs_lib.train_scalar(str(tmp_path), 'train_loss')
  assert source == 'tensorboard' and steps.tolist() == [5, 10, 15] and values.tolist() == [2.0, 1.25, 1.0]
  steps, values, source = runs_lib.train_scalar(str(tmp_path), 'eval_loss')  # a name never logged
  assert source == 'tensorboard' and steps.size == values.size == 0
  (tmp_path / 'empty').mkdir()
  steps, values, source = runs_lib.train_scalar(str(tmp_path / 'empty'), 'train_loss')
  assert source is None and steps.size == values.size == 0


def test_runs_are_seeds_of_one_config_unless_training_or_the_attacks_differ():
  base = configs.load('default')

  def run(**overrides):
    config = base.copy_and_resolve_references()
    config.update_from_flattened_dict(overrides)
    return runs_lib.Run(workdir='w', config=config, step=1, label='w', attack_source='config.json')

  runs = [run(), run(seed=1, data_dir='/elsewhere', eval_batch_size=64, keep_checkpoints=1),
          run(num_train_steps=7), run(**{'attack.pgd_eps': 0.2}), run(seed=2, **{'attack.pgd_eps': 0.2})]
  assert runs_lib.group_runs(runs) == [[0, 1], [2], [3, 4]]


def test_attack_settings_are_printed_in_pixel_units():
  assert outputs.pixels(8 / 255) == '8/255 (0.03137)' and outputs.pixels(0.1) == '0.1'
  cifar = dict(fgsm_eps=8 / 255, pgd_eps=4 / 255, pgd_steps=10, pgd_step_size=2 / 255, pgd_random_start=True)
  text = 'FGSM ε = 8/255 (0.03137); PGD ε = 4/255 (0.01569), 10 steps of 2/255 (0.007843) from a uniform random start'
  assert outputs.attack_text(cifar).startswith(text)
  rows = [{'label': 'a', 'attack': cifar}, {'label': 'b', 'attack': cifar}, {'label': 'c'}]
  assert outputs.attack_lines(rows) == f'\nAttacks in pixel units [0, 1]: {outputs.attack_text(cifar)}.\n'
  rows[1]['attack'] = {**cifar, 'pgd_random_start': False}
  assert outputs.attack_lines(rows).count('\n- ') == 2 and 'from the clean image' in outputs.attack_lines(rows)
