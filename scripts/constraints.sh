#!/usr/bin/env bash
# Writes launch/constraints.txt: every package version of the environment the test suite passed in, so that every
# TPU host (`launch/tpu_pod.sh setup`) and every SLURM node installs the same, tested versions:
#   pip install -c launch/constraints.txt -e '.[train,tpu]'
# Run it in that environment (Linux x86-64, the Python it names), at the repository root, once the suite passes there.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The versions of the environment the test suite ran in: Python $(python -c 'import platform; print(platform.python_version())')" \
    "on $(uname -s) $(uname -m), written by scripts/constraints.sh. Install with -c launch/constraints.txt."
  # Local wheels (a path after ' @ ') and the editable project itself do not exist on another machine.
  python -m pip freeze --exclude-editable | grep -v ' @ '
} > launch/constraints.txt
echo "launch/constraints.txt: $(grep -vc '^#' launch/constraints.txt) packages"
