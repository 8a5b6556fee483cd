"""What a run logs: scalars to the log, to TensorBoard event files and to `scalars.jsonl`, with no TensorFlow.

TensorBoard's event files are written with tensorboardX's record format, in the calling thread: a write that fails
(a full disk) raises where the run can report it, and nothing is left to flush at exit. `scalars.jsonl` holds the
same scalars one JSON line per call, `{"step": 120, "train_loss": 1.93, ...}`, for notebooks and the analysis. A
resumed run appends again from its checkpoint: a step may repeat (the last value counts). Only the process that
writes files (process 0) opens them; every process logs.
"""

import json
import os
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
      from tensorboardX import event_file_writer  # pylint: disable=g-import-not-at-top
      # events.out.tfevents.<time>.<host>.<pid>, as TensorFlow names them: two trainers never share a file.
      self._events = event_file_writer.EventsWriter(os.path.join(os.fspath(workdir), 'events'),
                                                    filename_suffix=f'.{os.getpid()}')

  def _write_event(self, step: int, summary):
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self._events.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def write_hparams(self, hparams: dict):
    """The run's config, flattened, as a table in TensorBoard's text tab."""
    if self._events is not None:
      from tensorboardX import summary  # pylint: disable=g-import-not-at-top
      rows = ''.join(f'| {k} | {v} |\n' for k, v in sorted(hparams.items()))
      self._write_event(0, summary.text('config', '| key | value |\n| --- | --- |\n' + rows))
      self._events.flush()

  def write_scalars(self, step: int, scalars: dict):
    scalars = {k: float(v) for k, v in scalars.items()}
    logging.info('[%d] %s', step, ', '.join(f'{k}={v:.6g}' for k, v in sorted(scalars.items())))
    if self._events is not None:
      from tensorboardX import summary  # pylint: disable=g-import-not-at-top
      for name, value in scalars.items():
        self._write_event(int(step), summary.scalar(name, value))
      self._events.flush()
    if self._scalars_path is not None:
      with self._scalars_path.open('a') as f:
        f.write(json.dumps({'step': int(step), **scalars}) + '\n')

  def close(self):
    """Closes the event file. Every write was flushed when made, so a failure here (a disk that filled since) loses
    nothing and is logged, not raised: the error that stopped the run, if any, is the one reported."""
    if self._events is not None:
      events, self._events = self._events, None
      try:
        events.close()
      except OSError as e:
        logging.warning('Closing the TensorBoard event file failed: %s', e)


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
