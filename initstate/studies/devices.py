"""How the studies spread a sweep's models over devices: one CPU device per core by default."""

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from initstate import training


def setup(requested: int = 0) -> int:
  """Makes `requested` CPU devices (0: one per core) if no JAX computation has run yet.

  Returns how many devices the study's models can be split across: the CPU devices made here,
  or, when the backend was already up (in a notebook, say) or is an accelerator, the devices
  it has, at most `requested` (if given).
  """
  if requested < 0:
    raise ValueError(f'--devices must be >= 0 (0: one per CPU core), got {requested}.')
  want = requested or os.cpu_count() or 1
  try:
    jax.config.update('jax_num_cpu_devices', want)
  except RuntimeError:
    pass  # The backend is already initialised: use the devices it has.
  return max(1, min(want, jax.device_count()))


def sweeper(chunk_size: int | None, num_devices: int) -> Callable[..., Any]:
  """`make(fn, in_axes, *, one_device=False)`: `fn` jitted as a `training.sweep` in chunks of
  `chunk_size` over the first `num_devices` devices (one device with `one_device`).

  Initialise with `one_device=True`: one device, one model at a time. The orthogonal
  initialiser's batched QR (LAPACK) deadlocked jaxlib's shared CPU thread pool when two CPU
  devices ran it at once, and again on one device with 60 models vectorised (two QRs of one
  program, each waiting for the pool's threads).
  """
  devices = jax.devices()[:num_devices] if num_devices > 1 else None
  if devices is not None and len(devices) < num_devices:
    raise ValueError(f'{num_devices} devices asked for, {len(devices)} available.')

  def make(fn: Callable[..., Any], in_axes: Any, *, one_device: bool = False):
    """The jitted sweep of `fn` (on one device with `one_device`)."""
    if one_device:
      return jax.jit(training.sweep(fn, in_axes, chunk_size=1))
    return jax.jit(training.sweep(fn, in_axes, chunk_size=chunk_size, devices=devices))

  return make


def place(tree: Any, num_devices: int) -> Any:
  """Puts `tree` (model axis first) where a sweep over `num_devices` devices leaves its outputs.

  A state made on one device (see `sweeper`) and then passed to a sweep over several devices
  comes back split across them; placing it there first saves the second compilation that the
  change of placement would otherwise cost. The mesh axis name is `training.sweep`'s. A model
  count that the devices do not divide is left where it is: the sweep pads it to a multiple
  (and may compile once more).
  """
  if num_devices <= 1 or any(x.shape[0] % num_devices for x in jax.tree.leaves(tree)):
    return tree
  mesh = Mesh(np.asarray(jax.devices()[:num_devices]), ('models',))
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec('models')))
