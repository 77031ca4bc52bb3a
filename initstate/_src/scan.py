"""`scan_rnn`: a recurrent cell over time with `jax.lax.scan`.

Semantics (batch-major shown; with `time_major=True` every `[B, T]` below is `[T, B]`):

* `seq_lengths[b] = L`: steps `t >= L` are padding. They do not change the carry, their outputs
  are zeros, and the final carry is the carry after step `L - 1` (the initial carry if L = 0).
* `resets[b, t] = True`: before step t is computed, the carry of sequence b is replaced by a fresh
  carry from `init_carry_fn`, drawn with the key `fold_in(reset_key, t)`, so every reset step gets
  its own noise. Resets on padding steps are ignored.
* `burn_in = N`: the first N steps of every sequence build up the state but are left out of the
  returned loss `mask`. With `stop_gradient_burn_in=True` the carry is also cut from the gradient
  at the end of the burn-in (R2D2, Kapturowski et al. 2019), and the backward pass skips those
  steps.
* `reverse=True`: each sequence is processed from its last valid step back to step 0 (padding
  stays in place, as in `flax.linen.RNN`); outputs are returned in the original order. Resets and
  burn-in count in processing order: `resets[b, t]` replaces the carry before step t is processed
  (its key is `fold_in(reset_key, L - 1 - t)`, the step's position in processing order), and the
  burn-in is the last N valid steps.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initstate._src import checks
from initstate._src import fused as fused_lib
from initstate._src.cells import BoundCell
from initstate._src.losses import loss_mask
from initstate._src.tree import where_batch
from initstate._src.types import Array, Carry, PRNGKey

CellFn = Callable[[Carry, Any], tuple[Carry, Any]]
InitCarryFn = Callable[[PRNGKey | None, int], Carry]


class ScanOutput(NamedTuple):
  """What `scan_rnn` returns.

  Attributes:
    final_carry: the carry after each sequence's last valid step; leaves [B, ...].
    outputs: per-step outputs, [B, T, ...] ([T, B, ...] if time-major); zeros on padding.
    mask: [B, T] bool, True where a step counts in the loss: valid and past the burn-in.
    carries: the carry after every step, leaves [B, T, ...] ([T, B, ...] if time-major), held
      constant on padding; None unless `return_carries=True`.
  """
  final_carry: Carry
  outputs: Any
  mask: Array
  carries: Carry | None


def _time_flip_index(lengths: Array, num_steps: int) -> Array:
  """[T, B] index that reverses the first lengths[b] steps of each sequence, keeping padding."""
  t = jnp.arange(num_steps)[:, None]
  return jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _take_time(x: Array, index: Array) -> Array:
  """Gathers x [T, B, ...] along time with index [T, B]."""
  index = jnp.reshape(index, index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=0)


def _check_step(cell_fn: CellFn, carry: Carry, x_0: Any, inputs: Any) -> None:
  """Clear errors, before any scan, if one step changes the carry's structure, shapes or dtype.

  A scan needs a carry of fixed type. Calling the cell once on shapes (`jax.eval_shape`:
  nothing is run) also raises the built-in cells' own checks (input features, carry shapes).
  The usual cause of a dtype change is a bfloat16 / float16 model (whose carry follows
  `param_dtype`) fed float32 inputs: `x @ w_i` promotes and the new carry is float32. Without
  this check `lax.scan` raises from deep inside the generic or fused path, the latter naming
  its internal `carry[0]`.
  """
  try:
    new_carry, _ = jax.eval_shape(cell_fn, carry, x_0)
  except (TypeError, ValueError) as e:
    if all(jnp.ndim(x) == 1 for x in jax.tree.leaves(x_0)):
      shapes = [jnp.shape(x) for x in jax.tree.leaves(inputs)]
      raise ValueError(
          f'`inputs` of shape {shapes[0] if len(shapes) == 1 else shapes} has no feature axis: '
          f'every step gives the cell a [B] slice, and the cell rejected it ({e}). Cells take '
          '[B, D] per step: pass inputs [B, T, D], e.g. `inputs[..., None]` for one feature or '
          '`jax.nn.one_hot(tokens, V)` for token ids.') from e
    raise
  if jax.tree.structure(new_carry) != jax.tree.structure(carry):
    raise TypeError(f'`cell_fn` must return a carry of the structure it was given: got '
                    f'{jax.tree.structure(carry)} in, {jax.tree.structure(new_carry)} out.')
  paths = jax.tree_util.tree_leaves_with_path(carry)
  new_leaves = jax.tree.leaves(new_carry)
  reshaped = [f'carry{jax.tree_util.keystr(path)}: {jnp.shape(old)} -> {new.shape}'
              for (path, old), new in zip(paths, new_leaves) if jnp.shape(old) != new.shape]
  if reshaped:
    raise ValueError(f'`cell_fn` changes the shape of the carry ({", ".join(reshaped)}); a scan '
                     'needs a carry of fixed shape: check `initial_carry` against the cell.')
  changed = [f'carry{jax.tree_util.keystr(path)}: {jnp.result_type(old)} -> {new.dtype}'
             for (path, old), new in zip(paths, new_leaves)
             if jnp.result_type(old) != new.dtype]
  if changed:
    raise TypeError(
        f'`cell_fn` changes the dtype of the carry ({", ".join(changed)}), but a scan needs '
        f'a carry of fixed dtype. The inputs are '
        f'{sorted({str(jnp.result_type(x)) for x in jax.tree.leaves(x_0)})}: feed inputs of the '
        "cell's param dtype (e.g. `inputs.astype(jnp.bfloat16)` for a bfloat16 model), and a "
        'carry of that dtype (strategies follow `cell.carry_template`).')


def _check_fresh_carry(init_carry_fn: InitCarryFn, key: PRNGKey | None, batch: int,
                       carry: Carry) -> None:
  """The carries `init_carry_fn` makes at resets must match the initial carry exactly."""
  fresh = jax.eval_shape(lambda k: init_carry_fn(k, batch), key)
  same = jax.tree.structure(fresh) == jax.tree.structure(carry) and all(
      f.shape == jnp.shape(c) and f.dtype == jnp.result_type(c)
      for f, c in zip(jax.tree.leaves(fresh), jax.tree.leaves(carry)))
  if not same:
    describe = lambda t: jax.tree.map(lambda l: f'{jnp.result_type(l)}{list(jnp.shape(l))}', t)
    raise ValueError(f'`init_carry_fn(key, {batch})` must return a carry like `initial_carry` '
                     f'(for the resets), got {describe(fresh)} against {describe(carry)}.')


def scan_rnn(
    cell_fn: CellFn,
    inputs: Any,
    initial_carry: Carry | None = None,
    *,
    init_carry_fn: InitCarryFn | None = None,
    rng: PRNGKey | None = None,
    seq_lengths: Array | None = None,
    resets: Array | None = None,
    burn_in: int = 0,
    stop_gradient_burn_in: bool = False,
    reverse: bool = False,
    unroll: int | bool = 1,
    time_major: bool = False,
    return_carries: bool = False,
    implementation: str = 'auto',
    checkpoint_every: int | None = None,
) -> ScanOutput:
  """Runs `cell_fn` over the time axis of `inputs` (see the module docstring for semantics).

  Args:
    cell_fn: `(carry, x_t) -> (carry, y_t)`, e.g. `cell.bind(params)` (a cell with its params
      bound); x_t and y_t have leading dim B.
    inputs: an array [B, T, ...] (or a pytree of them); [T, B, ...] if `time_major`.
    initial_carry: carry leaves [B, ...]. If None, `init_carry_fn(key, B)` makes it.
    init_carry_fn: `(key, batch) -> carry`, e.g.
      `lambda k, b: strategy.init_carry(carry_params, k, b, train=True)`. Required for
      `resets` and when `initial_carry` is None.
    rng: a key for `init_carry_fn`, split into one key for the initial carry and one from which
      each reset step's key is folded; None for deterministic strategies.
    seq_lengths: int [B], valid steps per sequence, in [0, T].
    resets: bool [B, T], True where a new sequence starts before step t.
    burn_in: N in [0, T - 1]: the first N steps are left out of `mask`.
    stop_gradient_burn_in: stop the gradient through the carry at the end of the burn-in.
    reverse: process each sequence from its end to its start.
    unroll: `jax.lax.scan`'s unroll.
    time_major: inputs, outputs, resets and carries are [T, B, ...].
    return_carries: also return the carry after every step.
    implementation: 'auto' runs built-in LSTM cells (and stacks of them) of at least 32
      units, given as `cell.bind(params)` with one input array, through a fused recurrence
      (same results, a faster training step; reverse-mode differentiation only; the cell's
      `fused` field says which), and anything else step by step; 'fused' requires the fused
      path (also for GRUs and narrow cells; an error if the cell does not qualify);
      'generic' always steps `cell_fn` (use it for forward-mode differentiation). `unroll`
      applies to the generic path only.
    checkpoint_every: a memory option for long sequences: run the steps in chunks of this
      many under `jax.checkpoint`, so that training keeps only the carries between chunks
      and recomputes each chunk's intermediates in the backward pass (about one extra forward
      pass of compute; memory about T/k carries plus one chunk's intermediates instead of T
      steps' worth). None (default) keeps everything.

  Returns:
    A `ScanOutput(final_carry, outputs, mask, carries)`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> cell = initstate.lstm(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> strategy = initstate.noisy_learned(0.1)
    >>> carry_params = strategy.init(None, cell.carry_template)
    >>> x = jnp.ones((2, 6, 3))                                   # [B, T, D]
    >>> out = initstate.scan_rnn(
    ...     cell.bind(params), x,
    ...     init_carry_fn=lambda k, b: strategy.init_carry(carry_params, k, b, train=True),
    ...     rng=jax.random.key(1),
    ...     seq_lengths=jnp.array([6, 4]),                          # the second is padded
    ...     resets=jnp.zeros((2, 6), bool).at[0, 3].set(True),      # fresh carry before t = 3
    ...     burn_in=2)                                              # steps 0, 1 not in the loss
    >>> out.outputs.shape
    (2, 6, 8)
    >>> out.mask.astype(int)
    Array([[0, 0, 1, 1, 1, 1],
           [0, 0, 1, 1, 0, 0]], dtype=int32)
  """
  cfg = _check_args(cell_fn, inputs, init_carry_fn, rng, seq_lengths, resets, burn_in,
                    stop_gradient_burn_in, reverse, unroll, time_major, return_carries,
                    implementation, checkpoint_every)
  init_key = reset_key = None
  if rng is not None:
    init_key, reset_key = jax.random.split(rng)
  if initial_carry is None:
    if init_carry_fn is None:
      raise ValueError('pass `initial_carry` or `init_carry_fn`.')
    initial_carry = init_carry_fn(init_key, cfg.batch)
  _check_carries(cell_fn, inputs, initial_carry, init_carry_fn, reset_key, cfg)

  frame = _to_processing_frame(inputs, cfg)
  reset_carries = None
  if cfg.plan is not None and cfg.resets is not None and init_carry_fn is not None:
    # Every step's fresh carry, drawn with the same keys as the generic path: leaves [T, B, ...].
    reset_carries = jax.vmap(lambda t: init_carry_fn(
        None if reset_key is None else jax.random.fold_in(reset_key, t), cfg.batch))(
            jnp.arange(cfg.num_steps))
  run_segment = (_generic_runner(cell_fn, init_carry_fn, reset_key, cfg) if cfg.plan is None
                 else _fused_runner(cfg))
  timed = dict(frame.timed, reset_carries=reset_carries)
  final_carry, ys, cs = _run(run_segment, initial_carry, timed, cfg)
  ys, mask, cs = _from_processing_frame(ys, cs, frame, cfg)
  return ScanOutput(final_carry=final_carry, outputs=ys, mask=mask, carries=cs)


class _Config(NamedTuple):
  """`scan_rnn`'s arguments, checked and normalised."""
  num_steps: int
  batch: int
  seq_lengths: Array | None     # int32 [B], or None for full-length sequences.
  resets: Array | None          # bool, in the caller's frame.
  burn_in: int
  stop_gradient_burn_in: bool
  reverse: bool
  unroll: Any                   # int >= 1 or bool, as in jax.lax.scan.
  time_major: bool
  return_carries: bool
  plan: Any                     # the fused plan, or None for the generic path.
  checkpoint_every: int | None


def _check_args(cell_fn, inputs, init_carry_fn, rng, seq_lengths, resets, burn_in,
                stop_gradient_burn_in, reverse, unroll, time_major, return_carries,
                implementation, checkpoint_every) -> _Config:
  """Every argument check that needs no carry; returns the normalised configuration."""
  checks.callable_(cell_fn, 'cell_fn', '(carry, x_t) -> (carry, y_t)')
  if init_carry_fn is not None:
    checks.callable_(init_carry_fn, 'init_carry_fn', '(key, batch) -> carry')
  checks.optional_prng_key(rng, 'rng')
  for name, value in (('stop_gradient_burn_in', stop_gradient_burn_in), ('reverse', reverse),
                      ('time_major', time_major), ('return_carries', return_carries)):
    checks.flag(value, name)
  if not isinstance(unroll, (bool, np.bool_)) and not (checks.is_int(unroll) and unroll >= 1):
    raise ValueError(f'`unroll` must be a positive int or a bool (as in jax.lax.scan), got '
                     f'{unroll!r}.')
  leaves = jax.tree.leaves(inputs)
  if not leaves:
    raise ValueError('`inputs` has no arrays.')
  for leaf in leaves:
    if jnp.ndim(leaf) < 2:
      raise ValueError(
          f'`inputs` must have rank >= 2 ({"[T, B, ...]" if time_major else "[B, T, ...]"}), '
          f'got shape {jnp.shape(leaf)}.')
  t_axis, b_axis = (0, 1) if time_major else (1, 0)
  num_steps, batch = leaves[0].shape[t_axis], leaves[0].shape[b_axis]
  for leaf in leaves[1:]:
    if (leaf.shape[t_axis], leaf.shape[b_axis]) != (num_steps, batch):
      raise ValueError('all `inputs` leaves must share batch and time sizes, got shapes '
                       f'{[l.shape for l in leaves]}.')
  if num_steps < 1:
    raise ValueError(f'`inputs` has no time steps (shape {leaves[0].shape}).')
  if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)):
    raise TypeError(f'`burn_in` must be a Python int, got {type(burn_in).__name__}.')
  if not 0 <= burn_in < num_steps:
    raise ValueError(f'`burn_in` must be in [0, T - 1] = [0, {num_steps - 1}], got {burn_in}.')
  if seq_lengths is not None:
    seq_lengths = jnp.asarray(seq_lengths)
    if seq_lengths.shape != (batch,) or not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
      raise ValueError(f'`seq_lengths` must be an int array of shape [B] = ({batch},), got '
                       f'{seq_lengths.dtype} {seq_lengths.shape}.')
    if checks.is_concrete(seq_lengths):
      values = np.asarray(seq_lengths)
      lo, hi = int(values.min(initial=0)), int(values.max(initial=0))
      if lo < 0 or hi > num_steps:
        raise ValueError(f'`seq_lengths` must lie in [0, T] = [0, {num_steps}], got values in '
                         f'[{lo}, {hi}].')
    else:  # Traced: values cannot be checked here; keep them in range.
      seq_lengths = jnp.clip(seq_lengths, 0, num_steps)
    seq_lengths = seq_lengths.astype(jnp.int32)
  if resets is not None:
    resets = jnp.asarray(resets)
    expected = (num_steps, batch) if time_major else (batch, num_steps)
    if resets.shape != expected:
      bt_name = '[T, B]' if time_major else '[B, T]'
      raise ValueError(f'`resets` must have shape {bt_name} = {expected}, got {resets.shape}.')
    if resets.dtype != jnp.bool_ and not jnp.issubdtype(resets.dtype, jnp.integer):
      raise ValueError(f'`resets` must be bool (or 0/1 ints), got {resets.dtype}.')
    resets = resets.astype(jnp.bool_)
    if init_carry_fn is None:
      raise ValueError('`resets` needs `init_carry_fn` to make the fresh carries.')
  if implementation not in ('auto', 'fused', 'generic'):
    raise ValueError("`implementation` must be 'auto', 'fused' or 'generic', got "
                     f'{implementation!r}.')
  plan = None if implementation == 'generic' else fused_lib.plan(
      cell_fn, inputs, auto=implementation == 'auto')
  if implementation == 'fused' and plan is None:
    if isinstance(cell_fn, BoundCell) and cell_fn.cell.fused is not None:
      raise ValueError("implementation='fused' needs `inputs` as one float array [B, T, D] "
                       'matching the cell, got '
                       f'{[(str(jnp.result_type(l)), jnp.shape(l)) for l in leaves]}.')
    raise ValueError("implementation='fused' needs `cell_fn = cell.bind(params)` of an "
                     'initstate lstm, gru or stack of them; got a '
                     f'{type(cell_fn).__name__}.')
  if checkpoint_every is not None and (
      isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer))
      or checkpoint_every < 1):
    raise ValueError(f'`checkpoint_every` must be a positive int or None, got '
                     f'{checkpoint_every!r}.')
  return _Config(
      num_steps=num_steps, batch=batch, seq_lengths=seq_lengths, resets=resets,
      burn_in=int(burn_in), stop_gradient_burn_in=bool(stop_gradient_burn_in),
      reverse=bool(reverse), unroll=unroll, time_major=bool(time_major),
      return_carries=bool(return_carries), plan=plan,
      checkpoint_every=None if checkpoint_every is None else int(checkpoint_every))


