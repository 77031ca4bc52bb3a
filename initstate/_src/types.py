"""Type aliases shared across initstate.

Shape letters used in docstrings throughout the package: B batch, T time, D input features,
H hidden units, L layers, V vocabulary, F output features.
"""

from collections.abc import Callable
from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
# A carry is any pytree of arrays whose leaves have leading batch dims and a trailing unit shape
# (usually [B, H]); an LSTM carry is an `LSTMCarry(h, c)`, a stack's carry a tuple, one per layer.
Carry = Any
Params = Any
Batch = int | tuple[int, ...]
# `(key, shape, dtype) -> array`, as in `jax.nn.initializers`.
Initializer = Callable[[PRNGKey, tuple[int, ...], Any], Array]


def normalize_batch(batch: Batch) -> tuple[int, ...]:
  """Returns `batch` as a tuple of non-negative ints, or raises a clear error."""
  if isinstance(batch, int) and not isinstance(batch, bool):
    batch = (batch,)
  if not isinstance(batch, tuple) or not all(
      isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in batch):
    raise ValueError(
        f'`batch` must be a non-negative int or a tuple of them, got {batch!r}.')
  return batch
