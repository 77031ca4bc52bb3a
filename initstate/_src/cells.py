"""Recurrent cells as pure functions over a parameter pytree.

A cell is a `RecurrentCell`: a NamedTuple of pure functions in the style of optax,

  params = cell.init(key, input_size)
  new_carry, y = cell.apply(params, carry, x)      # x: [..., D], carry leaves [..., H]

plus `cell.carry_template`, the carry of one example as a pytree of `jax.ShapeDtypeStruct`
leaves of shape [H], which the initial-carry strategies use to build their parameters.
Every leading axis of `x` and of the carry is a batch axis.

Gate layouts (weights are stored input-major, `x @ w`):

* LSTM: `w_i` [D, 4H], `w_h` [H, 4H], `b` [4H], gates in the order (i, f, g, o), the same order
  as PyTorch `nn.LSTM` and Flax `LSTMCell`:

    i, f, g, o = split(x @ w_i + h @ w_h + b, 4)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c'),   y = h'

  PyTorch's two biases are summed into `b`; Flax keeps the bias on its hidden-to-hidden denses.
* GRU: `w_i` [D, 3H], `w_h` [H, 3H], `b_i` [3H], `b_h` [3H], gates in the order (r, z, n),
  the PyTorch `nn.GRU` / Flax `GRUCell` equations:

    r = sigmoid(x w_ir + b_ir + h w_hr + b_hr),  z = sigmoid(x w_iz + b_iz + h w_hz + b_hz)
    n = tanh(x w_in + b_in + r * (h w_hn + b_hn)),  h' = (1 - z) * n + z * h,  y = h'

  Flax has no `b_hr`, `b_hz` (they are zero after conversion from Flax).
* Elman: `w_i` [D, H], `w_h` [H, H], `b` [H]:  h' = tanh(x w_i + h w_h + b),  y = h'.

`initstate.convert` converts parameters and carries to and from Flax's and PyTorch's layouts.

A cell with its parameters bound, `cell.bind(params)`, is the step function `(carry, x) ->
(carry, y)` that `scan_rnn` runs. The built-in LSTM and GRU cells (and stacks of them) say so
in their `fused` field, so that `scan_rnn` can run them through the fused recurrence.
"""

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from initstate._src import checks
from initstate._src.types import Array, Carry, Initializer, Params, PRNGKey

_lecun_normal = jax.nn.initializers.lecun_normal()
_orthogonal = jax.nn.initializers.orthogonal()


class LSTMCarry(NamedTuple):
  """The carry of an LSTM, with named fields so (h, c) and (c, h) cannot be confused.

  Attributes:
    h: `[..., H]` hidden state, also the cell's output.
    c: `[..., H]` memory cell.
  """
  h: Array
  c: Array


class RecurrentCell(NamedTuple):
  """A recurrent cell as pure functions.

  Attributes:
    init: `(key, input_size) -> params`.
    apply: `(params, carry, x[..., D]) -> (new_carry, y[..., output_size])`.
    carry_template: the carry of one example: a pytree of `jax.ShapeDtypeStruct` leaves.
    output_size: the size of the last axis of `y`.
    fused: which fused recurrence computes this cell over a whole sequence: 'lstm' or 'gru'
      for a built-in cell, a tuple of them (one per layer) for a stack of built-in cells,
      None for any other cell (which `scan_rnn` steps one by one).
  """
  init: Callable[[PRNGKey, int], Params]
  apply: Callable[[Params, Carry, Array], tuple[Carry, Array]]
  carry_template: Carry
  output_size: int
  fused: str | tuple[str, ...] | None = None

  def bind(self, params: Params) -> 'BoundCell':
    """The step function `(carry, x) -> (new_carry, y)` of this cell with `params`."""
    return BoundCell(self, params)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BoundCell:
  """A cell with its parameters: the step function `(carry, x) -> (new_carry, y)`.

  Made by `cell.bind(params)`; `scan_rnn` runs it through the fused recurrence where
  `cell.fused` allows. A pytree whose leaves are the params (the cell is static), so it can be
  passed through `jax.jit` and `jax.vmap`.

  Attributes:
    cell: the `RecurrentCell`.
    params: its parameters.
  """
  cell: RecurrentCell = dataclasses.field(metadata=dict(static=True))
  params: Params

  def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
    return self.cell.apply(self.params, carry, x)


