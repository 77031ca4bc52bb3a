"""Small pytree helpers shared by the scan, the decoder and the strategies."""

import jax
import jax.numpy as jnp

from initstate._src.types import Array, Carry


def where_batch(cond: Array, x: Carry, y: Carry) -> Carry:
  """Per batch element select: `cond` [B] picks leaves of `x` over `y` (leaves [B, ...])."""
  def select(a, b):
    return jnp.where(jnp.reshape(cond, cond.shape + (1,) * (jnp.ndim(a) - cond.ndim)), a, b)
  return jax.tree.map(select, x, y)
