"""Measured cost of MultiMix against ERM (and of JAX against PyTorch) on synthetic batches.

    python -m multimix_jax.benchmark                      # the 'cpu' preset on a CPU, the 'gpu' preset on a GPU
    python -m multimix_jax.benchmark --model=small_cnn --methods=erm,multimix_n1000 --rounds=20
    python -m multimix_jax.benchmark --model=preact_resnet18 --methods=erm --torch   # JAX against PyTorch
    python -m multimix_jax.benchmark --input              # the TFDS input pipeline alone
    python -m multimix_jax.benchmark --attacks --model=resnet50   # the analysis's FGSM and PGD against an eval step

Every "× erm" comes with a 95% confidence interval from the paired rounds; targets are met, missed or undecided.

Exit statuses as `multimix_jax.command_line` says.
"""

import dataclasses
import os
import sys

from absl import flags
from absl import logging

from multimix_jax import command_line
from multimix_jax import models
from multimix_jax.benchmark import presets as presets_lib
from multimix_jax.mixing import losses
from multimix_jax.trainer import step as step_lib

_PRESET = flags.DEFINE_enum('preset', None, list(presets_lib.PRESETS),
                            "Named settings (default: 'cpu' on a CPU backend, else 'gpu').")
_MODEL = flags.DEFINE_enum('model', None, sorted(models.MODELS), 'Benchmark one model (any of multimix_jax.models.'
                           'MODELS, on the input its class declares) instead of a preset.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, "b, per device (default 128, the paper's).")
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, "H = W (default: the model's example_input).")
_CHANNELS = flags.DEFINE_integer('channels', None, "C (default: the model's example_input).")
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None, "c (default: the model's example_classes).")
_DTYPE = flags.DEFINE_enum('dtype', None, list(step_lib.DTYPES), 'Compute dtype (default float32).')
_METHODS = flags.DEFINE_string('methods', None, 'Comma-separated, e.g. erm,multimix_n1000,dense_multimix_n1000_chunk250'
                               f' (default with --model: {",".join(presets_lib.ALL_METHODS)}, and'
                               f' {",".join(presets_lib.ATTENTION_METHODS)} for a ViT).')
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
    'h100x1; see multimix_jax.preflight): per-chip memory, FLOPs, bytes, a roofline bound and ratios to ERM, from the '
    "target's compiler (default preset: gpu).")
_JSON = flags.DEFINE_string('json', 'benchmark.json', "Where to write the results ('' to skip).")
_INPUT = flags.DEFINE_bool('input', False, 'Benchmark the host input pipeline instead: images/s of each source of '
                           '--input_datasets (see multimix_jax/benchmark/input_timing.py).')
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


def options_from_flags() -> presets_lib.Options:
  """The parsed flags as `Options` (every field of Options is a flag of the same name)."""
  return presets_lib.Options(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(presets_lib.Options)})


def main(argv):
  del argv  # parse_flags refuses positional arguments
  logging.set_verbosity(logging.WARNING)  # keeps JAX's INFO lines (no TPU found...) out of the output
  # JAX would otherwise take 75% of a GPU's memory at start, leaving too little to the isolated processes (PyTorch,
  # peak memory) run beside it. Set the variable yourself to override.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  if flags.FLAGS.target:  # the target's devices are compile-only: this machine's accelerators need not start
    from multimix_jax.preflight import child  # pylint: disable=g-import-not-at-top
    # A crash of the target's compiler ends the command in one line, as a failed run: FAILED.
    child.rerun_in_child('multimix_jax.benchmark', flags.FLAGS.target, error_status=command_line.FAILED)
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_platforms', 'cpu')
  from multimix_jax import benchmark  # pylint: disable=g-import-not-at-top
  try:
    report = benchmark.run(options_from_flags(), log=lambda message: print(message, file=sys.stderr, flush=True))
  except presets_lib.BenchmarkError as e:
    command_line.fail(e)
  print(report['markdown'])
  if flags.FLAGS.json:
    print(f'Results written to {flags.FLAGS.json}', file=sys.stderr)


if __name__ == '__main__':
  command_line.run(main)
