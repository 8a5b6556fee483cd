"""Every command shares one shape: a refused command line is one `error:` line, exit status 2, no traceback."""

import os
import subprocess
import sys

import pytest

from multimix_jax import command_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ('multimix_jax.main', 'multimix_jax.analysis', 'multimix_jax.benchmark', 'multimix_jax.data.prepare')


def test_every_command_refuses_a_bad_flag_and_a_stray_argument_alike(tmp_path):
  cases = {(program, kind): [sys.executable, '-m', program, *args]
           for program in COMMANDS
           for kind, args in (('bad flag', ['--no_such_flag=1']), ('stray argument', ['extra']))}
  procs = {case: subprocess.Popen(argv, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, 'PYTHONPATH': REPO})
           for case, argv in cases.items()}  # concurrently: each pays its imports once
  for (program, kind), proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    errors = [line for line in (stdout + stderr).splitlines() if line.startswith('error:')]
    assert proc.returncode == command_line.REFUSED, (program, kind, proc.returncode, stderr[-2000:])
    assert len(errors) == 1 and 'Traceback' not in stderr, (program, kind, stderr[-2000:])
    expected = "Unknown command line flag 'no_such_flag'" if kind == 'bad flag' else "unexpected arguments ['extra']"
    assert expected in errors[0], (program, kind, errors[0])
  assert os.listdir(tmp_path) == []  # nothing written


def test_fail_prints_one_line_and_exits_with_the_status(capsys):
  with pytest.raises(SystemExit) as exit_:
    command_line.fail('a message\nover  two lines', status=command_line.FAILED)
  assert exit_.value.code == 1
  assert capsys.readouterr().err == 'error: a message over two lines\n'
