"""Converters between initstate's layouts and Flax's and PyTorch's.

Flax stores one Dense per gate (`ii`, `if`, ..., `hi`, ...; biases on the hidden-to-hidden
denses for an LSTM) and an LSTM carry as the pair `(c, h)`; PyTorch stores `[gates * H, D]`
matrices (output-major) and two bias vectors. initstate stores `w_i` [D, G*H], `w_h` [H, G*H]
and an LSTM carry as `LSTMCarry(h, c)`; see `initstate.lstm` for the gate orders.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from initstate._src.cells import LSTMCarry, check_params, lstm_bias, lstm_param_keys
from initstate._src.types import Array, Params


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
  """Params of `lstm` -> params of Flax `LSTMCell` / `OptimizedLSTMCell` (two separate biases,
  as `parametrization='pytorch'` keeps them, are summed: Flax has one)."""
  check_params(params, 'lstm_params_to_flax', lstm_param_keys(params), 4)
  bias = lstm_bias(params, 'lstm_params_to_flax')
  w_i = jnp.split(params['w_i'], 4, axis=1)
  w_h = jnp.split(params['w_h'], 4, axis=1)
  b = jnp.split(bias, 4)
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
  check_params(params, 'gru_params_to_flax', ('w_i', 'w_h', 'b_i', 'b_h'), 3)
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
  check_params(params, 'elman_params_to_flax', ('w_i', 'w_h', 'b'), 1)
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


def lstm_params_from_torch(weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any, *,
                           separate_biases: bool = False) -> Params:
  """One layer of PyTorch `nn.LSTM` (`weight_ih_l0` [4H, D], ...) -> params of `lstm`.

  The two biases are summed into `b`, or, with `separate_biases`, kept as `b_i` and `b_h` (the
  layout of `lstm(H, parametrization='pytorch')`, which trains them separately as PyTorch does).
  """
  w_ih, w_hh, b_ih, b_hh = _from_torch('lstm_params_from_torch', 4, weight_ih, weight_hh,
                                       bias_ih, bias_hh)
  params = {'w_i': jnp.asarray(w_ih.T), 'w_h': jnp.asarray(w_hh.T)}
  if separate_biases:
    return params | {'b_i': jnp.asarray(b_ih), 'b_h': jnp.asarray(b_hh)}
  return params | {'b': jnp.asarray(b_ih + b_hh)}


def gru_params_from_torch(weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any) -> Params:
  """One layer of PyTorch `nn.GRU` (`weight_ih_l0` [3H, D], ...) -> params of `gru`."""
  w_ih, w_hh, b_ih, b_hh = _from_torch('gru_params_from_torch', 3, weight_ih, weight_hh,
                                       bias_ih, bias_hh)
  return {'w_i': jnp.asarray(w_ih.T), 'w_h': jnp.asarray(w_hh.T), 'b_i': jnp.asarray(b_ih),
          'b_h': jnp.asarray(b_hh)}
