"""Executes the notebooks of launch/ top to bottom and saves them with their outputs (the committed copies).

  python scripts/run_notebooks.py                      # both notebooks, in place (a few minutes on a CPU)
  python scripts/run_notebooks.py launch/colab_tpu.ipynb

Cells tagged `skip-execution` (TensorBoard, CIFAR) are skipped. The Colab notebook gets this checkout as its
`SOURCE` and trains into a fresh temporary workdir; these values go into a cell inserted after the parameters cell
for the run and removed before the notebook is saved, so that the committed notebook holds the user's parameters
only. The loop notebook runs with its own parameters. tests/test_notebooks.py uses `execute` with smaller parameters.
"""

import argparse
import os
import tempfile

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = [os.path.join(REPO, 'launch', name) for name in ('colab_tpu.ipynb', 'multimix_in_your_loop.ipynb')]


INJECTED = 'injected-parameters'


def injected_cells(notebook):
  """The cells of `notebook` that a run inserted (tagged 'injected-parameters')."""
  return [c for c in notebook.cells if INJECTED in c.metadata.get('tags', [])]


def execute(path, parameters=None, output=None, timeout=900, keep_injected=True, until=None):
  """Runs the notebook at `path` in its folder, `parameters` (name -> value) set in a cell right after the one
  tagged `parameters`; writes it with outputs to `output` (default: in place) and returns it. With
  keep_injected=False the cell of `parameters` is removed before writing (the notebooks that are committed); with
  `until` (a tag) the notebook ends at the cell with that tag."""
  notebook = nbformat.read(path, as_version=4)
  if until:
    notebook.cells = notebook.cells[:1 + next(i for i, c in enumerate(notebook.cells)
                                              if until in c.metadata.get('tags', []))]
  notebook.cells = [c for c in notebook.cells if INJECTED not in c.metadata.get('tags', [])]
  if parameters:
    index = next(i for i, c in enumerate(notebook.cells) if 'parameters' in c.metadata.get('tags', []))
    cell = nbformat.v4.new_code_cell('\n'.join(f'{k} = {v!r}' for k, v in parameters.items()))
    cell.metadata['tags'] = [INJECTED]
    notebook.cells.insert(index + 1, cell)
  env_before = os.environ.get('TF_CPP_MIN_LOG_LEVEL')
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
  try:
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name='python3',
                            resources={'metadata': {'path': os.path.dirname(path)}}).execute()
  finally:
    if env_before is None:
      del os.environ['TF_CPP_MIN_LOG_LEVEL']
    else:
      os.environ['TF_CPP_MIN_LOG_LEVEL'] = env_before
  if not keep_injected:
    notebook.cells = [c for c in notebook.cells if INJECTED not in c.metadata.get('tags', [])]
  nbformat.write(notebook, output or path)
  return notebook


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('notebooks', nargs='*', default=NOTEBOOKS)
  args = parser.parse_args()
  for path in args.notebooks:
    path = os.path.abspath(path)
    parameters = {}
    if os.path.basename(path) == 'colab_tpu.ipynb':
      parameters['SOURCE'] = REPO
      parameters['WORKDIR'] = os.path.join(tempfile.mkdtemp(prefix='colab_notebook_'), 'run')
    print(f'executing {os.path.relpath(path, REPO)} ...', flush=True)
    execute(path, parameters, keep_injected=False)
  print('done: the notebooks now hold the outputs of this run.')


if __name__ == '__main__':
  main()
