"""Compiling for a target in a child process, so that a crash of the target's compiler is a message, not the end.

libtpu and XLA:GPU run inside the Python process; when one of them dies of a signal (libtpu 0.0.42.1 overflows its
stack compiling PreActResNet-18 for v6e) nothing in that process can report it. The preflight
(`python -m multimix_jax.main --compile_for=...`) and the benchmark's `--target` rerun their own command line in a
child process, pass its output through, and turn such a death into one sentence naming the step and the compiler.
"""

import os
import re
import signal
import subprocess
import sys

from multimix_jax.preflight import hardware

# Set in the child, which then compiles itself.
ENVIRONMENT_VARIABLE = 'MULTIMIX_JAX_COMPILE_CHILD'
_CRASHES = (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)
# The progress lines of the preflight ('[v6e-8] compiling eval...') and of the benchmark ('[resnet50 on v5e-8]
# compiling erm...'): the last one names the step that was compiling.
_PROGRESS = re.compile(r'\[[^]]+\] compiling (.+?)\.\.\.$')


class CompilerCrashed(RuntimeError):
  """The child died of a signal; the message says which step, which compiler, and what to try."""


def in_child() -> bool:
  return os.environ.get(ENVIRONMENT_VARIABLE) == '1'


def rerun_in_child(module: str, target: str, *, error_status: int) -> None:
  """Unless this process is that child: reruns `python -m module` with this process's arguments in a child that
  compiles, and exits with its status, or with one `error:` line and `error_status` when the compiler crashed."""
  if in_child():
    return
  try:
    sys.exit(run_command([sys.executable, '-m', module, *sys.argv[1:]], target))
  except CompilerCrashed as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(error_status)


def run_command(command: list[str], target: str) -> int:
  """Runs `command` as the child, passing its output through; its exit code.

  Raises CompilerCrashed when the child is killed by a signal of a crash, or by SIGKILL (the out-of-memory killer)."""
  child = subprocess.Popen(command, env={**os.environ, ENVIRONMENT_VARIABLE: '1'}, stderr=subprocess.PIPE, text=True,
                           errors='replace')
  step = None
  try:
    for line in child.stderr:
      sys.stderr.write(line)
      progress = _PROGRESS.match(line.strip())
      step = progress[1] if progress else step
    code = child.wait()
  except KeyboardInterrupt:  # Ctrl-C reached the child too
    code = child.wait()
    return 128 + signal.SIGINT if code < 0 else code
  while_doing = f"while compiling '{step}' for {target}" if step else f'before its first step for {target}'
  if -code in _CRASHES:
    try:
      compiler = hardware.resolve(target).compiler
    except hardware.TargetError:
      compiler = 'the compiler'
    package = compiler.split()[0]
    raise CompilerCrashed(
        f"the target's compiler ({compiler}) crashed ({signal.Signals(-code).name}) {while_doing}: a bug of that "
        f'compiler, not of the config. Another version of it may compile the step (pip install -U {package}); the '
        'compiled table of docs/preflight.md names the versions that compiled each target.')
  if code == -signal.SIGKILL:
    raise CompilerCrashed(f'the compilation was killed (SIGKILL) {while_doing}, perhaps by the out-of-memory killer: '
                          "the compiler needs more of this machine's memory than it could have.")
  return 128 - code if code < 0 else code
