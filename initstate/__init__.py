"""initstate: initial carries for recurrent networks in JAX.

Pure functions over pytrees: recurrent cells (`lstm`, `gru`, `elman`, `stack`, and Flax cells
through `from_flax` / `from_nnx`), initial-carry strategies (`zeros`, `learned`, `noisy`,
`noisy_learned`, `latent`, `cleaning_noise`), conditional carries (`from_context`, `bridge`),
`scan_rnn` over time with lengths, resets and burn-in, masked per-step losses, and sequence
generation (`teacher_forcing`, `decode`).

Submodules, loaded on first use: `initstate.nnx` (Flax NNX layers), `initstate.nn` (Flax linen
layers), `initstate.training` (train step, data parallelism, checkpoints), `initstate.convert`
(Flax and PyTorch layouts), `initstate.tasks` (tasks with known optimal losses).
"""

import importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from initstate._src.cells import as_cell
from initstate._src.cells import BoundCell
from initstate._src.cells import elman
from initstate._src.cells import from_flax
from initstate._src.cells import from_nnx
from initstate._src.cells import gru
from initstate._src.cells import lstm
from initstate._src.cells import LSTMCarry
from initstate._src.cells import RecurrentCell
from initstate._src.cells import stack
from initstate._src.cleaning import cleaning_noise
from initstate._src.cleaning import GradientBuffer
from initstate._src.conditional import bridge
from initstate._src.conditional import CarryMap
from initstate._src.conditional import from_context
from initstate._src.decoding import decode
from initstate._src.decoding import DecodeOutput
from initstate._src.decoding import shift_right
from initstate._src.decoding import teacher_forcing
from initstate._src.decoding import TeacherForcingOutput
from initstate._src.linear import LinearParams
from initstate._src.losses import loss_mask
from initstate._src.losses import masked_mean
from initstate._src.losses import softmax_cross_entropy
from initstate._src.losses import squared_error
from initstate._src.scan import scan_rnn
from initstate._src.scan import ScanOutput
from initstate._src.strategies import CarrySpec
from initstate._src.strategies import CarryStrategy
from initstate._src.strategies import EmptyState
from initstate._src.strategies import latent
from initstate._src.strategies import learned
from initstate._src.strategies import noisy
from initstate._src.strategies import noisy_learned
from initstate._src.strategies import zeros

try:
  __version__ = _metadata.version('initstate')
except _metadata.PackageNotFoundError:  # Run from a source tree that was never installed.
  __version__ = '0+unknown'

_SUBMODULES = ('convert', 'nn', 'nnx', 'tasks', 'training')
if TYPE_CHECKING:  # For type checkers and IDEs; at run time they load on first use.
  from initstate import convert, nn, nnx, tasks, training


def __getattr__(name: str) -> Any:
  # Submodules load on first use, so that `import initstate` imports neither Flax nor orbax.
  if name in _SUBMODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = (
    # Cells.
    'as_cell',
    'BoundCell',
    'elman',
    'from_flax',
    'from_nnx',
    'gru',
    'lstm',
    'LSTMCarry',
    'RecurrentCell',
    'stack',
    # Initial-carry strategies.
    'CarrySpec',
    'CarryStrategy',
    'cleaning_noise',
    'EmptyState',
    'GradientBuffer',
    'latent',
    'learned',
    'noisy',
    'noisy_learned',
    'zeros',
    # Conditional carries.
    'bridge',
    'CarryMap',
    'from_context',
    'LinearParams',
    # The recurrence and its losses.
    'loss_mask',
    'masked_mean',
    'scan_rnn',
    'ScanOutput',
    'softmax_cross_entropy',
    'squared_error',
    # Sequence generation.
    'decode',
    'DecodeOutput',
    'shift_right',
    'teacher_forcing',
    'TeacherForcingOutput',
    # Submodules.
    'convert',
    'nn',
    'nnx',
    'tasks',
    'training',
)