def _check_input(x: Array, w_i: Array, name: str) -> None:
  if not hasattr(x, 'shape') or jnp.ndim(x) < 1:
    raise ValueError(f'{name}: input `x` must be an array [*B, D], got {type(x).__name__} '
                     f'of shape {jnp.shape(x) if hasattr(x, "shape") else None}.')
  if x.shape[-1:] != w_i.shape[:1]:
    raise ValueError(
        f'{name}: input `x` has shape {x.shape}, but the cell was initialised for '
        f'{w_i.shape[0]} input features (last axis).')


def _check_carry_leaf(leaf: Any, x: Array, hidden_size: int, name: str, what: str) -> None:
  """A carry leaf must be [*B, H], with the batch dims of the input x [*B, D]."""
  expected = tuple(x.shape[:-1]) + (hidden_size,)
  if not hasattr(leaf, 'shape'):
    raise TypeError(f'{name}: {what} must be an array [*B, H] = {expected}, got '
                    f'{type(leaf).__name__}.')
  if tuple(leaf.shape) != expected:
    raise ValueError(f'{name}: {what} has shape {tuple(leaf.shape)}, expected [*B, H] = '
                     f'{expected} (H = {hidden_size}; B from the input x of shape {x.shape}).')


def check_params(params: Any, fn: str, keys: tuple[str, ...], gates: int,
                  hidden_size: int | None = None) -> None:
  """`params` of our cell: the keys, and w_i [D, G*H], w_h [H, G*H], biases [G*H] (with H =
  `hidden_size` if given)."""
  if not isinstance(params, Mapping) or not set(keys) <= set(params):
    got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise TypeError(f'{fn}: `params` must be the dict of the cell\'s `init`, with keys '
                    f'{list(keys)}; got {got}.')
  shapes = {k: tuple(jnp.shape(params[k])) for k in keys}
  w_i, w_h = shapes['w_i'], shapes['w_h']
  if hidden_size is not None and w_h != (hidden_size, gates * hidden_size):
    raise ValueError(f"{fn}: `params['w_h']` has shape {w_h}, but this cell has "
                     f'H = {hidden_size} units: expected [H, {gates}H] = '
                     f'{(hidden_size, gates * hidden_size)}.')
  ok = (len(w_h) == 2 and w_h[1] == gates * w_h[0] and len(w_i) == 2 and w_i[1] == w_h[1]
        and all(shapes[k] == (w_h[1],) for k in keys if k.startswith('b')))
  if not ok:
    raise ValueError(f'{fn}: expected w_i [D, {gates}H], w_h [H, {gates}H] and biases '
                     f'[{gates}H], got shapes {shapes}.')


def _bias_add(y: Array, b: Array) -> Array:
  """y [..., N] + b [N], without implicit rank promotion (safe under rank_promotion='raise')."""
  return y + jnp.reshape(b, (1,) * (y.ndim - 1) + b.shape)


def _draw(initializer: Initializer, key: PRNGKey, shape: tuple[int, ...], dtype: Any) -> Array:
  """`initializer(key, shape, dtype)`, drawn in float32 and cast for 16-bit float dtypes.

  The default recurrent initializer (orthogonal) runs a QR decomposition, which has no
  bfloat16 / float16 kernel on CPU (NotImplementedError 'Unsupported dtype bfloat16'); drawing
  in float32 and rounding once is also the more accurate way to get low-precision weights.
  """
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
    return initializer(key, shape, jnp.float32).astype(dtype)
  return initializer(key, shape, dtype)


def _template(hidden_size: int, dtype: Any) -> Any:
  """One carry leaf of one example: a `jax.ShapeDtypeStruct` [H]."""
  return jax.ShapeDtypeStruct((hidden_size,), jnp.dtype(dtype))


PARAMETRIZATIONS = ('initstate', 'pytorch')


