"""Compiling for hardware that is not here: TPU slices and GPU nodes by name, every step of a run compiled ahead of
time on a CPU, and what the compiler says of it.

- `hardware`: targets by the names users rent them under (`v5e-32`, `v4-8`, `h100x8`, ...), the facts of each
  chip with their sources, and compile-only devices of a target.
- `compile`: the trainer's own steps lowered on abstract inputs and compiled; memory, FLOPs, bytes, compile time.
- `roofline`: per-chip figures, fit verdicts, the roofline bound and the markdown table.
- `steps`: every step of a run's config compiled for a target (`python -m multimix_jax.main --compile_for=...`).
- `child`: the command lines compile in a child process, so that a crash of the target's compiler is one message.

The benchmark compiles its presets for a target too (`python -m multimix_jax.benchmark --target=v5e-8`).
"""

from multimix_jax.preflight.hardware import CHIPS, Chip, Target, TargetError, known_names, resolve
from multimix_jax.preflight.steps import DoesNotFit, StepFailed, preflight

__all__ = ['CHIPS', 'Chip', 'DoesNotFit', 'StepFailed', 'Target', 'TargetError', 'known_names', 'preflight', 'resolve']
