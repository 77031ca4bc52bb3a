"""Argument checks shared by the public functions: each error names the argument and says what
was expected and what came instead. Trace-time only (types, shapes, dtypes, Python values);
nothing here reads a traced value.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_int(value: Any) -> bool:
  """A Python or NumPy integer, not a bool."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


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


def non_negative_scalar(value: Any, name: str) -> None:
  """A finite real scalar >= 0 (a traced scalar passes: its value cannot be checked)."""
  if isinstance(value, jax.core.Tracer):
    if jnp.ndim(value) != 0:
      raise ValueError(f'`{name}` must be a scalar, got shape {jnp.shape(value)}.')
    return
  try:
    ok = np.ndim(value) == 0 and bool(np.isfinite(value)) and value >= 0
  except TypeError:
    ok = False
  if not ok or isinstance(value, (bool, np.bool_, str)):
    raise ValueError(f'`{name}` must be a finite non-negative scalar, got {value!r}.')


def prng_key(rng: Any, name: str = 'rng') -> None:
  """One PRNG key: a typed key (`jax.random.key(seed)`, shape ()) or a raw uint32 [2] key."""
  dtype = getattr(rng, 'dtype', None)
  shape = getattr(rng, 'shape', None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise ValueError(f'`{name}` must be one PRNG key (shape ()), got a key array of shape '
                       f'{shape}; split or index it first.')
    return
  if dtype is not None and dtype == jnp.uint32 and shape == (2,):
    return  # A raw key from jax.random.PRNGKey(seed).
  what = type(rng).__name__ if dtype is None else f'{type(rng).__name__} {dtype}{list(shape)}'
  raise TypeError(f'`{name}` must be a PRNG key such as jax.random.key(seed), got {what}.')


def optional_prng_key(rng: Any, name: str = 'rng') -> None:
  if rng is not None:
    prng_key(rng, name)
