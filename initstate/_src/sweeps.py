"""Sweeps: many small models trained at once, one per entry of a leading model axis.

A sweep stacks every model's state (parameters, optimiser state, keys, hyperparameters) along a
leading axis of size M and runs one function over all of them. `jax.vmap` alone does that, but
on a CPU the vectorised working set of many models outgrows the caches: running the models in
chunks of a few at a time, one chunk after another, and splitting the model axis across
devices (CPU cores as host devices, or TPU cores) measured faster (benchmarks/README.md).
`sweep` does both, with the semantics of `jax.vmap`.
"""

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec

from initstate._src import checks

MODEL_AXIS = 'models'


def grid(**axes: Sequence[Any]) -> dict[str, np.ndarray]:
  """Every combination of the given hyperparameter values, stacked: one array [M] per name.

  M is the product of the lengths; the last axis varies fastest (like `itertools.product`).

  Example:
    >>> from initstate import training
    >>> g = training.grid(burn_in=[0, 20], learning_rate=[1e-3, 3e-4, 1e-4])
    >>> g['burn_in'].tolist(), g['learning_rate'].shape
    ([0, 0, 0, 20, 20, 20], (6,))
  """
  if not axes:
    raise ValueError('pass at least one hyperparameter, as name=[values].')
  for name, values in axes.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
      raise TypeError(f'`{name}` must be a sequence of values, got {type(values).__name__}.')
    if len(values) == 0:
      raise ValueError(f'`{name}` has no values.')
  rows = list(itertools.product(*axes.values()))
  return {name: np.asarray([r[i] for r in rows]) for i, name in enumerate(axes)}


def num_models(tree: Any) -> int:
  """M, the size of the leading model axis shared by every leaf of `tree`."""
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(tree)}
  if not sizes:
    raise ValueError('the tree has no leaves, so no model axis.')
  if None in sizes or len(sizes) != 1:
    raise ValueError('every leaf needs the same leading model axis; got sizes '
                     f'{sorted(map(str, sizes))}.')
  return int(sizes.pop())  # pyright: ignore[reportArgumentType]


def take(tree: Any, index: int) -> Any:
  """Model `index` of a sweep: every leaf's entry `index` along the leading model axis."""
  size = num_models(tree)
  if not checks.is_int(index) or not -size <= index < size:
    raise IndexError(f'`index` must be an int in [-{size}, {size - 1}], got {index!r}.')
  return jax.tree.map(lambda leaf: leaf[index], tree)


def _normalize_in_axes(in_axes: Any, num_args: int) -> tuple[int | None, ...]:
  axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * num_args
  if len(axes) != num_args:
    raise ValueError(f'`in_axes` has {len(axes)} entries for {num_args} arguments.')
  for a in axes:
    if a is not None and (not checks.is_int(a) or a != 0):
      raise ValueError(f'each entry of `in_axes` must be 0 (mapped over the leading model axis) '
                       f'or None (shared by all models), got {a!r}.')
  if all(a is None for a in axes):
    raise ValueError('`in_axes` maps no argument: at least one needs a model axis (0).')
  return axes


def sweep(fn: Callable[..., Any], in_axes: int | Sequence[int | None] | None = 0, *,
          chunk_size: int | None = None,
          devices: Sequence[Any] | None = None) -> Callable[..., Any]:
  """`fn` over a leading model axis: `jax.vmap(fn, in_axes)`, computed in chunks and on devices.

  Args:
    fn: the function for one model, for example a training step or a whole epoch.
    in_axes: per positional argument (or one for all), 0 where the argument carries the model
      axis on every leaf ([M, ...]) and None where all models share it (data, a step number).
    chunk_size: how many models run together as one vectorised batch; the chunks run one after
      another (`jax.lax.map` with `batch_size`). None: all models at once, as `jax.vmap`.
      Results equal `jax.vmap`'s to float rounding, whatever the chunk size. A chunk size
      that does not divide M compiles `fn` twice (the full chunks, then the rest), which
      can outweigh a short run.
    devices: split the model axis evenly across these `jax.Device`s (`jax.shard_map` over a 1-D
      mesh); each device runs its share, in chunks of `chunk_size`. If M is not a multiple
      of the number of devices, copies of the last model fill the gap (computed, then
      dropped). On a CPU, `jax.config.update('jax_num_cpu_devices', n)` before
      the first computation makes one device per core. There, initialise on one device:
      with jaxlib 0.10.2, batched QR (the orthogonal initialiser) run by two CPU devices at
      once deadlocked their shared thread pool.

  Returns:
    A function of the same arguments; every output has the leading model axis [M, ...].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from initstate import training
    >>> step = training.sweep(lambda w, lr, x: w - lr * x, in_axes=(0, 0, None), chunk_size=2)
    >>> step(jnp.ones(3), jnp.array([0.1, 0.2, 0.3]), 1.0)
    Array([0.9, 0.8, 0.7], dtype=float32)
  """
  checks.callable_(fn, 'fn', '(*args) -> outputs')
  if chunk_size is not None:
    chunk_size = checks.positive_int(chunk_size, 'chunk_size')
  if devices is not None:
    devices = tuple(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
      raise TypeError(f'`devices` must be a non-empty sequence of jax.Device, got {devices!r}.')

  def run(*args: Any) -> Any:
    axes = _normalize_in_axes(in_axes, len(args))
    mapped = [a for a, ax in zip(args, axes) if ax == 0]
    size = num_models(mapped)

    def local(*mapped_args: Any) -> Any:
      def one(model_args: tuple[Any, ...]) -> Any:
        it = iter(model_args)
        return fn(*[next(it) if ax == 0 else a for a, ax in zip(args, axes)])

      if chunk_size is None:
        return jax.vmap(one)(mapped_args)
      return jax.lax.map(one, mapped_args, batch_size=chunk_size)

    if devices is None:
      return local(*mapped)
    # Pad the model axis to a multiple of the device count with copies of the last model;
    # their results are dropped.
    pad = -size % len(devices)
    if pad:
      mapped = jax.tree.map(
          lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), mapped)
    mesh = Mesh(np.asarray(devices), (MODEL_AXIS,))
    spec = PartitionSpec(MODEL_AXIS)
    # check_vma=False: fn is per-model code that may start loops from constants (a zero
    # carry), which shard_map's replication checker would reject although every model's
    # values are independent.
    out = jax.shard_map(local, mesh=mesh, in_specs=(spec,) * len(mapped), out_specs=spec,
                        check_vma=False)(*mapped)
    return jax.tree.map(lambda a: a[:size], out) if pad else out

  return run
