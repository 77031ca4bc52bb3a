"""Flax linen modules of initstate."""

from initstate._src.modules import RNN
from initstate._src.modules import update_carry_buffers

__all__ = ('RNN', 'update_carry_buffers')
