#!/usr/bin/env bash
# Runs launch/multimix_in_your_loop.ipynb (scaled down: 30 steps per run) on Colab's preinstalled versions, in a
# virtual environment pinned to them: jax 0.7.2, flax 0.11.2, optax 0.2.8 (Colab's runtime inventory), with
# scikit-learn and matplotlib, and multimix_jax installed by the notebook's own cell from this checkout, without
# dependencies, as on Colab. 4 host devices, so that the shard_map section spans several. Needs PyPI for the venv.
#
#   scripts/check_colab_versions.sh [VENV]     # default /tmp/multimix-colab-venv, reused when it exists
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/multimix-colab-venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'jax==0.7.2' 'jaxlib==0.7.2' 'flax==0.11.2' \
  'optax==0.2.8' scikit-learn matplotlib 'setuptools>=70.1' nbclient nbformat ipykernel
output=$(mktemp -d)
trap 'rm -rf "$output"' EXIT
XLA_FLAGS=--xla_force_host_platform_device_count=4 "$VENV/bin/python" - "$output/loop.ipynb" <<'PY'
import importlib.util
import os
import sys

spec = importlib.util.spec_from_file_location('run_notebooks', 'scripts/run_notebooks.py')
run_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_notebooks)
notebook = run_notebooks.execute('launch/multimix_in_your_loop.ipynb',
                                 {'SOURCE': os.path.abspath('.'), 'STEPS': 30, 'EVAL_EVERY': 10, 'N_VALUES': [100, 1000],
                                  'REPEATS': 3}, output=sys.argv[1], timeout=600)
for cell in notebook.cells:
  for out in cell.get('outputs', []):
    if out.get('output_type') == 'error':
      sys.exit(f'error: a cell failed: {out["ename"]}: {out["evalue"]}')
    if 'text' in out:
      print(out['text'], end='')
print('the loop notebook ran top to bottom on these versions')
PY
