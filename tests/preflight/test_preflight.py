"""Compiling for hardware that is not here: target names, the TPU and GPU compilers on compile-only devices, the
preflight's table and its refusal of a step that cannot fit.

The TPU tests need libtpu (`pip install -e '.[compile]'`, which `.ci/run` installs: in CI a missing libtpu fails
them) and the GPU tests the CUDA plugin (`pip install -e '.[compile-gpu]'`), which CI does not install: on a machine
without a GPU the plugin logs to stderr at every JAX start, which the one-`error:`-line tests of the command lines
would see. Where it is missing, the GPU tests are skipped.
"""

import dataclasses
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import pytest

from multimix_jax import models
from multimix_jax import preflight
from multimix_jax.configs import cifar10_r18
from multimix_jax.configs import default as default_config
from multimix_jax.preflight import child
from multimix_jax.preflight import compile as compile_lib
from multimix_jax.preflight import roofline
from multimix_jax.trainer import methods
from multimix_jax.trainer import optim
from multimix_jax.trainer import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_GIB = 2**30


def _installed(module):
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # its parent package is missing too (no jax_plugins without a plugin)
    return False


def _need(module, what, *, in_ci=True):
  if not _installed(module):
    if in_ci and os.environ.get('CI') == 'true':
      pytest.fail(f'{module} is not installed: .ci/run must install {what}.')
    pytest.skip(f'{module} is not installed ({what})')


needs_tpu = functools.partial(_need, 'libtpu', "the extra 'compile' (jax[tpu])")
needs_gpu = functools.partial(_need, 'jax_plugins.xla_cuda12', "the extra 'compile-gpu' (jax[cuda12-local])",
                              in_ci=False)


@pytest.mark.parametrize('name, chip, chips, hosts, topology', [
    ('v4-8', 'TPU v4', 4, 1, (2, 2, 1)),
    ('v4-32', 'TPU v4', 16, 4, (2, 2, 4)),
    ('v4-4096', 'TPU v4', 2048, 512, (8, 16, 16)),
    ('v5p-8', 'TPU v5p', 4, 1, (2, 2, 1)),
    ('v5litepod-8', 'TPU v5e', 8, 1, (2, 4)),
    ('v5e-8', 'TPU v5e', 8, 1, (2, 4)),
    ('v5e-1', 'TPU v5e', 1, 1, (1, 1)),
    ('v5e-32', 'TPU v5e', 32, 8, (4, 8)),
    ('v6e-8', 'TPU v6e', 8, 1, (2, 4)),
    ('v6e-256', 'TPU v6e', 256, 64, (16, 16)),
    ('h100x1', 'NVIDIA H100 SXM 80GB', 1, 1, (1, 1, 1)),
    ('h200x8', 'NVIDIA H200 SXM 141GB', 8, 1, (1, 1, 8)),
    ('a100-40gbx8', 'NVIDIA A100 SXM 40GB', 8, 1, (1, 1, 8)),
    ('a100-80gbx16', 'NVIDIA A100 SXM 80GB', 16, 2, (1, 2, 8)),
])
def test_target_names_resolve_as_cloud_and_nvidia_name_them(name, chip, chips, hosts, topology):
  target = preflight.resolve(name)
  assert (target.chip.name, target.chips, target.hosts, target.topology) == (chip, chips, hosts, topology)


@pytest.mark.parametrize('name, message', [
    *[(name, f"unknown target '{name}'; known targets: v4-{{8,16,") for name in
      ('v5e-7', 'v4-6', 'v4-2', 'v5p-3', 'b200x8', 'tpu', 'v5e8', 'h100')],
    ('h100x12', 'must be 1 to 8 (one node) or a multiple of 8'),
    ('h100x0', 'must be 1 to 8 (one node) or a multiple of 8'),
])
def test_unknown_target_names_are_refused_with_the_known_ones(name, message):
  with pytest.raises(preflight.TargetError, match=re.escape(message)):
    preflight.resolve(name)


def test_every_chip_fact_is_positive_and_sourced():
  for chip in preflight.CHIPS.values():
    assert chip.hbm_bytes > 0 and chip.peak_flops > 1e12 and chip.hbm_bytes_per_s > 1e11
    assert chip.sources and all(s.startswith('https://') for s in chip.sources)
    assert (chip.tpu_family is None) == (chip.platform == 'cuda') == (chip.gpu_spec is not None)
    if chip.gpu_spec:
      assert os.path.isfile(os.path.join(os.path.dirname(preflight.hardware.__file__), 'gpu_specs', chip.gpu_spec))
      assert chip.usable_source


