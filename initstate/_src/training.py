"""A data-parallel training step: a loss, an optax optimiser, and per-example carry noise.

The same step runs on one device, over a device mesh under `jax.jit` (batch sharded over a
'data' axis, parameters replicated: XLA partitions the work) and under `jax.pmap` with an
`axis_name` (gradients averaged with `lax.pmean`), and gives the same parameters in all three
to float32 tolerance, because every random draw is tied to an example, not to a device:

  state = TrainState.create(params, optimizer, rng, strategy.init_state(cell.carry_template))
  step = train_step(loss_fn, optimizer, strategy=strategy)   # or axis_name='data' in pmap
  state, loss = jax.jit(step)(state, batch)

`loss_fn(params, batch, rng, initial_carry)` returns the mean loss over the batch's examples.
`initial_carry(carry_params, keys)` gives each example's initial carry from the strategy (keys
[B] from `example_keys(rng, B)`, one per example, folded from its global index), so that an
example gets the same noise whichever device it lands on. The step keeps the strategy's state
(the cleaning-noise buffer) in `TrainState.carry_state` and updates it from the gradient at
that carry; stateless strategies keep `EmptyState()`.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initstate._src import checks
from initstate._src import strategies as strategies_lib
from initstate._src.types import Array, Carry, Params, PRNGKey


class TrainState(NamedTuple):
  """Everything a training run carries from step to step.

  Attributes:
    params: the model's parameters (the learned carry included).
    opt_state: the optax optimiser's state.
    step: int32 scalar, steps taken.
    rng: the PRNG key the next step splits from.
    carry_state: what the carry strategy keeps across steps (`strategy.init_state(template)`):
      the `GradientBuffer` of cleaning noise, or `EmptyState()`.
  """
  params: Params
  opt_state: Any
  step: Array
  rng: PRNGKey
  carry_state: Any = strategies_lib.EmptyState()

  @classmethod
  def create(cls, params: Params, optimizer: optax.GradientTransformation, rng: PRNGKey,
             carry_state: Any = strategies_lib.EmptyState()) -> 'TrainState':  # noqa: B008
    """A fresh state; `carry_state` is `strategy.init_state(cell.carry_template)`."""
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
                      train: bool, state: Any = None) -> Carry:
  """The strategy's carry drawn per example: keys [B] -> carry leaves [B, ...].

  Example b's carry depends only on `keys[b]`, not on the batch it sits in (unlike
  `strategy.init_carry(params, rng, B, ...)`, whose draw depends on B). `state` is the
  strategy's state, as in `init_carry`.
  """
  if not isinstance(strategy, strategies_lib.CarryStrategy):
    raise TypeError(f'`strategy` must be a CarryStrategy, got {type(strategy).__name__}.')
  checks.prng_key(keys, 'keys', batch_dims=1)
  return jax.vmap(lambda k: strategy.init_carry(params, k, (), train=train, state=state))(keys)


def _check_optimizer(optimizer: Any) -> None:
  if not (hasattr(optimizer, 'init') and hasattr(optimizer, 'update')):
    raise TypeError('`optimizer` must be an optax GradientTransformation (with init and '
                    f'update), got {type(optimizer).__name__}.')


def _batch_size(batch: Any) -> int:
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError('`batch` has no arrays.')
  sizes = {jnp.shape(l)[0] if jnp.ndim(l) else -1 for l in leaves}
  if len(sizes) != 1 or -1 in sizes:
    raise ValueError(f'every `batch` leaf must have the same leading batch dim, got shapes '
                     f'{[jnp.shape(l) for l in leaves]}.')
  return int(sizes.pop())


def train_step(
    loss_fn: Callable[..., Array],
    optimizer: optax.GradientTransformation,
    *,
    strategy: strategies_lib.CarryStrategy | None = None,
    axis_name: Any = None,
) -> Callable[[TrainState, Any], tuple[TrainState, Array]]:
  """A training step `(state, batch) -> (state, loss)`: gradient, optax update, new key.

  Args:
    loss_fn: `(params, batch, rng, initial_carry) -> scalar`, the mean loss over the batch's
      examples (leaves of `batch` are [B, ...]). `initial_carry(carry_params, keys)` gives
      each example's training carry from `strategy` (keys [B] from `example_keys`), drawn with
      the state in `state.carry_state`; it is None when no `strategy` is given. Start the
      recurrence from it, so that the step can read the gradient there.
    optimizer: an optax `GradientTransformation`.
    strategy: the initial-carry strategy behind `initial_carry`. A strategy with state
      (`cleaning_noise`) has its state updated after every step: with one row per example,
      the gradient of that example's own loss at its initial carry (the batch-mean loss's
      gradient times the number of examples on the device), gathered over `axis_name` in
      global example order. `loss_fn` must then call `initial_carry` exactly once.
    axis_name: under `jax.pmap` (or `shard_map`), the data axis name: the loss and the
      gradients are averaged over it (`lax.pmean`), so every device takes the same update.
      None on one device and for `jax.jit` over a mesh (see `shard_batch`).

  Returns:
    The step function; wrap it in `jax.jit` or `jax.pmap(..., axis_name=axis_name)`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, initstate
    >>> from initstate import training
    >>> def loss_fn(params, batch, rng, initial_carry):
    ...   del rng, initial_carry                       # no recurrence in this loss
    ...   return jnp.mean((batch['x'] @ params['w'] - batch['y']) ** 2)
    >>> optimizer = optax.sgd(0.5)
    >>> state = training.TrainState.create({'w': jnp.zeros((2,))}, optimizer,
    ...                                    jax.random.key(0))
    >>> step = jax.jit(training.train_step(loss_fn, optimizer))
    >>> batch = {'x': jnp.eye(2), 'y': jnp.array([1.0, -1.0])}
    >>> for _ in range(50):
    ...   state, loss = step(state, batch)
    >>> int(state.step), [round(float(w), 3) for w in state.params['w']]
    (50, [1.0, -1.0])
  """
  checks.callable_(loss_fn, 'loss_fn', '(params, batch, rng, initial_carry) -> scalar')
  _check_optimizer(optimizer)
  if strategy is not None and not isinstance(strategy, strategies_lib.CarryStrategy):
    raise TypeError(f'`strategy` must be a CarryStrategy or None, got '
                    f'{type(strategy).__name__}.')

  def step(state: TrainState, batch: Any) -> tuple[TrainState, Array]:
    if not isinstance(state, TrainState):
      raise TypeError(f'`state` must be a TrainState (TrainState.create(params, optimizer, '
                      f'rng)), got {type(state).__name__}.')
    _batch_size(batch)
    rng, step_rng = jax.random.split(state.rng)
    carry_state = state.carry_state
    if strategy is None:
      loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_rng, None)
      return _apply(state, rng, grads, loss, carry_state)

    strategy_ = strategy  # Narrowed to a CarryStrategy for the closure.

    def make_initial_carry(probe, calls, train=True):
      def initial_carry(carry_params, keys):
        carry = per_example_carry(strategy_, carry_params, keys, train=train, state=carry_state)
        calls.append(jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, c.dtype), carry))
        return carry if probe is None else jax.tree.map(jnp.add, carry, probe)
      return initial_carry

    # The carry's shape, read off one abstract evaluation of the loss (no work is done).
    calls = []
    jax.eval_shape(lambda p: loss_fn(p, batch, step_rng,
                                     make_initial_carry(None, calls, train=False)),
                   state.params)
    template = None if not calls else jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), calls[0])
    stateful = template is not None and strategy_.is_stateful(template)
    if stateful and not jax.tree.leaves(carry_state):
      raise ValueError('this strategy keeps a state, but `state.carry_state` is empty: make the '
                       'state with TrainState.create(..., '
                       'carry_state=strategy.init_state(cell.carry_template)).')
    if not stateful and not jax.tree.leaves(carry_state):
      loss, grads = jax.value_and_grad(
          lambda p: loss_fn(p, batch, step_rng, make_initial_carry(None, [])))(state.params)
    else:
      # The gradient at each example's initial carry, through a zero probe added to it.
      if len(calls) != 1:
        raise ValueError(f'with a stateful strategy, `loss_fn` must start the recurrence from '
                         f'`initial_carry(carry_params, keys)` exactly once (it called it '
                         f'{len(calls)} times), so that the step can read the gradient there.')
      probe = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), calls[0])

      def probed_loss(params, probe):
        return loss_fn(params, batch, step_rng, make_initial_carry(probe, []))

      loss, (grads, carry_grads) = jax.value_and_grad(probed_loss, argnums=(0, 1))(
          state.params, probe)
      rows = jax.tree.leaves(probe)[0].shape[0]
      carry_grads = jax.tree.map(lambda g: g * rows, carry_grads)
      carry_state = strategy.update_state(carry_state, carry_grads, axis_name=axis_name)
    return _apply(state, rng, grads, loss, carry_state)

  def _apply(state, rng, grads, loss, carry_state):
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
