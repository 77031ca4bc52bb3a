"""Merging a forward and a backward run of `scan_rnn` into one bidirectional output.

Both Flax shells (`initstate.nn.Bidirectional`, `initstate.nnx.Bidirectional`) run a forward
RNN and a backward RNN (`reverse=True`: each sequence from its last valid step back to step 0,
padding left in place, outputs in the original order) and combine their `ScanOutput`s here.
"""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from initstate._src.scan import ScanOutput
from initstate._src.types import Array, Carry

MergeFn = Callable[[Array, Array], Array]


def concatenate(forward: Array, backward: Array) -> Array:
  """[..., H_f], [..., H_b] -> [..., H_f + H_b]."""
  return jnp.concatenate([forward, backward], axis=-1)


def merge(forward: ScanOutput, backward: ScanOutput, merge_fn: MergeFn) -> ScanOutput:
  """One `ScanOutput` from the two directions.

  Returns:
    `final_carry` (forward's, backward's): each direction's carry after its last processed
    step (the backward one after step 0); `outputs` `merge_fn(forward, backward)` per step
    (zeros on padding for the built-in merges); `mask` True where both directions count a
    step (a burn-in covers the first steps forward and the last valid steps backward);
    `carries` (forward's, backward's) or None.
  """
  carries = None
  if forward.carries is not None and backward.carries is not None:
    carries = (forward.carries, backward.carries)
  return ScanOutput(final_carry=(forward.final_carry, backward.final_carry),
                    outputs=merge_fn(forward.outputs, backward.outputs),
                    mask=forward.mask & backward.mask, carries=carries)


def run(forward: Callable[..., ScanOutput], backward: Callable[..., ScanOutput],
        merge_fn: MergeFn, inputs: Array, initial_carry: tuple[Carry, Carry] | None,
        **kwargs: Any) -> ScanOutput:
  """Calls both layers on `inputs` (each with its own initial carry, if given, and `kwargs`)
  and merges their outputs."""
  if initial_carry is not None and (not isinstance(initial_carry, tuple)
                                    or len(initial_carry) != 2):
    raise ValueError('`initial_carry` must be a pair (forward, backward) or None.')
  fw_carry, bw_carry = initial_carry if initial_carry is not None else (None, None)
  fw = forward(inputs, initial_carry=fw_carry, **kwargs)
  bw = backward(inputs, initial_carry=bw_carry, **kwargs)
  return merge(fw, bw, merge_fn)
