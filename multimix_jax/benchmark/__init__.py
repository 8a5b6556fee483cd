"""Measured cost of MultiMix against ERM, and of JAX against PyTorch: `python -m multimix_jax.benchmark`.

The paper's claim is "orders of magnitude more loss terms per mini-batch at little additional cost". This package
measures it on synthetic batches made on the device, with the trainer's own compiled step (`DataParallel.train_step`
over every device), so it needs neither TensorFlow nor a dataset:

    python -m multimix_jax.benchmark                      # the 'cpu' preset on a CPU, the 'gpu' preset on a GPU
    python -m multimix_jax.benchmark --preset=gpu         # ResNet-50 and PreActResNet-18, bf16, with PyTorch
    python -m multimix_jax.benchmark --model=small_cnn --batch_size=128 --methods=erm,multimix_n10000
    python -m multimix_jax.benchmark --input              # the host input pipeline alone, images/s
    python -m multimix_jax.benchmark --target=v5e-8       # compiled for a TPU slice or GPU node, not timed
    python -m multimix_jax.benchmark --attacks --model=resnet50   # the analysis's FGSM and PGD against an eval step

One module per job:

- `presets`: presets, a setting per model on the shapes its class declares (`example_input`, `example_classes`),
  method names with suffixes: `_n<N>` (MultiMix's n), `_chunk<K>` (the dense loss's chunk over n; 0 = all n at
  once), `_conf_<kind>` (Dense MultiMix's confidence, e.g. `_conf_attention`) and `_stage<k>` (the entry of a
  mixing schedule timed, e.g. manifold mixup's stage).
- `timing`: methods built by `methods.METHODS` as the trainer builds them, compiled, timed in interleaved rounds;
  compile time and memory; peak memory in a fresh process per method.
- `torch_baseline`: ERM on the authors' PyTorch networks, in its own process.
- `input_timing`: the `--input` mode (the host input pipeline timed).
- `attack_timing`: the `--attacks` mode: the analysis's evaluation, FGSM and PGD timed against the trainer's eval
  step on each setting's model and shapes.
- `compiled`: the `--target` mode: every method compiled for a target by `multimix_jax.preflight`, judged on the
  compiler's figures.
- `ratios`: ratios to ERM with 95% confidence intervals from the paired rounds, met / missed / undecided verdicts
  on the targets, markdown tables.
- `__main__`: the command line (absl flags and exit statuses, as every command's: `multimix_jax.command_line`).

`run(Options(...))` does what the command does and returns the report (a JSON-able dict, its markdown included).
"""

import dataclasses
import json
import os
import platform
import sys
import time

import jax

from multimix_jax.benchmark import timing
from multimix_jax.benchmark import torch_baseline
from multimix_jax.benchmark.ratios import check_targets, log_interval, markdown_report, paired_ratio, verdict
from multimix_jax.benchmark.presets import (ALL_METHODS, PRESETS, BenchmarkError, MethodSpec, Options, Setting,
                                             parse_method, settings_from_options)
from multimix_jax.benchmark.timing import benchmark_setting, make_branch


def environment() -> dict:
  """The machine and versions the figures come from."""
  devices = jax.devices()
  env = {
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'num_devices': len(devices),
      'jax_version': jax.__version__,
      'python': platform.python_version(),
      'cpu_count': os.cpu_count(),
      'load_average': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'prng_impl': jax.config.jax_default_prng_impl,
      'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
      'command': ' '.join(['python -m multimix_jax.benchmark', *sys.argv[1:]]),
  }
  env['summary'] = (f"{env['num_devices']} × {env['device_kind']} ({env['backend']}), {env['cpu_count']} CPU cores, "
                    f"jax {env['jax_version']}, Python {env['python']}")
  return env


