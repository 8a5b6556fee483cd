"""What mixing did to a trained model: `python -m multimix_jax.analysis --workdir=DIR [--workdir=DIR2 --out=OUT]`.

    python -m multimix_jax.analysis --workdir=runs/default                  # -> runs/default/analysis/
    python -m multimix_jax.analysis --workdir=runs/erm --workdir=runs/default --out=runs/compare
    python -m multimix_jax.analysis --workdir=runs/default --metrics=accuracy,robustness --fgsm_eps=0.05

A workdir or option that cannot work ends the command with one `error:` line before anything is evaluated.
"""

from absl import flags

from multimix_jax.analysis import cli

flags.adopt_module_key_flags(cli)  # so that --help lists the analysis's flags

if __name__ == '__main__':
  cli.run_main()
