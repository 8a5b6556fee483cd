"""Entry point: `python -m multimix_jax.main --config=configs/imagenet_r50.py --workdir=DIR`.

`--compile_for=TARGET` (e.g. v5e-32, h100x8) instead compiles every step of that run for the target, with no
accelerator and no dataset, prints per-chip memory, FLOPs and a roofline bound, and exits non-zero when a step does
not fit (see multimix_jax.preflight).

Without --config it trains the embedded default (multimix_jax/configs/default.py: a small CNN on handwritten
digits, offline).
Override any config key on the command line, e.g. `--config.method=erm --config.multimix.n=10000`.
What cannot work ends the command with one line starting with `error:` and the exit statuses of
`multimix_jax.command_line` (2: refused before anything is written; 1: the run stopped).
"""

import logging as std_logging  # absl.logging.WARNING is an absl verbosity, not a record level
import os
import sys

import jax
from absl import flags
from absl import logging
from ml_collections import config_flags

from multimix_jax import command_line
from multimix_jax import configs
from multimix_jax import preflight
from multimix_jax.preflight import child
from multimix_jax.trainer import multihost


try:  # config_flags applies --config.KEY overrides to the default config here, at definition
  _CONFIG = config_flags.DEFINE_config_file('config', configs.path('default'), 'Training config file.',
                                            lock_config=True)
except (AttributeError, KeyError) as e:
  if __name__ != '__main__':
    raise
  command_line.fail(f'an override names a key the config does not have: {e} (in '
        f'{" ".join(a for a in sys.argv if a.startswith("--config."))}).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events and summary.json; '
                               'rerunning with the same workdir resumes. Required unless --compile_for is given.')
_COMPILE_FOR = flags.DEFINE_string(
    'compile_for', None, 'Preflight: compile every step of this run for a TPU slice or GPU node it need not have '
    '(v4-8 ... v4-4096, v5litepod-N or v5e-N, v5p-N, v6e-N, h100xN, h200xN, a100-40gbxN, a100-80gbxN), print '
    'per-chip memory, FLOPs and a roofline bound, and exit non-zero if a step does not fit. Trains nothing.')
_PER_DEVICE_BATCH = flags.DEFINE_integer(
    'per_device_batch_size', None, 'Sets batch_size and eval_batch_size to this many examples times '
    'jax.device_count() (all devices of all hosts), replacing the config\'s values; the paper\'s b = 128.',
    lower_bound=1)
_DISTRIBUTED = flags.DEFINE_bool('jax_distributed', False, 'Multi-host: call jax.distributed.initialize() first. '
                                 'It detects TPU pods, SLURM and Open MPI by itself; elsewhere give the three below.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (or $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes of the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, in [0, num_processes).')
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    'local_device_ids', None, 'Devices of this process, e.g. 0,1,2,3 (jax.distributed.initialize\'s '
    'local_device_ids). Under SLURM and Open MPI on GPUs JAX gives each process one GPU by default: list them all '
    'to drive every GPU of a node from one process.')
_INIT_TIMEOUT = flags.DEFINE_integer('initialization_timeout', 300, 'Seconds to wait for every process to join '
                                     '(jax.distributed.initialize\'s initialization_timeout).', lower_bound=1)
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout', 40, 'Seconds after which a silent process counts as lost (jax.distributed.initialize\'s '
    'heartbeat_timeout_seconds; JAX\'s default is 100): JAX then ends the others, and each says which process '
    'was lost. A host that stalls for less than this keeps the run.', lower_bound=3)


def _quiet_orbax(record):
  """Keeps Orbax's per-save INFO lines (dozens a checkpoint) out of the console; its warnings and errors still show,
  one line each: without the traceback of a failed background save (a full disk), which the trainer's own `error:`
  line then reports."""
  if '/orbax/' not in record.pathname:
    return True
  record.exc_info = record.exc_text = None
  return record.levelno >= std_logging.WARNING


