"""`flax.linen` module: a recurrent layer whose cell and initial carry live in one param tree.

A strategy's state (the gradient buffer of cleaning noise) lives in the variable collection
'carry_state' (variable 'state'), and the initial carry of a stateful strategy goes through
`Module.perturb('initial_carry', ...)`, so that the gradient at it can be taken with respect to
the 'perturbations' collection and fed to `update_carry_state`.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from initstate._src import bidirectional as bidirectional_lib
from initstate._src import conditional as conditional_lib
from initstate._src import strategies as strategies_lib
from initstate._src import training as training_lib
from initstate._src.cells import RecurrentCell, as_cell, from_flax
from initstate._src.scan import ScanOutput, scan_rnn
from initstate._src.types import Array, Carry

STATE_COLLECTION = 'carry_state'


class RNN(nn.Module):
  """A recurrent layer: `scan_rnn` over a cell, started from an initial-carry strategy.

  Parameters: `params['cell']` (the cell's) and, for strategies with trainable values such as
  `learned`, `params['carry']` (a pytree shaped like the cell's carry). Noise is drawn from the
  rng stream `carry_rng` (default `'carry'`) and only when `train=True`. A strategy with state
  (`cleaning_noise`) keeps it in the collection 'carry_state' (variable 'state'), and its
  initial carry goes through `self.perturb('initial_carry', ...)`, so that the gradient at it
  can be taken with respect to the 'perturbations' collection (see `update_carry_state`).

  Attributes:
    cell: an initstate `RecurrentCell` (`lstm`, `gru`, `elman`, `stack`) or a `flax.linen` cell.
    carry: the initial-carry strategy (default `zeros()`).
    burn_in: as in `scan_rnn`.
    stop_gradient_burn_in: as in `scan_rnn`.
    reverse: as in `scan_rnn`.
    unroll: as in `scan_rnn`.
    time_major: as in `scan_rnn`.
    return_carries: as in `scan_rnn`.
    implementation: as in `scan_rnn`.
    checkpoint_every: as in `scan_rnn`.
    train: default for the `train` call argument (set one of the two).
    carry_rng: name of the rng stream for carry noise.
    per_example_noise: draw each example's noise from `fold_in(key, global example index)`
      (`initstate.training.example_keys`), so that it does not depend on how the batch is split over
      devices; with `jax.pmap`, also set `axis_name` (the data axis) so that the global index
      is known. Off by default (one draw for the whole batch, as `init_carry` does).
    axis_name: the data axis under `pmap` / `shard_map`, for `per_example_noise`.
    context_carry: a `CarryMap` from `initstate.from_context(...)`: with it, calls that pass
      `context` ([B, F]) start from `context_carry.apply(params['context_carry'], context)`
      (an initializer network whose params live in this layer's param tree); resets still
      use `carry`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> model = initstate.nn.RNN(initstate.lstm(8), carry=initstate.noisy_learned(0.3))
    >>> x = jnp.ones((2, 5, 3))                                       # [B, T, D]
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> jax.tree.map(jnp.shape, variables['params']['carry'])         # the learned carry
    LSTMCarry(h=(8,), c=(8,))
    >>> out = model.apply(variables, x, train=True, rngs={'carry': jax.random.key(1)})
    >>> out.outputs.shape, out.mask.shape
    ((2, 5, 8), (2, 5))

    Cleaning noise in a training step (the batch size is fixed at init, as `perturb` needs):

    >>> cleaning = initstate.cleaning_noise(16)
    >>> model = initstate.nn.RNN(initstate.gru(8), carry=cleaning)
    >>> variables = model.init({'params': jax.random.key(0), 'carry': jax.random.key(1)}, x,
    ...                        train=False)
    >>> params, carry_state = variables['params'], variables['carry_state']
    >>> def loss_fn(params, perturbations):
    ...   out = model.apply({'params': params, 'carry_state': carry_state,
    ...                      'perturbations': perturbations}, x, train=True,
    ...                     rngs={'carry': jax.random.key(2)})
    ...   return jnp.mean(out.outputs ** 2)
    >>> grads, carry_grads = jax.grad(loss_fn, argnums=(0, 1))(params,
    ...                                                       variables['perturbations'])
    >>> carry_state = initstate.nn.update_carry_state(cleaning, carry_state, carry_grads)
    >>> int(carry_state['state'].size())                              # one entry per sequence
    2
  """
  cell: Any
  carry: strategies_lib.CarryStrategy = strategies_lib.zeros()
  burn_in: int = 0
  stop_gradient_burn_in: bool = False
  reverse: bool = False
  unroll: int = 1
  time_major: bool = False
  return_carries: bool = False
  implementation: str = 'auto'
  checkpoint_every: int | None = None
  train: bool | None = None
  carry_rng: str = 'carry'
  per_example_noise: bool = False
  axis_name: Any = None
  context_carry: conditional_lib.CarryMap | None = None

  def __post_init__(self):
    # A Flax cell held as an attribute would become a bound child module, which cannot run
    # inside `lax.scan` and would take the name 'cell'; hold it as pure functions instead.
    if isinstance(self.cell, nn.Module):
      object.__setattr__(self, 'cell', from_flax(self.cell.clone(parent=None)))
    super().__post_init__()

  @nn.compact
  def __call__(
      self,
      inputs: Array,
      *,
      seq_lengths: Array | None = None,
      resets: Array | None = None,
      initial_carry: Carry | None = None,
      context: Array | None = None,
      train: bool | None = None,
  ) -> ScanOutput:
    """Runs the layer.

    Args:
      inputs: [B, T, D] ([T, B, D] if `time_major`).
      seq_lengths: int [B], optional.
      resets: bool [B, T] ([T, B] if `time_major`), optional; reset steps start again from the
        strategy's carry (with fresh noise in training).
      initial_carry: overrides the strategy for the first step (e.g. a carry from the previous
        window in stateful TBPTT); resets still use the strategy.
      context: [B, F] features for `context_carry` (required when it is set; not with
        `initial_carry`).
      train: whether carry noise is on; overrides the attribute.

    Returns:
      A `ScanOutput(final_carry, outputs, mask, carries)`.
    """
    train = nn.merge_param('train', self.train, train)
    cell: RecurrentCell = as_cell(self.cell)
    if not hasattr(inputs, 'ndim') or inputs.ndim < 3:
      raise ValueError(f'`inputs` must be [B, T, D] ([T, B, D] if time_major), got shape '
                       f'{getattr(inputs, "shape", type(inputs).__name__)}.')
    if self.context_carry is not None and not isinstance(self.context_carry,
                                                         conditional_lib.CarryMap):
      raise TypeError('`context_carry` must be a CarryMap (e.g. initstate.from_context()), got '
                      f'{type(self.context_carry).__name__}.')
    cell_params = self.param('cell', cell.init, inputs.shape[-1])
    strategy = self.carry
    if not isinstance(strategy, strategies_lib.CarryStrategy):
      raise TypeError(f'`carry` must be a CarryStrategy, got {type(strategy).__name__}.')
    template = cell.carry_template
    if jax.tree.leaves(jax.eval_shape(strategy.init, jax.random.key(0), template)):
      carry_params = self.param('carry', strategy.init, template)
    else:  # Nothing trainable (zeros, noisy): keep the param tree free of it.
      carry_params = strategy.init(None, template)
    stateful = strategy.is_stateful(template)
    carry_state = strategy.init_state(template)
    if stateful:
      if self.is_initializing() or self.has_variable(STATE_COLLECTION, 'state'):
        carry_state = self.variable(STATE_COLLECTION, 'state', strategy.init_state,
                                    template).value
      elif train:
        raise ValueError(f'this carry strategy keeps a state that training draws from: pass '
                         f'variables["{STATE_COLLECTION}"] to apply, or train=False.')

    rng = None
    if train and strategy.needs_rng:
      if not self.has_rng(self.carry_rng):
        raise ValueError(
            f'this carry strategy draws noise in training: pass rngs={{"{self.carry_rng}": '
            'key} to init/apply, or train=False.')
      rng = self.make_rng(self.carry_rng)

    def init_carry_fn(key, batch):
      if self.per_example_noise and key is not None:
        keys = training_lib.example_keys(key, batch, axis_name=self.axis_name)
        return training_lib.per_example_carry(strategy, carry_params, keys, train=train,
                                              state=carry_state)
      return strategy.init_carry(carry_params, key, batch, train=train, state=carry_state)

    batch = inputs.shape[1 if self.time_major else 0]
    context = conditional_lib.check_context(context, initial_carry, batch,
                                            self.context_carry is not None)
    if self.context_carry is not None and context is not None:
      map_params = self.param('context_carry', self.context_carry.init, context.shape[-1],
                              template)
      initial_carry = self.context_carry.apply(map_params, context)

    if stateful and initial_carry is None:
      # Made here (with the key scan_rnn would use) so that its gradient can be read off.
      init_key = None if rng is None else jax.random.split(rng)[0]
      initial_carry = self.perturb('initial_carry', init_carry_fn(init_key, batch))

    return scan_rnn(
        cell.bind(cell_params), inputs, initial_carry, init_carry_fn=init_carry_fn, rng=rng,
        seq_lengths=seq_lengths, resets=resets, burn_in=self.burn_in,
        stop_gradient_burn_in=self.stop_gradient_burn_in, reverse=self.reverse,
        unroll=self.unroll, time_major=self.time_major, return_carries=self.return_carries,
        implementation=self.implementation, checkpoint_every=self.checkpoint_every)


class Bidirectional(nn.Module):
  """A forward and a backward `RNN` over the same inputs, their outputs merged per step.

  Each direction has its own cell, initial-carry strategy and parameters (`params['forward']`,
  `params['backward']`). The backward layer runs with `reverse=True` whatever its own setting:
  each sequence from its last valid step back to step 0 (`seq_lengths`-aware: padding stays
  padding), its outputs in the original order.

  Attributes:
    forward: the forward `RNN`.
    backward: the backward `RNN`.
    merge_fn: `(forward_outputs, backward_outputs) -> outputs` per step; concatenation on the
      last axis by default.

  Returns (from a call): a `ScanOutput` whose `final_carry` and `carries` are pairs
  (forward, backward) and whose `mask` is True where both directions count a step.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> model = initstate.nn.Bidirectional(
    ...     initstate.nn.RNN(initstate.lstm(8), carry=initstate.learned()),
    ...     initstate.nn.RNN(initstate.gru(4)))
    >>> x = jnp.ones((2, 5, 3))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> out = model.apply(variables, x, seq_lengths=jnp.array([5, 3]), train=False)
    >>> out.outputs.shape                                   # [B, T, 8 + 4]
    (2, 5, 12)
  """
  forward: RNN
  backward: RNN
  merge_fn: bidirectional_lib.MergeFn = bidirectional_lib.concatenate

  def __post_init__(self):
    if not isinstance(self.forward, RNN) or not isinstance(self.backward, RNN):
      raise TypeError('`forward` and `backward` must be initstate.nn.RNN layers, got '
                      f'{type(self.forward).__name__} and {type(self.backward).__name__}.')
    if self.forward.reverse:
      raise ValueError('the `forward` RNN of a Bidirectional must not have reverse=True.')
    # Copies, so that both directions are this layer's children ('forward', 'backward') wherever
    # the RNNs were constructed; the backward one always runs reversed.
    object.__setattr__(self, 'forward', self.forward.clone())
    object.__setattr__(self, 'backward', self.backward.clone(reverse=True))
    super().__post_init__()

  @nn.compact
  def __call__(
      self,
      inputs: Array,
      *,
      seq_lengths: Array | None = None,
      resets: Array | None = None,
      initial_carry: tuple[Carry, Carry] | None = None,
      train: bool | None = None,
  ) -> ScanOutput:
    """Runs both directions; `initial_carry` is a pair (forward, backward) or None; the other
    arguments are passed to both (`resets` count in each direction's processing order)."""
    return bidirectional_lib.run(self.forward, self.backward, self.merge_fn, inputs,
                                 initial_carry, seq_lengths=seq_lengths, resets=resets,
                                 train=train)


def update_carry_state(strategy: strategies_lib.CarryStrategy, carry_state: Any,
                       carry_grads: Any, *, axis_name: Any = None) -> Any:
  """Updates every state of `strategy` in a model's 'carry_state' collection.

  Args:
    strategy: the stateful strategy of the model's `RNN` layers (e.g. `cleaning_noise(...)`).
    carry_state: the model's state collection (`variables['carry_state']`), a nested dict that
      mirrors the module tree, with the strategy's state under 'state' in each `RNN`.
    carry_grads: the gradient with respect to the 'perturbations' collection, the same nesting
      with the initial carry's gradient (leaves [B, ...]) under 'initial_carry'.
    axis_name: the data axis under `pmap` / `shard_map`, as in `strategy.update_state`.

  Returns:
    The updated collection, with the same structure.
  """
  if not isinstance(strategy, strategies_lib.CarryStrategy):
    raise TypeError(f'`strategy` must be a CarryStrategy, got {type(strategy).__name__}.')

  def walk(states, grads, path):
    out = {}
    for key, value in states.items():
      if key == 'state' and not isinstance(value, Mapping):
        if not isinstance(grads, Mapping) or 'initial_carry' not in grads:
          raise ValueError(f'no gradient at "{"/".join(path) or "<root>"}/initial_carry" in '
                           '`carry_grads`: take the gradient with respect to the '
                           '"perturbations" collection of the same model.')
        out[key] = strategy.update_state(value, grads['initial_carry'], axis_name=axis_name)
      elif isinstance(value, Mapping):
        sub = grads.get(key, {}) if isinstance(grads, Mapping) else {}
        out[key] = walk(value, sub, path + (key,))
      else:
        out[key] = value
    return out

  if not isinstance(carry_state, Mapping):
    raise TypeError(f'`carry_state` must be the state collection (a dict), got '
                    f'{type(carry_state).__name__}.')
  return walk(carry_state, carry_grads, ())
