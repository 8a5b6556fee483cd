"""The command line: every bad invocation ends with one `error:` line, no traceback, nothing written."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bad_command_lines_end_in_one_error_line(tmp_path):
  existing = tmp_path / 'notes.txt'
  existing.write_text('precious')
  run = f'--workdir={tmp_path / "run"}'
  cases = {
      'missing config file': ([run, '--config=configs/nope.py'], 'no such file'),
      'workdir is a file': ([f'--workdir={existing}'], 'is a file, not a directory'),
      'unknown flag': ([run, '--bogus=1'], "Unknown command line flag 'bogus'"),
      'unknown config key': ([run, '--config.nokey=3'], 'does not have'),
      'bad value': ([run, '--config.batch_size=abc'], 'invalid literal'),
      'stray argument': ([run, 'extra'], 'unexpected arguments'),
      'no workdir': ([], '--workdir'),
      'invalid config': ([run, '--config.multimix.alpha=-1'], 'multimix.alpha=-1.0 must be > 0'),
  }
  procs = {name: subprocess.Popen([sys.executable, '-m', 'multimix_jax.main', *args], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for name, (args, _) in cases.items()}  # concurrently: each pays the import of jax once
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    errors = [line for line in (stdout + stderr).splitlines() if line.startswith('error:')]
    assert proc.returncode == 2, (name, proc.returncode)  # refused before any work (multimix_jax.command_line)
    assert len(errors) == 1 and cases[name][1] in stderr, (name, stderr[-2000:])
    assert 'Traceback' not in stderr, (name, stderr[-2000:])
  assert existing.read_text() == 'precious' and not (tmp_path / 'run').exists()
