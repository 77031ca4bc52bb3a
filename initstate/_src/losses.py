"""Per-step losses, loss masks and a masked mean that stays finite when every step is masked."""

import jax.numpy as jnp
import numpy as np
import optax

from initstate._src import checks
from initstate._src.types import Array


def squared_error(predictions: Array, targets: Array) -> Array:
  """Per-step squared error, averaged over the last (feature) axis.

  Args:
    predictions: [..., F], e.g. [B, T, F].
    targets: [..., F], the same shape.

  Returns:
    [...], e.g. [B, T]: mean over F of (predictions - targets) ** 2.
  """
  if jnp.shape(predictions) != jnp.shape(targets):
    raise ValueError(f'`predictions` {jnp.shape(predictions)} and `targets` '
                     f'{jnp.shape(targets)} must have the same shape.')
  if jnp.ndim(predictions) < 1:
    raise ValueError('`predictions` needs a feature axis (rank >= 1).')
  return jnp.mean(jnp.square(predictions - targets), axis=-1)


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
  """Per-step softmax cross-entropy with integer labels.

  Args:
    logits: [..., V], e.g. [B, T, V].
    labels: int [...], e.g. [B, T], values in [0, V).

  Returns:
    [...]: -log softmax(logits)[label].
  """
  if jnp.shape(logits)[:-1] != jnp.shape(labels):
    raise ValueError(f'`logits` {jnp.shape(logits)} must be `labels` {jnp.shape(labels)} '
                     'plus a class axis.')
  if not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
    raise ValueError(f'`labels` must be integers, got {jnp.asarray(labels).dtype}.')
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _check_mask_dtype(mask: Array, name: str) -> None:
  """Masks select; they do not weigh. A float mask would be read as `mask != 0`, so a weight
  of 0.5 would silently count in full: refuse it."""
  dtype = jnp.result_type(mask)
  if dtype != jnp.bool_ and not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f'`{name}` must be bool (or 0/1 ints), got {dtype}; to weigh entries, '
                    'multiply `values` by the weights instead.')


def masked_mean(values: Array, mask: Array | None = None) -> Array:
  """Mean of `values` over the entries where `mask` is True.

  Masked-out entries are replaced (not multiplied) by zero, so NaN or Inf in padding cannot
  leak into the value; with no entry selected the result is 0 with zero gradients.

  Args:
    values: [...], e.g. per-step losses [B, T].
    mask: bool [...] of the same shape (1 / True where an entry counts); None for all.

  Returns:
    A scalar.

  Example:
    >>> import jax.numpy as jnp, initstate
    >>> values = jnp.array([[1.0, 2.0, jnp.nan]])        # NaN on a padding step
    >>> float(initstate.masked_mean(values, jnp.array([[True, True, False]])))
    1.5
    >>> float(initstate.masked_mean(values, jnp.zeros((1, 3), bool)))   # nothing selected
    0.0
  """
  if mask is None:
    return jnp.mean(values)
  if jnp.shape(mask) != jnp.shape(values):
    raise ValueError(f'`mask` {jnp.shape(mask)} must have the shape of `values` '
                     f'{jnp.shape(values)}.')
  _check_mask_dtype(mask, 'mask')
  mask = jnp.asarray(mask).astype(jnp.bool_)
  total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
  count = jnp.sum(mask.astype(values.dtype))
  return total / jnp.maximum(count, jnp.ones_like(count))


def loss_mask(
    seq_lengths: Array | None,
    num_steps: int,
    *,
    burn_in: int | Array = 0,
    mask: Array | None = None,
    batch_size: int | None = None,
    time_major: bool = False,
) -> Array:
  """The steps that count in a loss: valid (t < length), past the burn-in, and in `mask`.

  Args:
    seq_lengths: int [B], or None for full-length sequences (then pass `batch_size` or `mask`).
    num_steps: T.
    burn_in: N: steps t < N are left out (an int, or a traced int scalar, say one per model
      in a sweep; a traced value is not range-checked).
    mask: optional user mask, bool [B, T] ([T, B] if `time_major`).
    batch_size: B, needed only when neither `seq_lengths` nor `mask` is given.
    time_major: return (and read `mask` as) [T, B].

  Returns:
    bool [B, T] ([T, B] if `time_major`).

  Example:
    >>> import jax.numpy as jnp, initstate
    >>> initstate.loss_mask(jnp.array([4, 2]), 5, burn_in=1).astype(int)
    Array([[0, 1, 1, 1, 0],
           [0, 1, 0, 0, 0]], dtype=int32)
  """
  num_steps = checks.positive_int(num_steps, 'num_steps')
  checks.flag(time_major, 'time_major')
  if not checks.is_concrete(burn_in):  # A traced burn-in, one per model in a sweep.
    if jnp.ndim(burn_in) != 0 or not jnp.issubdtype(jnp.result_type(burn_in), jnp.integer):
      raise ValueError(f'a traced `burn_in` must be an int scalar, got {jnp.result_type(burn_in)}'
                       f' {jnp.shape(burn_in)}.')
  elif isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or not (
      0 <= burn_in < num_steps):
    raise ValueError(f'`burn_in` must be an int in [0, T - 1] = [0, {num_steps - 1}], '
                     f'got {burn_in!r}.')
  if seq_lengths is not None:
    seq_lengths = jnp.asarray(seq_lengths)
    if seq_lengths.ndim != 1 or not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
      raise ValueError(f'`seq_lengths` must be an int array [B], got {seq_lengths.dtype} '
                       f'{seq_lengths.shape}.')
    batch_size = seq_lengths.shape[0]
  elif mask is not None:
    if jnp.ndim(mask) != 2:
      raise ValueError(f'`mask` must be [B, T] ([T, B] if time_major), got shape '
                       f'{jnp.shape(mask)}.')
    batch_size = jnp.shape(mask)[1 if time_major else 0]
  elif batch_size is None:
    raise ValueError('pass `seq_lengths`, `mask` or `batch_size`.')
  elif not checks.is_int(batch_size) or batch_size < 0:
    raise ValueError(f'`batch_size` must be a non-negative int, got {batch_size!r}.')
  steps = jnp.arange(num_steps)[:, None]  # [T, 1]
  out = jnp.broadcast_to(steps >= burn_in, (num_steps, batch_size))
  if seq_lengths is not None:
    out = out & (steps < seq_lengths[None, :])
  if mask is not None:
    expected = (num_steps, batch_size) if time_major else (batch_size, num_steps)
    if jnp.shape(mask) != expected:
      raise ValueError(f'`mask` must have shape {expected}, got {jnp.shape(mask)}.')
    _check_mask_dtype(mask, 'mask')
    mask = jnp.asarray(mask).astype(jnp.bool_)
    out = out & (mask if time_major else mask.T)
  return out if time_major else out.T

