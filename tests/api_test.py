"""The public API: its names, what `import initstate` loads, and no private imports outside."""

import importlib
from importlib import metadata
import os
import pathlib
import re
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized

import initstate

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = ('initstate', 'initstate.training', 'initstate.convert', 'initstate.nn',
           'initstate.tasks')
# The public modules, initstate/*.py (but `python -m initstate`), re-export from
# initstate._src: importing it is their job.
PUBLIC_MODULES = frozenset(p.relative_to(ROOT).as_posix()
                           for p in (ROOT / 'initstate').glob('*.py') if p.name != '__main__.py')
# Not scanned: the private package itself, the tests, and what is not source (build output,
# caches, version control).
SKIPPED_DIRS = frozenset({'.git', 'build', 'dist', '__pycache__', 'tests', 'node_modules',
                          '_build'})
SUFFIXES = ('.py', '.ipynb', '.md')
PRIVATE_IMPORT = re.compile(
    r'(?<![\w.])(?:import\s+initstate\._src\b|from\s+initstate\._src\b'
    r'|from\s+initstate\s+import\s+(?:\([^)]*|[^\n]*)\b_src\b)')


def private_imports(text: str) -> list[int]:
  """The line numbers (from 1) of `text` that import initstate._src."""
  return [text.count('\n', 0, m.start()) + 1 for m in PRIVATE_IMPORT.finditer(text)]


def _scanned_files() -> list[pathlib.Path]:
  files = []
  for directory, dirs, names in os.walk(ROOT):
    here = pathlib.Path(directory)
    dirs[:] = sorted(d for d in dirs if not d.startswith('.') and d not in SKIPPED_DIRS
                     and not d.endswith('.egg-info')
                     and (here / d).relative_to(ROOT).as_posix() != 'initstate/_src')
    files += [here / n for n in sorted(names) if n.endswith(SUFFIXES)]
  return files


class NamesTest(parameterized.TestCase):

  def test_top_level_is_small(self):
    self.assertLessEqual(len(initstate.__all__), 40)
    self.assertLen(set(initstate.__all__), len(initstate.__all__))  # No duplicates.

  def test_public_modules(self):
    # The five named modules are public modules, and every public module lists its names.
    names = {'initstate' if p == 'initstate/__init__.py' else p[:-3].replace('/', '.')
             for p in PUBLIC_MODULES}
    self.assertContainsSubset(set(MODULES), names)
    for name in sorted(names):
      self.assertTrue(hasattr(importlib.import_module(name), '__all__'), name)

  @parameterized.parameters(*MODULES)
  def test_every_exported_name_resolves(self, name):
    module = importlib.import_module(name)
    self.assertNotEmpty(module.__all__)
    for attr in module.__all__:
      self.assertIsNotNone(getattr(module, attr), f'{name}.{attr}')
    self.assertLen(set(module.__all__), len(module.__all__))

  def test_submodules_and_moved_names(self):
    for sub in ('convert', 'nn', 'tasks', 'training'):
      self.assertIn(sub, initstate.__all__)
      self.assertIs(getattr(initstate, sub), importlib.import_module(f'initstate.{sub}'))
    # Names that moved to a submodule, or were removed, are not at the top level.
    for gone in ('train_step', 'TrainState', 'example_keys', 'save_checkpoint',
                 'lstm_params_from_flax', 'lstm_carry_to_flax', 'Dense', 'CleaningNoise',
                 'update_gradient_buffer'):
      self.assertFalse(hasattr(initstate, gone), gone)
    missing = 'no_such_name'
    with self.assertRaisesRegex(AttributeError, 'no attribute'):
      getattr(initstate, missing)

  def test_version_from_metadata(self):
    self.assertEqual(initstate.__version__, metadata.version('initstate'))


_IMPORT_SCRIPT = textwrap.dedent('''
    import sys
    import initstate
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'orbax'))
    assert not loaded, f'import initstate loaded {loaded[:5]}'
    import jax, jax.numpy as jnp, optax
    model = initstate.nn.RNN(initstate.lstm(4), carry=initstate.learned())
    x = jnp.ones((2, 3, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    assert model.apply(variables, x, train=False).outputs.shape == (2, 3, 4)
    assert 'flax' in sys.modules
    optimizer = optax.sgd(0.1)
    state = initstate.training.TrainState.create({'w': jnp.ones(2)}, optimizer,
                                                 jax.random.key(1))
    step = initstate.training.train_step(
        lambda p, b, r, c: jnp.mean((b['x'] @ p['w']) ** 2), optimizer)
    state, loss = step(state, {'x': jnp.ones((3, 2))})
    assert int(state.step) == 1 and float(loss) == 4.0, (state.step, loss)
    print('OK')
''')


class ImportTest(absltest.TestCase):

  def test_import_loads_neither_flax_nor_orbax(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    result = subprocess.run([sys.executable, '-c', _IMPORT_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(result.stdout.strip().splitlines()[-1], 'OK')


class PrivateImportsTest(absltest.TestCase):

  def test_pattern(self):
    text = textwrap.dedent('''\
        import initstate
        from initstate import nn, tasks
        # initstate._src.types names the hints; initstate._src is private.
        "from initstate._src.cells import lstm\\n",
        import initstate._src.scan as scan_lib
        from initstate import _src
        >>> from initstate import (lstm,
        ...                        _src)
        from initstate import _srcs
        ''')
    self.assertEqual(private_imports(text), [4, 5, 6, 7])

  def test_no_private_imports_outside_the_library_and_tests(self):
    files = _scanned_files()
    scanned = {f.relative_to(ROOT).as_posix() for f in files}
    # Not vacuous: the public modules, the studies, the docs and the README are scanned.
    for expected in ('README.md', 'initstate/__init__.py', 'initstate/studies/demo.py',
                     'docs/index.md'):
      self.assertIn(expected, scanned)
    for directory in ('benchmarks', 'colabs'):
      if (ROOT / directory).is_dir():
        self.assertTrue(any(f.startswith(directory + '/') for f in scanned), directory)
    self.assertFalse(any(f.startswith(('tests/', 'initstate/_src/')) for f in scanned))
    offending = [f'{path}:{line}' for path in sorted(scanned - PUBLIC_MODULES)
                 for line in private_imports((ROOT / path).read_text(encoding='utf-8'))]
    self.assertEmpty(offending, 'these files import initstate._src (use the public API):\n'
                     + '\n'.join(offending))


if __name__ == '__main__':
  absltest.main()
