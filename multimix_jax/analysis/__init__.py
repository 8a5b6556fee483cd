"""What mixing did to a trained model: `python -m multimix_jax.analysis --workdir=DIR [--workdir=DIR2 ...]`.

Reads each run's config.json and latest checkpoint (no retraining), evaluates the whole test split through the
trainer's data-parallel path (all devices, padding masked) and writes `analysis.json`, `report.md` and PNG plots
into `DIR/analysis/` (or OUT when one workdir and --out are given). With several workdirs every run gets its own
`analysis/` and OUT gets the comparison: one table (mean ± sd over runs whose configs differ only in their seed),
overlaid training curves and a grid of projections. Nothing is written anywhere else.

    python -m multimix_jax.analysis --workdir=runs/default
    python -m multimix_jax.analysis --workdir=runs/a --workdir=runs/b --out=runs/compare --metrics=accuracy,robustness

One module per job, as the benchmark's:

- `options`: the metrics, the options, and each run's attack settings (its `config.attack`, overridable).
- `runs`: a run's files: config.json, the checkpoint checked against the code's model, eval_history.json and the
  train loss (`scalars.jsonl`, else TensorBoard events); runs grouped as seeds of one config.
- `analyze`: the work on one run (`analyze_run`), with `evaluation` (the per-device evaluation and attacks, mapped
  like the trainer's steps), `attacks` (FGSM and PGD, jax only), `metrics` (calibration and embedding figures,
  numpy only) and the t-SNE projection.
- `outputs`: analysis.json, report.md and the PNGs (`plots`, matplotlib Agg) of a run, and the comparison.
- `__main__`: the command line (absl flags and exit statuses, as every command's: `multimix_jax.command_line`).

`analyze(workdirs, out, Options(...))` does what the command does and returns its figures.
"""

import os

import jax
from absl import logging

from multimix_jax.analysis import runs as runs_lib
from multimix_jax.analysis.analyze import analyze_run
from multimix_jax.analysis.options import METRICS, AnalysisError, AttackSettings, Options, check_options
from multimix_jax.analysis.outputs import TABLE, compare, comparison_table, write_run
from multimix_jax.analysis.runs import Run, group_runs, load_run


def analyze(workdirs: list[str], out: str | None = None, options: Options = Options()) -> dict:
  """Checks every workdir first, then analyses each run and, with several, compares them. Returns
  {'runs': [figures], 'outputs': {directory: [files]}}."""
  options = check_options(options, workdirs, out)
  runs = [runs_lib.load_run(w, options) for w in workdirs]
  written, all_figures, all_arrays = {}, [], []
  for run in runs:
    logging.info('Analysing %s (step %d).', run.workdir, run.step)
    figures, arrays = analyze_run(run, options)
    run_out = out if out and len(runs) == 1 else os.path.join(run.workdir, 'analysis')
    if jax.process_index() == 0:
      written[run_out] = write_run(figures, arrays, run_out)
    all_figures.append(figures)
    all_arrays.append(arrays)
  if len(runs) > 1 and jax.process_index() == 0:
    written[out] = compare(all_figures, all_arrays, runs, out)
  return {'runs': all_figures, 'outputs': written}


__all__ = ['METRICS', 'TABLE', 'AnalysisError', 'AttackSettings', 'Options', 'Run', 'analyze', 'analyze_run',
           'compare', 'comparison_table', 'group_runs', 'load_run', 'write_run']
