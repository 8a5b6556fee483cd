"""The notebooks of launch/ run top to bottom on this CPU, with their parameters scaled down (skip-execution cells,
which need Colab or a browser, are skipped); the committed copies are what a user runs."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(REPO, 'launch', 'colab_tpu.ipynb')
LOOP = os.path.join(REPO, 'launch', 'multimix_in_your_loop.ipynb')
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


def tagged(notebook, tag):
  return next(c for c in notebook.cells if tag in c.metadata.get('tags', []))


@pytest.mark.parametrize('path', [COLAB, LOOP])
def test_committed_notebooks_hold_the_users_parameters_and_open_in_colab(path):
  notebook = nbformat.read(path, as_version=4)
  assert not run_notebooks.injected_cells(notebook), 'a run left its parameters cell in the committed notebook'
  name = os.path.basename(path)
  assert f'https://colab.research.google.com/github/YOUR_ACCOUNT/multimix_jax/blob/main/launch/{name}' in \
      notebook.cells[0].source
  if path == COLAB:
    assert "WORKDIR = ''" in tagged(notebook, 'parameters').source
    assert notebook.metadata['accelerator'] == 'TPU' and notebook.metadata['colab']['gpuType'] == 'V5E1'
  else:
    assert 'accelerator' not in notebook.metadata and 'gpuType' not in notebook.metadata.get('colab', {})
  assert "SOURCE = ''" in tagged(notebook, 'parameters').source
  assert all(not c.outputs for c in notebook.cells if 'timing' in c.metadata.get('tags', []))
  code = '\n'.join(c.source for c in notebook.cells if c.cell_type == 'code')
  assert 'YOUR_ACCOUNT' not in code and 'tensorboard.backend' not in code
  assert not re.search(r'tensorflow(?!_datasets)', code), 'a notebook installs or imports TensorFlow'


def test_a_run_that_leaves_its_parameters_is_caught(tmp_path):
  notebook = run_notebooks.execute(COLAB, {'SOURCE': ''}, output=str(tmp_path / 'nb.ipynb'), until='parameters')
  assert len(run_notebooks.injected_cells(notebook)) == 1
  notebook = run_notebooks.execute(COLAB, {'SOURCE': ''}, output=str(tmp_path / 'nb.ipynb'), until='parameters',
                                   keep_injected=False)
  assert not run_notebooks.injected_cells(nbformat.read(str(tmp_path / 'nb.ipynb'), as_version=4))


@pytest.mark.parametrize('source, message', [
    ('', 'Stopped: SOURCE is not set: in the Parameters cell, set it to a git URL'),
    ('file:///nonexistent/multimix_jax', 'Stopped: git clone of file:///nonexistent/multimix_jax failed (exit status 128)'),
    (os.path.dirname(REPO), 'is a folder without this repository in it'),
    ('/nonexistent/multimix_jax-0.1.0-py3-none-any.whl', 'does not exist: upload the file'),
])
def test_colab_notebook_without_a_usable_source_stops_at_its_first_cell(source, message, tmp_path):
  parameters = {'SOURCE': source} if source else {}
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    run_notebooks.execute(COLAB, parameters, output=str(tmp_path / 'nb.ipynb'), timeout=120)
  assert message in str(error.value)
  assert 'Traceback' not in str(error.value)  # one sentence, not a traceback


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  """The wheel of this checkout, built with the README's command (offline: no build isolation)."""
  folder = tmp_path_factory.mktemp('dist')
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(folder),
                  REPO], check=True, capture_output=True)
  return str(next(folder.glob('multimix_jax-*.whl')))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def source_of(kind, request):
  if kind == 'git':
    if not os.path.exists(os.path.join(REPO, '.git')):
      pytest.skip('this checkout is not a git repository')
    return 'file://' + REPO
  return REPO if kind == 'folder' else request.getfixturevalue('wheel')


@pytest.mark.parametrize('kind', ['folder', 'wheel'])
def test_colab_notebook_installs_and_trains_each_kind_of_source(kind, request, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  notebook = run_notebooks.execute(
      COLAB, {'SOURCE': source_of(kind, request), 'WORKDIR': str(workdir), 'DATA_DIR': data_dir,
              'NUM_TRAIN_STEPS': 2, 'PER_DEVICE_BATCH_SIZE': 8, 'EXTRA_FLAGS': ['--config.multimix.n=16']},
      output=str(tmp_path / 'nb.ipynb'), timeout=300, until='train')
  text, _ = outputs(notebook)
  assert f'source: {"folder" if kind == "folder" else "package file"}' in text
  assert 'multimix_notebook_site/multimix_jax' in text  # the copy it installed, not this checkout
  assert 'runtime: CPU' in text and 'global batch: ' in text
  assert json.loads((workdir / 'summary.json').read_text())['steps'] == 2


def test_colab_notebook_trains_from_a_git_clone_and_plots_from_the_run_files(request, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  notebook = run_notebooks.execute(
      COLAB,
      {'SOURCE': source_of('git', request), 'WORKDIR': str(workdir), 'DATA_DIR': data_dir,
       'NUM_TRAIN_STEPS': 20, 'PER_DEVICE_BATCH_SIZE': 32,
       'EXTRA_FLAGS': ['--config.eval_every_steps=10', '--config.log_every_steps=5', '--config.multimix.n=64']},
      output=str(tmp_path / 'colab_tpu.ipynb'), timeout=300)
  text, images = outputs(notebook)
  assert 'source: git file://' in text and 'multimix_notebook_site/multimix_jax' in text
  assert 'runtime: CPU' in text and 'global batch: ' in text
  assert 'eval_top1' in text and 'last evaluation: step 20' in text
  assert images == 1 and (workdir / 'curves.png').exists()
  steps = [json.loads(line)['step'] for line in (workdir / 'scalars.jsonl').read_text().splitlines()]
  assert 5 in steps and 20 in steps


@pytest.mark.parametrize('source, message', [
    ('', 'Stopped: SOURCE is not set: in the cell above, set it to a git URL'),
    ('/nonexistent/multimix_jax-0.1.0-py3-none-any.whl', 'does not exist: upload the file'),
])
def test_your_loop_notebook_without_a_usable_source_stops_at_its_first_cell(source, message, tmp_path):
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    run_notebooks.execute(LOOP, {'SOURCE': source}, output=str(tmp_path / 'nb.ipynb'), timeout=120)
  assert message in str(error.value) and 'Traceback' not in str(error.value)


def test_your_loop_notebook_runs(request, tmp_path):
  notebook = run_notebooks.execute(
      LOOP, {'SOURCE': source_of('wheel', request), 'STEPS': 20, 'EVAL_EVERY': 10, 'N_VALUES': [100, 1000],
             'REPEATS': 3}, output=str(tmp_path / 'loop.ipynb'), timeout=300)
  text, images = outputs(notebook)
  assert 'multimix_jax 0.1.0 from' in text
  for name in ('ERM', 'MultiMix (p = 0.5)', 'Dense MultiMix (p = 0.5)', 'MultiMix, m = b per device',
               'MultiMix, global scope', 'Dense MultiMix, m = b per device'):
    assert f'{name:36s} final' in text
  assert 'devices, ' in text and 'largest difference' in text
  assert 'n =   1000:' in text and 'x ERM (95 % interval' in text
  assert images == 4  # curves, Λ, confidence maps, timing
