"""Test-wide set-up: four host devices, so data-parallel code is exercised on a CPU, and light compilation.

XLA reads the flags once, when the backend starts, so they are set before anything imports jax; subprocesses that
the tests start (the command line, several processes, notebooks) inherit them.

`jax_disable_most_optimizations` (as flax's examples/imagenet tests use it) halves the compile time that dominates
this suite. Tests compare programs compiled the same way, or against references with float tolerances, so their
numerics allow it; set MULTIMIX_TEST_OPTIMIZE=1 to run the suite with XLA's full optimisation.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The suite runs on this machine's CPU. With libtpu or the CUDA plugin installed (the compile-for-target tests need
# them), JAX would otherwise try to start those backends in every process, and libtpu takes a machine-wide lock.
os.environ['JAX_PLATFORMS'] = 'cpu'
if os.environ.get('MULTIMIX_TEST_OPTIMIZE') != '1':
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