def test_chip_row_per_chip_figures_fit_and_roofline_bound():
  memory = {'argument_size_in_bytes': 2 * _GIB, 'output_size_in_bytes': 2 * _GIB, 'alias_size_in_bytes': 2 * _GIB,
            'temp_size_in_bytes': 3 * _GIB, 'generated_code_size_in_bytes': 0, 'step_bytes': 5 * _GIB}
  cost = compile_lib.StepCost('train', 64, 1.0, memory, flops=2e12, bytes_accessed=8e9, cost_source='compiled')
  v5e = preflight.resolve('v5e-8')  # 16 GiB, 197 TFLOP/s, 819 GB/s
  row = roofline.chip_row(cost, v5e, 'bfloat16')
  assert row['fits'] and row['total_bytes'] == 5 * _GIB and row['headroom_bytes'] == 11 * _GIB
  assert row['bound_s'] == pytest.approx(max(2e12 / 197e12, 8e9 / 819e9))
  assert row['bound_images_per_s'] == pytest.approx(64 / row['bound_s'])
  v4 = preflight.resolve('v4-8')  # compiled as two devices (TensorCores) a chip: figures per chip are twice theirs
  row = roofline.chip_row(cost, v4, 'float32')  # TPUs: float32 matmuls in bf16 passes
  assert (row['images_per_chip'], row['total_bytes'], row['flops']) == (128, 10 * _GIB, 4e12)
  assert row['bound_s'] == pytest.approx(max(2e12 / (275e12 / 2), 8e9 / (1200e9 / 2)))
  too_big = dataclasses.replace(cost, memory={**memory, 'step_bytes': 17 * _GIB})
  assert roofline.chip_row(too_big, v5e, 'bfloat16')['fits'] is False
  refused = compile_lib.StepCost('train', 64, 1.0, error='XlaRuntimeError: RESOURCE_EXHAUSTED: ran out of memory')
  assert roofline.chip_row(refused, v5e, 'bfloat16')['fits'] is False
  lowered = dataclasses.replace(cost, bytes_accessed=None, cost_source='lowered')
  gpu = roofline.chip_row(lowered, preflight.resolve('h100x1'), 'bfloat16')
  assert gpu['bytes_are_minimum'] and gpu['bytes_accessed'] == 4 * _GIB  # arguments read + outputs written
  assert gpu['bound_s'] == pytest.approx(max(2e12 / 989e12, 4 * _GIB / 3.35e12))
  tf32 = roofline.chip_row(lowered, preflight.resolve('h100x1'), 'float32')  # float32 matmuls run as TF32
  assert tf32['bound_s'] == pytest.approx(max(2e12 / 494.7e12, 4 * _GIB / 3.35e12))
  assert gpu['usable_hbm_bytes'] == int(80e9 * 0.75)


def _small(config, **changes):
  config.update_from_flattened_dict(changes)
  return config


def test_every_method_compiles_for_a_multi_host_tpu_slice():
  """The small CNN: every branch of every method of METHODS (on the CIFAR ViT those that need its attention) and the
  eval step, for v5e-16 (4 hosts of 4 chips), MultiMix also with the global scope (an all-gather across hosts)."""
  needs_tpu()
  target = preflight.resolve('v5e-16')
  assert target.hosts == 4 and len({d.process_index for d in target.devices()}) == 4
  # The variables that describe the target to libtpu do not outlive the call: children of this process (a notebook's
  # kernel) would take this machine for a TPU VM.
  assert not {'TPU_ACCELERATOR_TYPE', 'TPU_WORKER_HOSTNAMES'} & set(os.environ)
  results = {}
  for method in sorted(methods.METHODS) + ['multimix_global']:
    config = _small(default_config.get_config(), method=method.replace('_global', ''), batch_size=64,
                    eval_batch_size=64, **{'multimix.n': 100, 'multimix.scope': 'global' if 'global' in method
                                           else 'device'})
    if method in methods.NEEDS_ATTENTION:  # the small CNN sows no attention: the CIFAR ViT (4 tokens on digits)
      config.model = 'vit_cifar'
    results[method] = preflight.preflight(config, 'v5e-16', log=lambda _: None)
  for method, result in results.items():
    schedule = methods.METHODS[method.replace('_global', '')](default_config.get_config())
    assert len(result['rows']) == len(schedule) + 1, method  # every branch, then eval
    assert result['fits'] and '| eval | 4 |' in result['markdown'], method  # 64 over 16 chips
    for row in result['rows']:
      assert row['error'] is None and row['flops'] > 0 and row['bytes_accessed'] > 0 and 0 < row['total_bytes'], method
      assert row['cost_source'] == 'compiled' and row['bound_images_per_s'] > 0
  erm, multimix = results['erm']['rows'][0], results['multimix']['rows'][0]
  assert multimix['flops'] > erm['flops']  # the n × b mixing and its loss are in the compiled step
  gathered = results['multimix_global']['rows'][0]
  assert gathered['flops'] > multimix['flops']  # n rows over the 64 gathered examples, not the 4 of a chip


