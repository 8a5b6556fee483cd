"""The preflight's closing line says first which steps do not fit and by how much; a step whose compiler failed
for want of a device is reported as such after them (not in their place). A fake compile result stands for the GPU
compiler, which needs the `compile-gpu` extra."""

import pytest

from multimix_jax import configs
from multimix_jax import preflight
from multimix_jax.preflight import roofline
from multimix_jax.preflight import steps

GIB = 2**30


def fake_rows(*rows):
  return lambda *args, **kwargs: [dict(row, usable_hbm_bytes=75 * GIB) for row in rows]


def test_what_does_not_fit_is_said_first_and_an_unbuilt_step_as_such(monkeypatch):
  monkeypatch.setattr(steps, 'compile_branches', fake_rows(
      {'step': 'train: multimix (p = 0.5)', 'fits': False, 'error': None, 'total_bytes': 100 * GIB},
      {'step': 'train: input_mixup (p = 0.5)', 'fits': None, 'total_bytes': None,
       'error': 'INTERNAL: cudaErrorInvalidDevice : invalid device ordinal'},
      {'step': 'eval', 'fits': False, 'error': None, 'total_bytes': 80 * GIB}))
  monkeypatch.setattr(roofline, 'markdown', lambda *args: '| table |')
  with pytest.raises(preflight.DoesNotFit) as raised:
    preflight.preflight(configs.load('default'), 'h100x1')
  message, result = raised.value.args
  assert message.startswith('train: multimix (p = 0.5) needs 100.00 GiB per chip (25.00 GiB more than fits), '
                            'eval needs 80.00 GiB per chip (5.00 GiB more than fits) on h100x1, which has 75.00 GiB '
                            'usable per chip: lower --config.batch_size'), message
  assert message.endswith('train: input_mixup (p = 0.5) was not built: its compiler for h100x1 needs a device this '
                          'machine does not have (INTERNAL: cudaErrorInvalidDevice : invalid device ordinal).'), message
  assert result['markdown'] == '| table |'


def test_a_step_that_fails_alone_is_still_a_compile_failure(monkeypatch):
  monkeypatch.setattr(steps, 'compile_branches', fake_rows(
      {'step': 'train: multimix (p = 0.5)', 'fits': True, 'error': None, 'total_bytes': GIB},
      {'step': 'eval', 'fits': None, 'total_bytes': None, 'error': 'INTERNAL: cudaErrorInvalidDevice'}))
  monkeypatch.setattr(roofline, 'markdown', lambda *args: '| table |')
  with pytest.raises(preflight.StepFailed, match='eval did not compile for h100x1: INTERNAL: cudaErrorInvalidDevice'):
    preflight.preflight(configs.load('default'), 'h100x1')