def _check_carries(cell_fn: CellFn, inputs: Any, initial_carry: Carry,
                   init_carry_fn: InitCarryFn | None, reset_key: PRNGKey | None,
                   cfg: _Config) -> None:
  """The initial carry has batch dim B, one step keeps its type, resets make carries like it."""
  for leaf in jax.tree.leaves(initial_carry):
    if jnp.ndim(leaf) < 1 or leaf.shape[0] != cfg.batch:
      raise ValueError(f'carry leaves must have leading batch dim B = {cfg.batch} (from '
                       f'`inputs` {jax.tree.leaves(inputs)[0].shape}), got a leaf of shape '
                       f'{jnp.shape(leaf)}.')
  x_0 = jax.tree.map(lambda x: x[0] if cfg.time_major else x[:, 0], inputs)
  _check_step(cell_fn, initial_carry, x_0, inputs)
  if cfg.resets is not None and init_carry_fn is not None:
    _check_fresh_carry(init_carry_fn, reset_key, cfg.batch, initial_carry)


class _Frame(NamedTuple):
  """The processing frame: time-major, each sequence in the order it is processed.

  Attributes:
    timed: everything indexed by processing time, sliced together per segment and chunk:
      'xs' (inputs, leaves [T, B, ...], zeroed on padding), 'valid' ([T, B] bool, a prefix of
      each column), 'resets' ([T, B] bool or None) and 'steps' ([T] int, the step's position).
    lengths: int32 [B], valid steps per sequence.
    flip: [T, B] time index that undoes the reversal, or None.
  """
  timed: dict[str, Any]
  lengths: Array
  flip: Array | None


