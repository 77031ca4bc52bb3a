"""The Colab notebooks in colabs/: stored clean, badged, public API only, and they run.

Every notebook runs top to bottom in a fresh `python3` kernel with INITSTATE_SMALL_BUDGET=1
(its small budget, well under a minute each on 2 CPU cores), from the repository root so that
`import initstate` finds this checkout. Notebook 04 sets its own XLA_FLAGS to simulate 8 CPU
devices before it imports jax, so the kernel starts without any.
"""

import os
import pathlib
import re
import time

from absl.testing import absltest
import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLABS = ROOT / 'colabs'
EXPECTED = ('01_quickstart.ipynb', '02_initial_state_strategies.ipynb',
            '03_burn_in_sysid.ipynb', '04_accelerators.ipynb', '05_nnx.ipynb')
BADGE = re.compile(
    r'\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]'
    r'\((https://colab\.research\.google\.com/github/[^)\s]+)\)')
PRIVATE_IMPORT = re.compile(r'initstate\._src|from\s+initstate(\.\w+)*\s+import\s+[^\n]*\b_src\b')
CELL_TIMEOUT = 300  # seconds per cell


def _notebooks() -> list[pathlib.Path]:
  return sorted(COLABS.glob('*.ipynb'))


def _kernel_env() -> dict[str, str]:
  env = dict(os.environ, INITSTATE_SMALL_BUDGET='1')
  env['PYTHONPATH'] = os.pathsep.join(
      [str(ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  env.pop('XLA_FLAGS', None)  # 04 must set its own before importing jax
  return env


class ColabsTest(absltest.TestCase):

  def test_expected_notebooks_exist(self):
    names = [p.name for p in _notebooks()]
    for name in EXPECTED:
      self.assertIn(name, names)

  def test_notebooks_are_stored_clean(self):
    for path in _notebooks():
      with self.subTest(notebook=path.name):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        self.assertNotIn('widgets', nb.metadata)
        for i, cell in enumerate(nb.cells):
          self.assertNotIn('widgets', cell.get('metadata', {}), f'cell {i}')
          if cell.cell_type == 'code':
            self.assertEqual(cell.outputs, [], f'cell {i} has outputs')
            self.assertIsNone(cell.execution_count, f'cell {i} has an execution count')

  def test_first_cell_has_a_badge_to_itself(self):
    for path in _notebooks():
      with self.subTest(notebook=path.name):
        first = nbformat.read(path, as_version=4).cells[0]
        self.assertEqual(first.cell_type, 'markdown')
        self.assertTrue(first.source.startswith('# '), 'the first cell starts with a title')
        match = BADGE.search(first.source)
        self.assertIsNotNone(match, 'no "Open In Colab" badge in the first cell')
        self.assertTrue(match.group(1).endswith(f'/blob/main/colabs/{path.name}'),
                        match.group(1))

  def test_public_api_only(self):
    for path in _notebooks():
      with self.subTest(notebook=path.name):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
          if cell.cell_type == 'code':
            self.assertIsNone(PRIVATE_IMPORT.search(cell.source), f'cell {i}')

  def run_notebook(self, path: pathlib.Path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name='python3',
        resources={'metadata': {'path': str(ROOT)}})
    start = time.perf_counter()
    client.execute(env=_kernel_env())  # raises CellExecutionError on the first failing cell
    print(f'{path.name}: {time.perf_counter() - start:.1f} s with INITSTATE_SMALL_BUDGET=1')
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if o.output_type == 'error']
    self.assertEqual(errors, [])


def _add_run_tests():
  """One test method per notebook, so that `pytest -n 2` runs two at a time."""
  for path in _notebooks():
    name = 'test_runs_' + re.sub(r'\W', '_', path.stem)

    @pytest.mark.slow   # A notebook run: tens of seconds.
    def test(self, path=path):
      self.run_notebook(path)

    test.__name__ = name
    setattr(ColabsTest, name, test)


_add_run_tests()


if __name__ == '__main__':
  absltest.main()
