"""Measured cost of MultiMix against ERM (and of JAX against PyTorch) on synthetic batches.

    python -m multimix_jax.benchmark                      # the 'cpu' preset on a CPU, the 'gpu' preset on a GPU
    python -m multimix_jax.benchmark --model=small_cnn --methods=erm,multimix_n1000 --rounds=20
    python -m multimix_jax.benchmark --model=preact_resnet18 --methods=erm --torch   # JAX against PyTorch
    python -m multimix_jax.benchmark --input              # the TFDS input pipeline alone
    python -m multimix_jax.benchmark --attacks --model=resnet50   # the analysis's FGSM and PGD against an eval step

Every "× erm" comes with a 95% confidence interval from the paired rounds; targets are met, missed or undecided.
"""

from absl import flags

from multimix_jax.benchmark import cli

flags.adopt_module_key_flags(cli)  # so that --help lists the benchmark's flags

if __name__ == '__main__':
  cli.run_main()