def _to_processing_frame(inputs: Any, cfg: _Config) -> _Frame:
  to_time_major = (lambda x: x) if cfg.time_major else (lambda x: jnp.swapaxes(x, 0, 1))
  xs = jax.tree.map(to_time_major, inputs)
  resets = None if cfg.resets is None else to_time_major(cfg.resets)
  lengths = (jnp.full((cfg.batch,), cfg.num_steps, jnp.int32) if cfg.seq_lengths is None
             else cfg.seq_lengths)
  flip = _time_flip_index(lengths, cfg.num_steps) if cfg.reverse else None
  if flip is not None:
    xs = jax.tree.map(lambda x: _take_time(x, flip), xs)
    if resets is not None:
      resets = _take_time(resets, flip)
  steps = jnp.arange(cfg.num_steps)
  valid = steps[:, None] < lengths[None, :]  # [T, B]; a prefix in the processing frame.
  if cfg.seq_lengths is not None:
    # Padding inputs are zeroed before they reach the cell. Their outputs and carries are
    # discarded with `jnp.where`, which keeps NaN/Inf out of the values, but not out of the
    # gradients: the discarded branch still gets a zero cotangent, and zero times a NaN local
    # derivative (sigmoid'(NaN) in the generic path; x^T @ da for w_i in the fused backward)
    # is NaN. So NaN or Inf padding would turn the weight gradients into NaN.
    xs = jax.tree.map(lambda x: jnp.where(
        jnp.reshape(valid, valid.shape + (1,) * (x.ndim - 2)), x, jnp.zeros_like(x)), xs)
  return _Frame(timed=dict(xs=xs, valid=valid, resets=resets, steps=steps), lengths=lengths,
                flip=flip)


