"""`flax.linen` module: a recurrent layer whose cell and initial carry live in one param tree."""

from typing import Any

import flax.linen as nn
import jax

from initstate._src import strategies as strategies_lib
from initstate._src.cells import RecurrentCell, as_cell, from_flax
from initstate._src.scan import ScanOutput, scan_rnn
from initstate._src.types import Array, Carry


class RNN(nn.Module):
  """A recurrent layer: `scan_rnn` over a cell, started from an initial-carry strategy.

  Parameters: `params['cell']` (the cell's) and, for strategies with trainable values such as
  `learned`, `params['carry']` (a pytree shaped like the cell's carry). Noise is drawn from the
  rng stream `carry_rng` (default `'carry'`) and only when `train=True`:

    model = initstate.nn.RNN(initstate.lstm(32), carry=initstate.noisy_learned(0.3))
    variables = model.init(key, x, train=False)                       # x: [B, T, D]
    out = model.apply(variables, x, train=True, rngs={'carry': noise_key})
    out.outputs   # [B, T, H];  out.mask [B, T];  out.final_carry

  Attributes:
    cell: an initstate `RecurrentCell` (`lstm`, `gru`, `elman`, `stack`) or a `flax.linen` cell.
    carry: the initial-carry strategy (default `zeros()`).
    burn_in, stop_gradient_burn_in, reverse, unroll, time_major, return_carries: as in
      `scan_rnn`.
    train: default for the `train` call argument (set one of the two).
    carry_rng: name of the rng stream for carry noise.
  """
  cell: Any
  carry: strategies_lib.CarryStrategy = strategies_lib.zeros()
  burn_in: int = 0
  stop_gradient_burn_in: bool = False
  reverse: bool = False
  unroll: int = 1
  time_major: bool = False
  return_carries: bool = False
  train: bool | None = None
  carry_rng: str = 'carry'

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
      train: whether carry noise is on; overrides the attribute.

    Returns:
      A `ScanOutput(final_carry, outputs, mask, carries)`.
    """
    train = nn.merge_param('train', self.train, train)
    cell: RecurrentCell = as_cell(self.cell)
    if inputs.ndim < 3:
      raise ValueError(f'`inputs` must be [B, T, D] ([T, B, D] if time_major), got shape '
                       f'{inputs.shape}.')
    cell_params = self.param('cell', cell.init, inputs.shape[-1])
    strategy = self.carry
    if not isinstance(strategy, strategies_lib.CarryStrategy):
      raise TypeError(f'`carry` must be a CarryStrategy, got {type(strategy).__name__}.')
    template = cell.carry_template
    if jax.tree.leaves(jax.eval_shape(strategy.init, jax.random.key(0), template)):
      carry_params = self.param('carry', strategy.init, template)
    else:  # Nothing trainable (zeros, noisy): keep the param tree free of it.
      carry_params = strategy.init(None, template)

    rng = None
    if train and strategy.needs_rng:
      if not self.has_rng(self.carry_rng):
        raise ValueError(
            f'this carry strategy draws noise in training: pass rngs={{"{self.carry_rng}": '
            'key}} to init/apply, or train=False.')
      rng = self.make_rng(self.carry_rng)

    def init_carry_fn(key, batch):
      return strategy.init_carry(carry_params, key, batch, train=train)

    def cell_fn(carry, x):
      return cell.apply(cell_params, carry, x)

    return scan_rnn(
        cell_fn, inputs, initial_carry, init_carry_fn=init_carry_fn, rng=rng,
        seq_lengths=seq_lengths, resets=resets, burn_in=self.burn_in,
        stop_gradient_burn_in=self.stop_gradient_burn_in, reverse=self.reverse,
        unroll=self.unroll, time_major=self.time_major, return_carries=self.return_carries)