def test_preact_resnet18_preflight_for_a_multi_host_tpu_slice(capsys):
  """The CIFAR PreActResNet-18 config, scaled down, through the command line's --compile_for on v4-16 (2 hosts)."""
  needs_tpu()
  config = _small(cifar10_r18.get_config(), batch_size=16, eval_batch_size=16, **{'multimix.n': 50})
  result = preflight.preflight(config, 'v4-16', log=print)
  assert 'compiling train: multimix (p = 0.5)' in capsys.readouterr().out
  assert [row['step'] for row in result['rows']] == ['train: multimix (p = 0.5)', 'train: input_mixup (p = 0.5)',
                                                     'eval']
  assert result['fits'] and all(row['images_per_chip'] == 2 for row in result['rows'])  # 16 over 8 chips
  params = 11_171_274 * 4  # float32 parameters, replicated on every device; a v4 chip holds two
  assert result['rows'][-1]['arguments_bytes'] >= 2 * params


def test_gpu_compile_counts_flops_on_the_same_per_device_program():
  """XLA:GPU compiles with no GPU; its FLOPs (counted on the program lowered for the CPU over the abstract mesh) are
  those of the same step lowered for this CPU's own devices."""
  needs_gpu()
  config = default_config.get_config()
  model = models.create_model('small_cnn', num_classes=10)
  tx, _ = optim.create_optimizer(config, 100)
  loss_fn = methods.METHODS['multimix'](config)[0].loss_fn
  target = preflight.resolve('h100x4')
  dp = step_lib.DataParallel('shard_map', devices=target.devices())
  cost = compile_lib.compile_train_step('multimix', dp, model=model, tx=tx, loss_fn=loss_fn, image_shape=(8, 8, 1),
                                        global_batch=128, count_on_cpu=True)
  assert cost.error is None and cost.cost_source == 'lowered' and cost.bytes_accessed is None
  assert cost.memory['step_bytes'] > cost.memory['argument_size_in_bytes'] > 0
  here = step_lib.DataParallel('shard_map', devices=jax.devices()[:4])
  shapes, specs = compile_lib.train_shapes(model, tx, (8, 8, 1), 128)
  lowered = here.train_step(model=model, tx=tx, loss_fn=loss_fn).lower(*compile_lib._abstract(shapes, here, specs))  # pylint: disable=protected-access
  assert cost.flops == pytest.approx(lowered.cost_analysis()['flops'])


def _main(*args, timeout=600):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-m', 'multimix_jax.main', *args], capture_output=True, text=True,
                        timeout=timeout, env=env, check=False)


def test_preflight_refuses_a_resnet50_batch_that_cannot_fit_one_chip():
  needs_tpu()
  done = _main(f'--config={os.path.join(os.path.dirname(cifar10_r18.__file__), "imagenet_r50.py")}',
               '--compile_for=v5e-1', '--config.batch_size=16384', '--config.eval_batch_size=8',
               '--config.method=erm')
  assert done.returncode != 0
  errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, done.stderr[-2000:]
  assert 'train: erm (p = 1) ' in errors[0] and 'v5e-1' in errors[0] and '--config.batch_size (now 16384' in errors[0]
  assert '| **no** |' in done.stdout  # the table is still printed, with the step that does not fit


def test_a_crash_of_the_targets_compiler_is_one_message(capsys):
  """A compile runs in a child process: one killed by a signal mid-step is a message naming the step and the
  compiler, after the child's own output (here a child that kills itself so)."""
  crash = ('import os, signal, sys; print("[v6e-8] compiling eval...", file=sys.stderr, flush=True); '
           'print("| table |", flush=True); os.kill(os.getpid(), signal.SIGSEGV)')
  with pytest.raises(child.CompilerCrashed) as crashed:
    child.run_command([sys.executable, '-c', crash], 'v6e-8')
  assert capsys.readouterr().err == '[v6e-8] compiling eval...\n'
  assert str(crashed.value).startswith("the target's compiler (libtpu")
  assert "crashed (SIGSEGV) while compiling 'eval' for v6e-8" in str(crashed.value)
  assert child.run_command([sys.executable, '-c', 'raise SystemExit(3)'], 'h100x8') == 3
  assert child.run_command([sys.executable, '-c', 'import os; print(os.environ["MULTIMIX_JAX_COMPILE_CHILD"])'],
                           'h100x8') == 0 and capsys.readouterr().out == ''  # the child's stdout is not captured


