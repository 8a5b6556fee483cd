"""The benchmark: its statistics on constructed times with known answers, its verdicts, its method names, one tiny
end-to-end run through the command line, and the PyTorch baseline's own process wherever torch is installed.

Nothing here is timed: measured figures are checked for structure and consistency, never for speed.
"""

import functools
import json
import math
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from multimix_jax import benchmark
from multimix_jax import models
from multimix_jax.benchmark import attack_timing
from multimix_jax.benchmark import ratios
from multimix_jax.benchmark import timing
from multimix_jax.benchmark import torch_baseline
from multimix_jax.trainer import methods

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, env=None):
  """`python -m multimix_jax.benchmark ARGS` in a fresh process, from the repository."""
  return subprocess.run([sys.executable, '-m', 'multimix_jax.benchmark', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, check=False, env=env)


# ------------------------------------------------------------------------------------------------ statistics


def test_paired_ratio_of_constant_ratio_is_exact_whatever_the_drift():
  erm = [0.010, 0.031, 0.012, 0.050, 0.009]  # the machine's speed drifts fivefold between rounds
  estimate, lower, upper = ratios.paired_ratio([1.07 * t for t in erm], erm)
  assert estimate == pytest.approx(1.07) and lower == pytest.approx(1.07) and upper == pytest.approx(1.07)
  # Unpaired, the same drift would leave the ratio undecided: pairing is what resolves it.
  _, lower, upper = ratios.unpaired_ratio([1.07 * t for t in erm], erm)
  assert lower < 0.5 and upper > 2


def test_log_interval_is_the_student_t_interval_of_the_mean_log():
  z = np.array([-1.5, -0.5, 0.0, 0.5, 1.5])
  z = (z - z.mean()) / z.std(ddof=1)  # mean 0, sample sd 1
  mu, s = math.log(1.1), 0.05
  estimate, lower, upper = ratios.log_interval(np.exp(mu + s * z))
  half = 2.7764451051977987 * s / math.sqrt(5)  # t_{0.975} with 4 degrees of freedom
  assert estimate == pytest.approx(1.1)
  assert (lower, upper) == (pytest.approx(1.1 * math.exp(-half)), pytest.approx(1.1 * math.exp(half)))
  assert ratios.log_interval([1.3])[1:] == (None, None)  # one round: no interval


def test_ratio_intervals_are_symmetric_under_inversion():
  a, b = [1.0, 1.2, 0.9, 1.1], [1.0, 1.0, 1.05, 0.95]
  ab, ba = ratios.paired_ratio(a, b), ratios.paired_ratio(b, a)
  assert ab[0] == pytest.approx(1 / ba[0]) and ab[1] == pytest.approx(1 / ba[2]) and ab[2] == pytest.approx(1 / ba[1])


def test_interval_covers_the_true_ratio_about_95_percent_of_the_time():
  rng = np.random.default_rng(0)
  true, trials = 1.05, 2000
  covered = 0
  for _ in range(trials):
    erm = rng.lognormal(np.log(0.1), 0.3, size=8)  # drift shared by a round
    method = erm * true * rng.lognormal(0.0, 0.04, size=8)  # and noise of its own
    _, lower, upper = ratios.paired_ratio(method, erm)
    covered += lower <= true <= upper
  assert 0.93 < covered / trials < 0.97


def test_unpaired_ratio_welch_interval():
  estimate, lower, upper = ratios.unpaired_ratio([2.0, 2.0, 2.0], [1.0, 1.0])
  assert estimate == pytest.approx(2.0) and lower == upper == pytest.approx(2.0)
  a, b = np.exp([0.1, -0.1, 0.0]), np.exp([0.6, 0.4, 0.5, 0.5])
  estimate, lower, upper = ratios.unpaired_ratio(a, b)
  assert estimate == pytest.approx(math.exp(-0.5))
  se = math.sqrt(0.01 / 3 + (0.02 / 3) / 4)  # sample variances 0.01 and 0.02/3
  assert 1.96 * se < math.log(upper / estimate) < 4.31 * se  # between the normal and the t quantile at df 2


@pytest.mark.parametrize('lower,upper,target,at_most,expected', [
    (1.00, 1.02, 1.03, True, 'met'),
    (1.00, 1.03, 1.03, True, 'met'),  # the bound may touch the target
    (1.01, 1.05, 1.03, True, 'undecided'),
    (1.04, 1.09, 1.03, True, 'missed'),
    (None, None, 1.03, True, 'undecided'),  # one round: no interval
    (3100., 3300., 3000., False, 'met'),
    (2900., 3100., 3000., False, 'undecided'),
    (2500., 2900., 3000., False, 'missed'),
])
def test_verdict_follows_the_interval(lower, upper, target, at_most, expected):
  assert ratios.verdict(lower, upper, target, at_most=at_most) == expected


def _row(method, rounds, *, loss=None, n=None, peak=None, xla=None):
  return {'method': method, 'loss': loss or method, 'n': n, 'step_s_rounds': rounds, 'error': None,
          'peak_memory': None if peak is None else {'peak_bytes_in_use': peak},
          'xla_memory': None if xla is None else {'step_bytes': xla}}


def test_targets_are_judged_on_intervals_not_on_single_figures():
  erm = [0.100, 0.140, 0.090, 0.120, 0.100, 0.110]
  # Round ratios 0.80..1.25: a single round could read 1.25 and "missed"; their interval straddles 1.10.
  noisy = [t * f for t, f in zip(erm, (0.80, 1.20, 0.90, 1.15, 0.85, 1.25))]
  result = {'setting': {'model': 'resnet50'}, 'num_devices': 1, 'global_batch_size': 128,
            'torch': {'step_s_rounds': [t * 1.3 for t in erm]},
            'methods': [_row('erm', erm, peak=100),
                        _row('multimix_n1000', [1.01 * t for t in erm], loss='multimix', n=1000),
                        _row('dense_multimix_n1000', noisy, loss='dense_multimix', n=1000, peak=130),
                        _row('multimix_n50', [2 * t for t in erm], loss='multimix', n=50)]}
  result = ratios.add_ratios(result)
  rows = {r['method']: r for r in result['methods']}
  assert rows['erm']['ratio_to_erm'] is None
  assert rows['multimix_n1000']['ratio_to_erm'] == pytest.approx(1.01)
  checks = {target: v for target, _, v in ratios.check_targets([result], 'gpu')}
  assert checks == {
      'resnet50: multimix_n1000 step ≤ 1.03 × erm': 'met',
      'resnet50: dense_multimix_n1000 step ≤ 1.1 × erm': 'undecided',  # noise, not a "no"
      'resnet50: dense_multimix_n1000 peak device memory ≤ 1.2 × erm': 'missed',
      'resnet50 ERM > 3,000 images/s per GPU': 'missed',  # 1,176 [997, 1,387]
      "resnet50: JAX ERM speed per device ≥ PyTorch's": 'met',  # 1.30 [1.06, 1.59], unpaired (Welch)
  }


# ------------------------------------------------------------------------------------------------ methods, settings


def test_every_registered_method_builds_with_its_hyperparameters_bound():
  setting = benchmark.Setting('small_cnn', 8, (8, 8, 1), 10, 'float32', ('erm',), steps=1, rounds=1, warmup=0)
  vit = benchmark.Setting('vit_cifar', 8, (8, 8, 3), 10, 'float32', ('erm',), steps=1, rounds=1, warmup=0)
  for name in methods.METHODS:  # a method added to the registry is benchmarkable as it is (on a ViT if it needs one)
    branch = timing.make_branch(benchmark.parse_method(name), vit if name in methods.NEEDS_ATTENTION else setting,
                                num_devices=1, r=16, chunk_size=-1)
    assert callable(branch.loss_fn) and branch.timed.startswith(branch.loss_name)
  make = functools.partial(timing.make_branch, setting=setting, num_devices=1, r=16, chunk_size=-1)
  multimix = make(benchmark.parse_method('multimix_n10000'))
  assert multimix.loss_name == 'multimix' and multimix.n == 10000  # prob 1: the MultiMix branch, not the coin flip
  assert make(benchmark.parse_method('manifold_mixup')).loss_fn.keywords['stage'] == 1  # the middle of three
  assert make(benchmark.parse_method('manifold_mixup_stage2')).loss_fn.keywords['stage'] == 2
  dense = make(benchmark.parse_method('dense_multimix_n1000_chunk250'))
  assert (dense.loss_name, dense.n, dense.chunk_size) == ('dense_multimix', 1000, 250)


def test_method_names_parse_into_registry_entries():
  assert benchmark.parse_method('dense_multimix_n1000_chunk250') == benchmark.MethodSpec(
      'dense_multimix_n1000_chunk250', 'dense_multimix', n=1000, chunk_size=250)
  assert benchmark.parse_method('erm_or_input_mixup') == benchmark.MethodSpec('erm_or_input_mixup',
                                                                              'erm_or_input_mixup')
  assert benchmark.parse_method('manifold_mixup_stage0').stage == 0
  assert benchmark.parse_method('dense_multimix_n1000_conf_gap_relu') == benchmark.MethodSpec(
      'dense_multimix_n1000_conf_gap_relu', 'dense_multimix', n=1000, confidence='gap_relu')


@pytest.mark.parametrize('options,message', [
    (dict(model='small_cnn', methods='erm,mutlimix'), "unknown method 'mutlimix'"),
    (dict(model='small_cnn', methods='erm,erm_n10'), 'the loss timed (erm) takes no n; drop _n10'),
    (dict(model='small_cnn', methods='multimix_chunk5'), 'the loss timed (multimix) takes no chunk size'),
    (dict(model='small_cnn', methods='multimix_n0'), '_n<N> needs N >= 1'),
    (dict(model='small_cnn', methods='dense_multimix_conf_saliency'), '_conf_saliency is no confidence kind'),
    (dict(model='small_cnn', methods='multimix_conf_gap'), 'the loss timed (multimix) takes no confidence'),
    (dict(model='small_cnn', methods='erm,erm'), 'lists a method twice'),
    (dict(model='small_cnn', methods='erm,transmix'), 'needs the attention of a Vision Transformer (--model=vit_*)'),
    (dict(model='small_cnn', methods='manifold_mixup_stage7'), 'schedule entries 0..2'),
    (dict(model='small_cnn', methods='erm_stage1'), 'erm has one schedule entry; drop _stage1'),
    (dict(model='small_cnn', batch_size=0), '--batch_size=0 must be >= 1'),
    (dict(model='small_cnn', num_classes=1), '--num_classes=1 must be >= 2'),
    (dict(model='small_cnn', methods=' , '), '--methods is empty'),
    (dict(model='small_cnn', chunk_size=-2), '--chunk_size=-2 must be -1 (automatic)'),
    (dict(model='resnet51'), "--model='resnet51' is unknown"),
    (dict(preset='cpu', batch_size=64), '--batch_size need --model'),
    (dict(preset='cpu', model='small_cnn'), '--preset and --model exclude each other'),
])
def test_bad_values_are_refused_before_any_work(options, message):
  with pytest.raises(benchmark.BenchmarkError, match=re.escape(message)):
    for setting in benchmark.settings_from_options(benchmark.Options(**options), 'cpu'):
      timing.check_setting(setting, chunk_size=-1, num_devices=1)


def test_every_model_declares_the_input_the_benchmark_derives_its_shapes_from():
  for name, cls in models.MODELS.items():
    (setting,) = benchmark.settings_from_options(benchmark.Options(model=name, methods='erm'), 'cpu')
    assert len(setting.image_shape) == 3 and min(setting.image_shape) >= 1 and setting.num_classes >= 2, name
    model = models.create_model(name, num_classes=setting.num_classes)
    assert timing.feature_positions(model, setting.image_shape) >= 1, name
  (small,) = benchmark.settings_from_options(benchmark.Options(model='small_cnn', image_size=16, channels=3), 'cpu')
  assert small.image_shape == (16, 16, 3)
  assert timing.feature_positions(models.create_model('small_cnn', num_classes=10), small.image_shape) == 64


def test_presets_follow_the_backend_and_take_overrides():
  cpu = benchmark.settings_from_options(benchmark.Options(), 'cpu')
  assert [s.model for s in cpu] == ['small_cnn', 'preact_resnet18'] and not any(s.torch for s in cpu)
  assert all(s.rounds >= 10 for s in cpu)  # enough paired ratios for a few-percent interval
  gpu = benchmark.settings_from_options(benchmark.Options(), 'gpu')
  assert [(s.model, s.batch_size, s.image_shape, s.dtype, s.torch) for s in gpu] == [
      ('resnet50', 128, (224, 224, 3), 'bfloat16', True), ('preact_resnet18', 128, (32, 32, 3), 'bfloat16', True)]
  assert not any(s.torch for s in benchmark.settings_from_options(benchmark.Options(preset='gpu'), 'tpu'))
  (vit,) = benchmark.settings_from_options(benchmark.Options(model='vit_cifar'), 'cpu')
  (cnn,) = benchmark.settings_from_options(benchmark.Options(model='small_cnn'), 'cpu')
  assert vit.methods == cnn.methods + methods.NEEDS_ATTENTION  # the methods that read attention, where there is some
  quick = benchmark.settings_from_options(benchmark.Options(preset='gpu', rounds=2, methods='erm', torch=False), 'gpu')
  assert all(s.rounds == 2 and s.methods == ('erm',) and not s.torch and s.steps > 0 for s in quick)


# ------------------------------------------------------------------------------------------------ end to end


def test_cli_small_cnn_json_ratios_agree_with_the_recorded_times(tmp_path):
  # TensorFlow must stay out of the whole run: a stand-in that fails on import catches any import of it.
  for name in ('tensorflow', 'tensorflow_datasets'):
    (tmp_path / name).mkdir()
    (tmp_path / name / '__init__.py').write_text(f"raise ImportError('the benchmark imported {name}')\n")
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])}
  out = tmp_path / 'bench.json'
  done = cli('--model=small_cnn', '--batch_size=2', '--methods=erm,multimix_n1000', '--steps=1', '--rounds=4',
             '--warmup=1', f'--json={out}', env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  report_json = json.loads(out.read_text())
  assert report_json['environment']['backend'] == 'cpu'
  (result,) = report_json['settings']
  assert result['r'] == 16 and result['setting']['image_shape'] == [8, 8, 1]  # SmallCNN's example_input
  assert result['global_batch_size'] == 2 * result['num_devices']
  rows = {row['method']: row for row in result['methods']}
  assert list(rows) == ['erm', 'multimix_n1000']
  for row in rows.values():
    assert row['error'] is None and len(row['step_s_rounds']) == 4
    assert row['step_s'] == pytest.approx(float(np.median(row['step_s_rounds'])))
    assert row['images_per_s'] == pytest.approx(result['global_batch_size'] / row['step_s'])
    assert row['compile_s'] > 0 and row['xla_memory']['step_bytes'] > 0 and math.isfinite(row['final_loss'])
  erm, multimix = rows['erm'], rows['multimix_n1000']
  round_ratios = np.array(multimix['step_s_rounds']) / np.array(erm['step_s_rounds'])
  assert multimix['ratio_to_erm'] == pytest.approx(float(np.exp(np.mean(np.log(round_ratios)))))
  lower, upper = multimix['ratio_to_erm_ci']
  assert lower <= multimix['ratio_to_erm'] <= upper and lower <= round_ratios.max() and upper >= round_ratios.min()
  (target,) = report_json['targets']
  assert target['target'] == 'small_cnn: multimix_n1000 step ≤ 1.03 × erm'
  assert target['verdict'] == ratios.verdict(lower, upper, 1.03)
  assert report_json['markdown'] in done.stdout  # the tables printed are the ones saved
  assert f"| multimix_n1000 | multimix, n = 1000 |" in done.stdout and '| target | measured [95% CI] |' in done.stdout


def test_pmap_chunked_dense_compile_only(tmp_path):
  options = benchmark.Options(model='small_cnn', batch_size=2, parallelism='pmap', rounds=0, chunk_size=8,
                              methods='erm,dense_multimix_n30', json=str(tmp_path / 'b.json'))
  result = benchmark.run(options, log=lambda message: None)
  rows = {row['method']: row for row in result['settings'][0]['methods']}
  assert all(row['error'] is None and row['compile_s'] > 0 and row['step_s'] is None for row in rows.values())
  assert rows['dense_multimix_n30']['timed'] == 'dense_multimix, n = 30, r = 16, chunks of 8'
  assert rows['dense_multimix_n30']['ratio_to_erm'] is None and result['targets'] == []  # nothing timed, no verdict
  # Dense MultiMix's step holds more than ERM's: its (n, r, c) chunk of logits, targets and their gradients.
  assert rows['dense_multimix_n30']['xla_memory']['step_bytes'] > rows['erm']['xla_memory']['step_bytes']
  assert json.loads((tmp_path / 'b.json').read_text())['markdown'] == result['markdown']


def test_attacks_mode_times_the_analysis_passes_against_the_trainers_eval(tmp_path):
  options = benchmark.Options(model='small_cnn', batch_size=2, rounds=3, attacks=True, pgd_steps=3,
                              json=str(tmp_path / 'a.json'))
  result = benchmark.run(options, log=lambda message: None)
  (timed,) = result['attacks']
  assert timed['pgd_steps'] == 3 and timed['setting']['image_shape'] == [8, 8, 1]  # SmallCNN's example_input
  assert timed['global_batch_size'] == 2 * timed['num_devices'] and result['settings'] == []
  rounds = timed['seconds_rounds']
  assert list(rounds) == list(attack_timing.PASSES) and all(len(t) == 3 and min(t) > 0 for t in rounds.values())
  for name in attack_timing.PASSES:
    assert timed['seconds'][name] == pytest.approx(float(np.median(rounds[name])))
    assert timed['compile_and_first_call_s'][name] > 0
  assert 'trainer_eval' not in timed['ratio_to_trainer_eval']  # no ratio of a pass to itself
  for name in attack_timing.PASSES[1:]:
    ratio = timed['ratio_to_trainer_eval'][name]
    paired = np.array(rounds[name]) / np.array(rounds['trainer_eval'])
    assert ratio['estimate'] == pytest.approx(float(np.exp(np.mean(np.log(paired)))))
    assert ratio['ci'][0] <= ratio['estimate'] <= ratio['ci'][1]
  assert '| PGD-3 |' in result['markdown'] and "| trainer's eval step |" in result['markdown']
  assert json.loads((tmp_path / 'a.json').read_text())['markdown'] == result['markdown']


@pytest.mark.parametrize('options,message', [
    (dict(attacks=True, model='small_cnn', methods='erm'), 'drop --input, --torch, --peak_memory and --methods'),
    (dict(attacks=True, model='small_cnn', pgd_steps=0), '--pgd_steps=0 must be >= 1'),
    (dict(attacks=True, target='v5e-8'), '--target compiles only: drop --input, --attacks'),
])
def test_attacks_mode_refuses_what_it_cannot_time(options, message):
  with pytest.raises(benchmark.BenchmarkError, match=re.escape(message)):
    benchmark.run(benchmark.Options(json='', **options), log=lambda message: None)


def test_bad_command_lines_end_in_one_error_line():
  for args, message in ((['--model=resnet51'], 'flag --model=resnet51: value should be one of'),
                        (['--model=small_cnn', '--methods=erm,mutlimix'], "unknown method 'mutlimix'")):
    done = cli(*args, '--json=')
    assert done.returncode != 0 and 'Traceback' not in done.stderr, done.stderr
    # Without those of the CUDA plugin (extra 'compile-gpu'), which logs at every JAX start on a machine with no GPU.
    lines = [line for line in done.stderr.strip().splitlines()
             if not re.search(r'cudart_stub\.cc|before absl::InitializeLog\(\) is called', line)]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], done.stderr


@pytest.mark.fidelity
def test_torch_baseline_runs_in_its_own_process_on_the_authors_network(torch):  # pylint: disable=unused-argument
  setting = benchmark.Setting('preact_resnet18', 2, (8, 8, 3), 10, 'float32', ('erm',), steps=1, rounds=2, warmup=0,
                              torch=True)
  result = torch_baseline.run_isolated(setting)
  assert 'error' not in result, result
  assert result['compiled'] is False  # torch.compile is off by default on a CPU
  assert len(result['step_s_rounds']) == 2 and result['step_s'] > 0 and math.isfinite(result['final_loss'])
  # The same network as the Flax one: as many parameters.
  variables = jax.eval_shape(lambda: models.create_model('preact_resnet18', num_classes=10).init(
      jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32), train=False))
  assert result['num_params'] == sum(x.size for x in jax.tree.leaves(variables['params']))
  small = benchmark.Setting('small_cnn', 2, (8, 8, 1), 10, 'float32', ('erm',), steps=1, rounds=1, warmup=0)
  assert torch_baseline.measure(small.to_json()) == {'error': 'no PyTorch version of small_cnn'}  # a row, not a crash
