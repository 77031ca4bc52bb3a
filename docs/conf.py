"""Sphinx configuration of the initstate documentation.

Build (what tests/docs_test.py runs, warnings are errors):

  sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import dataclasses
import inspect
import os
import re
import sys

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

# The package is importable from the checkout without installing it.
sys.path.insert(0, os.path.abspath('..'))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import initstate  # pylint: disable=g-import-not-at-top,wrong-import-position
import initstate.convert  # pylint: disable=g-import-not-at-top,wrong-import-position
import initstate.nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import initstate.nnx  # pylint: disable=g-import-not-at-top,wrong-import-position
import initstate.tasks  # pylint: disable=g-import-not-at-top,wrong-import-position
import initstate.training  # pylint: disable=g-import-not-at-top,wrong-import-position

# The public modules: every name of their `__all__` is documented under `module.name`.
PUBLIC_MODULES = (initstate, initstate.nn, initstate.nnx, initstate.training, initstate.convert,
                  initstate.tasks)

project = 'initstate'
author = 'initstate contributors'
copyright = 'initstate contributors'  # pylint: disable=redefined-builtin
release = initstate.__version__
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
]

source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build', '.gitignore']
root_doc = 'index'

# ---- Strictness: every reference must resolve (build with -W). ----
nitpicky = True
# There is no network at build time (CI reaches package registries only), so no intersphinx
# inventories of Python, NumPy, JAX, Flax or optax: references to their types in signatures
# cannot resolve. Each entry below is one such external type as it appears in our type hints;
# a reference to anything of initstate's that fails to resolve is still an error.
nitpick_ignore = [
    # jax.Array, under its runtime name: the `Array` and `PRNGKey` hints (initstate._src.types).
    ('py:class', 'jax.jaxlib._jax.Array'),
    # optax.GradientTransformation, under its runtime name: `train_step`'s `optimizer`.
    ('py:class', 'optax._src.base.GradientTransformation'),
    # flax.linen.RNNCellBase, under its runtime name: `from_flax`'s `module`.
    ('py:class', 'flax.linen.recurrent.RNNCellBase'),
    # flax.nnx.Module, Rngs and RngStream, under their runtime names: the NNX layers' `cell`,
    # `model` and `rngs`.
    ('py:class', 'flax.nnx.module.Module'),
    ('py:class', 'flax.nnx.rnglib.Rngs'),
    ('py:class', 'flax.nnx.rnglib.RngStream'),
    # numpy.ndarray: `training.grid`'s stacked hyperparameters.
    ('py:class', 'numpy.ndarray'),
    # Standard library types in hints (cell and step functions, hidden sizes, checkpoint paths).
    ('py:class', 'collections.abc.Callable'),
    ('py:class', 'collections.abc.Sequence'),
    ('py:class', 'os.PathLike'),
    ('py:class', 'pathlib.Path'),
]

# ---- autodoc / napoleon (Google style docstrings). ----
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'documented_params'
autodoc_typehints_format = 'short'
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# NamedTuple fields are documented in each class's `Attributes:` section, shapes included; their
# annotations are mostly the `Any` aliases Carry / Params, so they are not repeated as types.
napoleon_attr_annotations = False
add_function_parentheses = False
python_maximum_signature_line_length = 88
python_display_short_literal_types = True

# ---- Inline code. ----
# The docstrings write code in single backticks, Markdown style. The default role `code_or_ref`
# (defined below) renders it as inline code and links it when it names a documented object
# (`scan_rnn`, `initstate.learned`, `ScanOutput`); anything else (`train=True`,
# `jax.lax.scan`) stays plain inline code and is not a reference, so it cannot warn.
default_role = 'code_or_ref'

# ---- HTML. ----
html_theme = 'furo'
html_title = f'initstate {release}'
html_static_path = []
myst_heading_anchors = 3

# The public API: short names that docstrings use for initstate objects, to their full names.
_PUBLIC = {}
for _module in PUBLIC_MODULES:
  for _name in _module.__all__:
    _PUBLIC.setdefault(_name, f'{_module.__name__}.{_name}')
    _PUBLIC[f'{_module.__name__}.{_name}'] = f'{_module.__name__}.{_name}'
    _obj = getattr(_module, _name)
    _src = getattr(_obj, '__module__', None)
    if _src and _src.startswith('initstate._src.'):
      # Type hints name objects by their defining module (initstate._src.scan.ScanOutput,
      # initstate._src.linear.LinearParams, initstate._src.training.TrainState,
      # initstate._src.convert.lstm_params_from_flax, ...); they are documented under their
      # public name, whichever public module exports them.
      _PUBLIC[f'{_src}.{_name}'] = f'{_module.__name__}.{_name}'

_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\(\))?$')


def code_or_ref_role(name, rawtext, text, lineno, inliner, options=None, content=None):
  """Inline code that links to a documented object when the text names one."""
  del name, lineno, options, content
  text = nodes.unescape(text)
  literal = nodes.literal(rawtext, text, classes=['code'])
  if not _IDENTIFIER.match(text):
    return [literal], []
  target = text[:-2] if text.endswith('()') else text
  env = inliner.document.settings.env
  ref = addnodes.pending_xref(rawtext, refdomain='py', reftype='obj', reftarget=target,
                              refexplicit=False, refwarn=False, refdoc=env.docname)
  # The module and class being documented, so that `zeros` in CarrySpec's docstring finds
  # CarrySpec.zeros first, as Sphinx's own roles do.
  ref['py:module'] = env.ref_context.get('py:module')
  ref['py:class'] = env.ref_context.get('py:class')
  ref['initstate_soft'] = True
  ref += literal
  return [ref], []


# Inline code in docstrings that names an initstate object which is no longer documented, known
# and reported; each entry is removed once its docstring is fixed. Any other such name warns.
_KNOWN_STALE: set[str] = set()  # Names to tolerate while a docstring is being fixed: none.


def _resolve(app, env, node, contnode):
  """`missing-reference`: public objects by their defining module; soft references."""
  target = node.get('reftarget')
  if node.get('refdomain') == 'py' and target in _PUBLIC:
    full = _PUBLIC[target]
    if full != target:
      py = env.domains['py']
      resolved = py.resolve_xref(env, node['refdoc'], app.builder, 'obj', full, node, contnode)
      if resolved is not None:
        return resolved
  if node.get('initstate_soft'):
    if (target.startswith('initstate.') and not target.startswith('initstate.studies')
        and target not in _KNOWN_STALE):
      # `initstate.something` that names no documented object: a stale name in a docstring
      # (e.g. one that moved to initstate.training); say so rather than render dead code.
      logger.warning('inline code %r names no documented initstate object (moved or '
                     'removed? see docs/migration.md)', target, location=node)
    return contnode  # Not a documented object: plain inline code, as written.
  return None


# ---- The Flax layers' signatures. ----
# The linen layers (`initstate.nn.RNN`, `initstate.nn.Bidirectional`) are dataclasses: their
# generated signatures would show the defaults as reprs of function tuples and Flax's internal
# `parent` / `name` fields; they are built here from the dataclass fields instead. The NNX
# layers' metaclass hides their `__init__` behind `(*args, **kwargs)`; theirs are built from
# `__init__`. Both follow the code; a default without a readable repr needs an entry below.
_READABLE_DEFAULTS = {'carry': 'initstate.zeros()', 'merge_fn': 'concatenate'}
_LINEN_LAYERS = ('initstate.nn.RNN', 'initstate.nn.Bidirectional')
_NNX_LAYERS = ('initstate.nnx.RNN', 'initstate.nnx.Bidirectional', 'initstate.nnx.CarryMapModule')
# An `nnx.Variable`: its `__init__` lists Flax's own keyword arguments.
_FIXED_SIGNATURES = {'initstate.nnx.CarryState': '(value, **metadata)'}


class _Text:
  """A default value shown as the given text."""

  def __init__(self, text):
    self.text = text

  def __repr__(self):
    return self.text


def _readable(name, param, default):
  text = _READABLE_DEFAULTS.get(param, repr(default))
  if '<' in text:
    logger.warning('conf.py: the default of %s(%s=...) has no readable repr; add it to '
                   '_READABLE_DEFAULTS.', name, param)
  return _Text(text)


def _layer_signature(app, what, name, obj, options, signature, return_annotation):
  del app, what, options
  if name in _FIXED_SIGNATURES:
    return _FIXED_SIGNATURES[name], None
  if name in _LINEN_LAYERS:
    params = [inspect.Parameter(
        field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=(inspect.Parameter.empty if field.default is dataclasses.MISSING
                 else _readable(name, field.name, field.default)))
              for field in dataclasses.fields(obj) if field.name not in ('parent', 'name')]
  elif name in _NNX_LAYERS:
    params = [p.replace(annotation=inspect.Parameter.empty,
                        default=(p.default if p.default is inspect.Parameter.empty
                                 else _readable(name, p.name, p.default)))
              for p in list(inspect.signature(obj.__init__).parameters.values())[1:]]
  else:
    return None
  return str(inspect.Signature(params)), return_annotation


def setup(app):
  app.add_role('code_or_ref', code_or_ref_role)
  app.connect('missing-reference', _resolve)
  app.connect('autodoc-process-signature', _layer_signature)
  return {'parallel_read_safe': True, 'parallel_write_safe': True}
