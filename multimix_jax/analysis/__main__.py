"""What mixing did to a trained model: `python -m multimix_jax.analysis --workdir=DIR [--workdir=DIR2 --out=OUT]`.

    python -m multimix_jax.analysis --workdir=runs/default                  # -> runs/default/analysis/
    python -m multimix_jax.analysis --workdir=runs/erm --workdir=runs/default --out=runs/compare
    python -m multimix_jax.analysis --workdir=runs/default --metrics=accuracy,robustness --fgsm_eps=0.05

A workdir or option that cannot work ends the command with one `error:` line before anything is evaluated.

Flags in absl's style, as `multimix_jax.main`; exit statuses as `multimix_jax.command_line` says.
"""

import dataclasses

from absl import flags

from multimix_jax import command_line
from multimix_jax.analysis import options as options_lib

_WORKDIR = flags.DEFINE_multi_string('workdir', None, 'A run directory (repeat to compare several).')
_OUT = flags.DEFINE_string('out', None, 'Output directory: required with several workdirs (the comparison); with '
                           'one, replaces WORKDIR/analysis.')
flags.DEFINE_list('metrics', list(options_lib.METRICS), f'Figures to compute, from '
                  f'{", ".join(options_lib.METRICS)}; accuracy is always computed.')
_OVERRIDE = "; default: the run's config.attack (set per dataset in multimix_jax/configs/)."
flags.DEFINE_float('fgsm_eps', None, 'FGSM: L∞ budget in pixel units [0, 1]' + _OVERRIDE)
flags.DEFINE_float('pgd_eps', None, 'PGD: L∞ budget in pixel units [0, 1]' + _OVERRIDE)
flags.DEFINE_integer('pgd_steps', None, 'PGD: number of steps' + _OVERRIDE)
flags.DEFINE_float('pgd_step_size', None, 'PGD: step size in pixel units' + _OVERRIDE)
flags.DEFINE_bool('pgd_random_start', None, 'PGD: start at a uniform point of the ball' + _OVERRIDE)
flags.DEFINE_integer('attack_examples', 0, 'Attack the first batches covering this many test examples (0: all).')
flags.DEFINE_integer('tsne_points', 2000, 'Test embeddings in the t-SNE (a seeded random subset).')
flags.DEFINE_integer('tsne_iterations', 1000, 't-SNE optimisation steps (at least 250).')
flags.DEFINE_integer('interpolations', 200, 'MultiMix interpolations drawn over the t-SNE.')
flags.DEFINE_string('data_dir', None, "TFDS data_dir; default: the run's.")
flags.DEFINE_integer('eval_batch_size', 0, "Global evaluation batch; 0: the run's.")
flags.DEFINE_integer('seed', 0, 'Seed of the subsets, the interpolations, t-SNE and PGD starts.')


def options_from_flags() -> options_lib.Options:
  """The parsed flags as `Options` (every field of Options is a flag of the same name)."""
  values = {f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(options_lib.Options)}
  return options_lib.Options(**{**values, 'metrics': tuple(values['metrics'])})


def main(argv):
  del argv  # parse_flags refuses positional arguments
  from multimix_jax import analysis  # pylint: disable=g-import-not-at-top
  try:
    result = analysis.analyze(_WORKDIR.value or [], _OUT.value, options_from_flags())
  except options_lib.AnalysisError as e:
    command_line.fail(e)
  for directory, files in result['outputs'].items():
    print(f'{directory}: {", ".join(files)}')
  for figures in result['runs']:
    print(f"{figures['label']}: " + ', '.join(f'{name} {figures[key]:.{digits}f}'
                                              for key, name, digits in analysis.TABLE if key in figures))


if __name__ == '__main__':
  command_line.run(main)
