"""Flax NNX layers of initstate: `RNN`, whose cell, learned carry and strategy state are NNX
variables (`nnx.Param` for what trains, `CarryState` for what a strategy keeps),
`Bidirectional`, and `CarryMapModule` for a conditional carry's network (`from_context`,
`bridge`)."""

from initstate._src.nnx_layers import Bidirectional
from initstate._src.nnx_layers import CarryMapModule
from initstate._src.nnx_layers import CarryState
from initstate._src.nnx_layers import RNN
from initstate._src.nnx_layers import update_carry_state

__all__ = ('Bidirectional', 'CarryMapModule', 'CarryState', 'RNN', 'update_carry_state')
