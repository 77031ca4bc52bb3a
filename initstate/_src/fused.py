"""A fused recurrence for the built-in LSTM and GRU cells (and stacks of them).

`scan_rnn` can use it when the cell function is `cell.bind(params)` of a cell whose `fused`
field names a fused recurrence (`initstate.lstm`, `initstate.gru`, or a `stack` of them), and
the inputs are one array:
automatically (`implementation='auto'`) for LSTMs of at least `AUTO_MIN_HIDDEN` units, where
it measured faster, and on request (`'fused'`) otherwise. The maths are the cells' own; what
changes is how the work is laid out (the cuDNN recipe):

* the input projection runs inside the loop as one matmul per step (hoisting all T steps
  into one [T*B, D] @ [D, G*H] matmul before the loop measured slower on CPU: one more
  [T, B, G*H] buffer, and a gate fusion reading slices of it; see benchmarks/README.md);
* only what the backward pass cannot cheaply rebuild is saved (the LSTM's four gate
  activations, the GRU's r, z, n and h_n; the carries going into each step are the outputs
  shifted by one);
* a `jax.custom_vjp` whose backward loop carries only the state gradient (dh, dc) through time
  and emits the gate gradients [T, B, G*H]; the weight gradients are then a few large matmuls
  after the loop, instead of a [H, G*H] accumulation at every step;
* a stack runs layer by layer over the whole sequence.

Padding (`valid`), resets (fresh carries given per step) and held carries follow `scan_rnn`'s
semantics exactly; tests compare outputs and gradients with the generic path. The custom VJP
supports reverse-mode differentiation (grad, vjp) and vmap; forward-mode (jvp, jacfwd) needs
`implementation='generic'`.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

from initstate._src.cells import BoundCell, lstm_bias
from initstate._src.types import Array

# `implementation='auto'` fuses only layers at least this wide: below it the per-step overhead
# of the custom backward loop outweighs its savings (measured: H=8 1.18x slower than the
# generic path, H=32 0.82x, H=64 0.75x, H=256 0.90x for a training step; benchmarks/).
AUTO_MIN_HIDDEN = 32
# ... and only these kinds: the fused GRU measured 1.14x slower than the generic path for a
# training step at the standard size (benchmarks/README.md), so it is opt-in ('fused').
AUTO_KINDS = frozenset({'lstm'})


def plan(cell_fn: Any, inputs: Any, auto: bool = False
         ) -> tuple[tuple[Any, ...], tuple[str, ...], bool] | None:
  """(per-layer params, per-layer kinds, is_stack) when `cell_fn` can be fused, else None.

  `cell_fn` qualifies when it is a `BoundCell` whose cell has a `fused` kind and `inputs` is
  one float array [B, T, D] of the cell's input size. With `auto`, only cells whose every
  layer is in `AUTO_KINDS` and at least `AUTO_MIN_HIDDEN` units wide qualify (where the fused
  path measured faster).
  """
  if not isinstance(cell_fn, BoundCell) or cell_fn.cell.fused is None:
    return None
  if not hasattr(inputs, 'shape') or jnp.ndim(inputs) != 3:
    return None
  if not jnp.issubdtype(jnp.result_type(inputs), jnp.floating):
    return None
  kind, params = cell_fn.cell.fused, cell_fn.params
  if isinstance(kind, tuple):
    if not isinstance(params, tuple) or len(params) != len(kind):
      return None
    layers, kinds, is_stack = params, kind, True
  else:
    layers, kinds, is_stack = (params,), (kind,), False
  if not all(isinstance(p, dict) and 'w_i' in p and 'w_h' in p for p in layers):
    return None
  if inputs.shape[-1] != layers[0]['w_i'].shape[0]:
    return None  # The generic path raises the cell's own clear error.
  if auto and any(k not in AUTO_KINDS or p['w_h'].shape[0] < AUTO_MIN_HIDDEN
                  for k, p in zip(kinds, layers)):
    return None
  return layers, kinds, is_stack


def _where(mask: Array, a: Array, b: Array) -> Array:
  """mask [B] selects a over b for leaves [B, H]."""
  return jnp.where(mask[:, None], a, b)


def _cast_like(cotangents: Any, primals: Any) -> Any:
  """Each cotangent in its primal's dtype.

  With mixed dtypes (say float32 weights and bfloat16 inputs or carries) the backward matmuls
  promote, and a custom VJP passes whatever dtype it returns straight to `jax.grad`: a bfloat16
  input got a float32 gradient, unlike the generic path (and `x - lr * g` then promotes).
  """
  return jax.tree.map(lambda g, p: None if g is None else g.astype(p.dtype), cotangents, primals)


def _weight_grads(das: Array, inputs: Array) -> Array:
  """sum_t inputs[t]^T @ das[t]: [T, B, N], [T, B, M] -> [N, M], as one matmul."""
  t, batch = das.shape[:2]
  return jnp.matmul(jnp.reshape(inputs, (t * batch, -1)).T, jnp.reshape(das, (t * batch, -1)))


# ---------------------------------------------------------------------------------------------
# LSTM: gates (i, f, g, o); c' = s(f) c + s(i) tanh(g); h' = s(o) tanh(c').


def _shift_in(first: Array, seq: Array, reset: Array | None, reset_seq: Array | None) -> Array:
  """The carry going into every step: [first, seq[:-1]], replaced by reset_seq where reset."""
  prev = jnp.concatenate([first[None], seq[:-1]], axis=0)
  if reset is None or reset_seq is None:
    return prev
  return jnp.where(reset[:, :, None], reset_seq, prev)


@functools.cache
def _lstm_op(has_valid: bool, has_reset: bool, all_carries: bool = True):
  """A custom-VJP LSTM over [T, B, D], specialised on whether masks and resets are present.

  Returns (hs [T, B, H], cs [T, B, H]) if `all_carries`, else (hs, the final c [B, H]).

  The forward loop computes x_t @ w_i + h @ w_h per step (hoisting the input projection out of
  the loop measured slower at the standard size: one more [T, B, 4H] buffer) and keeps only
  the four gate activations for the backward pass; the carries going into each step are the
  outputs shifted by one (or the reset carries), and tanh(c') is recomputed.
  """

  def forward(params, xs, h0, c0, valid, reset, reset_h, reset_c, save) -> Any:
    w_i, w_h = params['w_i'], params['w_h']
    b = jnp.reshape(params['b'], (1, -1))
    hidden = w_h.shape[0]

    def step(carry, inp):
      h, c = carry
      x, v, r, rh, rc = inp
      if has_reset:
        h, c = _where(r, rh, h), _where(r, rc, c)
      a = jnp.matmul(x, w_i) + jnp.matmul(h, w_h) + b
      i = jax.nn.sigmoid(a[:, :hidden])
      f = jax.nn.sigmoid(a[:, hidden:2 * hidden])
      g = jnp.tanh(a[:, 2 * hidden:3 * hidden])
      o = jax.nn.sigmoid(a[:, 3 * hidden:])
      new_c = f * c + i * g
      new_h = o * jnp.tanh(new_c)
      if has_valid:
        new_h, new_c = _where(v, new_h, h), _where(v, new_c, c)
      saved = (i, f, g, o) if save else ()
      return (new_h, new_c), (new_h, new_c) + saved

    _, out = jax.lax.scan(step, (h0, c0), (xs, valid, reset, reset_h, reset_c))
    return out

  @jax.custom_vjp
  def run(params, xs, h0, c0, valid, reset, reset_h, reset_c):
    hs, cs = forward(params, xs, h0, c0, valid, reset, reset_h, reset_c, save=False)
    return hs, (cs if all_carries else cs[-1])

  def run_fwd(params, xs, h0, c0, valid, reset, reset_h, reset_c):
    hs, cs, *gates = forward(params, xs, h0, c0, valid, reset, reset_h, reset_c, save=True)
    return ((hs, cs if all_carries else cs[-1]),
            (params, xs, h0, c0, hs, cs, valid, reset, reset_h, reset_c, gates))

  def run_bwd(res, cotangents):
    params, xs, h0, c0, hs, cs, valid, reset, reset_h, reset_c, (i, f, g, o) = res
    dhs, dcs = cotangents
    if not all_carries:  # Only the final c was an output.
      dcs = jnp.zeros_like(cs).at[-1].set(dcs)
    w_h_t = params['w_h'].T
    c_in = _shift_in(c0, cs, reset, reset_c)   # [T, B, H]: the cell state going into step t

    def step(carry, inp):
      dh, dc = carry
      dh_out, dc_out, i, f, g, o, c_in, v, r = inp
      dh = dh + dh_out
      dc = dc + dc_out
      new_c = f * c_in + i * g        # recomputed (the held value differs on padding)
      tc = jnp.tanh(new_c)
      dnew_c = dc + dh * o * (1.0 - tc * tc)
      da = jnp.concatenate([
          dnew_c * g * i * (1.0 - i),
          dnew_c * c_in * f * (1.0 - f),
          dnew_c * i * (1.0 - g * g),
          dh * tc * o * (1.0 - o),
      ], axis=-1)
      dc_in = dnew_c * f
      if has_valid:
        da = _where(v, da, jnp.zeros_like(da))
      dh_in = jnp.matmul(da, w_h_t)
      if has_valid:
        dh_in, dc_in = _where(v, dh_in, dh), _where(v, dc_in, dc)
      drh = drc = None
      if has_reset:
        zeros = jnp.zeros_like(dh_in)
        drh, drc = _where(r, dh_in, zeros), _where(r, dc_in, zeros)
        dh_in, dc_in = _where(r, zeros, dh_in), _where(r, zeros, dc_in)
      return (dh_in, dc_in), (da, drh, drc)

    zeros = jnp.zeros_like(dhs[0])
    (dh0, dc0), (das, drh, drc) = jax.lax.scan(
        step, (zeros, zeros), (dhs, dcs, i, f, g, o, c_in, valid, reset), reverse=True)
    t, batch, d = xs.shape
    flat_da = jnp.reshape(das, (t * batch, -1))
    h_in = _shift_in(h0, hs, reset, reset_h)
    grads = {'w_i': _weight_grads(das, xs), 'w_h': _weight_grads(das, h_in),
             'b': jnp.sum(flat_da, axis=0)}
    dxs = jnp.reshape(jnp.matmul(flat_da, params['w_i'].T), (t, batch, d))
    return _cast_like((grads, dxs, dh0, dc0, None, None, drh, drc),
                      (params, xs, h0, c0, None, None, reset_h, reset_c))

  run.defvjp(run_fwd, run_bwd)
  return run


# ---------------------------------------------------------------------------------------------
# GRU: r = s(x_r + h_r), z = s(x_z + h_z), n = tanh(x_n + r h_n), h' = (1 - z) n + z h,
# with x_* = x w_i* + b_i*, h_* = h w_h* + b_h*.


@functools.cache
def _gru_op(has_valid: bool, has_reset: bool):
  """A custom-VJP GRU over [T, B, D], specialised on whether masks and resets are present.

  As the LSTM: projections inside the loop; saved for the backward pass are r, z, n and the
  hidden-side candidate term h_n; the carry going into each step is the shifted output.
  """

  def forward(params, xs, h0, valid, reset, reset_h, save) -> Any:
    w_i, w_h = params['w_i'], params['w_h']
    b_i = jnp.reshape(params['b_i'], (1, -1))
    b_h = jnp.reshape(params['b_h'], (1, -1))
    hidden = w_h.shape[0]

    def step(h, inp):
      x, v, r_t, rh = inp
      if has_reset:
        h = _where(r_t, rh, h)
      xi = jnp.matmul(x, w_i) + b_i
      hh = jnp.matmul(h, w_h) + b_h
      hn = hh[:, 2 * hidden:]
      r = jax.nn.sigmoid(xi[:, :hidden] + hh[:, :hidden])
      z = jax.nn.sigmoid(xi[:, hidden:2 * hidden] + hh[:, hidden:2 * hidden])
      n = jnp.tanh(xi[:, 2 * hidden:] + r * hn)
      new_h = (1.0 - z) * n + z * h
      if has_valid:
        new_h = _where(v, new_h, h)
      saved = (r, z, n, hn) if save else ()
      return new_h, (new_h,) + saved

    _, out = jax.lax.scan(step, h0, (xs, valid, reset, reset_h))
    return out

  @jax.custom_vjp
  def run(params, xs, h0, valid, reset, reset_h):
    (hs,) = forward(params, xs, h0, valid, reset, reset_h, save=False)
    return hs

  def run_fwd(params, xs, h0, valid, reset, reset_h):
    hs, *saved = forward(params, xs, h0, valid, reset, reset_h, save=True)
    return hs, (params, xs, h0, hs, valid, reset, reset_h, saved)

  def run_bwd(res, dhs):
    params, xs, h0, hs, valid, reset, reset_h, (r, z, n, hn) = res
    w_h_t = params['w_h'].T
    h_in = _shift_in(h0, hs, reset, reset_h)   # [T, B, H]: the carry going into step t

    def step(dh, inp):
      dh_out, r, z, n, hn, h_in, v, r_t = inp
      dh = dh + dh_out
      dn = dh * (1.0 - z)
      dan = dn * (1.0 - n * n)
      dar = dan * hn * r * (1.0 - r)
      daz = dh * (h_in - n) * z * (1.0 - z)
      dx = jnp.concatenate([dar, daz, dan], axis=-1)          # input-side gate grads
      dhh = jnp.concatenate([dar, daz, dan * r], axis=-1)     # hidden-side gate grads
      if has_valid:
        dx = _where(v, dx, jnp.zeros_like(dx))
        dhh = _where(v, dhh, jnp.zeros_like(dhh))
      dh_in = dh * z + jnp.matmul(dhh, w_h_t)
      if has_valid:
        dh_in = _where(v, dh_in, dh)
      drh = None
      if has_reset:
        zeros = jnp.zeros_like(dh_in)
        drh = _where(r_t, dh_in, zeros)
        dh_in = _where(r_t, zeros, dh_in)
      return dh_in, (dx, dhh, drh)

    (dh0, (dxg, dhh, drh)) = jax.lax.scan(
        step, jnp.zeros_like(dhs[0]), (dhs, r, z, n, hn, h_in, valid, reset), reverse=True)
    t, batch, d = xs.shape
    flat_dx = jnp.reshape(dxg, (t * batch, -1))
    grads = {'w_i': _weight_grads(dxg, xs), 'w_h': _weight_grads(dhh, h_in),
             'b_i': jnp.sum(flat_dx, axis=0),
             'b_h': jnp.sum(jnp.reshape(dhh, (t * batch, -1)), axis=0)}
    dxs = jnp.reshape(jnp.matmul(flat_dx, params['w_i'].T), (t, batch, d))
    return _cast_like((grads, dxs, dh0, None, None, drh), (params, xs, h0, None, None, reset_h))

  run.defvjp(run_fwd, run_bwd)
  return run


# ---------------------------------------------------------------------------------------------


def _layer(kind: str, params: Any, xs: Array, carry: Any, valid: Array | None,
           reset: Array | None, reset_carry: Any, all_carries: bool) -> tuple[Any, Array, Any]:
  """One layer: (final carry, ys [T, B, H] held, carries [T, B, H] held or None)."""
  has_valid, has_reset = valid is not None, reset is not None
  if kind == 'lstm':
    if 'b' not in params:  # Two separate biases (PyTorch's layout): their sum, outside the VJP.
      params = {'w_i': params['w_i'], 'w_h': params['w_h'], 'b': lstm_bias(params)}
    rh, rc = (reset_carry.h, reset_carry.c) if has_reset else (None, None)
    hs, cs = _lstm_op(has_valid, has_reset, all_carries)(params, xs, carry.h, carry.c, valid,
                                                         reset, rh, rc)
    if not all_carries:
      return carry._replace(h=hs[-1], c=cs), hs, None
    return carry._replace(h=hs[-1], c=cs[-1]), hs, carry._replace(h=hs, c=cs)
  hs = _gru_op(has_valid, has_reset)(params, xs, carry, valid, reset,
                                     reset_carry if has_reset else None)
  return hs[-1], hs, hs


def run(plan_: tuple[Any, tuple[str, ...], bool], xs: Array, carry: Any, valid: Array | None,
        reset: Array | None, reset_carries: Any,
        all_carries: bool = True) -> tuple[Any, Array, Any]:
  """Runs a planned cell over time-major inputs.

  Args:
    plan_: from `plan`.
    xs: [T, B, D].
    carry: the initial carry (the cell's structure, leaves [B, H]).
    valid: bool [T, B] or None; invalid steps hold the carry.
    reset: bool [T, B] or None; where True the carry is replaced, before the step, by
      `reset_carries` (the cell's structure, leaves [T, B, H]).

    all_carries: also return the carries after every step (else None in their place).

  Returns:
    (final carry, outputs [T, B, H] (the last layer's h, held on invalid steps), carries
    after every step (the cell's structure, leaves [T, B, H]) or None).
  """
  params, kinds, is_stack = plan_
  if valid is not None and reset is not None:
    reset = reset & valid  # A reset on a padding step has no effect: the carry is held.
  layers_carry = carry if is_stack else (carry,)
  layers_reset = (reset_carries if is_stack else (reset_carries,)) if reset is not None else (
      (None,) * len(kinds))
  finals, all_carries_ = [], []
  for kind, p, c, rc in zip(kinds, params, layers_carry, layers_reset):
    final, xs, carries = _layer(kind, p, xs, c, valid, reset, rc, all_carries)
    finals.append(final)
    all_carries_.append(carries)
  if not all_carries:
    return (tuple(finals) if is_stack else finals[0]), xs, None
  if is_stack:
    return tuple(finals), xs, tuple(all_carries_)
  return finals[0], xs, all_carries_[0]
