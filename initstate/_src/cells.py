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

The `*_from_flax` / `*_to_flax` / `*_from_torch` helpers convert parameters between layouts.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from initstate._src import checks
from initstate._src.fused import FUSED_ATTR
from initstate._src.types import Array, Carry, Params, PRNGKey

Initializer = Callable[[PRNGKey, tuple[int, ...], Any], Array]


class LSTMCarry(NamedTuple):
  """The carry of an LSTM, with named fields so (h, c) and (c, h) cannot be confused.

  Attributes:
    h: `[..., H]` hidden state, also the cell's output.
    c: `[..., H]` memory cell.
  """
  h: Array
  c: Array


def lstm_carry_to_flax(carry: LSTMCarry) -> tuple[Array, Array]:
  """Converts an `LSTMCarry` to the `(c, h)` tuple of Flax's LSTM cells."""
  if not isinstance(carry, LSTMCarry):
    raise TypeError(f'lstm_carry_to_flax: `carry` must be an LSTMCarry(h, c), got '
                    f'{type(carry).__name__}.')
  return (carry.c, carry.h)


def lstm_carry_from_flax(carry: tuple[Array, Array]) -> LSTMCarry:
  """Converts the `(c, h)` tuple of Flax's LSTM cells to an `LSTMCarry`."""
  if isinstance(carry, LSTMCarry):
    raise TypeError('lstm_carry_from_flax: `carry` is already an LSTMCarry(h, c); Flax\'s '
                    'carry is the pair (c, h).')
  if not isinstance(carry, (tuple, list)) or len(carry) != 2:
    raise TypeError(f"lstm_carry_from_flax: `carry` must be Flax's (c, h) pair, got "
                    f'{type(carry).__name__}.')
  c, h = carry
  return LSTMCarry(h=h, c=c)


class RecurrentCell(NamedTuple):
  """A recurrent cell as pure functions.

  Attributes:
    init: `(key, input_size) -> params`.
    apply: `(params, carry, x[..., D]) -> (new_carry, y[..., output_size])`.
    carry_template: the carry of one example: a pytree of `jax.ShapeDtypeStruct` leaves.
    output_size: the size of the last axis of `y`.
  """
  init: Callable[[PRNGKey, int], Params]
  apply: Callable[[Params, Carry, Array], tuple[Carry, Array]]
  carry_template: Carry
  output_size: int


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


