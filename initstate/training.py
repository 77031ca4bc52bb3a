"""Training machinery: an optax train step that keeps a carry strategy's state, per-example
carry noise, sweeps of many models at once, data parallelism over a mesh or with `pmap`, and
checkpoints (orbax)."""

from initstate._src.checkpoints import restore_checkpoint
from initstate._src.checkpoints import save_checkpoint
from initstate._src.sweeps import grid
from initstate._src.sweeps import num_models
from initstate._src.sweeps import sweep
from initstate._src.sweeps import take
from initstate._src.training import example_keys
from initstate._src.training import per_example_carry
from initstate._src.training import replicate
from initstate._src.training import replicate_for_pmap
from initstate._src.training import shard_batch
from initstate._src.training import split_for_pmap
from initstate._src.training import train_step
from initstate._src.training import TrainState

__all__ = (
    'example_keys',
    'grid',
    'num_models',
    'per_example_carry',
    'replicate',
    'replicate_for_pmap',
    'restore_checkpoint',
    'save_checkpoint',
    'shard_batch',
    'split_for_pmap',
    'sweep',
    'take',
    'train_step',
    'TrainState',
)
