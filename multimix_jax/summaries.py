"""What a run logs: scalars to the log, to TensorBoard event files and to `scalars.jsonl`, with no TensorFlow.

TensorBoard's event files are written by tensorboardX (a small writer of the same format); `scalars.jsonl` holds the
same scalars one JSON line per call, `{"step": 120, "train_loss": 1.93, ...}`, for notebooks and the analysis. A
resumed run appends again from its checkpoint: a step may repeat (the last value counts). Only the process that
writes files (process 0) opens them; every process logs.
"""

import json
import time

from absl import logging
from etils import epath

SCALARS_FILE = 'scalars.jsonl'


class Writer:
  """Scalars of a run in `workdir`; `write_files` False (processes other than 0): the log only."""

  def __init__(self, workdir, *, write_files: bool):
    self._scalars_path = epath.Path(workdir) / SCALARS_FILE if write_files else None
    self._events = None
    if write_files:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._events = SummaryWriter(logdir=str(workdir), flush_secs=30)

  def write_hparams(self, hparams: dict):
    """The run's config, flattened, as a table in TensorBoard's text tab."""
    if self._events is not None:
      rows = ''.join(f'| {k} | {v} |\n' for k, v in sorted(hparams.items()))
      self._events.add_text('config', '| key | value |\n| --- | --- |\n' + rows, global_step=0)

  def write_scalars(self, step: int, scalars: dict):
    scalars = {k: float(v) for k, v in scalars.items()}
    logging.info('[%d] %s', step, ', '.join(f'{k}={v:.6g}' for k, v in sorted(scalars.items())))
    if self._events is not None:
      for name, value in scalars.items():
        self._events.add_scalar(name, value, global_step=int(step))
    if self._scalars_path is not None:
      with self._scalars_path.open('a') as f:
        f.write(json.dumps({'step': int(step), **scalars}) + '\n')

  def flush(self):
    if self._events is not None:
      self._events.flush()

  def close(self):
    if self._events is not None:
      self._events.close()


class Progress:
  """Steps per second and the time left, added to the scalars of each logging step."""

  def __init__(self, start_step: int, num_steps: int):
    self._step, self._time, self._num_steps = start_step, time.monotonic(), num_steps

  def __call__(self, step: int) -> dict:
    now = time.monotonic()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    logging.info('Step %d of %d: %.3g steps/s, %.0f min left.', step, self._num_steps, rate,
                 (self._num_steps - step) / max(rate, 1e-9) / 60)
    return {'steps_per_sec': rate}
