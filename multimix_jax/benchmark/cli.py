"""The command line: `python -m multimix_jax.benchmark [--preset=cpu|gpu | --model=NAME ...]`.

Flags in absl's style, as `multimix_jax.main`. A value that cannot work ends the command with one line starting
with `error:` before anything is compiled.
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging

from multimix_jax import flag_errors
from multimix_jax import losses
from multimix_jax import models
from multimix_jax import step as step_lib
from multimix_jax.benchmark import settings as settings_lib

_PRESET = flags.DEFINE_enum('preset', None, list(settings_lib.PRESETS),
                            "Named settings (default: 'cpu' on a CPU backend, else 'gpu').")
_MODEL = flags.DEFINE_enum('model', None, sorted(models.MODELS), 'Benchmark one model (any of multimix_jax.models.'
                           'MODELS, on the input its class declares) instead of a preset.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, "b, per device (default 128, the paper's).")
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, "H = W (default: the model's example_input).")
_CHANNELS = flags.DEFINE_integer('channels', None, "C (default: the model's example_input).")
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None, "c (default: the model's example_classes).")
_DTYPE = flags.DEFINE_enum('dtype', None, list(step_lib.DTYPES), 'Compute dtype (default float32).')
_METHODS = flags.DEFINE_string('methods', None, 'Comma-separated, e.g. erm,multimix_n1000,dense_multimix_n1000_chunk250'
                               f' (default with --model: {",".join(settings_lib.ALL_METHODS)}, and'
                               f' {",".join(settings_lib.ATTENTION_METHODS)} for a ViT).')
_STEPS = flags.DEFINE_integer('steps', None, 'Consecutive steps per method per round (default 10).')
_ROUNDS = flags.DEFINE_integer('rounds', None, 'Interleaved rounds (default 10); each gives one paired ratio to ERM. '
                               '0 compiles and reports memory only.')
_WARMUP = flags.DEFINE_integer('warmup', None, 'Steps per method after compiling, untimed (default 3).')
_CHUNK_SIZE = flags.DEFINE_integer('chunk_size', -1, 'Dense MultiMix chunk over n: -1 automatic (largest array <= '
                                   f'{losses.DENSE_CHUNK_ELEMENTS:,} elements), 0 all n at once, K > 0 chunks of K '
                                   '(a _chunk<K> method suffix overrides).')
_PARALLELISM = flags.DEFINE_enum('parallelism', 'shard_map', ['shard_map', 'pmap'], 'How the step maps over devices.')
_PRNG_IMPL = flags.DEFINE_enum('prng_impl', None, ['threefry2x32', 'rbg', 'unsafe_rbg'],
                               "JAX's PRNG for every key (default: JAX's, threefry2x32, as the trainer).")
_TORCH = flags.DEFINE_bool('torch', None, 'Also time ERM in PyTorch on the same network, batch and precision, in its '
                           'own process (default: on with the gpu preset on a GPU).')
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', None, 'torch.compile the PyTorch network (default: on a GPU only).')
_PEAK_MEMORY = flags.DEFINE_bool('peak_memory', None, "Measure each method's peak device memory in its own process "
                                 '(default: where the backend reports memory, i.e. not on CPU).')
_TARGET = flags.DEFINE_string(
    'target', None, 'Compile every method for this TPU slice or GPU node instead of timing it here (e.g. v5e-8, v4-32, '
    'h100x1; see multimix_jax.targets): per-chip memory, FLOPs, bytes, a roofline bound and ratios to ERM, from the '
    "target's compiler (default preset: gpu).")
_JSON = flags.DEFINE_string('json', 'benchmark.json', "Where to write the results ('' to skip).")
_INPUT = flags.DEFINE_bool('input', False, 'Benchmark the host input pipeline instead: images/s of each source of '
                           '--input_datasets (see multimix_jax/benchmark/input_pipeline.py).')
_ATTACKS = flags.DEFINE_bool('attacks', False, "Time the analysis's robustness passes instead (trainer's eval step, "
                              'the analysis eval pass, FGSM, PGD) on the settings (--model or a preset).')
_PGD_STEPS = flags.DEFINE_integer('pgd_steps', 10, 'With --attacks: the PGD steps timed (the shipped configs: 10).')
_INPUT_DATASETS = flags.DEFINE_string('input_datasets', 'digits,cifar10', 'With --input: sources, comma-separated: '
                                      'digits, cifar10, cifar100, tiny_imagenet, imagenet2012, folder.')
_INPUT_BATCHES = flags.DEFINE_integer('input_batches', 200, 'With --input: batches timed.')
_MOCK_EXAMPLES = flags.DEFINE_integer('mock_examples', 2048, 'With --input: training examples of a generated source.')
_INPUT_CORES = flags.DEFINE_integer('input_cores', None, 'With --input: pin the process to this many CPU cores '
                                    '(1: images/s per core; default: every core); the pipeline runs a thread per core.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'With --input: a TFDS data_dir whose prepared datasets are read '
                                'instead of generated ones.')


def options_from_flags() -> settings_lib.Options:
  """The parsed flags as `Options` (every field of Options is a flag of the same name)."""
  return settings_lib.Options(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(settings_lib.Options)})


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}; every option is a --flag (see --help).')
  logging.set_verbosity(logging.WARNING)  # keeps JAX's INFO lines (no TPU found...) out of the output
  # JAX would otherwise take 75% of a GPU's memory at start, leaving too little to the isolated processes (PyTorch,
  # peak memory) run beside it. Set the variable yourself to override.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  if flags.FLAGS.target:  # the target's devices are compile-only: this machine's accelerators need not start
    from multimix_jax.targets import child  # pylint: disable=g-import-not-at-top
    child.rerun_in_child('multimix_jax.benchmark', flags.FLAGS.target, error_status=1)  # a compiler crash: one line
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_platforms', 'cpu')
  from multimix_jax import benchmark  # pylint: disable=g-import-not-at-top
  try:
    report = benchmark.run(options_from_flags(), log=lambda message: print(message, file=sys.stderr, flush=True))
  except settings_lib.BenchmarkError as e:
    sys.exit(f'error: {e}')
  print(report['markdown'])
  if flags.FLAGS.json:
    print(f'Results written to {flags.FLAGS.json}', file=sys.stderr)


def run_main():
  app.run(main, flags_parser=flag_errors.parse_flags)
