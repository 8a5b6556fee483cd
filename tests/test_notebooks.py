"""The notebooks of launch/ run top to bottom on this CPU, with their parameters scaled down (skip-execution cells,
which need Colab, are skipped)."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location('run_notebooks', os.path.join(REPO, 'scripts', 'run_notebooks.py'))
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)


def outputs(notebook):
  text, images = [], 0
  for cell in notebook.cells:
    for out in cell.get('outputs', []):
      text.append(out.get('text', '') + str(out.get('data', {}).get('text/plain', '')))
      images += 'image/png' in out.get('data', {})
      assert out.get('output_type') != 'error', out
  return ''.join(text), images


def test_colab_notebook_trains_and_plots_from_the_run_files(tmp_path):
  workdir = tmp_path / 'run'
  notebook = run_notebooks.execute(
      os.path.join(REPO, 'launch', 'colab_tpu.ipynb'),
      {'WORKDIR': str(workdir), 'DATA_DIR': str(tmp_path / 'tfds'), 'NUM_TRAIN_STEPS': 20,
       'PER_DEVICE_BATCH_SIZE': 32,
       'EXTRA_FLAGS': ['--config.eval_every_steps=10', '--config.log_every_steps=5', '--config.multimix.n=64']},
      output=str(tmp_path / 'colab_tpu.ipynb'), timeout=300)
  text, images = outputs(notebook)
  assert 'runtime: CPU' in text and 'global batch:' in text
  assert 'eval_top1' in text and 'last evaluation: step 20' in text
  assert images == 1 and (workdir / 'curves.png').exists()


def test_your_loop_notebook_runs(tmp_path):
  notebook = run_notebooks.execute(
      os.path.join(REPO, 'launch', 'multimix_in_your_loop.ipynb'),
      {'STEPS': 30, 'N_VALUES': [100, 1000], 'REPEATS': 2}, output=str(tmp_path / 'loop.ipynb'), timeout=300)
  text, images = outputs(notebook)
  assert 'largest difference' in text and 'n =   1000' in text
  assert images == 3
