"""The benchmark command on its smallest setting: JSON and table written, no TensorFlow, one clear error per bad flag.

Nothing here is timed: the figures the benchmark measures are checked for presence and sense, never for speed.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from multimix_jax import benchmark
from multimix_jax import methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, code=None):
  """Runs `python -m multimix_jax.benchmark ARGS` (or `code`) in a fresh process from the repository."""
  command = [sys.executable, '-c', code] if code else [sys.executable, '-m', 'multimix_jax.benchmark', *args]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_cli_smallest_setting_writes_json_and_table_without_tensorflow(tmp_path):
  out = tmp_path / 'bench.json'
  args = ['--model=small_cnn', '--batch_size=4', '--methods=erm,multimix_n50',
          '--steps=1', '--rounds=2', '--warmup=1', '--torch', f'--json={out}']
  # The whole run, not only the import, must leave TensorFlow out.
  done = cli(code=f'import sys\nfrom multimix_jax import benchmark\nbenchmark.main({args!r})\n'
             "assert 'tensorflow' not in sys.modules, 'the benchmark imported TensorFlow'")
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report['environment']['backend'] == 'cpu'
  (result,) = report['settings']
  assert result['setting']['model'] == 'small_cnn' and result['r'] == 16  # 8×8 input, 4×4 final map
  assert result['global_batch_size'] == 4 * result['num_devices']
  rows = {row['method']: row for row in result['methods']}
  assert list(rows) == ['erm', 'multimix_n50']
  for row in rows.values():
    assert row['error'] is None
    assert len(row['step_s_rounds']) == 2 and row['step_s'] > 0 and row['images_per_s'] > 0
    assert row['compile_s'] > 0 and row['ratio_to_erm'] > 0 and row['paired_ratio_to_erm'] > 0
    assert row['xla_memory']['step_bytes'] > 0
    assert row['peak_memory'] is None  # CPU reports no device memory
    assert row['final_loss'] > 0
  assert rows['erm']['ratio_to_erm'] == 1.0
  assert rows['multimix_n50']['n'] == 50
  # PyTorch has no small CNN (nor, maybe, an installation here): its row says so instead of failing the run.
  assert result['torch']['error'] in ('torch is not installed', 'no PyTorch version of small_cnn')
  assert '| PyTorch | ' in done.stdout
  # The table on stdout is the one in the JSON.
  assert report['markdown'] in done.stdout
  assert '| method | timed |' in done.stdout and '| multimix_n50 |' in done.stdout


def test_pmap_manifold_stage_and_chunked_dense_compile_only(tmp_path):
  args = benchmark._parser().parse_args(['--model=small_cnn', '--batch_size=2', '--parallelism=pmap', '--rounds=0',
                                         '--methods=manifold_mixup_stage2,dense_multimix_n30',
                                         '--chunk_size=8', f'--json={tmp_path / "b.json"}'])
  report = benchmark.run(args, log=lambda message: None)
  rows = {row['method']: row for row in report['settings'][0]['methods']}
  assert all(row['error'] is None and row['compile_s'] > 0 and row['step_s'] is None for row in rows.values())
  assert rows['manifold_mixup_stage2']['timed'] == 'manifold_mixup at stage 2 only'
  assert rows['dense_multimix_n30']['chunk_size'] == 8
  assert json.loads((tmp_path / 'b.json').read_text())['markdown'] == report['markdown']


def test_module_import_leaves_tensorflow_out():
  done = cli(code="import sys\nimport multimix_jax.benchmark\nprint('tensorflow' in sys.modules)")
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == 'False'


@pytest.mark.parametrize('args,message', [
    (['--model=small_cnn', '--methods=erm,mutlimix'], "unknown method 'mutlimix'"),
    (['--model=resnet51'], "argument --model: invalid choice: 'resnet51'"),
])
def test_bad_flags_give_one_clear_error(args, message):
  done = cli(*args, '--json=')
  assert done.returncode == 2
  error = [line for line in done.stderr.splitlines() if 'error:' in line]
  assert len(error) == 1 and message in error[0], done.stderr


@pytest.mark.parametrize('flags,message', [
    (['--model=small_cnn', '--methods=erm,erm_n10'], '_n<N> (N >= 1) applies to multimix and dense_multimix only'),
    (['--model=small_cnn', '--methods=multimix_chunk5'], '_chunk<K> applies to dense_multimix only'),
    (['--model=small_cnn', '--methods=erm,erm'], 'lists a method twice'),
    (['--model=small_cnn', '--methods=manifold_mixup_stage7'], 'schedule entries 0..2'),
    (['--model=small_cnn', '--batch_size=0'], '--batch_size=0 must be >= 1'),
    (['--model=small_cnn', '--methods='], '--methods is empty'),
    (['--model=small_cnn', '--chunk_size=-2'], '--chunk_size=-2 must be -1 (automatic)'),
    (['--preset=cpu', '--batch_size=64'], '--batch_size need --model'),
    (['--preset=cpu', '--model=small_cnn'], '--preset and --model exclude each other'),
])
def test_bad_values_are_refused_before_any_work(flags, message):
  args = benchmark._parser().parse_args(flags)
  with pytest.raises(benchmark.BenchmarkError, match=re.escape(message)):
    for setting in benchmark.settings_from_args(args, 'cpu'):
      for name in setting.methods:  # schedule entries are checked when the branch is made
        benchmark.make_branch(benchmark.parse_method(name), setting, num_devices=1, r=16, chunk_size=-1)


def test_presets_follow_the_backend_and_take_overrides():
  parse = benchmark._parser().parse_args
  cpu = benchmark.settings_from_args(parse([]), 'cpu')
  assert [s.model for s in cpu] == ['small_cnn', 'preact_resnet18'] and not any(s.torch for s in cpu)
  gpu = benchmark.settings_from_args(parse([]), 'gpu')
  assert [(s.model, s.batch_size, s.dtype, s.torch) for s in gpu] == [('resnet50', 128, 'bfloat16', True),
                                                                       ('preact_resnet18', 128, 'bfloat16', True)]
  assert not any(s.torch for s in benchmark.settings_from_args(parse(['--preset=gpu']), 'tpu'))
  quick = benchmark.settings_from_args(parse(['--preset=gpu', '--rounds=2', '--methods=erm', '--no-torch']), 'gpu')
  assert all(s.rounds == 2 and s.methods == ('erm',) and not s.torch and s.steps > 0 for s in quick)


def test_method_names_parse_into_registry_entries():
  assert benchmark.parse_method('dense_multimix_n1000_chunk250') == benchmark.MethodSpec(
      'dense_multimix_n1000_chunk250', 'dense_multimix', n=1000, chunk_size=250)
  assert benchmark.parse_method('erm_or_input_mixup').base == 'erm_or_input_mixup'
  assert benchmark.parse_method('multimix').n is None
  for name in benchmark.ALL_METHODS:
    assert benchmark.parse_method(name).base in methods.METHODS


def test_branches_time_the_multimix_branch_itself():
  setting = benchmark._preset('cpu')[0]
  make = lambda name: benchmark.make_branch(benchmark.parse_method(name), setting, num_devices=1, r=16,
                                            chunk_size=-1)
  multimix = make('multimix_n10000')
  assert multimix.loss_fn is methods.multimix and multimix.config.multimix.n == 10000
  assert multimix.config.multimix.prob == 1.0
  assert make('dense_multimix').loss_fn is methods.dense_multimix
  manifold = make('manifold_mixup')
  assert manifold.loss_fn.keywords == {'stage': 1}
  assert make('erm').config.batch_size == setting.batch_size


def test_targets_are_reported_from_measurements():
  def row(method, ratio, n=None, peak=None):
    return {'method': method, 'n': n, 'ratio_to_erm': ratio, 'images_per_s': 4000.0 / ratio,
            'peak_memory': {'peak_bytes_in_use': peak}, 'xla_memory': None, 'error': None}

  result = {'setting': {'model': 'resnet50'}, 'num_devices': 1, 'torch': {'images_per_s': 3500.0},
            'methods': [row('erm', 1.0, peak=100), row('multimix_n1000', 1.01, 1000, 100),
                        row('dense_multimix_n1000', 1.2, 1000, 130)]}
  checks = {target: met for target, _, met in benchmark.check_targets([result], 'gpu')}
  assert checks == {
      'resnet50: multimix_n1000 step ≤ 1.03 × erm': 'yes',
      'resnet50: dense_multimix_n1000 step ≤ 1.1 × erm': 'no',
      'resnet50: dense_multimix_n1000 peak device memory ≤ 1.2 × erm': 'no',
      'resnet50 ERM > 3,000 images/s per GPU': 'yes',
      'resnet50: JAX ERM images/s ≥ PyTorch': 'yes',
  }


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='PyTorch is not installed')
def test_torch_baseline_runs_and_matches_the_parameter_count():
  assert sum(p.numel() for p in benchmark._torch_model('preact_resnet18', 100).parameters()) == 11_217_444
  setting = benchmark.Setting('preact_resnet18', 2, 32, 3, 100, 'float32', ('erm',), steps=1, rounds=1, warmup=0)
  result = benchmark.torch_benchmark(setting, compile_model=False)
  assert result['images_per_s'] > 0 and result['num_params'] == 11_217_444
