"""Flax NNX layers: a recurrent layer whose cell, learned carry and strategy state are NNX
variables, on the same pure functions as everything else (`scan_rnn`, the strategies)."""

from typing import Any

import jax
from flax import nnx

from initstate._src import bidirectional as bidirectional_lib
from initstate._src import checks
from initstate._src import conditional as conditional_lib
from initstate._src import strategies as strategies_lib
from initstate._src.cells import RecurrentCell, from_nnx
from initstate._src.scan import ScanOutput, scan_rnn
from initstate._src.types import Array, Carry


class CarryState(nnx.Variable):
  """A carry strategy's state (the cleaning-noise gradient buffer): kept, never trained."""


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def _values(tree: Any) -> Any:
  """The arrays held by a pytree of NNX variables."""
  return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=_is_variable)


def _wrap(tree: Any, kind: type[nnx.Variable]) -> Any:
  """Each array of `tree` in its own variable of type `kind`; a tree without arrays as is."""
  if not jax.tree.leaves(tree):
    return tree
  return nnx.data(jax.tree.map(kind, tree))


def _stream(rngs: Any, name: str) -> Any:
  """The `name` stream of `rngs` (an `nnx.Rngs` falls back to its 'default' stream), or None."""
  if rngs is None:
    return None
  if isinstance(rngs, nnx.Rngs):
    try:
      return rngs[name]
    except KeyError:
      return None
  if isinstance(rngs, nnx.RngStream):
    return rngs
  raise TypeError(f'`rngs` must be an nnx.Rngs or nnx.RngStream, got {type(rngs).__name__}.')


class CarryMapModule(nnx.Module):
  """A `CarryMap` (`from_context`, `bridge`) as an NNX module, its params `nnx.Param` variables.

  Args:
    carry_map: the map, e.g. `initstate.bridge(encoder.carry_template,
      decoder.carry_template)` or `initstate.from_context((16,))`.
    *init_args: the arguments of `carry_map.init` after its key (for `from_context`: the
      context size F and the carry template; none for `bridge`).
    rngs: `nnx.Rngs`; the 'params' stream draws the map's weights.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> from flax import nnx
    >>> encoder, decoder = initstate.gru(6), initstate.lstm(8)
    >>> bridge = initstate.nnx.CarryMapModule(
    ...     initstate.bridge(encoder.carry_template, decoder.carry_template), rngs=nnx.Rngs(0))
    >>> jax.tree.map(jnp.shape, bridge(jnp.ones((3, 6))))   # encoder's final carry, B = 3
    LSTMCarry(h=(3, 8), c=(3, 8))
  """

  def __init__(self, carry_map: conditional_lib.CarryMap, *init_args: Any, rngs: nnx.Rngs):
    if not isinstance(carry_map, conditional_lib.CarryMap):
      raise TypeError('`carry_map` must be a CarryMap (initstate.from_context or '
                      f'initstate.bridge), got {type(carry_map).__name__}.')
    self.carry_map = carry_map
    self.params = _wrap(carry_map.init(rngs.params(), *init_args), nnx.Param)

  def __call__(self, x: Any) -> Carry:
    """`carry_map.apply(params, x)`: context [B, F] or an encoder carry -> a carry [B, ...]."""
    return self.carry_map.apply(_values(self.params), x)


