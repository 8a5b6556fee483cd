"""`python -m multimix_jax.data.prepare --dataset=NAME --data_dir=DIR`: see multimix_jax.data.prepare.cli."""

from absl import flags

from multimix_jax.data.prepare import cli

if __name__ == '__main__':
  flags.adopt_module_key_flags(cli)  # so that --help lists the command's flags
  cli.run()
