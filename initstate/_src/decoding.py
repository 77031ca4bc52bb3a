"""Sequence generation with a recurrent decoder: teacher forcing and free-running decoding.

A decoder is a step function over token ids,

  new_carry, logits = step_fn(carry, tokens)      # tokens int [B], logits [B, V]

for example an embedding (or one-hot) into a cell and a linear read-out to the vocabulary. Its
initial carry is where the conditioning enters: an encoder's final carry, a learned carry, or
zeros.

* Training (`teacher_forcing`): the decoder reads the ground truth shifted right by one,
  `[start, y_0, ..., y_{L-2}]`, and its logits at step t predict `y_t`.
* Generation (`decode`): the decoder reads its own previous choice. Step 0 reads `start_token`;
  the token chosen at step t (argmax, or a draw from softmax(logits / temperature)) is read at
  step t + 1. Each sequence stops on its own: once it has emitted `end_token`, its later steps
  are masked out, their tokens are `pad_token`, their logits zeros, and its carry is held.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initstate._src import checks
from initstate._src.scan import scan_rnn
from initstate._src.tree import where_batch
from initstate._src.types import Array, Carry, PRNGKey

StepFn = Callable[[Carry, Array], tuple[Carry, Array]]
METHODS = ('greedy', 'sample')


class TeacherForcingOutput(NamedTuple):
  """What `teacher_forcing` returns.

  Attributes:
    logits: [B, L, V]; `logits[:, t]` predicts `targets[:, t]`; zeros on padding steps.
    mask: [B, L] bool, True on the valid steps (t < lengths[b]).
    final_carry: the carry after each sequence's last valid step; leaves [B, ...].
  """
  logits: Array
  mask: Array
  final_carry: Carry


class DecodeOutput(NamedTuple):
  """What `decode` returns.

  Attributes:
    tokens: int32 [B, max_length], the generated tokens; `pad_token` after the end token.
    logits: [B, max_length, V], the logits each token was chosen from (before the
      temperature); zeros after the end token.
    mask: [B, max_length] bool, True up to and including the end token (all True for a
      sequence that never emits it).
    lengths: int32 [B], the number of True entries of `mask` per sequence.
    final_carry: each sequence's carry after its last unmasked step; leaves [B, ...].
  """
  tokens: Array
  logits: Array
  mask: Array
  lengths: Array
  final_carry: Carry


def _token(value: Any, name: str) -> Any:
  """Checks a scalar token id (Python int or integer scalar array); returns it as int32 [].

  Python ints become NumPy scalars, which stay concrete (and so range-checkable) under `jit`.
  """
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f'`{name}` must be an int token id, got {value!r}.')
  if isinstance(value, (int, np.integer)):
    if not np.iinfo(np.int32).min <= value <= np.iinfo(np.int32).max:
      raise ValueError(f'`{name}` = {value} does not fit in int32.')
    return np.int32(value)
  shape, dtype = jnp.shape(value), jnp.result_type(value)
  if shape != () or not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f'`{name}` must be an int token id (a Python int or an integer scalar), '
                     f'got {dtype} {shape}.')
  return jnp.asarray(value).astype(jnp.int32)


def _check_in_vocab(value: Array, name: str, vocab_size: int) -> None:
  """Raises if a concrete token id is outside [0, V); traced ids are not checked."""
  if checks.is_concrete(value):
    v = int(value)
    if not 0 <= v < vocab_size:
      raise ValueError(f'`{name}` = {v} is outside the vocabulary [0, V) = [0, {vocab_size}) '
                       'of the logits.')


def _check_logits(logits: Any, batch: int, fn: str) -> int:
  """Checks one step's logits are [B, V] floats; returns V."""
  shape, dtype = jnp.shape(logits), jnp.result_type(logits)
  if len(shape) != 2 or shape[0] != batch or shape[1] < 1:
    raise ValueError(f'{fn}: `step_fn` must return logits of shape [B, V] = ({batch}, V), got '
                     f'shape {shape}.')
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'{fn}: `step_fn` must return float logits, got {dtype}.')
  return shape[1]


def _check_targets(targets: Any, fn: str) -> Array:
  targets = jnp.asarray(targets)
  if targets.ndim != 2 or not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f'{fn}: `targets` must be an int array of shape [B, L], got '
                     f'{targets.dtype} {targets.shape}.')
  if targets.shape[1] < 1:
    raise ValueError(f'{fn}: `targets` has no time steps (shape {targets.shape}).')
  return targets


def shift_right(targets: Array, start_token: int | Array) -> Array:
  """The decoder's teacher-forced inputs: the start token, then `targets` without its last step.

  Args:
    targets: int [B, L], the tokens to predict.
    start_token: the token read at step 0 (a Python int or an integer scalar).

  Returns:
    int [B, L] of the dtype of `targets`: `[start, y_0, ..., y_{L-2}]` per row.
  """
  targets = _check_targets(targets, 'shift_right')
  start = _token(start_token, 'start_token').astype(targets.dtype)
  first = jnp.broadcast_to(start, (targets.shape[0], 1))
  return jnp.concatenate([first, targets[:, :-1]], axis=1)