def _check_parametrization(parametrization: str, fn: str, custom: bool) -> None:
  if parametrization not in PARAMETRIZATIONS:
    raise ValueError(f'{fn}: `parametrization` must be one of {PARAMETRIZATIONS}, got '
                     f'{parametrization!r}.')
  if parametrization == 'pytorch' and custom:
    raise ValueError(f"{fn}: parametrization='pytorch' fixes the initializers (and the forget "
                     'bias) to PyTorch\'s; leave `kernel_init`, `recurrent_kernel_init` and '
                     '`forget_bias` at their defaults.')


def _pytorch_init(key: PRNGKey, input_size: int, hidden_size: int, gates: int,
                  dtype: Any) -> Params:
  """PyTorch's `nn.LSTM` / `nn.GRU` start: every weight and both biases U(-1/sqrt(H), 1/sqrt(H))."""
  bound = 1.0 / math.sqrt(hidden_size)
  uniform = lambda k, shape: _draw(
      lambda k, s, d: jax.random.uniform(k, s, d, -bound, bound), k, shape, dtype)
  k_i, k_h, k_bi, k_bh = jax.random.split(key, 4)
  g = gates * hidden_size
  return {'w_i': uniform(k_i, (input_size, g)), 'w_h': uniform(k_h, (hidden_size, g)),
          'b_i': uniform(k_bi, (g,)), 'b_h': uniform(k_bh, (g,))}


def lstm_bias(params: Params, fn: str = 'lstm') -> Array:
  """The LSTM's gate bias [4H]: `params['b']`, or `b_i + b_h` for two separate biases."""
  if 'b_i' in lstm_param_keys(params):
    return params['b_i'] + params['b_h']
  if not isinstance(params, Mapping) or 'b' not in params:
    got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise TypeError(f'{fn}: `params` must be the dict of the cell\'s `init`, with keys '
                    f"['w_i', 'w_h', 'b'] or ['w_i', 'w_h', 'b_i', 'b_h']; got {got}.")
  return params['b']


def lstm_param_keys(params: Params) -> tuple[str, ...]:
  """The keys of an LSTM's params: one bias `b`, or two (`b_i`, `b_h`) if that is what it has."""
  two = isinstance(params, Mapping) and 'b' not in params and {'b_i', 'b_h'} <= set(params)
  return ('w_i', 'w_h', 'b_i', 'b_h') if two else ('w_i', 'w_h', 'b')


def lstm(
    hidden_size: int,
    *,
    parametrization: str = 'initstate',
    forget_bias: float = 1.0,
    kernel_init: Initializer = _lecun_normal,
    recurrent_kernel_init: Initializer = _orthogonal,
    param_dtype: Any = jnp.float32,
) -> RecurrentCell:
  """An LSTM cell with carry `LSTMCarry(h, c)`, gates (i, f, g, o); see the module docstring.

  Args:
    hidden_size: H, the number of units.
    parametrization: 'initstate' (one bias `b` [4H], lecun-normal input and orthogonal
      recurrent weights, forget bias `forget_bias`) or 'pytorch' (PyTorch's `nn.LSTM`: two
      biases `b_i`, `b_h` [4H] trained separately, and every weight and bias drawn from
      U(-1/sqrt(H), 1/sqrt(H))). `apply` takes either layout.
    forget_bias: initial value of the forget-gate bias (the other biases start at zero).
    kernel_init: initializer of the input weights `w_i` [D, 4H] (applied per gate).
    recurrent_kernel_init: initializer of the recurrent weights `w_h` [H, 4H] (per gate).
    param_dtype: dtype of parameters and of the carry template.

  Returns:
    A `RecurrentCell`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> cell = initstate.lstm(8)
    >>> params = cell.init(jax.random.key(0), 3)         # input size D = 3
    >>> jax.tree.map(jnp.shape, params)
    {'b': (32,), 'w_h': (8, 32), 'w_i': (3, 32)}
    >>> carry = initstate.LSTMCarry(h=jnp.zeros((2, 8)), c=jnp.zeros((2, 8)))
    >>> carry, y = cell.apply(params, carry, jnp.ones((2, 3)))   # one step, B = 2
    >>> y.shape
    (2, 8)
  """
  checks.positive_int(hidden_size, 'hidden_size')
  _check_parametrization(parametrization, 'lstm', forget_bias != 1.0 or (
      kernel_init is not _lecun_normal) or recurrent_kernel_init is not _orthogonal)

  def init(key: PRNGKey, input_size: int) -> Params:
    checks.positive_int(input_size, 'input_size')
    if parametrization == 'pytorch':
      return _pytorch_init(key, input_size, hidden_size, 4, param_dtype)
    keys = jax.random.split(key, 8)
    w_i = jnp.concatenate([_draw(kernel_init, k, (input_size, hidden_size), param_dtype)
                           for k in keys[:4]], axis=1)
    w_h = jnp.concatenate([_draw(recurrent_kernel_init, k, (hidden_size, hidden_size), param_dtype)
                           for k in keys[4:]], axis=1)
    b = jnp.zeros((4 * hidden_size,), param_dtype)
    b = b.at[hidden_size:2 * hidden_size].set(forget_bias)
    return {'w_i': w_i, 'w_h': w_h, 'b': b}

  def apply(params: Params, carry: LSTMCarry, x: Array) -> tuple[LSTMCarry, Array]:
    check_params(params, 'lstm', lstm_param_keys(params), 4, hidden_size)
    _check_input(x, params['w_i'], 'lstm')
    if not isinstance(carry, LSTMCarry):
      got = (f'an array of shape {carry.shape}' if hasattr(carry, 'shape')
             else type(carry).__name__)
      raise TypeError(f'lstm: `carry` must be an LSTMCarry(h, c), got {got} (a Flax LSTM '
                      'carry is (c, h): convert it with lstm_carry_from_flax).')
    h, c = carry
    _check_carry_leaf(h, x, hidden_size, 'lstm', '`carry.h`')
    _check_carry_leaf(c, x, hidden_size, 'lstm', '`carry.c`')
    gates = _bias_add(x @ params['w_i'] + h @ params['w_h'], lstm_bias(params))
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return LSTMCarry(h=new_h, c=new_c), new_h

  template = LSTMCarry(h=_template(hidden_size, param_dtype), c=_template(hidden_size, param_dtype))
  return RecurrentCell(init, apply, template, hidden_size, fused='lstm')


