"""Test-wide set-up: four host devices, so data-parallel code is exercised on a CPU.

XLA reads the flag once, when the backend starts, so it is set before anything imports jax.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
