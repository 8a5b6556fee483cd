"""Every command line that README.md, launch/README.md and docs/*.md quote parses as the program would parse it.

The documents quote commands with flags (`python -m multimix_jax.main --config=... --config.multimix.n=10000`,
`python -m multimix_jax.benchmark --nopeak_memory`, `python scripts/compile_targets.py --markdown`); a flag renamed
in the code and not in the text, or a spelling absl refuses (`--no-peak_memory`), is a command a user copies and
sees fail. Running each command is too slow for the suite, so each one is parsed instead, by the program's own
parser, in one process per program:

- absl programs: every flag and its value (enum choices, booleans, integers) by `flags.FLAGS`; for the trainer, the
  config file and each `--config.KEY=VALUE` override by `ml_collections.config_flags` (the key must exist and the
  value must have the field's type), and `--compile_for` by the target registry;
- argparse scripts: their own `parse_args`, stopped before any work.

Shell around a command (`VAR=... python ...`, `&&`, `$(for ...)`, `\\` continuations, `# comments`) is taken apart
first; `$VAR` values are parsed as the strings they are. Fenced blocks of another language (```text output, ```python
code, the package tree) are not shell and are not read.
"""

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ('README.md', 'launch/README.md') + tuple(
    sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, 'docs', '*.md'))))
_SHELL = ('', 'bash', 'sh', 'shell', 'console', 'zsh')
_PROGRAM = re.compile(r'^(?:python3?)$')


def _snippets(text):
  """Shell text of a markdown document: fenced shell blocks and inline code spans that run python."""
  blocks = [body for language, body in re.findall(r'^```([a-z]*)\n(.*?)^```', text, flags=re.S | re.M)
            if language in _SHELL]
  outside = re.sub(r'^```[a-z]*\n.*?^```', '', text, flags=re.S | re.M)
  spans = [s for s in re.findall(r'`([^`\n]+)`', outside) if re.search(r'\bpython3? (-m |scripts/)', s)]
  return blocks + spans


def commands(text):
  """(program, args) for each python command in the text; program is 'multimix_jax.X' or 'scripts/X.py'."""
  found = []
  for snippet in _snippets(text):
    snippet = snippet.replace('\\\n', ' ')
    for line in snippet.splitlines():
      try:
        tokens = shlex.split(line, comments=True)
      except ValueError:  # an unbalanced quote: prose in a code span, not a command
        continue
      for i, token in enumerate(tokens):
        if not _PROGRAM.match(token) or i + 1 >= len(tokens):
          continue
        if tokens[i + 1] == '-m' and i + 2 < len(tokens) and tokens[i + 2].startswith('multimix_jax.'):
          program, rest = tokens[i + 2], tokens[i + 3:]
        elif tokens[i + 1].startswith('scripts/') and tokens[i + 1].endswith('.py'):
          program, rest = tokens[i + 1], tokens[i + 2:]
        else:
          continue
        args = []
        for arg in rest:
          if arg in ('&&', '||', ';', '|', '&', '>', '2>', '>>') or arg.startswith('$('):
            break
          args.append(arg)
        found.append((program, args))
  return found


# Runs in a subprocess per program (absl keeps its flags in one global registry per process).
_CHECKER = r'''
import argparse, importlib, json, runpy, sys
from absl import flags
program, commands = sys.argv[1], json.loads(sys.argv[2])
results = []

class _Parsed(Exception):
  pass

if program.startswith('scripts/'):
  original = argparse.ArgumentParser.parse_args
  def parse_args(self, args=None, namespace=None):
    original(self, args, namespace)
    raise _Parsed()
  argparse.ArgumentParser.parse_args = parse_args
  for args in commands:
    sys.argv = [program] + args
    try:
      runpy.run_path(program, run_name='__main__')
      results.append('the script ran past its argument parsing')
    except _Parsed:
      results.append(None)
    except SystemExit as e:
      results.append(f'argparse refused it (exit {e.code})')
else:
  try:
    module = importlib.import_module(program + '.__main__')
  except ModuleNotFoundError:
    module = importlib.import_module(program)
  if program == 'multimix_jax.main':
    from ml_collections import config_flags
    from multimix_jax import configs
    from multimix_jax.preflight import hardware
  for args in commands:
    args = [a for a in args if not a.startswith('$')]
    problem = None
    try:
      own = args
      if program == 'multimix_jax.main':
        config_args = [a for a in args if a.startswith('--config')]
        own = [a for a in args if not a.startswith('--config')]
        values = flags.FlagValues()
        config = config_flags.DEFINE_config_file('config', configs.path('default'), flag_values=values,
                                                 sys_argv=['prog'] + config_args, lock_config=True)
        values(['prog'] + config_args)
        config.value
      flags.FLAGS(['prog'] + own)
      if program == 'multimix_jax.main' and flags.FLAGS.compile_for:
        hardware.resolve(flags.FLAGS.compile_for)
    except Exception as e:
      problem = f'{type(e).__name__}: {" ".join(str(e).split())}'
    finally:
      flags.FLAGS.unparse_flags()
    results.append(problem)
print('RESULTS ' + json.dumps(results))
'''