def _generic_runner(cell_fn: CellFn, init_carry_fn: InitCarryFn | None,
                    reset_key: PRNGKey | None, cfg: _Config):
  """`(carry, segment) -> (carry, (ys, carries or None))`, one `cell_fn` call per step."""
  padded = cfg.seq_lengths is not None

  def step(carry, scanned):
    x_t, valid_t, reset_t, t = scanned
    held = carry
    if reset_t is not None and init_carry_fn is not None:
      key_t = None if reset_key is None else jax.random.fold_in(reset_key, t)
      carry = where_batch(reset_t, init_carry_fn(key_t, cfg.batch), carry)
    new_carry, y = cell_fn(carry, x_t)
    if padded:
      new_carry = where_batch(valid_t, new_carry, held)
      y = where_batch(valid_t, y, jax.tree.map(jnp.zeros_like, y))
    return new_carry, (y, new_carry if cfg.return_carries else None)

  def run(carry, seg):
    scanned = (seg['xs'], seg['valid'], seg['resets'], seg['steps'])
    return jax.lax.scan(step, carry, scanned, unroll=cfg.unroll)
  return run


def _fused_runner(cfg: _Config):
  """`(carry, segment) -> (carry, (ys, carries or None))` through the fused recurrence."""
  padded = cfg.seq_lengths is not None

  def run(carry, seg):
    final, hs, cs = fused_lib.run(
        cfg.plan, seg['xs'], carry, seg['valid'] if padded else None, seg['resets'],
        seg['reset_carries'], all_carries=cfg.return_carries)
    if padded:  # Outputs are zeros on padding; carries are held.
      hs = jnp.where(seg['valid'][:, :, None], hs, jnp.zeros_like(hs))
    return final, (hs, cs if cfg.return_carries else None)
  return run