def run(options: Options, log=print) -> dict:
  """Runs what `options` ask; returns the report (also written to options.json when set).

  Every value is checked (settings and every method built) before anything is compiled or timed.
  """
  if options.prng_impl:
    jax.config.update('jax_default_prng_impl', options.prng_impl)
  report = {'environment': environment(), 'settings': [], 'input': None}
  backend = report['environment']['backend']
  if options.target:
    return _run_compiled(options, report, log)
  if options.attacks:
    return _run_attacks(options, report, log)
  if options.input:
    from multimix_jax.benchmark import input_timing  # pylint: disable=g-import-not-at-top  # the input pipeline
    datasets = [d.strip() for d in options.input_datasets.split(',') if d.strip()]
    if options.input_batches < 1 or options.mock_examples < 1 or (options.batch_size or 1) < 1:
      raise BenchmarkError('--input_batches, --mock_examples and --batch_size must be >= 1.')
    if options.input_cores is not None:
      available = sorted(os.sched_getaffinity(0))
      if not 1 <= options.input_cores <= len(available):
        raise BenchmarkError(f'--input_cores={options.input_cores} must be in [1, {len(available)}] on this machine.')
      os.sched_setaffinity(0, available[:options.input_cores])  # the pipeline's threads: one per core it may use
    report['input'] = input_timing.input_benchmark(
        datasets, batch_size=options.batch_size or 128, batches=options.input_batches, warmup=5,
        mock_examples=options.mock_examples, data_dir=options.data_dir, log=log)
  else:
    settings = settings_from_options(options, backend)
    for setting in settings:
      timing.check_setting(setting, chunk_size=options.chunk_size, num_devices=len(jax.devices()))
    peak = options.peak_memory if options.peak_memory is not None else timing.device_memory_stats() is not None
    # Isolated processes first, while this one holds (almost) no device memory.
    extra = []
    for setting in settings:
      extra.append({'torch': None, 'peak': None})
      if setting.torch:
        log(f'[{setting.model}] PyTorch (own process)...')
        extra[-1]['torch'] = torch_baseline.run_isolated(setting, compile_model=options.torch_compile)
      if peak:
        extra[-1]['peak'] = {}
        for method in setting.methods:
          log(f'[{setting.model}] peak memory of {method} (own process)...')
          extra[-1]['peak'][method] = timing.call_isolated(
              'timing', 'measure_peak_memory', {'setting': setting.to_json(), 'method': method,
                                                'parallelism': options.parallelism,
                                                'chunk_size': options.chunk_size}, prng_impl=options.prng_impl)
    for setting, isolated in zip(settings, extra):
      result = benchmark_setting(setting, parallelism=options.parallelism, chunk_size=options.chunk_size,
                                 peak_memory=isolated['peak'], log=log)
      result['torch'] = isolated['torch']
      report['settings'].append(result)
  report['targets'] = [{'target': t, 'measured': m, 'verdict': v}
                       for t, m, v in check_targets(report['settings'], backend)]
  report['markdown'] = markdown_report(report)
  if options.json:
    with open(options.json, 'w') as f:
      json.dump(report, f, indent=2)
  return report


def _run_attacks(options: Options, report: dict, log) -> dict:
  """--attacks: the analysis's passes timed on every setting (--model, or the preset's models and shapes)."""
  from multimix_jax.benchmark import attack_timing  # pylint: disable=g-import-not-at-top
  if options.input or options.torch or options.peak_memory or options.methods is not None:
    raise BenchmarkError('--attacks times the evaluation and the attacks only: drop --input, --torch, --peak_memory '
                         'and --methods.')
  if options.pgd_steps < 1:
    raise BenchmarkError(f'--pgd_steps={options.pgd_steps} must be >= 1.')
  settings = [dataclasses.replace(s, torch=False)
              for s in settings_from_options(options, report['environment']['backend'])]
  report['attacks'] = [attack_timing.time_setting(s, pgd_steps=options.pgd_steps, parallelism=options.parallelism,
                                                  log=log) for s in settings]
  report['targets'] = []
  report['markdown'] = attack_timing.markdown_report(report['attacks'], report['environment'])
  if options.json:
    with open(options.json, 'w') as f:
      json.dump(report, f, indent=2)
  return report


def _run_compiled(options: Options, report: dict, log) -> dict:
  """--target: every method of the settings compiled for the target (default preset: gpu), nothing timed."""
  from multimix_jax import preflight  # pylint: disable=g-import-not-at-top
  from multimix_jax.benchmark import compiled  # pylint: disable=g-import-not-at-top
  if options.input or options.attacks or options.torch or options.peak_memory:
    raise BenchmarkError('--target compiles only: drop --input, --attacks, --torch and --peak_memory.')
  try:
    target = preflight.resolve(options.target)
  except preflight.TargetError as e:
    raise BenchmarkError(f'--target: {e}') from e
  settings = settings_from_options(options, 'tpu')  # an accelerator's defaults (the gpu preset) without PyTorch
  for setting in settings:
    timing.check_setting(setting, chunk_size=options.chunk_size, num_devices=target.num_devices)
  try:
    results = [compiled.compile_setting(s, target, chunk_size=options.chunk_size, log=log) for s in settings]
  except preflight.TargetError as e:
    raise BenchmarkError(str(e)) from e
  report.update(settings=results, target=target.describe())
  report['targets'] = [{'target': t, 'compiled': m, 'verdict': v} for t, m, v in compiled.check_targets(results)]
  report['markdown'] = compiled.markdown_report(results, [(c['target'], c['compiled'], c['verdict'])
                                                          for c in report['targets']])
  if options.json:
    with open(options.json, 'w') as f:
      json.dump(report, f, indent=2)
  return report


__all__ = ['ALL_METHODS', 'PRESETS', 'BenchmarkError', 'MethodSpec', 'Options', 'Setting', 'benchmark_setting',
           'check_targets', 'environment', 'log_interval', 'make_branch', 'markdown_report', 'paired_ratio',
           'parse_method', 'run', 'settings_from_options', 'verdict']