class RNN(nnx.Module):
  """A recurrent layer: `scan_rnn` over a cell, started from an initial-carry strategy.

  Variables: the cell's parameters under `cell` (an initstate cell's params as `nnx.Param`
  variables, or the NNX cell itself), the strategy's trainable values under `carry`
  (`nnx.Param` variables in the carry's structure, e.g. `LSTMCarry(h, c)` per layer), its state
  (the cleaning-noise buffer) under `carry_state` as `CarryState` variables, which are not
  `nnx.Param` variables, so that `nnx.Optimizer(model, tx, wrt=nnx.Param)` leaves them alone,
  and the context network of `context_carry` under `context_carry`.

  Noise: drawn in training mode (`deterministic=False`, set by `model.train()`) from the
  'carry' stream of the `rngs` given at call time or, failing that, of those given at
  construction (forked and kept, as `nnx.Dropout` does); every call draws fresh noise. In
  evaluation mode (`model.eval()`) the carry is exactly the deterministic one and no key is
  needed.

  Args:
    cell: an initstate cell (`lstm`, `gru`, `elman`, `stack`; then `in_features` is required)
      or a Flax NNX cell (`nnx.LSTMCell`, `nnx.OptimizedLSTMCell`, `nnx.GRUCell`,
      `nnx.SimpleCell`, or any cell with `in_features`, `initialize_carry` and
      `(carry, x) -> (carry, y)`).
    carry: the initial-carry strategy (default `zeros()`).
    in_features: D, the input size of an initstate cell.
    burn_in: as in `scan_rnn`.
    stop_gradient_burn_in: as in `scan_rnn`.
    reverse: as in `scan_rnn`.
    unroll: as in `scan_rnn`.
    time_major: as in `scan_rnn`.
    return_carries: as in `scan_rnn`.
    implementation: as in `scan_rnn`.
    checkpoint_every: as in `scan_rnn`.
    context_carry: a `CarryMap` from `initstate.from_context(...)`: calls that pass `context`
      ([B, F]) start from the carry it computes; resets still use `carry`.
    context_features: F, the context size (required with `context_carry`).
    deterministic: evaluation mode (no carry noise); `model.train()` / `model.eval()` set it.
    rngs: `nnx.Rngs` for the parameters ('params' stream) and, kept, for the noise ('carry').

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> from flax import nnx
    >>> model = initstate.nnx.RNN(initstate.lstm(8), carry=initstate.noisy_learned(0.3),
    ...                           in_features=3, rngs=nnx.Rngs(0))
    >>> carry = nnx.state(model, nnx.Param)['carry']                       # the learned carry
    >>> carry['h'].shape, carry['c'].shape
    ((8,), (8,))
    >>> x = jnp.ones((2, 5, 3))                                            # [B, T, D]
    >>> out = model(x)                                                     # noisy: training
    >>> model.eval()
    >>> out.outputs.shape, bool(jnp.all(model(x).outputs == model(x).outputs))
    ((2, 5, 8), True)
  """

  def __init__(
      self,
      cell: Any,
      *,
      carry: strategies_lib.CarryStrategy = strategies_lib.zeros(),  # noqa: B008
      in_features: int | None = None,
      burn_in: int = 0,
      stop_gradient_burn_in: bool = False,
      reverse: bool = False,
      unroll: int = 1,
      time_major: bool = False,
      return_carries: bool = False,
      implementation: str = 'auto',
      checkpoint_every: int | None = None,
      context_carry: conditional_lib.CarryMap | None = None,
      context_features: int | None = None,
      deterministic: bool = False,
      rngs: nnx.Rngs,
  ):
    if not isinstance(rngs, nnx.Rngs):
      raise TypeError(f'`rngs` must be an nnx.Rngs, got {type(rngs).__name__}.')
    if not isinstance(carry, strategies_lib.CarryStrategy):
      raise TypeError(f'`carry` must be a CarryStrategy, got {type(carry).__name__}.')
    checks.flag(deterministic, 'deterministic')
    if isinstance(cell, RecurrentCell):
      if in_features is None:
        raise ValueError('an initstate cell needs `in_features` (D, the input size) to build '
                         'its parameters.')
      in_features = checks.positive_int(in_features, 'in_features')
      self.cell = _wrap(cell.init(rngs.params(), in_features), nnx.Param)
      self.recurrent_cell = cell
    elif isinstance(cell, nnx.Module):
      recurrent_cell = from_nnx(cell)
      if in_features is not None and in_features != cell.in_features:  # type: ignore[attr-defined]
        raise ValueError(f'`in_features`={in_features} but the NNX cell was built for '
                         f'{cell.in_features}.')  # type: ignore[attr-defined]
      self.cell = cell
      self.recurrent_cell = recurrent_cell
    else:
      raise TypeError('`cell` must be an initstate RecurrentCell or a flax.nnx cell, got '
                      f'{type(cell).__name__}.')
    template = self.recurrent_cell.carry_template
    self.strategy = carry
    self.carry = _wrap(carry.init(rngs.params(), template), nnx.Param)
    self.carry_state = _wrap(carry.init_state(template), CarryState)
    if context_carry is not None:
      if not isinstance(context_carry, conditional_lib.CarryMap):
        raise TypeError('`context_carry` must be a CarryMap (e.g. initstate.from_context()), '
                        f'got {type(context_carry).__name__}.')
      if context_features is None:
        raise ValueError('`context_carry` needs `context_features` (F, the context size).')
      context_features = checks.positive_int(context_features, 'context_features')
      self.context_carry = _wrap(context_carry.init(rngs.params(), context_features, template),
                                 nnx.Param)
    else:
      self.context_carry = None
    self.context_map = context_carry
    self.burn_in = burn_in
    self.stop_gradient_burn_in = stop_gradient_burn_in
    self.reverse = reverse
    self.unroll = unroll
    self.time_major = time_major
    self.return_carries = return_carries
    self.implementation = implementation
    self.checkpoint_every = checkpoint_every
    self.deterministic = deterministic
    stream = _stream(rngs, 'carry')
    self.rngs = stream.fork() if stream is not None else nnx.data(None)

  def __call__(
      self,
      inputs: Array,
      *,
      seq_lengths: Array | None = None,
      resets: Array | None = None,
      initial_carry: Carry | None = None,
      context: Array | None = None,
      rngs: nnx.Rngs | nnx.RngStream | None = None,
  ) -> ScanOutput:
    """Runs the layer.

    Args:
      inputs: [B, T, D] ([T, B, D] if `time_major`).
      seq_lengths: int [B], optional.
      resets: bool [B, T] ([T, B] if `time_major`), optional; reset steps start again from the
        strategy's carry (with fresh noise in training).
      initial_carry: overrides the strategy for the first step (e.g. the carry from the
        previous window in stateful TBPTT); resets still use the strategy.
      context: [B, F] features for `context_carry` (required when it is set).
      rngs: overrides the construction-time `rngs` for this call's noise ('carry' stream).

    Returns:
      A `ScanOutput(final_carry, outputs, mask, carries)`.
    """
    checks.flag(self.deterministic, 'deterministic')
    train = not self.deterministic
    strategy = self.strategy
    if not hasattr(inputs, 'ndim') or inputs.ndim < 3:
      raise ValueError(f'`inputs` must be [B, T, D] ([T, B, D] if time_major), got shape '
                       f'{getattr(inputs, "shape", type(inputs).__name__)}.')
    batch = inputs.shape[1 if self.time_major else 0]
    carry_params = _values(self.carry)
    carry_state = _values(self.carry_state)
    stateful = bool(jax.tree.leaves(carry_state))
    rng = None
    if train and strategy.needs_rng:
      stream = _stream(rngs, 'carry') if rngs is not None else self.rngs
      if stream is None:
        raise ValueError('this carry strategy draws noise in training: pass '
                         '`rngs=nnx.Rngs(carry=key)` to the RNN (at construction or at call '
                         'time), or call `model.eval()` for the noise-free carry.')
      rng = stream()

    def init_carry_fn(key, b):
      return strategy.init_carry(carry_params, key, b, train=train, state=carry_state)

    context = conditional_lib.check_context(context, initial_carry, batch,
                                            self.context_map is not None)
    if self.context_map is not None and context is not None:
      initial_carry = self.context_map.apply(_values(self.context_carry), context)

    if stateful and train and initial_carry is None and hasattr(self, '__captures__'):
      # Inside `nnx.capture`: the initial carry goes through a perturbation, so that the
      # gradient at it can be read off (see `update_carry_state`).
      init_key = None if rng is None else jax.random.split(rng)[0]
      # One perturbation per leaf ('initial_carry_0', ...): `Module.perturb` adds with `+`,
      # which would concatenate the tuples of an LSTMCarry or a stack's carry.
      leaves, treedef = jax.tree.flatten(init_carry_fn(init_key, batch))
      initial_carry = treedef.unflatten(
          [self.perturb(f'initial_carry_{i}', leaf) for i, leaf in enumerate(leaves)])

    if isinstance(self.cell, nnx.Module):
      # Without the `__captures__` that `nnx.capture` adds to every module while it runs.
      cell_fn = self.recurrent_cell.bind(
          nnx.state(self.cell, nnx.Not(nnx.PathContains('__captures__'))))
    else:
      cell_fn = self.recurrent_cell.bind(_values(self.cell))
    return scan_rnn(
        cell_fn, inputs, initial_carry, init_carry_fn=init_carry_fn, rng=rng,
        seq_lengths=seq_lengths, resets=resets, burn_in=self.burn_in,
        stop_gradient_burn_in=self.stop_gradient_burn_in, reverse=self.reverse,
        unroll=self.unroll, time_major=self.time_major, return_carries=self.return_carries,
        implementation=self.implementation, checkpoint_every=self.checkpoint_every)


