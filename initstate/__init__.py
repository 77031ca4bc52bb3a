"""initstate: initial carries for recurrent networks in JAX.

Pure functions over pytrees: recurrent cells (`lstm`, `gru`, `elman`, `stack`, `from_flax`),
initial-carry strategies (`zeros`, `learned`, `noisy`, `noisy_learned`, `latent`,
`cleaning_noise`), conditional carries (`from_context`, `bridge`), `scan_rnn` over time with
lengths, resets and burn-in (fused for the built-in LSTM and GRU), masked per-step losses, and
sequence generation (`teacher_forcing`, `decode`). Flax modules are in
`initstate.nn`.
"""

from initstate import nn
from initstate import tasks
from initstate._src.cells import as_cell
from initstate._src.checkpoints import restore_checkpoint
from initstate._src.checkpoints import save_checkpoint
from initstate._src.cleaning import cleaning_noise
from initstate._src.cleaning import CleaningNoise
from initstate._src.cleaning import GradientBuffer
from initstate._src.cleaning import update_gradient_buffer
from initstate._src.cells import elman
from initstate._src.cells import elman_params_from_flax
from initstate._src.cells import elman_params_to_flax
from initstate._src.cells import from_flax
from initstate._src.cells import gru
from initstate._src.cells import gru_params_from_flax
from initstate._src.cells import gru_params_from_torch
from initstate._src.cells import gru_params_to_flax
from initstate._src.cells import lstm
from initstate._src.cells import lstm_carry_from_flax
from initstate._src.cells import lstm_carry_to_flax
from initstate._src.cells import lstm_params_from_flax
from initstate._src.cells import lstm_params_from_torch
from initstate._src.cells import lstm_params_to_flax
from initstate._src.cells import LSTMCarry
from initstate._src.cells import RecurrentCell
from initstate._src.cells import stack
from initstate._src.conditional import bridge
from initstate._src.conditional import CarryMap
from initstate._src.conditional import Dense
from initstate._src.conditional import from_context
from initstate._src.conditional import latent
from initstate._src.decoding import decode
from initstate._src.decoding import DecodeOutput
from initstate._src.decoding import shift_right
from initstate._src.decoding import teacher_forcing
from initstate._src.decoding import TeacherForcingOutput
from initstate._src.losses import loss_mask
from initstate._src.losses import masked_mean
from initstate._src.losses import softmax_cross_entropy
from initstate._src.losses import squared_error
from initstate._src.scan import scan_rnn
from initstate._src.scan import ScanOutput
from initstate._src.strategies import CarrySpec
from initstate._src.strategies import CarryStrategy
from initstate._src.strategies import learned
from initstate._src.strategies import noisy
from initstate._src.strategies import noisy_learned
from initstate._src.strategies import zeros
from initstate._src.training import example_keys
from initstate._src.training import per_example_carry
from initstate._src.training import replicate
from initstate._src.training import replicate_for_pmap
from initstate._src.training import shard_batch
from initstate._src.training import split_for_pmap
from initstate._src.training import train_step
from initstate._src.training import TrainState

__version__ = '0.1.0'

__all__ = (
    'as_cell',
    'bridge',
    'CarryMap',
    'CarrySpec',
    'CarryStrategy',
    'cleaning_noise',
    'CleaningNoise',
    'decode',
    'DecodeOutput',
    'Dense',
    'elman',
    'elman_params_from_flax',
    'elman_params_to_flax',
    'example_keys',
    'from_context',
    'from_flax',
    'GradientBuffer',
    'gru',
    'gru_params_from_flax',
    'gru_params_from_torch',
    'gru_params_to_flax',
    'latent',
    'learned',
    'loss_mask',
    'lstm',
    'lstm_carry_from_flax',
    'lstm_carry_to_flax',
    'lstm_params_from_flax',
    'lstm_params_from_torch',
    'lstm_params_to_flax',
    'LSTMCarry',
    'masked_mean',
    'nn',
    'tasks',
    'noisy',
    'noisy_learned',
    'per_example_carry',
    'RecurrentCell',
    'replicate',
    'replicate_for_pmap',
    'restore_checkpoint',
    'save_checkpoint',
    'scan_rnn',
    'ScanOutput',
    'shard_batch',
    'shift_right',
    'softmax_cross_entropy',
    'split_for_pmap',
    'squared_error',
    'stack',
    'teacher_forcing',
    'TeacherForcingOutput',
    'train_step',
    'TrainState',
    'update_gradient_buffer',
    'zeros',
)