def _template(hidden_size: int, dtype: Any) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((hidden_size,), jnp.dtype(dtype))


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    kernel_init: Initializer = nn.initializers.lecun_normal(),
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal(),
    param_dtype: Any = jnp.float32,
) -> RecurrentCell:
  """An LSTM cell with carry `LSTMCarry(h, c)`, gates (i, f, g, o); see the module docstring.

  Args:
    hidden_size: H, the number of units.
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

  def init(key: PRNGKey, input_size: int) -> Params:
    checks.positive_int(input_size, 'input_size')
    keys = jax.random.split(key, 8)
    w_i = jnp.concatenate([_draw(kernel_init, k, (input_size, hidden_size), param_dtype)
                           for k in keys[:4]], axis=1)
    w_h = jnp.concatenate([_draw(recurrent_kernel_init, k, (hidden_size, hidden_size), param_dtype)
                           for k in keys[4:]], axis=1)
    b = jnp.zeros((4 * hidden_size,), param_dtype)
    b = b.at[hidden_size:2 * hidden_size].set(forget_bias)
    return {'w_i': w_i, 'w_h': w_h, 'b': b}

  def apply(params: Params, carry: LSTMCarry, x: Array) -> tuple[LSTMCarry, Array]:
    _check_params(params, 'lstm', ('w_i', 'w_h', 'b'), 4, hidden_size)
    _check_input(x, params['w_i'], 'lstm')
    if not isinstance(carry, LSTMCarry):
      got = (f'an array of shape {carry.shape}' if hasattr(carry, 'shape')
             else type(carry).__name__)
      raise TypeError(f'lstm: `carry` must be an LSTMCarry(h, c), got {got} (a Flax LSTM '
                      'carry is (c, h): convert it with lstm_carry_from_flax).')
    h, c = carry
    _check_carry_leaf(h, x, hidden_size, 'lstm', '`carry.h`')
    _check_carry_leaf(c, x, hidden_size, 'lstm', '`carry.c`')
    gates = _bias_add(x @ params['w_i'] + h @ params['w_h'], params['b'])
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return LSTMCarry(h=new_h, c=new_c), new_h

  setattr(apply, FUSED_ATTR, ('lstm',))  # scan_rnn may run it as a fused sequence op.
  template = LSTMCarry(h=_template(hidden_size, param_dtype), c=_template(hidden_size, param_dtype))
  return RecurrentCell(init, apply, template, hidden_size)


def gru(
    hidden_size: int,
    *,
    kernel_init: Initializer = nn.initializers.lecun_normal(),
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal(),
    param_dtype: Any = jnp.float32,
) -> RecurrentCell:
  """A GRU cell (PyTorch / Flax equations, gates (r, z, n)); carry `h` [..., H]; biases zero."""
  checks.positive_int(hidden_size, 'hidden_size')

  def init(key: PRNGKey, input_size: int) -> Params:
    checks.positive_int(input_size, 'input_size')
    keys = jax.random.split(key, 6)
    w_i = jnp.concatenate([_draw(kernel_init, k, (input_size, hidden_size), param_dtype)
                           for k in keys[:3]], axis=1)
    w_h = jnp.concatenate([_draw(recurrent_kernel_init, k, (hidden_size, hidden_size), param_dtype)
                           for k in keys[3:]], axis=1)
    zeros = jnp.zeros((3 * hidden_size,), param_dtype)
    return {'w_i': w_i, 'w_h': w_h, 'b_i': zeros, 'b_h': zeros}

  def apply(params: Params, carry: Array, x: Array) -> tuple[Array, Array]:
    _check_params(params, 'gru', ('w_i', 'w_h', 'b_i', 'b_h'), 3, hidden_size)
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

  setattr(apply, FUSED_ATTR, ('gru',))  # scan_rnn may run it as a fused sequence op.
  return RecurrentCell(init, apply, _template(hidden_size, param_dtype), hidden_size)


def elman(
    hidden_size: int,
    *,
    kernel_init: Initializer = nn.initializers.lecun_normal(),
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal(),
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
    _check_params(params, 'elman', ('w_i', 'w_h', 'b'), 1, hidden_size)
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
      c, x = cell.apply(p, c, x)
      new_carry.append(c)
    return tuple(new_carry), x

  kinds = [getattr(c.apply, FUSED_ATTR, None) for c in cells]
  if all(k is not None and k[0] != 'stack' for k in kinds):
    setattr(apply, FUSED_ATTR, ('stack', tuple(k[0] for k in kinds)))
  return RecurrentCell(init, apply, tuple(c.carry_template for c in cells),
                       cells[-1].output_size)


def from_flax(module: nn.RNNCellBase, input_shape: tuple[int, ...] = (1,)) -> RecurrentCell:
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
  if not isinstance(module, nn.Module):
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


def as_cell(cell: RecurrentCell | nn.Module) -> RecurrentCell:
  """Returns `cell` unchanged if it is a `RecurrentCell`, or wraps a Flax cell with `from_flax`."""
  if isinstance(cell, RecurrentCell):
    return cell
  if isinstance(cell, nn.Module):
    return from_flax(cell)
  raise TypeError('expected an initstate RecurrentCell or a flax.linen cell, got '
                  f'{type(cell).__name__}.')


# Parameter conversion between layouts. Flax stores one Dense per gate; PyTorch stores
# [gates * H, D] matrices (output-major) and two biases.


def _require(p: Any, fn: str, keys: Sequence[str], what: str) -> None:
  """`p` must be a mapping whose entries `keys` are mappings with a 'kernel' (Flax layout)."""
  missing = [k for k in keys
             if not isinstance(p, Mapping) or not isinstance(p.get(k), Mapping)
             or 'kernel' not in p[k]]
  if missing:
    got = sorted(p) if isinstance(p, Mapping) else type(p).__name__
    raise ValueError(f'{fn}: `flax_params` must be the params of a Flax {what} (one Dense per '
                     f'gate: {list(keys)}, each with a kernel); missing or malformed {missing}, '
                     f'got keys {got}.')


def _check_params(params: Any, fn: str, keys: tuple[str, ...], gates: int,
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


def _kernel(p: Any, name: str) -> Array:
  return jnp.asarray(p[name]['kernel'])


def _bias(p: Any, name: str, size: int, dtype: Any) -> Array:
  return jnp.asarray(p[name]['bias']) if 'bias' in p[name] else jnp.zeros((size,), dtype)


def lstm_params_from_flax(flax_params: Params) -> Params:
  """Params of Flax `LSTMCell` / `OptimizedLSTMCell` -> params of `lstm`."""
  p = flax_params
  _require(p, 'lstm_params_from_flax', [a + g for a in 'ih' for g in 'ifgo'],
           'LSTMCell / OptimizedLSTMCell')
  hidden = _kernel(p, 'hi').shape[0]
  dtype = _kernel(p, 'hi').dtype
  return {
      'w_i': jnp.concatenate([_kernel(p, 'i' + g) for g in 'ifgo'], axis=1),
      'w_h': jnp.concatenate([_kernel(p, 'h' + g) for g in 'ifgo'], axis=1),
      'b': jnp.concatenate([_bias(p, 'h' + g, hidden, dtype) + _bias(p, 'i' + g, hidden, dtype)
                            for g in 'ifgo']),
  }


def lstm_params_to_flax(params: Params) -> Params:
  """Params of `lstm` -> params of Flax `LSTMCell` / `OptimizedLSTMCell`."""
  _check_params(params, 'lstm_params_to_flax', ('w_i', 'w_h', 'b'), 4)
  w_i = jnp.split(params['w_i'], 4, axis=1)
  w_h = jnp.split(params['w_h'], 4, axis=1)
  b = jnp.split(params['b'], 4)
  out = {}
  for k, g in enumerate('ifgo'):
    out['i' + g] = {'kernel': w_i[k]}
    out['h' + g] = {'kernel': w_h[k], 'bias': b[k]}
  return out


def gru_params_from_flax(flax_params: Params) -> Params:
  """Params of Flax `GRUCell` -> params of `gru`."""
  p = flax_params
  _require(p, 'gru_params_from_flax', [a + g for a in 'ih' for g in 'rzn'], 'GRUCell')
  hidden = _kernel(p, 'hn').shape[0]
  dtype = _kernel(p, 'hn').dtype
  return {
      'w_i': jnp.concatenate([_kernel(p, 'i' + g) for g in 'rzn'], axis=1),
      'w_h': jnp.concatenate([_kernel(p, 'h' + g) for g in 'rzn'], axis=1),
      'b_i': jnp.concatenate([_bias(p, 'i' + g, hidden, dtype) for g in 'rzn']),
      'b_h': jnp.concatenate([_bias(p, 'h' + g, hidden, dtype) for g in 'rzn']),
  }


def gru_params_to_flax(params: Params) -> Params:
  """Params of `gru` -> params of Flax `GRUCell`.

  Flax has no hidden bias for the r and z gates; ours are folded into Flax's input biases
  `ir`, `iz` (both add up inside the sigmoid), so the Flax cell computes the same function.
  """
  _check_params(params, 'gru_params_to_flax', ('w_i', 'w_h', 'b_i', 'b_h'), 3)
  b_hr, b_hz, b_hn = jnp.split(params['b_h'], 3)
  w_i = jnp.split(params['w_i'], 3, axis=1)
  w_h = jnp.split(params['w_h'], 3, axis=1)
  b_ir, b_iz, b_in = jnp.split(params['b_i'], 3)
  b_i = (b_ir + b_hr, b_iz + b_hz, b_in)
  out = {}
  for k, g in enumerate('rzn'):
    out['i' + g] = {'kernel': w_i[k], 'bias': b_i[k]}
    out['h' + g] = {'kernel': w_h[k]}
  out['hn']['bias'] = b_hn
  return out


def elman_params_from_flax(flax_params: Params) -> Params:
  """Params of Flax `SimpleCell` -> params of `elman`."""
  p = flax_params
  _require(p, 'elman_params_from_flax', ['i', 'h'], 'SimpleCell')
  if 'bias' not in p['i']:
    raise ValueError("elman_params_from_flax: `flax_params['i']` has no bias.")
  return {'w_i': _kernel(p, 'i'), 'w_h': _kernel(p, 'h'), 'b': jnp.asarray(p['i']['bias'])}


def elman_params_to_flax(params: Params) -> Params:
  """Params of `elman` -> params of Flax `SimpleCell`."""
  _check_params(params, 'elman_params_to_flax', ('w_i', 'w_h', 'b'), 1)
  return {'i': {'kernel': params['w_i'], 'bias': params['b']}, 'h': {'kernel': params['w_h']}}


def _from_torch(fn: str, gates: int, weight_ih: Any, weight_hh: Any, bias_ih: Any,
                bias_hh: Any) -> tuple[np.ndarray, ...]:
  """The four tensors as NumPy arrays, checked: weight_ih [G*H, D], weight_hh [G*H, H],
  biases [G*H]."""
  as_np = lambda t: np.asarray(t.detach().cpu().numpy() if hasattr(t, 'detach') else t)
  w_ih, w_hh, b_ih, b_hh = (as_np(t) for t in (weight_ih, weight_hh, bias_ih, bias_hh))
  hidden = w_hh.shape[1] if w_hh.ndim == 2 else 0
  ok = (hidden > 0 and w_hh.shape == (gates * hidden, hidden) and w_ih.ndim == 2
        and w_ih.shape[0] == gates * hidden and b_ih.shape == b_hh.shape == (gates * hidden,))
  if not ok:
    raise ValueError(f'{fn}: expected weight_ih [{gates}H, D], weight_hh [{gates}H, H], '
                     f'bias_ih and bias_hh [{gates}H] (one layer of PyTorch), got shapes '
                     f'{w_ih.shape}, {w_hh.shape}, {b_ih.shape}, {b_hh.shape}.')
  return w_ih, w_hh, b_ih, b_hh


def lstm_params_from_torch(weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any) -> Params:
  """One layer of PyTorch `nn.LSTM` (`weight_ih_l0` [4H, D], ...) -> params of `lstm`."""
  w_ih, w_hh, b_ih, b_hh = _from_torch('lstm_params_from_torch', 4, weight_ih, weight_hh,
                                       bias_ih, bias_hh)
  return {'w_i': jnp.asarray(w_ih.T), 'w_h': jnp.asarray(w_hh.T), 'b': jnp.asarray(b_ih + b_hh)}


def gru_params_from_torch(weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any) -> Params:
  """One layer of PyTorch `nn.GRU` (`weight_ih_l0` [3H, D], ...) -> params of `gru`."""
  w_ih, w_hh, b_ih, b_hh = _from_torch('gru_params_from_torch', 3, weight_ih, weight_hh,
                                       bias_ih, bias_hh)
  return {'w_i': jnp.asarray(w_ih.T), 'w_h': jnp.asarray(w_hh.T), 'b_i': jnp.asarray(b_ih),
          'b_h': jnp.asarray(b_hh)}