class Bidirectional(nnx.Module):
  """A forward and a backward `RNN` over the same inputs, their outputs merged per step.

  Each direction has its own cell, initial-carry strategy and variables (under `forward` and
  `backward`). The backward layer runs reversed (its `reverse` is set to True): each sequence
  from its last valid step back to step 0 (`seq_lengths`-aware: padding stays padding), its
  outputs in the original order. A call returns a `ScanOutput` whose `final_carry` and
  `carries` are pairs (forward, backward) and whose `mask` is True where both directions count
  a step.

  Args:
    forward: the forward `RNN`.
    backward: the backward `RNN`.
    merge_fn: `(forward_outputs, backward_outputs) -> outputs` per step; concatenation on the
      last axis by default.

  Example:
    >>> import jax.numpy as jnp, initstate
    >>> from flax import nnx
    >>> rngs = nnx.Rngs(0)
    >>> model = initstate.nnx.Bidirectional(
    ...     initstate.nnx.RNN(initstate.lstm(8), in_features=3, rngs=rngs),
    ...     initstate.nnx.RNN(initstate.gru(4), in_features=3, rngs=rngs))
    >>> model(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 3])).outputs.shape
    (2, 5, 12)
  """

  def __init__(self, forward: RNN, backward: RNN, *,
               merge_fn: bidirectional_lib.MergeFn = bidirectional_lib.concatenate):
    if not isinstance(forward, RNN) or not isinstance(backward, RNN):
      raise TypeError('`forward` and `backward` must be initstate.nnx.RNN layers, got '
                      f'{type(forward).__name__} and {type(backward).__name__}.')
    if forward.reverse:
      raise ValueError('the `forward` RNN of a Bidirectional must not have reverse=True.')
    checks.callable_(merge_fn, 'merge_fn', '(forward_outputs, backward_outputs) -> outputs')
    backward.reverse = True
    self.forward = forward
    self.backward = backward
    self.merge_fn = merge_fn

  def __call__(
      self,
      inputs: Array,
      *,
      seq_lengths: Array | None = None,
      resets: Array | None = None,
      initial_carry: tuple[Carry, Carry] | None = None,
      rngs: nnx.Rngs | nnx.RngStream | None = None,
  ) -> ScanOutput:
    """Runs both directions; `initial_carry` is a pair (forward, backward) or None; the other
    arguments are passed to both (`resets` count in each direction's processing order)."""
    return bidirectional_lib.run(self.forward, self.backward, self.merge_fn, inputs,
                                 initial_carry, seq_lengths=seq_lengths, resets=resets,
                                 rngs=rngs)


