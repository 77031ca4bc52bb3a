"""Gradient-scaled ("cleaning") noise around a learned initial carry.

Source: Zimmermann, Tietz and Grothmann, "Forecasting with Recurrent Neural Networks: 12 Tricks"
(Neural Networks: Tricks of the Trade, 2nd ed., 2012), trick 3: learn the initial state, and
in training disturb it by noise whose size follows the error back-propagated to the initial
state. Keep a buffer of the last K such gradients, draw
entries from it at random as the deviation from the learned carry, retire the oldest entries
first, and switch the noise off at test time.

It is an ordinary `CarryStrategy` whose state is a `GradientBuffer`:

  cleaning = initstate.cleaning_noise(buffer_size=256)
  params = cleaning.init(rng, template)           # the learned carry (leaves [*unit])
  buffer = cleaning.init_state(template)          # GradientBuffer, empty
  carry = cleaning.init_carry(params, rng, batch, train=True, state=buffer)  # [B, *unit]
  ...   # gradient of the loss with respect to `carry`: leaves [B, *unit]
  buffer = cleaning.update_state(buffer, carry_grads)   # pushes B entries, retires the oldest

The gradient at the carry is easiest to get with a zero "probe" added to it (pure functions;
`initstate.training.train_step` does this), or with `flax.linen.Module.perturb` (what
`initstate.nn.RNN` does):

  def loss_fn(params, probe):
    carry = cleaning.init_carry(params['carry'], rng, B, train=True, state=buffer)
    carry = jax.tree.map(jnp.add, carry, probe)     # probe: zeros shaped like carry
    ...
  loss, (grads, carry_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1))(params, probe)

Choices the source leaves open, all options here (defaults in brackets):

* what an entry is: the per-sequence gradient vector of one training sequence; `update_state` pushes
  one entry per row it is given, so pass `[B, ...]` rows, or one batch-mean row `[1, ...]`.
* `draw` ['vector']: each sequence draws one whole entry (all units, all leaves of the carry
  together), or 'unit': every unit draws its own entry independently (same marginal per unit,
  no correlation across units).
* `sign` ['unit']: a random sign (+1 or -1 with equal odds) per unit, 'vector': one sign per
  sequence, or 'none': the gradient's own sign. With a random sign the noise has mean zero and
  the learned carry stays the centre of the distribution.
* `scale` [1.0]: a factor on the deviation. The gradient of a batch-mean loss is 1/B times that
  of the sequence's own loss, so the right scale depends on how the loss is reduced; it is the
  noise level's only knob.
* the learned carry does not receive the noise's gradient; the buffer holds data, not params.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from initstate._src import checks
from initstate._src import strategies as strategies_lib
from initstate._src.types import (Array, Batch, Carry, Initializer, Params, PRNGKey,
                                  normalize_batch)

_DRAWS = ('vector', 'unit')
_SIGNS = ('unit', 'vector', 'none')
_CROSS_DEVICE = ('gather', 'mean')


class GradientBuffer(NamedTuple):
  """A ring buffer of the last K gradients at the initial carry.

  Attributes:
    values: a carry-shaped pytree with leaves `[K, *unit]`; slot `i % K` holds entry number i.
    count: int32 scalar, how many entries were ever pushed; `min(count, K)` slots are filled.
  """
  values: Carry
  count: Array

  @property
  def capacity(self) -> int:
    """K, the number of slots (a Python int)."""
    return jax.tree.leaves(self.values)[0].shape[0]

  def size(self) -> Array:
    """How many slots hold an entry: `min(count, K)` (int32 scalar)."""
    return jnp.minimum(self.count, self.capacity)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f'`{name}` must be one of {choices}, got {value!r}.')


def update_gradient_buffer(buffer: GradientBuffer, carry_grads: Carry, *,
                           axis_name: Any = None,
                           cross_device: str = 'gather') -> GradientBuffer:
  """Pushes gradient rows into the buffer, retiring the oldest entries first.

  Args:
    buffer: the current `GradientBuffer` (capacity K).
    carry_grads: gradients of the loss at the initial carry, leaves `[n, *unit]` (one entry
      per row, e.g. per training sequence).
    axis_name: under `pmap` / `shard_map`, the device axis: rows are gathered from (or averaged
      over) all devices first, per `cross_device`, so every device keeps the same buffer.
    cross_device: 'gather' (push every device's rows, in device order) or 'mean'.

  Returns:
    The new buffer. If more than K rows arrive at once, only the last K are kept.
  """
  _check_choice('cross_device', cross_device, _CROSS_DEVICE)
  if not isinstance(buffer, GradientBuffer):
    raise TypeError(f'`state` must be a GradientBuffer (the cleaning-noise state from '
                    f'`init_state`), got {type(buffer).__name__}.')
  if jax.tree.structure(carry_grads) != jax.tree.structure(buffer.values):
    raise ValueError('`carry_grads` must have the carry\'s tree structure '
                     f'{jax.tree.structure(buffer.values)}, got '
                     f'{jax.tree.structure(carry_grads)}.')
  g_leaves = jax.tree.leaves(carry_grads)
  b_leaves = jax.tree.leaves(buffer.values)
  for g, b in zip(g_leaves, b_leaves):
    if jnp.ndim(g) != b.ndim or tuple(jnp.shape(g)[1:]) != b.shape[1:]:
      raise ValueError(f'`carry_grads` leaves must be [n, *unit] with unit shape '
                       f'{b.shape[1:]}, got shape {jnp.shape(g)}.')
  rows = int(jnp.shape(g_leaves[0])[0])
  if any(jnp.shape(g)[0] != rows for g in g_leaves):
    raise ValueError('`carry_grads` leaves must share the row count n, got shapes '
                     f'{[jnp.shape(x) for x in g_leaves]}.')
  if axis_name is not None:
    if cross_device == 'gather':
      carry_grads = jax.lax.all_gather(carry_grads, axis_name, axis=0, tiled=True)
    else:
      carry_grads = jax.lax.pmean(carry_grads, axis_name)
    rows = jax.tree.leaves(carry_grads)[0].shape[0]
  if rows == 0:
    return buffer
  capacity = buffer.capacity
  skipped = max(rows - capacity, 0)   # Only the newest K rows can stay.
  if skipped:
    carry_grads = jax.tree.map(lambda g: g[skipped:], carry_grads)
    rows = capacity
  slots = (buffer.count + skipped + jnp.arange(rows)) % capacity  # distinct slots
  values = jax.tree.map(lambda b, g: b.at[slots].set(g.astype(b.dtype)), buffer.values,
                        carry_grads)
  return GradientBuffer(values=values, count=buffer.count + skipped + rows)


def cleaning_noise(
    buffer_size: int = 256,
    scale: float = 1.0,
    *,
    draw: str = 'vector',
    sign: str = 'unit',
    cross_device: str = 'gather',
    initial_value: float | Initializer = 0.0,
) -> strategies_lib.CarryStrategy:
  """Gradient-scaled noise around a learned carry (Zimmermann et al. 2012, trick 3).

  Args:
    buffer_size: K, how many recent gradient entries are kept (the oldest are retired first).
    scale: factor on the drawn deviation (>= 0).
    draw: 'vector' (one entry per sequence) or 'unit' (one entry per unit).
    sign: 'unit' (random sign per unit), 'vector' (one random sign per sequence) or 'none'.
    cross_device: with an `axis_name` in `update_state`: 'gather' pushes every device's rows
      (in device order) or 'mean' pushes their mean over devices. Either way every device ends
      with the same buffer.
    initial_value: the learned carry's initial value, as in `initstate.learned`.

  Returns:
    A `CarryStrategy` whose state is a `GradientBuffer`: `init_carry(..., train=True,
    state=buffer)` is the learned carry plus a deviation drawn from the buffer (exactly the
    learned carry while the buffer is empty, and with `train=False`); `update_state(buffer,
    carry_grads, *, axis_name=None)` pushes one entry per row of `carry_grads`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> template = initstate.gru(4).carry_template
    >>> cleaning = initstate.cleaning_noise(buffer_size=8, scale=1.0)
    >>> params = cleaning.init(None, template)          # the learned carry [4]
    >>> buffer = cleaning.init_state(template)          # empty: no noise yet
    >>> grads = jnp.full((3, 4), 0.5)                   # dLoss/dcarry of 3 sequences
    >>> buffer = cleaning.update_state(buffer, grads)
    >>> int(buffer.size())
    3
    >>> carry = cleaning.init_carry(params, jax.random.key(0), 2, train=True, state=buffer)
    >>> jnp.abs(carry).tolist()                         # learned (0) +- a stored gradient
    [[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
  """
  buffer_size = checks.positive_int(buffer_size, 'buffer_size')
  checks.non_negative_scalar(scale, 'scale')
  _check_choice('draw', draw, _DRAWS)
  _check_choice('sign', sign, _SIGNS)
  _check_choice('cross_device', cross_device, _CROSS_DEVICE)
  learned = strategies_lib.learned(initial_value)

  def init_buffer(template: Carry) -> GradientBuffer:
    spec = strategies_lib.CarrySpec.from_template(template)
    return GradientBuffer(values=spec.zeros((buffer_size,)), count=jnp.zeros((), jnp.int32))

  def _check_buffer(buffer: Any, params: Params) -> GradientBuffer:
    if not isinstance(buffer, GradientBuffer):
      raise TypeError(f'`state` must be a GradientBuffer (from `init_state`), got '
                      f'{type(buffer).__name__}.')
    p_shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]
    b_shapes = [jnp.shape(v)[1:] for v in jax.tree.leaves(buffer.values)]
    if (jax.tree.structure(params) != jax.tree.structure(buffer.values)
        or p_shapes != b_shapes):
      raise ValueError(f'`state` entries have unit shapes {b_shapes} but the learned carry has '
                       f'{p_shapes}; make the buffer with `init_state` from the same template.')
    if buffer.capacity != buffer_size:
      raise ValueError(f'`state` holds {buffer.capacity} entries but this cleaning_noise was '
                       f'made with buffer_size={buffer_size}.')
    return buffer

  def deviation(buffer: GradientBuffer, rng: PRNGKey, batch: tuple[int, ...]) -> Carry:
    """The noise: scale * sign * entry, leaves [*batch, *unit]; zeros while the buffer is empty."""
    size = buffer.size()
    leaves, treedef = jax.tree.flatten(buffer.values)
    k_index, k_sign = jax.random.split(rng)
    index_keys = jax.random.split(k_index, len(leaves))
    sign_keys = jax.random.split(k_sign, len(leaves))
    # Uniform over the filled slots; `size` may be 0 (then the draw is masked out below).
    draw_index = lambda k, shape: jax.random.randint(k, shape, 0, jnp.maximum(size, 1))
    vector_index = draw_index(index_keys[0], batch) if draw == 'vector' else None
    vector_sign = (jax.random.rademacher(sign_keys[0], batch, jnp.float32)
                   if sign == 'vector' else None)
    out = []
    for leaf, ik, sk in zip(leaves, index_keys, sign_keys):
      unit = leaf.shape[1:]
      if draw == 'vector':
        entry = leaf[vector_index]                       # [*batch, *unit]
      else:
        idx = draw_index(ik, batch + unit)              # [*batch, *unit]
        flat = jnp.reshape(leaf, (buffer_size, -1))      # [K, U]
        picked = jnp.take_along_axis(flat, jnp.reshape(idx, (-1, flat.shape[1])), axis=0)
        entry = jnp.reshape(picked, batch + unit)       # picked[n, u] = flat[idx[n, u], u]
      if sign == 'unit':
        entry = entry * jax.random.rademacher(sk, batch + unit, leaf.dtype)
      elif vector_sign is not None:  # sign == 'vector'
        entry = entry * jnp.reshape(vector_sign, batch + (1,) * len(unit)).astype(leaf.dtype)
      out.append(jnp.where(size > 0, scale * entry, jnp.zeros_like(entry)))
    return jax.lax.stop_gradient(jax.tree.unflatten(treedef, out))

  def init_carry(params: Params, rng: PRNGKey | None, batch: Batch, *, train: bool,
                 state: GradientBuffer | None = None) -> Carry:
    """The learned carry [*batch, *unit], plus a drawn deviation when `train=True`."""
    checks.flag(train, 'train')
    batch = normalize_batch(batch)
    carry = learned.init_carry(params, None, batch, train=False)
    if not train:
      return carry
    if state is None:
      raise ValueError('`cleaning_noise` draws from its gradient buffer in training: pass '
                       '`state` (from `init_state(template)`, then `update_state`), or '
                       'train=False.')
    buffer = _check_buffer(state, params)
    rng = checks.required_prng_key(rng, 'cleaning_noise')
    return jax.tree.map(jnp.add, carry, deviation(buffer, rng, batch))

  def update_state(state: GradientBuffer, carry_grads: Carry, *,
                   axis_name: Any = None) -> GradientBuffer:
    """Pushes gradient rows into the buffer, retiring the oldest entries first.

    Args:
      state: the current `GradientBuffer` (capacity K).
      carry_grads: gradients of the loss at the initial carry, leaves `[n, *unit]` (one entry
        per row, e.g. per training sequence).
      axis_name: under `pmap` / `shard_map`, the device axis: rows are gathered from (or
        averaged over) all devices first, per the strategy's `cross_device`, so every device
        keeps the same buffer.

    Returns:
      The new buffer. If more than K rows arrive at once, only the last K are kept.
    """
    return update_gradient_buffer(state, carry_grads, axis_name=axis_name,
                                  cross_device=cross_device)

  return strategies_lib.CarryStrategy(learned.init, init_carry, needs_rng=True,
                                      init_state=init_buffer, update_state=update_state)
