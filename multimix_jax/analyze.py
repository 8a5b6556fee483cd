"""The analysis's former command name: `python -m multimix_jax.analyze ...` runs `python -m multimix_jax.analysis ...`."""

from absl import flags

from multimix_jax.analysis import cli

flags.adopt_module_key_flags(cli)

if __name__ == '__main__':
  cli.run_main()