def update_carry_state(model: nnx.Module, perturbation_grads: Any, *,
                       axis_name: Any = None) -> None:
  """Updates, in place, the state of every stateful `RNN` in `model` from its carry gradient.

  Args:
    model: a module holding one or more `initstate.nnx.RNN` layers.
    perturbation_grads: the gradient with respect to the perturbations that
      `nnx.capture(..., nnx.Perturbation)` collected (an `nnx.State` mirroring the module
      tree, with each stateful RNN's initial-carry gradient under 'initial_carry_0',
      'initial_carry_1', ... (one per array of the carry, in `jax.tree.leaves` order)).
    axis_name: the data axis under `pmap` / `shard_map`, as in `strategy.update_state`.
  """
  found = False
  for path, module in nnx.iter_modules(model):
    if not isinstance(module, RNN) or not jax.tree.leaves(_values(module.carry_state)):
      continue
    found = True
    node = perturbation_grads
    for key in path:
      node = node[key] if key in node else None
      if node is None:
        break
    treedef = jax.tree.structure(module.recurrent_cell.carry_template)
    names = [f'initial_carry_{i}' for i in range(treedef.num_leaves)]
    if node is None or any(name not in node for name in names):
      where = '/'.join(map(str, path)) or '<root>'
      raise ValueError(f'no gradient at "{where}/initial_carry_*" in `perturbation_grads`: '
                       'take the gradient with respect to the perturbations that '
                       'nnx.capture(..., nnx.Perturbation) returned.')
    grads = treedef.unflatten([node[name].get_value() for name in names])
    new_state = module.strategy.update_state(_values(module.carry_state), grads,
                                             axis_name=axis_name)
    jax.tree.map(lambda var, value: var.set_value(value), module.carry_state, new_state,
                 is_leaf=_is_variable)
  if not found:
    raise ValueError('`model` has no initstate.nnx.RNN with a stateful carry strategy.')
