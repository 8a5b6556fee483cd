"""Test-wide set-up: four host devices, so data-parallel code is exercised on a CPU, light compilation, and one
compilation cache for the session.

XLA reads the flags once, when the backend starts, so they are set before anything imports jax; subprocesses that
the tests start (the command line, several processes, notebooks) inherit them.

`jax_disable_most_optimizations` (as flax's examples/imagenet tests use it) halves the compile time that dominates
this suite. Tests compare programs compiled the same way, or against references with float tolerances, so their
numerics allow it; set MULTIMIX_TEST_OPTIMIZE=1 to run the suite with XLA's full optimisation.

The suite runs on the CPU's host devices (it counts on four of them), also where a CUDA or TPU plugin is installed:
JAX_PLATFORMS=cpu, unless set already. Many tests and their subprocesses compile the same programs (the trainer's
steps for the digits default, a run again after SIGTERM); JAX's persistent compilation cache, in a directory of
this session only and removed at its end, compiles each once. A cached executable is the one XLA would compile
again, so no test's numerics change.
"""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()
if os.environ.get('PYTEST_XDIST_WORKER'):
  # Several workers share the machine's cores: each XLA computation on one thread, rather than every worker's
  # thread pool contending for every core.
  os.environ['XLA_FLAGS'] += ' --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if os.environ.get('MULTIMIX_TEST_OPTIMIZE') != '1':
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='multimix_jax_test_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'


@pytest.fixture(name='torch')
def torch_fixture():
  """PyTorch, for the tests that check our networks against the authors' PyTorch ones (`torch_reference`).

  Skipped where torch is not installed; with MULTIMIX_REQUIRE_TORCH=1 (as CI sets it) a missing torch fails those
  tests instead, so that the fidelity proof cannot silently drop out of CI.
  """
  if os.environ.get('MULTIMIX_REQUIRE_TORCH') == '1':
    import torch  # pylint: disable=g-import-not-at-top
    return torch
  return pytest.importorskip('torch')


def pytest_configure(config):
  config.addinivalue_line('markers', "fidelity: compares a network with a PyTorch reference one (needs torch)")


def pytest_terminal_summary(terminalreporter):
  """Names each fidelity test and its outcome at the end of the run, so that a CI log shows the proof ran."""
  outcomes = {}
  for outcome in ('passed', 'failed', 'skipped', 'error'):
    for report in terminalreporter.stats.get(outcome, []):
      if 'fidelity' in getattr(report, 'keywords', {}) and (report.when == 'call' or outcome != 'passed'):
        outcomes[report.nodeid] = outcome
  if outcomes:
    counts = ', '.join(f'{list(outcomes.values()).count(o)} {o}' for o in ('passed', 'failed', 'skipped', 'error')
                       if o in outcomes.values())
    terminalreporter.write_sep('-', f"fidelity (our weights copied into PyTorch reference networks): {counts}")
    for nodeid, outcome in sorted(outcomes.items()):
      terminalreporter.write_line(f'{outcome.upper():8} {nodeid}')


@pytest.fixture(scope='session')
def torchvision_transforms():
  """torchvision's own Python transforms (torchvision.transforms and .v2.functional), loaded without its compiled
  operators, which the PyPI wheel builds against a CUDA torch.

  Skipped where torch or torchvision is not installed; with MULTIMIX_REQUIRE_TORCH=1 (as CI sets it) a missing one
  fails those tests instead, as for the `torch` fixture.
  """
  import importlib.machinery  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  required = os.environ.get('MULTIMIX_REQUIRE_TORCH') == '1'
  if required:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  else:
    pytest.importorskip('torch')
  spec = importlib.util.find_spec('torchvision')
  if spec is None:
    if required:
      raise ModuleNotFoundError('torchvision is not installed (MULTIMIX_REQUIRE_TORCH=1)')
    pytest.skip('torchvision is not installed')
  if 'torchvision' not in sys.modules:
    # A bare package in place of torchvision/__init__.py, which loads the compiled operators.
    root = os.path.dirname(spec.origin)
    package = types.ModuleType('torchvision')
    package.__path__ = [root]
    package.__spec__ = importlib.machinery.ModuleSpec('torchvision', None, is_package=True)
    package.__spec__.submodule_search_locations = [root]
    sys.modules['torchvision'] = package
  import torchvision.transforms as T  # pylint: disable=g-import-not-at-top
  from torchvision.transforms.v2 import functional as F  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(T=T, F=F)
