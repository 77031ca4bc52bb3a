"""A data-parallel training step: a loss, an optax optimiser, and per-example carry noise.

The same step runs on one device, over a device mesh under `jax.jit` (batch sharded over a
'data' axis, parameters replicated: XLA partitions the work) and under `jax.pmap` with an
`axis_name` (gradients averaged with `lax.pmean`), and gives the same parameters in all three
to float32 tolerance, because every random draw is tied to an example, not to a device:

  state = initstate.TrainState.create(params, optimizer, rng)
  step = initstate.train_step(loss_fn, optimizer)                 # or axis_name='data' in pmap
  state, loss = jax.jit(step)(state, batch)

`loss_fn(params, batch, rng)` returns the mean loss over the batch's examples. Draw carry noise
with `example_keys(rng, B)` (one key per example, folded from its global index) and
`per_example_carry(strategy, carry_params, keys, train=True)`, so that an example gets the same
noise whichever device it lands on.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initstate._src import checks
from initstate._src import cleaning as cleaning_lib
from initstate._src import strategies as strategies_lib
from initstate._src.types import Array, Carry, Params, PRNGKey


class TrainState(NamedTuple):
  """Everything a training run carries from step to step.

  Attributes:
    params: the model's parameters (the learned carry included).
    opt_state: the optax optimiser's state.
    step: int32 scalar, steps taken.
    rng: the PRNG key the next step splits from.
    carry_state: what the carry strategy keeps across steps: the `GradientBuffer` of
      cleaning noise, or `()`.
  """
  params: Params
  opt_state: Any
  step: Array
  rng: PRNGKey
  carry_state: Any = ()

  @classmethod
  def create(cls, params: Params, optimizer: optax.GradientTransformation, rng: PRNGKey,
             carry_state: Any = ()) -> 'TrainState':
    """A fresh state; pass `cleaning.init_buffer(template)` as `carry_state` for cleaning."""
    _check_optimizer(optimizer)
    checks.prng_key(rng, 'rng')
    return cls(params, optimizer.init(params), jnp.zeros((), jnp.int32), rng, carry_state)


def example_keys(rng: PRNGKey, batch_size: int, *, axis_name: Any = None) -> Array:
  """One key per example, `fold_in(rng, global index)`: [batch_size] keys.

  Args:
    rng: the step's key (the same on every device).
    batch_size: the examples on this device (the whole batch without `axis_name`).
    axis_name: under `pmap` / `shard_map`, the data axis: this device's examples are the
      `axis_index`-th block of the global batch.
  """
  checks.prng_key(rng, 'rng')
  batch_size = checks.positive_int(batch_size, 'batch_size')
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch_size
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(offset + jnp.arange(batch_size))


def per_example_carry(strategy: strategies_lib.CarryStrategy, params: Params, keys: Array, *,
                      train: bool) -> Carry:
  """The strategy's carry drawn per example: keys [B] -> carry leaves [B, ...].

  Example b's carry depends only on `keys[b]`, not on the batch it sits in (unlike
  `strategy.init_carry(params, rng, B, ...)`, whose draw depends on B).
  """
  if not isinstance(strategy, strategies_lib.CarryStrategy):
    raise TypeError(f'`strategy` must be a CarryStrategy, got {type(strategy).__name__} (for '
                    'cleaning noise, use `cleaning.with_buffer(buffer)`).')
  checks.prng_key(keys, 'keys', batch_dims=1)
  return jax.vmap(lambda k: strategy.init_carry(params, k, (), train=train))(keys)


def _check_optimizer(optimizer: Any) -> None:
  if not (hasattr(optimizer, 'init') and hasattr(optimizer, 'update')):
    raise TypeError('`optimizer` must be an optax GradientTransformation (with init and '
                    f'update), got {type(optimizer).__name__}.')


def _batch_size(batch: Any) -> int:
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError('`batch` has no arrays.')
  sizes = {jnp.shape(l)[0] if jnp.ndim(l) else None for l in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f'every `batch` leaf must have the same leading batch dim, got shapes '
                     f'{[jnp.shape(l) for l in leaves]}.')
  return sizes.pop()


def train_step(
    loss_fn: Callable[..., Array],
    optimizer: optax.GradientTransformation,
    *,
    axis_name: Any = None,
    cleaning: cleaning_lib.CleaningNoise | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, Array]]:
  """A training step `(state, batch) -> (state, loss)`: gradient, optax update, new key.

  Args:
    loss_fn: `(params, batch, rng) -> scalar`, the mean loss over the batch's examples (leaves
      of `batch` are [B, ...]). With `cleaning`, `(params, batch, rng, initial_carry) ->
      scalar`, where `initial_carry(carry_params, keys)` gives the cleaning-noise carry of
      each example (keys [B] from `example_keys`): use it as the initial carry, so that the
      step can read the gradient at it.
    optimizer: an optax `GradientTransformation`.
    axis_name: under `jax.pmap` (or `shard_map`), the data axis name: the loss and the
      gradients are averaged over it (`lax.pmean`), so every device takes the same update.
      None on one device and for `jax.jit` over a mesh (see `shard_batch`).
    cleaning: a `cleaning_noise(...)` strategy whose `GradientBuffer` is `state.carry_state`.
      After each step the buffer receives one entry per example: the gradient of that
      example's own loss at its initial carry (the batch-mean loss's gradient times the
      number of examples on the device), gathered over `axis_name` in global example order.

  Returns:
    The step function; wrap it in `jax.jit` or `jax.pmap(..., axis_name=axis_name)`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, initstate
    >>> def loss_fn(params, batch, rng):
    ...   del rng                                      # no noise in this loss
    ...   return jnp.mean((batch['x'] @ params['w'] - batch['y']) ** 2)
    >>> optimizer = optax.sgd(0.5)
    >>> state = initstate.TrainState.create({'w': jnp.zeros((2,))}, optimizer,
    ...                                     jax.random.key(0))
    >>> step = jax.jit(initstate.train_step(loss_fn, optimizer))
    >>> batch = {'x': jnp.eye(2), 'y': jnp.array([1.0, -1.0])}
    >>> for _ in range(50):
    ...   state, loss = step(state, batch)
    >>> int(state.step), [round(float(w), 3) for w in state.params['w']]
    (50, [1.0, -1.0])
  """
  checks.callable_(loss_fn, 'loss_fn', '(params, batch, rng[, initial_carry]) -> scalar')
  _check_optimizer(optimizer)
  if cleaning is not None and not isinstance(cleaning, cleaning_lib.CleaningNoise):
    raise TypeError(f'`cleaning` must be a CleaningNoise (from `cleaning_noise`) or None, got '
                    f'{type(cleaning).__name__}.')

  def step(state: TrainState, batch: Any) -> tuple[TrainState, Array]:
    if not isinstance(state, TrainState):
      raise TypeError(f'`state` must be a TrainState (TrainState.create(params, optimizer, '
                      f'rng)), got {type(state).__name__}.')
    batch_size = _batch_size(batch)
    rng, step_rng = jax.random.split(state.rng)
    carry_state = state.carry_state
    if cleaning is None:
      loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_rng)
    else:
      if not isinstance(carry_state, cleaning_lib.GradientBuffer):
        raise TypeError('with `cleaning`, `state.carry_state` must be its GradientBuffer: '
                        'TrainState.create(..., carry_state=cleaning.init_buffer(template)).')
      probe = jax.tree.map(lambda v: jnp.zeros((batch_size,) + v.shape[1:], v.dtype),
                           carry_state.values)

      def probed_loss(params, probe):
        def initial_carry(carry_params, keys):
          carry = jax.vmap(lambda k: cleaning.init_carry(
              carry_params, carry_state, k, (), train=True))(keys)
          return jax.tree.map(jnp.add, carry, probe)
        return loss_fn(params, batch, step_rng, initial_carry)

      loss, (grads, carry_grads) = jax.value_and_grad(probed_loss, argnums=(0, 1))(
          state.params, probe)
      carry_grads = jax.tree.map(lambda g: g * batch_size, carry_grads)
      carry_state = cleaning.update(carry_state, carry_grads, axis_name=axis_name)
    if axis_name is not None:
      loss, grads = jax.lax.pmean((loss, grads), axis_name)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1, rng, carry_state), loss

  return step


def _global_array(sharding: jax.sharding.Sharding, x: Any) -> Array:
  """A global array from this process's part (typed PRNG keys included)."""
  if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    data = jax.make_array_from_process_local_data(sharding, np.asarray(jax.random.key_data(x)))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  return jax.make_array_from_process_local_data(sharding, np.asarray(x))


