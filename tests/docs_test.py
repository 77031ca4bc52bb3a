"""The documentation: the Sphinx site builds cleanly, covers the public API, and its examples run.

* The site in `docs/` builds with `sphinx-build -W --keep-going -b html` (warnings are errors),
  and the built reference (`objects.inv`) has an entry for every symbol of the `__all__` of
  `initstate`, `initstate.nn`, `initstate.nnx`, `initstate.training`, `initstate.convert` and
  `initstate.tasks` (marked slow: it builds the whole site).
* Every public class, function and module has a docstring of its own.
* The `>>>` examples in the public docstrings and in the Markdown pages `docs/*.md` run with the
  standard `doctest` module (ELLIPSIS | NORMALIZE_WHITESPACE). Docstring examples run with
  `DOCTEST_GLOBALS` already imported; each page runs as one session, its blocks in order.
* The symbols in `DOCTESTED` have at least one docstring example.
* Every `initstate.<name>` the pages mention exists (except on the migration page, whose
  subject is the old names).

Needs the `docs` extra (sphinx, myst-parser, furo; part of `test`). Build the site by hand with
`sphinx-build -W --keep-going -b html docs docs/_build/html`.
"""

import doctest
import functools
import importlib
import inspect
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import zlib

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import initstate
import initstate.convert
import initstate.nn
import initstate.nnx
import initstate.tasks
import initstate.training

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
PUBLIC_MODULES = (initstate, initstate.nn, initstate.nnx, initstate.training, initstate.convert,
                  initstate.tasks)
OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# What a docstring example may use without importing it.
DOCTEST_GLOBALS = {'functools': functools, 'jax': jax, 'jnp': jnp, 'np': np, 'optax': optax,
                   'initstate': initstate}
# Public symbols that must have at least one docstring example.
DOCTESTED = (
    'initstate.scan_rnn',
    'initstate.learned',
    'initstate.noisy_learned',
    'initstate.zeros',
    'initstate.latent',
    'initstate.lstm',
    'initstate.masked_mean',
    'initstate.loss_mask',
    'initstate.teacher_forcing',
    'initstate.cleaning_noise',
    'initstate.from_context',
    'initstate.bridge',
    'initstate.from_nnx',
    'initstate.nn.RNN',
    'initstate.nn.Bidirectional',
    'initstate.nnx.RNN',
    'initstate.nnx.Bidirectional',
    'initstate.nnx.CarryMapModule',
    'initstate.training.train_step',
)
BUILD_TIMEOUT_S = 300
# The Markdown pages, each run as one doctest session (one test each, so that they run in
# parallel under pytest-xdist); PAGES_WITH_EXAMPLES must exist and hold examples.
PAGES_WITH_EXAMPLES = ('index.md', 'strategies.md', 'semantics.md', 'cells.md', 'nnx.md',
                       'flax.md', 'generation.md', 'multi_device.md')
PAGES = tuple(sorted({p.name for p in DOCS.glob('*.md')} | set(PAGES_WITH_EXAMPLES)))
# Pages that may name what no longer exists: the migration guide lists the old names.
PAGES_WITH_OLD_NAMES = ('migration.md',)
# `initstate.a.b` in a page, as code or prose (a path such as initstate/studies/ does not match).
_NAME = re.compile(r'\binitstate(?:\.[A-Za-z_][A-Za-z0-9_]*)+')


def _public_symbols():
  """(module, name, full name, object) for every entry of the public modules' `__all__`."""
  return [(m, n, f'{m.__name__}.{n}', getattr(m, n)) for m in PUBLIC_MODULES for n in m.__all__]


def _lookup(full_name):
  """The object `full_name` ('initstate.nn.RNN', 'initstate.studies.burn_in') names, or None."""
  parts = full_name.split('.')
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module('.'.join(parts[:i]))
    except ImportError:
      continue
    for attr in parts[i:]:
      if not hasattr(obj, attr):
        return None
      obj = getattr(obj, attr)
    return obj
  return None


def _resolve(full_name):
  """Whether `full_name` names something; a dotted tail past an object may be an attribute of
  its instances (`initstate.RecurrentCell.fused`), so a NamedTuple field also counts."""
  if _lookup(full_name) is not None:
    return True
  parent, _, attr = full_name.rpartition('.')
  owner = _lookup(parent)
  return owner is not None and attr in getattr(owner, '_fields', ())


def _own_docstring(obj):
  """The docstring `obj` itself defines ('' if none, or if Python generated it)."""
  if inspect.ismodule(obj) or inspect.isroutine(obj):
    return (obj.__doc__ or '').strip()
  doc = (vars(obj).get('__doc__') or '').strip()
  fields = getattr(obj, '_fields', None)
  if fields is not None and doc == f'{obj.__name__}({", ".join(fields)})':
    return ''  # collections.namedtuple's default.
  if '__dataclass_fields__' in vars(obj) and doc.startswith(f'{obj.__name__}(') and (
      '\n' not in doc):
    return ''  # dataclasses' default: the signature.
  return doc


def _read_inventory(path):
  """Names in a Sphinx `objects.inv` (version 2): {'initstate.scan_rnn': 'py:function', ...}."""
  data = path.read_bytes()
  header_end = 0
  for _ in range(4):  # '# Sphinx inventory version 2', project, version, compression note.
    header_end = data.index(b'\n', header_end) + 1
  if not data.startswith(b'# Sphinx inventory version 2'):
    raise ValueError(f'{path} is not a version 2 Sphinx inventory.')
  entries = {}
  for line in zlib.decompress(data[header_end:]).decode().splitlines():
    match = re.match(r'(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)', line.rstrip())
    if match:
      entries[match.group(1)] = match.group(2)
  return entries


