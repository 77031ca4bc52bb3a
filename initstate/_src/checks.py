"""Argument checks shared by the public functions: each error names the argument and says what
was expected and what came instead. Trace-time only (types, shapes, dtypes, Python values);
nothing here reads a traced value.
"""

from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np


def is_int(value: Any) -> bool:
  """A Python or NumPy integer, not a bool."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_concrete(value: Any) -> bool:
  """Not a tracer: its value can be read at trace time."""
  return not isinstance(value, jax.core.Tracer)


def positive_int(value: Any, name: str) -> int:
  """`value` as an int >= 1, or a ValueError naming `name`."""
  if not is_int(value) or value < 1:
    raise ValueError(f'`{name}` must be a positive int, got {value!r}.')
  return int(value)


def flag(value: Any, name: str) -> bool:
  """`value` as a bool, or a TypeError: flags select code paths at trace time, so they must be
  Python (or NumPy) bools, not strings, arrays or traced values."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f'`{name}` must be a Python bool, got {type(value).__name__} {value!r}.')
  return bool(value)


def callable_(value: Any, name: str, signature: str) -> None:
  if not callable(value):
    raise TypeError(f'`{name}` must be a callable {signature}, got {type(value).__name__}.')


def is_finite_real(value: Any) -> bool:
  """A finite real number (Python or NumPy scalar, or a 0-d array); not a bool or a string."""
  if isinstance(value, (bool, np.bool_, str)):
    return False
  try:
    return np.ndim(value) == 0 and bool(np.isreal(value)) and bool(np.isfinite(value))
  except TypeError:
    return False


def non_negative_scalar(value: Any, name: str) -> None:
  """A finite real scalar >= 0 (a traced scalar passes: its value cannot be checked)."""
  if isinstance(value, jax.core.Tracer):
    if jnp.ndim(value) != 0:
      raise ValueError(f'`{name}` must be a scalar, got shape {jnp.shape(value)}.')
    return
  if not is_finite_real(value) or value < 0:
    raise ValueError(f'`{name}` must be a finite non-negative scalar, got {value!r}.')


def prng_key(rng: Any, name: str = 'rng', batch_dims: int = 0) -> None:
  """PRNG keys: typed (`jax.random.key(seed)`) or raw uint32 (`jax.random.PRNGKey(seed)`).

  With `batch_dims=0` one key (typed shape (), raw [2]); with `batch_dims=1` one key per
  example (typed [B], raw [B, 2]).
  """
  dtype = getattr(rng, 'dtype', None)
  shape: tuple[int, ...] = tuple(getattr(rng, 'shape', ()))
  typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
  if typed and len(shape) == batch_dims:
    return
  if dtype == jnp.uint32 and len(shape) == batch_dims + 1 and shape[batch_dims] == 2:
    return
  what = type(rng).__name__ if dtype is None else f'{type(rng).__name__} {dtype}{list(shape)}'
  if batch_dims == 0:
    hint = ('; split or index it first' if typed else '')
    raise TypeError(f'`{name}` must be one PRNG key such as jax.random.key(seed), got '
                    f'{what}{hint}.')
  raise TypeError(f'`{name}` must hold one PRNG key per example ({batch_dims} batch dim), got '
                  f'{what}.')


def required_prng_key(rng: Any, strategy: str) -> jax.Array:
  """`rng` for a strategy that draws noise in training: a clear error if it is None."""
  if rng is None:
    raise ValueError(f'`{strategy}` draws noise when train=True and needs a PRNG key: pass `rng` '
                     '(for initstate.nn.RNN, rngs={"carry": key}), or pass train=False for '
                     'the noise-free carry.')
  prng_key(rng, 'rng')
  return rng


def optional_prng_key(rng: Any, name: str = 'rng') -> None:
  if rng is not None:
    prng_key(rng, name)