def check(program, commands_of_program):
  """The parser's complaint about each command (None where it parses), from a subprocess run in the checkout."""
  done = subprocess.run([sys.executable, '-c', _CHECKER, program, json.dumps(commands_of_program)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith('RESULTS ')]
  assert done.returncode == 0 and lines, done.stderr[-3000:]
  return json.loads(lines[-1][len('RESULTS '):])


def _documented():
  by_program = {}
  for document in DOCUMENTS:
    with open(os.path.join(ROOT, document), encoding='utf-8') as f:
      for program, args in commands(f.read()):
        by_program.setdefault(program, []).append((document, args))
  return by_program


def test_the_documents_quote_commands_of_every_program():
  programs = set(_documented())
  assert {'multimix_jax.main', 'multimix_jax.benchmark', 'scripts/compile_targets.py'} <= programs, programs
  assert len(programs) >= 4, programs


@pytest.mark.parametrize('program', sorted(_documented()))
def test_every_documented_command_line_parses(program):
  quoted = _documented()[program]
  if program.startswith('multimix_jax.'):
    assert os.path.exists(os.path.join(ROOT, *program.split('.'))) or os.path.exists(
        os.path.join(ROOT, *program.split('.')) + '.py'), f'{program} is quoted but does not exist'
  else:
    assert os.path.exists(os.path.join(ROOT, program)), f'{program} is quoted but does not exist'
  problems = check(program, [args for _, args in quoted])
  wrong = [f'{document}: python {"-m " if "." in program and "/" not in program else ""}{program} {" ".join(args)}'
           f'\n    -> {problem}' for (document, args), problem in zip(quoted, problems) if problem]
  assert not wrong, '\n'.join(wrong)


def test_the_checker_refuses_what_the_programs_refuse():
  """The check above can fail: a misspelt boolean, an unknown config key, a wrong type, an unknown target."""
  text = '\n'.join([
      '```bash',
      'python -m multimix_jax.benchmark --no-peak_memory',
      'python -m multimix_jax.benchmark --nopeak_memory --dtype=float32',
      'XLA_FLAGS=--x python -m multimix_jax.main --workdir=runs/a \\',
      '    --config.multimix.nn=3   # a key the config lacks',
      'python -m multimix_jax.main --workdir=$WORKDIR --config.multimix.n=many && echo done',
      'python -m multimix_jax.main --config=configs/imagenet_r50.py --compile_for=v5e-31',
      'python -m multimix_jax.main --config=configs/imagenet_r50.py --compile_for=v5e-32',
      '```',
      '```text',
      '  analysis/   python -m multimix_jax.analysis: a package tree, not a command',
      '```',
  ])
  found = commands(text)
  assert [p for p, _ in found] == ['multimix_jax.benchmark'] * 2 + ['multimix_jax.main'] * 4
  assert found[3][1] == ['--workdir=$WORKDIR', '--config.multimix.n=many']
  benchmark_problems = check('multimix_jax.benchmark', [args for p, args in found if p == 'multimix_jax.benchmark'])
  assert 'no-peak_memory' in benchmark_problems[0] and benchmark_problems[1] is None
  main_problems = check('multimix_jax.main', [args for p, args in found if p == 'multimix_jax.main'])
  assert 'nn' in main_problems[0]
  assert main_problems[1] is not None and 'many' in main_problems[1]
  assert 'v5e-31' in main_problems[2] and main_problems[3] is None
  script = check('scripts/compile_targets.py', [['--markdown'], ['--markdwon']])
  assert script[0] is None and 'argparse' in script[1]