def _doctests(obj, name, globs):
  """The doctests of `obj`'s own docstring and, for a class, of its own methods."""
  finder = doctest.DocTestFinder(recurse=False, exclude_empty=False)
  found = [(name, obj)]
  if inspect.isclass(obj):
    for attr, value in vars(obj).items():
      if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
      elif isinstance(value, property):
        value = value.fget
      value = inspect.unwrap(value) if callable(value) else value
      if inspect.isfunction(value) and value.__module__.startswith('initstate'):
        found.append((f'{name}.{attr}', value))
  tests = []
  for test_name, target in found:
    if not (target.__doc__ or '').strip():
      continue
    tests += finder.find(target, test_name, module=inspect.getmodule(target), globs=globs)
  return [t for t in tests if t.examples]


def _page_doctests(path):
  """One DocTest per ```python block of a Markdown page that holds `>>>` examples."""
  text = path.read_text()
  parser = doctest.DocTestParser()
  tests = []
  for match in re.finditer(r'^```(?:python|pycon)\n(.*?)^```', text, flags=re.DOTALL | re.M):
    block = match.group(1)
    if not block.lstrip().startswith('>>>'):
      continue
    lineno = text.count('\n', 0, match.start(1))
    tests.append(parser.get_doctest(block, {}, f'{path.name}:{lineno + 1}', str(path), lineno))
  return tests


def _run_doctests(tests, shared_globs=None):
  """Runs `tests`; returns (number of examples, number of failures, failure report)."""
  runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
  report = []
  examples = 0
  for test in tests:
    if shared_globs is not None:
      test.globs = shared_globs  # A page is one session: each block sees the ones before.
    runner.run(test, out=report.append, clear_globs=False)
    examples += len(test.examples)
  return examples, runner.failures, ''.join(report)


@pytest.mark.slow
class SphinxBuildTest(absltest.TestCase):

  def test_site_builds_without_warnings_and_covers_the_public_api(self):
    with tempfile.TemporaryDirectory() as out:
      env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=os.pathsep.join(
          [str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
      start = time.monotonic()
      proc = subprocess.run(
          [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-b', 'html', str(DOCS), out],
          env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
      seconds = time.monotonic() - start
      inventory_path = pathlib.Path(out) / 'objects.inv'
      inventory = _read_inventory(inventory_path) if inventory_path.exists() else {}
    problems = []
    if proc.returncode or 'WARNING' in proc.stderr:
      problems.append(f'sphinx-build failed or warned (exit {proc.returncode}, {seconds:.0f} s):\n'
                      f'{proc.stderr}\n--- stdout (tail) ---\n{proc.stdout[-1500:]}')
    missing = [full for _, _, full, _ in _public_symbols() if full not in inventory]
    if missing:
      problems.append('public symbols missing from the built API reference (document each on a '
                      f'page in docs/api/): {missing}')
    if problems:
      self.fail('\n\n'.join(problems))


class DocstringTest(absltest.TestCase):

  def test_every_public_symbol_has_a_docstring(self):
    missing = [full for _, _, full, obj in _public_symbols() if not _own_docstring(obj)]
    self.assertEmpty(missing, f'public symbols without a docstring of their own: {missing}')


class PageNamesTest(absltest.TestCase):

  def test_pages_name_only_existing_objects(self):
    stale = {}
    for page in PAGES:
      if page in PAGES_WITH_OLD_NAMES:
        continue
      for name in set(_NAME.findall((DOCS / page).read_text())):
        if not _resolve(name):
          stale.setdefault(page, []).append(name)
    self.assertEmpty(stale, f'names in docs/ pages that initstate does not have (moved? see '
                     f'docs/migration.md): {stale}')


class DoctestTest(parameterized.TestCase):

  @pytest.mark.slow   # Every public docstring's examples (compiles dozens of programs).
  def test_docstring_examples_run(self):
    tests = []
    for _, _, full, obj in _public_symbols():
      tests += _doctests(obj, full, dict(DOCTEST_GLOBALS))
    _, failures, report = _run_doctests(tests)
    self.assertEqual(failures, 0, f'docstring examples failed:\n{report}')


@pytest.mark.slow   # Every docs page's examples, each page a few to 20 s. (A mark on the class:
class DocsPagesTest(parameterized.TestCase):   # pytest does not see one on generated methods.)

  @parameterized.named_parameters(*[(page[:-len('.md')], page) for page in PAGES])
  def test_docs_page_examples_run(self, page):
    examples, failures, report = _run_doctests(_page_doctests(DOCS / page), shared_globs={})
    self.assertEqual(failures, 0, f'examples in docs/{page} failed:\n{report}')
    if page in PAGES_WITH_EXAMPLES:
      self.assertGreater(examples, 0, f'docs/{page} has no >>> examples')


class DocstringCoverageTest(parameterized.TestCase):

  def test_core_symbols_have_docstring_examples(self):
    without = [name for name in DOCTESTED if not _doctests(_lookup(name), name, {})]
    self.assertEmpty(without, f'public symbols in DOCTESTED without a >>> docstring example: '
                     f'{without}')


if __name__ == '__main__':
  absltest.main()
