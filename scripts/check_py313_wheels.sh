#!/usr/bin/env bash
# Shows that every dependency range of setup.py (the pure functions' and the trainer's) resolves to a wheel for Python 3.13 (Colab's Python), where no
# 3.13 interpreter is at hand: `pip download --only-binary=:all: --python-version 3.13 --no-deps` of each range,
# from PyPI alone (--isolated: no local pip configuration, mirror or constraints). Prints the wheel each range
# resolves to; exits 1 if a range has none. jax's range is also checked for jaxlib, its compiled half (jax itself
# is one wheel for every Python).
#
#   scripts/check_py313_wheels.sh          # Python 3.13, this machine's platform
#   scripts/check_py313_wheels.sh 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VERSION=${1:-3.13}
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

mapfile -t requirements < <("$PYTHON" - <<'PY'
import ast

tree = ast.parse(open('setup.py', encoding='utf-8').read())
for node in tree.body:
  if isinstance(node, ast.Assign) and any(getattr(t, 'id', '') in ('INSTALL_REQUIRES', 'TRAIN_REQUIRES')
                                          for t in node.targets):
    for requirement in ast.literal_eval(node.value):
      print(requirement)
      if requirement.startswith('jax>') or requirement.startswith('jax='):
        print('jaxlib' + requirement[3:])
PY
)
if [ "${#requirements[@]}" -eq 0 ]; then
  echo "error: no INSTALL_REQUIRES or TRAIN_REQUIRES found in setup.py" >&2
  exit 2
fi

status=0
for i in "${!requirements[@]}"; do
  requirement=${requirements[$i]}
  mkdir "$dest/$i"
  if output=$("$PYTHON" -m pip --isolated download -q --disable-pip-version-check --only-binary=:all: \
      --python-version "$VERSION" --no-deps -d "$dest/$i" "$requirement" 2>&1); then
    printf 'ok    %-34s %s\n' "$requirement" "$(ls "$dest/$i")"
  else
    printf 'FAIL  %-34s %s\n' "$requirement" "$(printf '%s\n' "$output" | grep -v '^\s*$' | tail -1)"
    status=1
  fi
done
if [ "$status" -eq 0 ]; then
  echo "every range of setup.py has a wheel for Python $VERSION"
fi
exit "$status"
