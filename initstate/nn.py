"""Flax linen layers of initstate: `RNN`, whose cell and initial carry live in one param tree,
and `Bidirectional`."""

from initstate._src.modules import Bidirectional
from initstate._src.modules import RNN
from initstate._src.modules import update_carry_state

__all__ = ('Bidirectional', 'RNN', 'update_carry_state')