def teacher_forcing(
    step_fn: StepFn,
    initial_carry: Carry,
    targets: Array,
    *,
    start_token: int | Array,
    lengths: Array | None = None,
) -> TeacherForcingOutput:
  """Runs the decoder over the ground truth shifted right (training with teacher forcing).

  Step t reads `shift_right(targets)[:, t]` (the start token at t = 0, else `targets[:, t-1]`),
  and its logits predict `targets[:, t]`: train on
  `masked_mean(softmax_cross_entropy(out.logits, targets), out.mask)`. Built on `scan_rnn`:
  steps t >= lengths[b] do not change the carry and their logits are zeros.

  Args:
    step_fn: `(carry, tokens int32 [B]) -> (carry, logits [B, V])`.
    initial_carry: the decoder's carry before step 0; leaves [B, ...].
    targets: int [B, L], the tokens to predict (padding after `lengths` may hold any value).
    start_token: the token read at step 0.
    lengths: int [B] in [0, L], the valid steps per sequence (e.g. with the end token
      counted); None for all L.

  Returns:
    `TeacherForcingOutput(logits [B, L, V], mask [B, L] bool, final_carry)`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> vocab, cell = 5, initstate.gru(8)
    >>> params = cell.init(jax.random.key(0), vocab)
    >>> readout = jax.random.normal(jax.random.key(1), (8, vocab))
    >>> def step_fn(carry, tokens):                    # tokens [B] -> logits [B, V]
    ...   carry, h = cell.apply(params, carry, jax.nn.one_hot(tokens, vocab))
    ...   return carry, h @ readout
    >>> targets = jnp.array([[3, 4, 1], [2, 1, 0]])      # token 1 ends a sequence
    >>> out = initstate.teacher_forcing(step_fn, jnp.zeros((2, 8)), targets, start_token=0,
    ...                                 lengths=jnp.array([3, 2]))
    >>> out.logits.shape, out.mask.tolist()
    ((2, 3, 5), [[True, True, True], [True, True, False]])
    >>> loss = initstate.masked_mean(
    ...     initstate.softmax_cross_entropy(out.logits, targets), out.mask)
  """
  targets = _check_targets(targets, 'teacher_forcing')
  start = _token(start_token, 'start_token')
  inputs = shift_right(targets, start).astype(jnp.int32)
  batch = targets.shape[0]

  def checked_step(carry, tokens):
    carry, logits = step_fn(carry, tokens)
    vocab_size = _check_logits(logits, batch, 'teacher_forcing')
    _check_in_vocab(start, 'start_token', vocab_size)
    return carry, logits

  out = scan_rnn(checked_step, inputs, initial_carry, seq_lengths=lengths)
  return TeacherForcingOutput(logits=out.outputs, mask=out.mask, final_carry=out.final_carry)


def _check_carry(new_carry: Carry, carry: Carry) -> None:
  """`step_fn` must return a carry of the structure, shapes and dtypes it was given."""
  new_def, old_def = jax.tree.structure(new_carry), jax.tree.structure(carry)
  if new_def != old_def:
    raise ValueError(f'decode: `step_fn` must return a carry with the structure of '
                     f'`initial_carry` ({old_def}), got {new_def}.')
  for new, old in zip(jax.tree.leaves(new_carry), jax.tree.leaves(carry)):
    if jnp.shape(new) != jnp.shape(old) or jnp.result_type(new) != jnp.result_type(old):
      raise ValueError(f'decode: `step_fn` changed a carry leaf from {jnp.result_type(old)} '
                       f'{jnp.shape(old)} to {jnp.result_type(new)} {jnp.shape(new)}; it must '
                       'keep shapes and dtypes.')


