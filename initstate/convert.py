"""Converters between initstate's parameter and carry layouts and Flax's and PyTorch's.

initstate's cells agree with Flax's `LSTMCell` / `OptimizedLSTMCell`, `GRUCell` and `SimpleCell`
and with PyTorch's `nn.LSTM` / `nn.GRU` after conversion (tested to float precision).
"""

from initstate._src.convert import elman_params_from_flax
from initstate._src.convert import elman_params_to_flax
from initstate._src.convert import gru_params_from_flax
from initstate._src.convert import gru_params_from_torch
from initstate._src.convert import gru_params_to_flax
from initstate._src.convert import lstm_carry_from_flax
from initstate._src.convert import lstm_carry_to_flax
from initstate._src.convert import lstm_params_from_flax
from initstate._src.convert import lstm_params_from_torch
from initstate._src.convert import lstm_params_to_flax

__all__ = (
    'elman_params_from_flax',
    'elman_params_to_flax',
    'gru_params_from_flax',
    'gru_params_from_torch',
    'gru_params_to_flax',
    'lstm_carry_from_flax',
    'lstm_carry_to_flax',
    'lstm_params_from_flax',
    'lstm_params_from_torch',
    'lstm_params_to_flax',
)
