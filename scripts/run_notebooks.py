"""Executes the notebooks of launch/ top to bottom and saves them with their outputs (the committed copies).

  python scripts/run_notebooks.py                      # both notebooks, in place (a few minutes on a CPU)
  python scripts/run_notebooks.py launch/colab_tpu.ipynb

Cells tagged `skip-execution` (TensorBoard, CIFAR) are skipped. The Colab notebook gets this checkout as its
`SOURCE` and trains into a fresh temporary workdir; these values go into a cell inserted after the parameters cell
for the run and removed before the notebook is saved, so that the committed notebook holds the user's parameters
only. The loop notebook gets this checkout as its `SOURCE` too, and runs on 4 host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4) so that its shard_map section spans several devices; the
outputs of its cells tagged `timing` are removed before saving (timings of a shared machine do not carry over).
tests/test_notebooks.py uses `execute` with smaller parameters.
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


def execute(path, parameters=None, output=None, timeout=900, keep_injected=True, until=None, env=None,
            clear_tags=()):
  """Runs the notebook at `path` in its folder, `parameters` (name -> value) set in a cell right after the one
  tagged `parameters`; writes it with outputs to `output` (default: in place) and returns it. With
  keep_injected=False the cell of `parameters` is removed before writing (the notebooks that are committed); with
  `until` (a tag) the notebook ends at the cell with that tag. `env` (name -> value) is set for the kernel; the
  outputs of cells tagged with one of `clear_tags` are removed before writing."""
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
  env = {'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})}
  env_before = {name: os.environ.get(name) for name in env}
  os.environ.update(env)
  try:
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name='python3',
                            resources={'metadata': {'path': os.path.dirname(path)}}).execute()
  finally:
    for name, value in env_before.items():
      if value is None:
        del os.environ[name]
      else:
        os.environ[name] = value
  for cell in notebook.cells:
    if cell.cell_type == 'code' and set(clear_tags) & set(cell.metadata.get('tags', [])):
      cell.outputs, cell.execution_count = [], None
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
    parameters, env = {'SOURCE': REPO}, {}
    if os.path.basename(path) == 'colab_tpu.ipynb':
      parameters['WORKDIR'] = os.path.join(tempfile.mkdtemp(prefix='colab_notebook_'), 'run')
    else:
      env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
    print(f'executing {os.path.relpath(path, REPO)} ...', flush=True)
    execute(path, parameters, keep_injected=False, env=env, clear_tags=['timing'])
  print('done: the notebooks now hold the outputs of this run.')


if __name__ == '__main__':
  main()