def decode(
    step_fn: StepFn,
    initial_carry: Carry,
    *,
    start_token: int | Array,
    max_length: int,
    end_token: int | Array,
    rng: PRNGKey | None = None,
    method: str = 'greedy',
    temperature: float | Array = 1.0,
    pad_token: int | Array | None = None,
) -> DecodeOutput:
  """Free-running decoding for `max_length` steps with `jax.lax.scan`, stopping per sequence.

  Step 0 reads `start_token`; step t + 1 reads the token chosen at step t: the argmax of the
  logits (`method='greedy'`), or a draw `jax.random.categorical(fold_in(rng, t),
  logits / temperature)` (`method='sample'`; rows are drawn independently). Once a sequence
  has emitted `end_token`, every later step is masked out: its token is `pad_token`, its
  logits are zeros, and its carry is held (the step's new carry is discarded), so
  `final_carry` is the carry after the step that emitted the end token. `step_fn` still runs
  on finished rows (the batch is computed together); they keep reading their last token, so
  `pad_token` never reaches `step_fn` and may lie outside the vocabulary.

  Under `jax.jit`, `max_length` and `method` must be static; the tokens may be Python ints
  (static) or traced integer scalars, `temperature` a Python float or a traced scalar (values
  that are traced are not range-checked).

  Args:
    step_fn: `(carry, tokens int32 [B]) -> (carry, logits [B, V])`; must return a carry of
      the same structure, shapes and dtypes.
    initial_carry: the decoder's carry before step 0; leaves [B, ...] (this gives B).
    start_token: the token read at step 0, in [0, V).
    max_length: the number of steps, a positive Python int.
    end_token: the token that ends a sequence, in [0, V).
    rng: a PRNG key, required for `method='sample'` (unused by greedy decoding).
    method: 'greedy' or 'sample'.
    temperature: > 0; the logits are divided by it before sampling (greedy ignores it).
    pad_token: the token written after the end; defaults to `end_token`.

  Returns:
    `DecodeOutput(tokens int32 [B, max_length], logits [B, max_length, V],
    mask bool [B, max_length], lengths int32 [B], final_carry)`.
  """
  # ---- Argument checks. ----
  if (isinstance(max_length, (bool, np.bool_)) or not isinstance(max_length, (int, np.integer))
      or max_length < 1):
    raise ValueError(f'`max_length` must be a positive Python int, got {max_length!r}.')
  max_length = int(max_length)
  if not isinstance(method, str) or method not in METHODS:
    raise ValueError(f'`method` must be one of {METHODS}, got {method!r}.')
  if method == 'sample' and rng is None:
    raise ValueError("`method='sample'` draws tokens and needs a PRNG key: pass `rng`.")
  checks.optional_prng_key(rng, 'rng')
  if checks.is_concrete(temperature):
    t = np.asarray(temperature)
    if t.shape != () or not np.issubdtype(t.dtype, np.number) or not (
        np.isfinite(t) and t > 0):
      raise ValueError(f'`temperature` must be a finite scalar > 0, got {temperature!r}.')
  elif jnp.shape(temperature) != ():
    raise ValueError(f'`temperature` must be a scalar, got shape {jnp.shape(temperature)}.')
  start = _token(start_token, 'start_token')
  end = _token(end_token, 'end_token')
  pad = end if pad_token is None else _token(pad_token, 'pad_token')

  leaves = jax.tree.leaves(initial_carry)
  if not leaves:
    raise ValueError('decode: `initial_carry` has no arrays.')
  initial_carry = jax.tree.map(jnp.asarray, initial_carry)
  leaves = jax.tree.leaves(initial_carry)
  if any(leaf.ndim < 1 for leaf in leaves) or len({leaf.shape[0] for leaf in leaves}) != 1:
    raise ValueError('decode: every `initial_carry` leaf must have the same leading batch dim '
                     f'B, got shapes {[leaf.shape for leaf in leaves]}.')
  batch = leaves[0].shape[0]

  # ---- The loop: (carry, token read next, done) over t = 0 .. max_length - 1. ----
  def step(state, t):
    carry, tokens_in, done = state
    new_carry, logits = step_fn(carry, tokens_in)
    vocab_size = _check_logits(logits, batch, 'decode')
    _check_carry(new_carry, carry)
    _check_in_vocab(start, 'start_token', vocab_size)
    _check_in_vocab(end, 'end_token', vocab_size)
    if method == 'greedy' or rng is None:  # rng is None only for greedy decoding (checked).
      chosen = jnp.argmax(logits, axis=-1)
    else:
      chosen = jax.random.categorical(jax.random.fold_in(rng, t), logits / temperature, axis=-1)
    chosen = chosen.astype(jnp.int32)
    active = jnp.logical_not(done)  # [B]: this step counts.
    tokens_out = jnp.where(active, chosen, pad)
    logits_out = jnp.where(active[:, None], logits, jnp.zeros_like(logits))
    carry = where_batch(active, new_carry, carry)
    tokens_next = jnp.where(active, chosen, tokens_in)
    done = done | (active & (chosen == end))
    return (carry, tokens_next, done), (tokens_out, logits_out, active)

  state = (initial_carry, jnp.broadcast_to(start, (batch,)), jnp.zeros((batch,), jnp.bool_))
  (final_carry, _, _), (tokens, logits, mask) = jax.lax.scan(
      step, state, jnp.arange(max_length))
  tokens, mask = tokens.T, mask.T
  logits = jnp.swapaxes(logits, 0, 1)
  lengths = jnp.sum(mask.astype(jnp.int32), axis=1)
  return DecodeOutput(tokens=tokens, logits=logits, mask=mask, lengths=lengths,
                      final_carry=final_carry)