@pytest.mark.parametrize('program, args, step, code', [
    ('multimix_jax.main', [f'--config={cifar10_r18.__file__}', '--compile_for=v6e-8', '--config.batch_size=16',
                           '--config.eval_batch_size=16', '--config.multimix.n=50'], 'train: multimix (p = 0.5)', 1),
    ('multimix_jax.benchmark', ['--target=v6e-8', '--model=preact_resnet18', '--batch_size=2', '--methods=erm',
                                '--json='], 'erm', 1),
])
def test_the_libtpu_0_0_42_crash_on_v6e_is_one_error_line(program, args, step, code):
  """libtpu 0.0.42 (the one jax 0.10.2 pins) dies of a stack overflow compiling PreActResNet-18 for v6e; the
  preflight and the benchmark say so in one line (after the compiler's stack trace) and exit non-zero."""
  needs_tpu()
  compiler = preflight.resolve('v6e-8').compiler
  if not compiler.startswith('libtpu 0.0.42'):
    pytest.skip(f"this machine's TPU compiler is {compiler}; the crash is libtpu 0.0.42's")
  done = subprocess.run([sys.executable, '-m', program, *args], capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, check=False)
  errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
  assert done.returncode == code and errors == [
      f"error: the target's compiler ({compiler}) crashed (SIGSEGV) while compiling '{step}' for v6e-8: a bug of "
      'that compiler, not of the config. Another version of it may compile the step (pip install -U libtpu); the '
      'compiled table of docs/preflight.md names the versions that compiled each target.'], done.stderr[-2000:]


@pytest.mark.parametrize('args, message', [
    (['--compile_for=v5e-7'], "--compile_for: unknown target 'v5e-7'; known targets: v4-{8,16,"),
    (['--compile_for=h100x8', '--config.batch_size=12'], 'batch_size=12 must be a positive multiple of the number '
     'of devices (8)'),
    ([], '--workdir is required'),
])
def test_bad_compile_for_command_lines_are_one_error_line(args, message):
  done = _main(*args, timeout=120)
  assert done.returncode == 2
  errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]


def test_benchmark_target_judges_compiled_ratios(tmp_path):
  needs_gpu()
  from multimix_jax import benchmark  # pylint: disable=g-import-not-at-top
  result = benchmark.run(benchmark.Options(target='h100x1', model='small_cnn', batch_size=32,
                                           methods='erm,multimix_n1000', json=str(tmp_path / 'b.json')),
                         log=lambda _: None)
  rows = {row['method']: row for row in result['settings'][0]['methods']}
  assert rows['erm']['flops_to_erm'] == 1.0 and rows['multimix_n1000']['flops_to_erm'] > 1.0
  (check,) = result['targets']
  assert check['target'] == 'small_cnn on h100x1: multimix_n1000 FLOPs ≤ 1.03 × erm'
  assert check['verdict'] == ('met' if rows['multimix_n1000']['flops_to_erm'] <= 1.03 else 'missed')
  assert 'Compiled, not run' in result['markdown'] and (tmp_path / 'b.json').exists()
  with pytest.raises(benchmark.BenchmarkError, match="--target: unknown target 'h100'"):
    benchmark.run(benchmark.Options(target='h100', json=''), log=lambda _: None)


def test_input_benchmark_feeds_imagenet_sized_jpegs_on_one_core(tmp_path):
  """What a host must feed: ImageNet's host transform on JPEGs of ImageNet's size, from ArrayRecord and from a folder
  of files, pinned to one core, without TensorFlow."""
  from multimix_jax.data import transforms  # pylint: disable=g-import-not-at-top
  jpegs = transforms.synthetic_jpegs(8)
  shapes = [transforms.encoded_size(j) for j in jpegs]
  assert all(262 <= h <= 438 and 300 <= w <= 500 for h, w in shapes) and len(set(shapes)) > 1
  assert 40_000 < sum(map(len, jpegs)) / len(jpegs) < 200_000  # bytes: photographs', not flat colour's
  out = tmp_path / 'input.json'
  done = subprocess.run([sys.executable, '-m', 'multimix_jax.benchmark', '--input',
                         '--input_datasets=imagenet2012,folder', '--input_cores=1', '--batch_size=4',
                         '--input_batches=2', '--mock_examples=16', f'--json={out}'],
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.read_text())['input']
  assert [r['dataset'] for r in rows] == ['imagenet2012', 'folder']
  for row in rows:
    assert row['cores'] == row['threads'] == 1 and row['image_shape'] == [224, 224, 3] and row['dtype'] == 'uint8'
    assert row['images_per_s'] > 0 and '16 synthetic JPEGs' in row['source']
  assert '| 1 |' in done.stdout


