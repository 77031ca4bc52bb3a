"""Linear maps to a carry: the heads of the conditional carries and of `latent`.

A head maps features `[*B, F]` to one carry leaf `[*B, *unit]`; a carry-shaped tree of heads
maps features to a whole carry.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initstate._src.types import Array, Carry, PRNGKey

Squash = Callable[[Array], Array] | None

_kernel_init = jax.nn.initializers.lecun_normal()


class LinearParams(NamedTuple):
  """The parameters of one linear map `x @ kernel + bias` to a carry leaf.

  Attributes:
    kernel: `[F, *unit]`.
    bias: `[*unit]`.
  """
  kernel: Array
  bias: Array


def is_linear(x: Any) -> bool:
  return isinstance(x, LinearParams)


def check_squash(squash: Any) -> None:
  if squash is not None and not callable(squash):
    raise TypeError(f'`squash` must be a callable or None, got {type(squash).__name__}.')


def linear_init(rng: PRNGKey, fan_in: int, unit: tuple[int, ...], dtype: Any) -> LinearParams:
  kernel = _kernel_init(rng, (fan_in, int(np.prod(unit, dtype=int))), dtype)
  return LinearParams(jnp.reshape(kernel, (fan_in,) + unit), jnp.zeros(unit, dtype))


def linear(params: LinearParams, x: Array) -> Array:
  """x [*B, F] -> [*B, *unit]."""
  y = jnp.tensordot(x, params.kernel, axes=1)
  lead = y.ndim - params.bias.ndim
  return y + jnp.reshape(params.bias, (1,) * lead + params.bias.shape)


def heads_init(rng: PRNGKey, fan_in: int, template: Carry) -> Carry:
  """A carry-shaped tree of `LinearParams`, one head per leaf of `template`."""
  leaves, treedef = jax.tree.flatten(template)
  keys = jax.random.split(rng, len(leaves))
  return jax.tree.unflatten(treedef, [
      linear_init(k, fan_in, tuple(l.shape), jnp.dtype(l.dtype)) for k, l in zip(keys, leaves)])


def heads_apply(heads: Carry, features: Array, squash: Squash) -> Carry:
  """features [*B, F] -> carry leaves [*B, *unit], each passed through `squash`."""
  def head(h):
    y = linear(h, features.astype(h.kernel.dtype))
    return y if squash is None else squash(y)
  return jax.tree.map(head, heads, is_leaf=is_linear)


def heads_fan_in(heads: Carry) -> int:
  return jax.tree.leaves(heads, is_leaf=is_linear)[0].kernel.shape[0]


def heads_dtype(heads: Carry) -> Any:
  return jax.tree.leaves(heads, is_leaf=is_linear)[0].kernel.dtype
