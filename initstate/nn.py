"""Flax linen modules of initstate."""

from initstate._src.modules import RNN

__all__ = ('RNN',)