def test_a_gpu_step_triton_cannot_tile_ahead_of_time_is_compiled_with_cublas(monkeypatch):
  """XLA:GPU may fail to tile a matmul for Triton with no GPU to autotune on (ViT-S/16 at b = 128 does): the step is
  compiled again with Triton GEMMs off, and the table says so."""
  needs_gpu()
  real_compile = jax.stages.Lowered.compile

  def compile_once_refused(self, compiler_options=None):
    if not compiler_options:
      raise RuntimeError("INTERNAL: Couldn't find output tile sizes that satisfy hlo: %dot.522 = bf16[25088,384]")
    return real_compile(self, compiler_options=compiler_options)

  monkeypatch.setattr(jax.stages.Lowered, 'compile', compile_once_refused)
  config = default_config.get_config()
  model = models.create_model('small_cnn', num_classes=10)
  tx, _ = optim.create_optimizer(config, 100)
  target = preflight.resolve('h100x1')
  cost = compile_lib.compile_train_step('erm', step_lib.DataParallel('shard_map', devices=target.devices()),
                                        model=model, tx=tx, loss_fn=methods.METHODS['erm'](config)[0].loss_fn,
                                        image_shape=(8, 8, 1), global_batch=16, count_on_cpu=True)
  assert cost.error is None and cost.compiler_options == {'xla_gpu_enable_triton_gemm': False} and cost.flops > 0
  table = roofline.markdown([roofline.chip_row(cost, target, 'float32')], target, 'erm', 'float32')
  assert 'compiled with xla_gpu_enable_triton_gemm=False' in table


def test_compile_targets_table_reads_ratios_and_host_cores_off_the_stored_figures(tmp_path, capsys, monkeypatch):
  """scripts/compile_targets.py --markdown: the README's table from stored rows, with the ratios to ERM, the bound
  recomputed from FLOPs and bytes with the chip's peak for the config's dtype, and host cores per chip."""
  spec = importlib.util.spec_from_file_location(
      'compile_targets', os.path.join(REPO, "scripts", "compile_targets.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)

  def row(step, flops, total, fits=True):
    return {'step': step, 'images_per_chip': 16, 'flops': flops, 'bytes_accessed': 1e6, 'total_bytes': total,
            'fits': fits, 'compile_s': 2.0, 'bound_images_per_s': None}

  entry = {'config': 'cifar10_r18', 'target': 'h100x8', 'dtype': 'float32', 'dataset': 'cifar10',
           'rows': [row('train: multimix (p = 0.5)', 1.01e11, 2 * _GIB), row('train: input_mixup (p = 0.5)', 1e11, _GIB),
                    row('eval', 3e10, _GIB / 2)],
           'erm': row('train: erm (p = 1)', 1e11, _GIB), 'dense_multimix': row('train: dense_multimix', 1.05e11, 3 * _GIB)}
  out = tmp_path / 'compiled.jsonl'
  out.write_text(json.dumps(entry) + '\n')
  monkeypatch.setattr(sys, 'argv', ['compile_targets.py', f'--out={out}', '--markdown', '--per_core=cifar=1000',
                                    '--configs=cifar10_r18', '--targets=h100x8,v6e-8'])
  script.main()
  lines = capsys.readouterr().out.splitlines()
  bound = 16 / max(1e11 / 494.7e12, 1e6 / 3.35e12)  # float32 on an H100: TF32's peak
  assert lines[2] == (f'| cifar10_r18 (float32) | h100x8 | 16 | yes | 3.00 GiB | 1.010 | 1.050 | 3.000 | '
                      f'{bound:,.0f} | {bound / 1000:.1f} | 10 |')
  assert lines[3:] == ['', 'Compilers: jax-cuda12-plugin (not recorded) for h100x8.', '',
                       'Not compiled yet (1 of 2 pairs): v6e-8: cifar10_r18.']