def _run_chunked(run_segment, carry: Carry, seg: dict[str, Any], k: int):
  """`run_segment` over `seg` in chunks of k steps under `jax.checkpoint`: the backward pass
  keeps only the carries between chunks and recomputes each chunk's intermediates."""
  length = jax.tree.leaves(seg)[0].shape[0]
  full = length // k * k
  chunked = jax.tree.map(lambda a: jnp.reshape(a[:full], (full // k, k) + a.shape[1:]), seg)
  carry, outs = jax.lax.scan(jax.checkpoint(run_segment), carry, chunked)
  outs = jax.tree.map(lambda a: jnp.reshape(a, (full,) + a.shape[2:]), outs)
  if full < length:
    carry, rest = jax.checkpoint(run_segment)(carry, jax.tree.map(lambda a: a[full:], seg))
    outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), outs, rest)
  return carry, outs


def _run(run_segment, initial_carry: Carry, timed: dict[str, Any], cfg: _Config):
  """All steps in the processing frame: `(final_carry, ys [T, B, ...], carries or None)`."""

  def run(carry, start, stop):
    seg = jax.tree.map(lambda a: a[start:stop], timed)
    if cfg.checkpoint_every is None or stop - start <= cfg.checkpoint_every:
      return run_segment(carry, seg)
    return _run_chunked(run_segment, carry, seg, cfg.checkpoint_every)

  if cfg.burn_in > 0 and cfg.stop_gradient_burn_in:
    carry, (ys_burn, cs_burn) = run(initial_carry, 0, cfg.burn_in)
    carry, ys_burn, cs_burn = jax.lax.stop_gradient((carry, ys_burn, cs_burn))
    final_carry, (ys, cs) = run(carry, cfg.burn_in, cfg.num_steps)
    concat = lambda a, b: jnp.concatenate([a, b], axis=0)
    ys = jax.tree.map(concat, ys_burn, ys)
    cs = jax.tree.map(concat, cs_burn, cs) if cfg.return_carries else None
    return final_carry, ys, cs
  final_carry, (ys, cs) = run(initial_carry, 0, cfg.num_steps)
  return final_carry, ys, cs


def _from_processing_frame(ys: Any, cs: Carry | None, frame: _Frame, cfg: _Config):
  """Outputs, loss mask and carries back in the caller's order and layout."""
  mask = loss_mask(frame.lengths, cfg.num_steps, burn_in=cfg.burn_in, time_major=True)
  flip = frame.flip
  if flip is not None:
    ys, mask, cs = jax.tree.map(lambda y: _take_time(y, flip), (ys, mask, cs))
  if not cfg.time_major:
    ys, mask, cs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), (ys, mask, cs))
  return ys, mask, cs