def _parse_flags(argv):
  """absl's flag parsing, with every problem (unknown flag, bad value, missing config file) as one error line."""
  rest = command_line.parse_flags(argv)
  config_file = flags.FLAGS['config'].config_filename.split(':')[0]
  if not os.path.isfile(config_file):
    command_line.fail(f'--config={config_file}: no such file.')
  try:
    _CONFIG.value  # pylint: disable=pointless-statement  (loads the file and applies the --config.* overrides)
  except Exception as e:  # pylint: disable=broad-except  (a config file's own error, or an override's)
    command_line.fail(f'--config={config_file}: {type(e).__name__}: {" ".join(str(e).split())}')
  if _COMPILE_FOR.value:
    try:
      preflight.resolve(_COMPILE_FOR.value)
    except preflight.TargetError as e:
      command_line.fail(f'--compile_for: {e}')
    if _DISTRIBUTED.value:
      command_line.fail('--compile_for compiles on this machine for the whole target; drop --jax_distributed.')
  elif not _WORKDIR.value:
    command_line.fail('--workdir is required (where the run keeps its checkpoints), unless --compile_for is given.')
  workdir = _WORKDIR.value or ''
  if workdir and '://' not in workdir and os.path.exists(workdir) and not os.path.isdir(workdir):
    command_line.fail(f'--workdir={workdir} is a file, not a directory.')
  if _LOCAL_DEVICE_IDS.value and not all(i.strip().isdigit() for i in _LOCAL_DEVICE_IDS.value):
    command_line.fail(f'--local_device_ids={",".join(_LOCAL_DEVICE_IDS.value)}: give device numbers, e.g. 0,1,2,3.')
  return rest


def _compile_for(config, target):
  """The preflight: the table on stdout, progress on stderr; a step that does not fit is one error line."""
  child.rerun_in_child('multimix_jax.main', target, error_status=command_line.FAILED)  # a compiler crash: one line
  jax.config.update('jax_platforms', 'cpu')  # the target's devices are compile-only; this machine's need not start
  try:
    result = preflight.preflight(config, target, log=lambda message: print(message, file=sys.stderr, flush=True))
  except (preflight.DoesNotFit, preflight.StepFailed) as e:
    message, result = e.args
    print(result['markdown'])
    command_line.fail(message)
  except (preflight.TargetError, ValueError, RuntimeError) as e:
    command_line.fail(e)
  print(result['markdown'])
  print(f'\nAll {len(result["rows"])} steps fit; compiled in {result["compile_s"]:.0f} s.', file=sys.stderr)


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_quiet_orbax)
  if _COMPILE_FOR.value:
    _compile_for(_CONFIG.value, _COMPILE_FOR.value)
    return
  relay = None
  if _DISTRIBUTED.value:
    local_device_ids = [int(i) for i in _LOCAL_DEVICE_IDS.value] if _LOCAL_DEVICE_IDS.value else None
    try:
      relay = multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, local_device_ids,
                                   initialization_timeout=_INIT_TIMEOUT.value,
                                   heartbeat_timeout=_HEARTBEAT_TIMEOUT.value)
    except Exception as e:  # pylint: disable=broad-except  (bad arguments; JAX 0.10 aborts on a timeout itself)
      command_line.fail(f'could not join the distributed run: {" ".join(str(e).split())}')
  config = _CONFIG.value
  if _PER_DEVICE_BATCH.value:
    config.batch_size = config.eval_batch_size = _PER_DEVICE_BATCH.value * jax.device_count()
  # The trainer and its input pipeline take seconds to import (flax, orbax, TFDS, grain): only once the command line
  # has proved sound, so that a mistyped flag is answered at once.
  from multimix_jax.trainer import checkpoints  # pylint: disable=g-import-not-at-top
  from multimix_jax import data  # pylint: disable=g-import-not-at-top
  from multimix_jax.trainer import train  # pylint: disable=g-import-not-at-top
  checkpoints.quiet_abandoned_io()  # a failed save or restore is one line, not a page of asyncio tracebacks
  try:
    train.train_and_evaluate(config, _WORKDIR.value)
  except (train.RunError, data.DatasetNotFoundError) as e:  # a refusal before any work exits 2, as a bad flag does
    command_line.fail(e, status=getattr(e, 'exit_status', command_line.REFUSED))
  except Exception:  # pylint: disable=broad-except  (a collective that failed because another process was lost?)
    if relay is None:
      raise
    relay.await_verdict()
    sys.exit(command_line.FAILED)


if __name__ == '__main__':
  command_line.run(main, flags_parser=_parse_flags)
