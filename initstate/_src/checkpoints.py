"""Checkpoints of a whole `TrainState` with orbax, resumed exactly.

  initstate.training.save_checkpoint('/tmp/run/step_100', state)
  state = initstate.training.restore_checkpoint('/tmp/run/step_100', like=fresh_state)

Everything is saved: parameters (the learned carry included), the optimiser state, the carry
strategy's state (a cleaning-noise gradient buffer), the step and the PRNG key, so a run
stopped after k steps and resumed from its checkpoint ends bit-identical to one that never
stopped. `like` is a state of the same configuration (e.g. the one `TrainState.create` gives
at the start); a checkpoint from a different configuration (other sizes, cells, strategies or
optimiser) is refused with the differences listed, never silently reshaped.
"""

import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_SIGNATURE = 'initstate_signature.json'


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(tree: Any) -> Any:
  """Typed PRNG keys become their raw uint32 data (orbax stores plain arrays)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _signature(tree: Any) -> dict[str, str]:
  """Path -> 'shape dtype' for every leaf (keys noted with their implementation)."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = jax.tree_util.keystr(path)
    if _is_key(leaf):
      out[name] = f'key<{jax.random.key_impl(leaf)}> {tuple(leaf.shape)}'
    else:
      out[name] = f'{tuple(np.shape(leaf))} {jnp.result_type(leaf)}'
  return out


def save_checkpoint(directory: str | os.PathLike[str], state: Any) -> pathlib.Path:
  """Saves `state` (any pytree, e.g. a `TrainState`) into a new `directory`; returns it."""
  directory = pathlib.Path(directory).absolute()
  bad = [f'{jax.tree_util.keystr(path)}: {type(leaf).__name__}'
         for path, leaf in jax.tree_util.tree_leaves_with_path(state)
         if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float))]
  if bad:  # Checked before anything is written: orbax would fail half-way.
    raise TypeError('`state` must be a pytree of arrays (e.g. a TrainState); these leaves are '
                    f'not: {", ".join(bad[:10])}.')
  if directory.exists():
    raise FileExistsError(f'checkpoint directory {directory} already exists; pick a new one '
                          '(e.g. one per step).')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / 'state', _to_saveable(state))
  checkpointer.wait_until_finished()
  (directory / _SIGNATURE).write_text(json.dumps(_signature(state), indent=1))
  return directory


def restore_checkpoint(directory: str | os.PathLike[str], like: Any) -> Any:
  """Restores the state saved in `directory`, with the structure of `like`.

  Args:
    directory: what `save_checkpoint` wrote.
    like: a state of the same configuration (its values are not used).

  Raises:
    ValueError: the checkpoint's tree, shapes or dtypes differ from `like`'s (listed).
  """
  directory = pathlib.Path(directory).absolute()
  signature_file = directory / _SIGNATURE
  if not signature_file.exists():
    raise FileNotFoundError(f'{directory} is not an initstate checkpoint (no {_SIGNATURE}).')
  saved = json.loads(signature_file.read_text())
  expected = _signature(like)
  if saved != expected:
    lines = []
    for name in sorted(set(saved) | set(expected)):
      a, b = saved.get(name, 'missing'), expected.get(name, 'missing')
      if a != b:
        lines.append(f'  {name}: checkpoint {a}, expected {b}')
    raise ValueError(f'the checkpoint in {directory} is from a different configuration; '
                     f'{len(lines)} entries differ:\n' + '\n'.join(lines[:20]))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)),
                        _to_saveable(like))
  restored = ocp.StandardCheckpointer().restore(directory / 'state', target)
  return jax.tree.map(
      lambda r, l: jax.random.wrap_key_data(r, impl=jax.random.key_impl(l)) if _is_key(l)
      else jnp.asarray(r), restored, like)