def shard_batch(batch: Any, mesh: jax.sharding.Mesh, axis: str = 'data') -> Any:
  """Places `batch` (leaves [B, ...]) on `mesh`, split along B over `axis`.

  Use a mesh with automatic sharding propagation, e.g.
  `jax.make_mesh((n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))`, and `jax.jit`
  the step: XLA then partitions the whole computation, carries included. In a multi-process
  run (`jax.distributed.initialize`), each process passes its own part of the global batch
  (process i holds examples [i * B, (i + 1) * B)).

  Raises a clear error when the global batch is not a multiple of the axis size.
  """
  if axis not in mesh.shape:
    raise ValueError(f'`axis` {axis!r} is not an axis of the mesh; its axes are '
                     f'{tuple(mesh.shape)}.')
  size = mesh.shape[axis]
  b = _batch_size(batch) * jax.process_count()
  if b % size:
    raise ValueError(f'the batch size {b} must be a multiple of the {size} devices of mesh '
                     f'axis {axis!r}; drop or pad the last {b % size} examples.')
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(functools.partial(_global_array, sharding), batch)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places `tree` (params, optimiser state, keys) on every device of `mesh`.

  In a multi-process run every process must pass the same values (e.g. made from the same
  seed).
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(functools.partial(_global_array, sharding), tree)


def split_for_pmap(batch: Any, num_devices: int) -> Any:
  """Reshapes batch leaves [B, ...] to [num_devices, B / num_devices, ...] for `jax.pmap`."""
  num_devices = checks.positive_int(num_devices, 'num_devices')
  b = _batch_size(batch)
  if b % num_devices:
    raise ValueError(f'the batch size {b} must be a multiple of the {num_devices} devices; '
                     f'drop or pad the last {b % num_devices} examples.')
  return jax.tree.map(lambda x: jnp.reshape(x, (num_devices, b // num_devices) + x.shape[1:]),
                      batch)


def replicate_for_pmap(tree: Any, num_devices: int) -> Any:
  """Stacks `num_devices` copies of `tree` (e.g. a `TrainState`) for `jax.pmap`: [N, ...]."""
  num_devices = checks.positive_int(num_devices, 'num_devices')
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_devices,) + jnp.shape(x)), tree)