def gru(
    hidden_size: int,
    *,
    parametrization: str = 'initstate',
    kernel_init: Initializer = _lecun_normal,
    recurrent_kernel_init: Initializer = _orthogonal,
    param_dtype: Any = jnp.float32,
) -> RecurrentCell:
  """A GRU cell (PyTorch / Flax equations, gates (r, z, n)); carry `h` [..., H].

  `parametrization='initstate'` starts the biases `b_i`, `b_h` [3H] at zero with lecun-normal
  input and orthogonal recurrent weights; 'pytorch' draws every weight and bias from
  U(-1/sqrt(H), 1/sqrt(H)) as `nn.GRU` does (then leave the initializers at their defaults).
  """
  checks.positive_int(hidden_size, 'hidden_size')
  _check_parametrization(parametrization, 'gru', kernel_init is not _lecun_normal or (
      recurrent_kernel_init is not _orthogonal))

  def init(key: PRNGKey, input_size: int) -> Params:
    checks.positive_int(input_size, 'input_size')
    if parametrization == 'pytorch':
      return _pytorch_init(key, input_size, hidden_size, 3, param_dtype)
    keys = jax.random.split(key, 6)
    w_i = jnp.concatenate([_draw(kernel_init, k, (input_size, hidden_size), param_dtype)
                           for k in keys[:3]], axis=1)
    w_h = jnp.concatenate([_draw(recurrent_kernel_init, k, (hidden_size, hidden_size), param_dtype)
                           for k in keys[3:]], axis=1)
    zeros = jnp.zeros((3 * hidden_size,), param_dtype)
    return {'w_i': w_i, 'w_h': w_h, 'b_i': zeros, 'b_h': zeros}

  def apply(params: Params, carry: Array, x: Array) -> tuple[Array, Array]:
    check_params(params, 'gru', ('w_i', 'w_h', 'b_i', 'b_h'), 3, hidden_size)
    _check_input(x, params['w_i'], 'gru')
    _check_carry_leaf(carry, x, hidden_size, 'gru', '`carry`')
    xi = _bias_add(x @ params['w_i'], params['b_i'])
    hh = _bias_add(carry @ params['w_h'], params['b_h'])
    xr, xz, xn = jnp.split(xi, 3, axis=-1)
    hr, hz, hn = jnp.split(hh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    new_h = (1.0 - z) * n + z * carry
    return new_h, new_h

  return RecurrentCell(init, apply, _template(hidden_size, param_dtype), hidden_size,
                       fused='gru')


def elman(
    hidden_size: int,
    *,
    kernel_init: Initializer = _lecun_normal,
    recurrent_kernel_init: Initializer = _orthogonal,
    param_dtype: Any = jnp.float32,
) -> RecurrentCell:
  """An Elman (simple tanh) cell: h' = tanh(x w_i + h w_h + b); carry `h` [..., H]."""
  checks.positive_int(hidden_size, 'hidden_size')

  def init(key: PRNGKey, input_size: int) -> Params:
    checks.positive_int(input_size, 'input_size')
    k_i, k_h = jax.random.split(key)
    return {
        'w_i': _draw(kernel_init, k_i, (input_size, hidden_size), param_dtype),
        'w_h': _draw(recurrent_kernel_init, k_h, (hidden_size, hidden_size), param_dtype),
        'b': jnp.zeros((hidden_size,), param_dtype),
    }

  def apply(params: Params, carry: Array, x: Array) -> tuple[Array, Array]:
    check_params(params, 'elman', ('w_i', 'w_h', 'b'), 1, hidden_size)
    _check_input(x, params['w_i'], 'elman')
    _check_carry_leaf(carry, x, hidden_size, 'elman', '`carry`')
    new_h = jnp.tanh(_bias_add(x @ params['w_i'] + carry @ params['w_h'], params['b']))
    return new_h, new_h

  return RecurrentCell(init, apply, _template(hidden_size, param_dtype), hidden_size)


def stack(cells: Sequence[RecurrentCell]) -> RecurrentCell:
  """Stacks L cells: the output of layer l is the input of layer l + 1.

  The params and the carry are tuples with one entry per layer; the output is the last layer's.
  """
  cells = tuple(cells)
  if not cells or not all(isinstance(c, RecurrentCell) for c in cells):
    raise ValueError('`stack` needs a non-empty sequence of RecurrentCell, got '
                     f'{[type(c).__name__ for c in cells]}.')

  def init(key: PRNGKey, input_size: int) -> Params:
    params = []
    for cell, k in zip(cells, jax.random.split(key, len(cells))):
      params.append(cell.init(k, input_size))
      input_size = cell.output_size
    return tuple(params)

  def apply(params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
    if len(carry) != len(cells) or len(params) != len(cells):
      raise ValueError(f'stack of {len(cells)} layers got {len(params)} params entries and a '
                       f'carry with {len(carry)} entries; pass one per layer.')
    new_carry = []
    for cell, p, c in zip(cells, params, carry):
      new_c, x = cell.apply(p, c, x)
      new_carry.append(new_c)
    return tuple(new_carry), x

  kinds = tuple(c.fused for c in cells if isinstance(c.fused, str))
  fused = kinds if len(kinds) == len(cells) else None  # Every layer a built-in fused kind.
  return RecurrentCell(init, apply, tuple(c.carry_template for c in cells),
                       cells[-1].output_size, fused=fused)


def _is_linen_module(x: Any) -> bool:
  if 'flax' not in sys.modules:  # Nothing can be a Flax module before Flax is imported.
    return False
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return isinstance(x, nn.Module)


def from_flax(module: Any, input_shape: tuple[int, ...] = (1,)) -> RecurrentCell:
  """Wraps a `flax.linen` recurrent cell (LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell, ...).

  The carry keeps Flax's format (`(c, h)` for LSTM cells); its shape is read off
  `module.initialize_carry` without drawing anything: the initial carry comes from the
  initstate strategy, not from the module's `carry_init`.

  Args:
    module: a Flax linen cell, mapping `(carry, x) -> (carry, y)`.
    input_shape: the shape of one example's input, used only to read the carry's shape (the
      default suits every cell whose carry does not depend on the input, i.e. all but ConvLSTM).

  Returns:
    A `RecurrentCell` whose params are the module's `variables['params']`.
  """
  if not _is_linen_module(module):
    raise TypeError(f'`from_flax` needs a flax.linen cell, got {type(module).__name__}.')
  template = jax.eval_shape(lambda: module.initialize_carry(jax.random.key(0), input_shape))

  def zeros_like_template(batch_shape: tuple[int, ...]) -> Carry:
    return jax.tree.map(lambda s: jnp.zeros(batch_shape + s.shape, s.dtype), template)

  def init(key: PRNGKey, input_size: int) -> Params:
    x = jnp.zeros((1,) + input_shape[:-1] + (input_size,), jnp.float32)
    return module.init(key, zeros_like_template((1,)), x)['params']

  def apply(params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
    return module.apply({'params': params}, carry, x)

  out = jax.eval_shape(lambda: module.init_with_output(
      jax.random.key(0), zeros_like_template((1,)),
      jnp.zeros((1,) + input_shape, jnp.float32))[0][1])
  return RecurrentCell(init, apply, template, out.shape[-1])


def _is_nnx_module(x: Any) -> bool:
  if 'flax' not in sys.modules:  # Nothing can be an NNX module before Flax is imported.
    return False
  from flax import nnx
  return isinstance(x, nnx.Module)


def from_nnx(cell: Any) -> RecurrentCell:
  """Wraps a Flax NNX recurrent cell (LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell, ...).

  The cell must map `(carry, x) -> (carry, y)` and have `in_features` and `initialize_carry`,
  as Flax's NNX cells do. Its carry keeps Flax's format (`(c, h)` for LSTM cells); the initial
  carry comes from the initstate strategy, not from the cell's `carry_init`.

  Returns:
    A `RecurrentCell` whose params are the cell's `nnx.State` (`nnx.split(cell)[1]`): `init`
    returns the cell's current state (the key is unused: an NNX cell is built with its
    parameters), and `apply(params, carry, x)` runs the cell merged with `params`, so that
    `scan_rnn(from_nnx(cell).bind(state), ...)` is a pure function of `state`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> from flax import nnx
    >>> cell = initstate.from_nnx(nnx.GRUCell(3, 8, rngs=nnx.Rngs(0)))
    >>> params = cell.init(None, 3)
    >>> out = initstate.scan_rnn(cell.bind(params), jnp.ones((2, 5, 3)), jnp.zeros((2, 8)))
    >>> out.outputs.shape
    (2, 5, 8)
  """
  if not _is_nnx_module(cell):
    raise TypeError(f'`from_nnx` needs a flax.nnx cell, got {type(cell).__name__}.')
  from flax import nnx
  in_features = getattr(cell, 'in_features', None)
  if not checks.is_int(in_features) or not hasattr(cell, 'initialize_carry'):
    raise TypeError(f'`from_nnx` needs an NNX cell with `in_features` and `initialize_carry` '
                    f'(as Flax\'s LSTMCell, GRUCell, SimpleCell), got {type(cell).__name__}.')
  graphdef, state = nnx.split(cell)
  # Shapes only: nothing is drawn (the key is one the cell's `carry_init` would need).
  batch_carry = jax.eval_shape(lambda: cell.initialize_carry((1, in_features),
                                                             rngs=nnx.Rngs(0)))
  template = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), batch_carry)

  def init(key: PRNGKey | None, input_size: int) -> Params:
    del key
    if input_size != in_features:
      raise ValueError(f'this NNX cell was built for in_features={in_features}, got '
                       f'input_size={input_size}.')
    return state

  def apply(params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
    return nnx.merge(graphdef, params)(carry, x)

  out = jax.eval_shape(lambda: apply(state, jax.tree.map(jnp.zeros_like, batch_carry),
                                     jnp.zeros((1, in_features), jnp.float32))[1])
  return RecurrentCell(init, apply, template, out.shape[-1])


def as_cell(cell: Any) -> RecurrentCell:
  """Returns `cell` unchanged if it is a `RecurrentCell`, or wraps a Flax linen cell with
  `from_flax` or a Flax NNX cell with `from_nnx`."""
  if isinstance(cell, RecurrentCell):
    return cell
  if _is_linen_module(cell):
    return from_flax(cell)
  if _is_nnx_module(cell):
    return from_nnx(cell)
  raise TypeError('expected an initstate RecurrentCell, a flax.linen cell or a flax.nnx cell, got '
                  f'{type(cell).__name__}.')


