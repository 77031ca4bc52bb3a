"""Property tests for scan_rnn: masks, resets, burn-in and reverse equal separate plain scans.

For random batch sizes, lengths, reset masks, burn-ins and directions, `scan_rnn` (fused and
generic) must equal the definition in its module docstring: every sequence, split at its
resets (in processing order), is a run of plain `jax.lax.scan`s, each piece started from its
fresh carry, drawn with the documented keys; padding gives zero outputs and holds the carry,
and `mask` is valid & past the burn-in (in processing order).
"""

import functools

from absl.testing import absltest
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initstate

D = 2
MAX_T = 8
# Reproducible in CI (derandomize, no example database). Every example compiles afresh (its
# shapes and static options are new), so the random search is in the slow suite.
SETTINGS = hypothesis.settings(max_examples=20, deadline=None, derandomize=True, database=None,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
TOL = dict(atol=1e-5, rtol=1e-5)
CELLS = {'lstm': initstate.lstm, 'gru': initstate.gru, 'elman': initstate.elman}


@functools.lru_cache(maxsize=None)
def _cell(kind, hidden):
  return CELLS[kind](hidden)


def _random_params(kind, hidden, np_rng):
  """Random weights of the cell's shapes, from numpy (the property holds for any weights;
  `cell.init`, an orthogonal initializer run op by op, would compile for every new width)."""
  shapes = jax.eval_shape(lambda key: _cell(kind, hidden).init(key, D), jax.random.key(0))
  return jax.tree.map(lambda s: jnp.asarray(0.7 * np_rng.normal(size=s.shape), s.dtype), shapes)


@functools.lru_cache(maxsize=None)
def _plain_scan(kind, hidden):
  """The reference: an unmasked `jax.lax.scan` of one example, carry leaves [H], xs [MAX_T, D].

  Pieces are zero-padded on the right to MAX_T steps (one compilation per cell): the first n
  outputs and the n-th carry are those of the plain scan of the n-step piece.
  """
  cell = _cell(kind, hidden)

  def scan(params, carry, xs):
    def step(c, x):
      c, y = cell.apply(params, c, x)
      return c, (c, y)
    return jax.lax.scan(step, carry, xs)[1]

  return jax.jit(scan)


def _run_piece(kind, hidden, params, carry, xs):
  """Plain scan of the n-step piece xs [n, D] (numpy in and out: no per-shape compilation)."""
  n = xs.shape[0]
  carries, ys = _plain_scan(kind, hidden)(
      params, carry, np.concatenate([xs, np.zeros((MAX_T - n, D), xs.dtype)], axis=0))
  return jax.tree.map(lambda c: np.asarray(c[n - 1]), carries), np.asarray(ys)[:n]


@functools.lru_cache(maxsize=None)
def _carry_fn(noisy, batch):
  """The strategy's `init_carry`, jitted per batch size."""
  strategy = initstate.noisy_learned(0.5) if noisy else initstate.learned()
  return jax.jit(lambda carry_params, key: strategy.init_carry(carry_params, key, batch,
                                                               train=True))


@functools.lru_cache(maxsize=None)
def _runner(kind, hidden, burn_in, stop_gradient_burn_in, reverse, time_major,
            checkpoint_every, noisy):
  """The system under test, jitted (one compilation for both implementations); cached so that
  repeated shapes do not recompile. Returns {implementation: ScanOutput}."""
  cell = _cell(kind, hidden)
  strategy = initstate.noisy_learned(0.5) if noisy else initstate.learned()
  implementations = ('generic',) if kind == 'elman' else ('fused', 'generic')

  @jax.jit
  def run(params, carry_params, x, lengths, resets, rng):
    init_fn = lambda k, b: strategy.init_carry(carry_params, k, b, train=True)
    results = {}
    for implementation in implementations:
      out = initstate.scan_rnn(
          cell.bind(params), jnp.swapaxes(x, 0, 1) if time_major else x,
          init_carry_fn=init_fn, rng=rng, seq_lengths=lengths,
          resets=None if resets is None else (resets.T if time_major else resets),
          burn_in=burn_in, stop_gradient_burn_in=stop_gradient_burn_in, reverse=reverse,
          time_major=time_major, implementation=implementation,
          checkpoint_every=checkpoint_every)
      if time_major:
        out = out._replace(outputs=jnp.swapaxes(out.outputs, 0, 1), mask=out.mask.T)
      results[implementation] = out
    return results

  return run


def _row(tree, b):
  return jax.tree.map(lambda a: a[b], tree)


@st.composite
def cases(draw, kinds):
  batch = draw(st.integers(1, 4))
  steps = draw(st.integers(1, MAX_T))
  bools = st.lists(st.booleans(), min_size=steps, max_size=steps)
  return dict(
      kind=draw(st.sampled_from(kinds)),  # Listed with weights: the LSTM and GRU run both paths.
      hidden=draw(st.sampled_from([1, 3, 4])),
      batch=batch,
      steps=steps,
      # Mostly given (None is the unmasked special case).
      lengths=(draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch))
               if draw(st.sampled_from([True, True, True, False])) else None),
      resets=(np.array(draw(st.lists(bools, min_size=batch, max_size=batch)), bool)
              if draw(st.sampled_from([True, True, False])) else None),
      burn_in=draw(st.integers(0, steps - 1)),
      stop_gradient_burn_in=draw(st.booleans()),
      reverse=draw(st.booleans()),
      time_major=draw(st.booleans()),
      checkpoint_every=draw(st.sampled_from([None, 1, 2, 3])),
      noisy=draw(st.booleans()),
      seed=draw(st.integers(0, 2**16)),
  )


def _expected(case, params, carry_params, rng, x):
  """What the module docstring says `scan_rnn` returns, built from plain scans of the pieces."""
  cell = _cell(case['kind'], case['hidden'])
  batch, steps = case['batch'], case['steps']
  lengths = case['lengths'] or [steps] * batch
  init_key, reset_key = jax.random.split(rng) if rng is not None else (None, None)
  init_fn = lambda key: jax.tree.map(np.asarray, _carry_fn(case['noisy'], batch)(
      carry_params, key))
  initial = init_fn(init_key)
  # A reset before processing step p draws a fresh carry for the whole batch with the key
  # fold_in(reset_key, p) (p counts in processing order) and replaces row b's carry.
  fresh = lambda p: init_fn(None if reset_key is None else jax.random.fold_in(reset_key, p))
  outputs = np.zeros((batch, steps, cell.output_size), np.float32)
  mask = np.zeros((batch, steps), bool)
  finals = []
  for b in range(batch):
    n = lengths[b]
    order = list(range(n))[::-1] if case['reverse'] else list(range(n))  # original positions
    starts = [p for p in range(n) if case['resets'] is not None and case['resets'][b, order[p]]]
    bounds = sorted(set([0] + starts)) + [n]
    carry = _row(initial, b)
    for s, e in zip(bounds[:-1], bounds[1:]):
      if s in starts:
        carry = _row(fresh(s), b)
      if e > s:
        carry, ys = _run_piece(case['kind'], case['hidden'], params, carry, x[b, order[s:e]])
        outputs[b, order[s:e]] = ys
    for p, t in enumerate(order):
      mask[b, t] = p >= case['burn_in']
    finals.append(carry)
  return jax.tree.map(lambda *leaves: np.stack(leaves), *finals), outputs, mask


# Explicit cases, run in the fast suite; the random search below is marked slow.
EXAMPLES = (
    dict(  # Everything at once, and the reset keys of a reversed noisy run.
        kind='lstm', hidden=3, batch=4, steps=7, lengths=[7, 5, 1, 0],
        resets=np.array([[0, 1, 0, 0, 1, 0, 1], [1, 0, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0, 0, 0]], bool),
        burn_in=2, stop_gradient_burn_in=True, reverse=True, time_major=True,
        checkpoint_every=3, noisy=True, seed=7),
    dict(  # No masks at all.
        kind='gru', hidden=4, batch=2, steps=5, lengths=None, resets=None, burn_in=0,
        stop_gradient_burn_in=False, reverse=True, time_major=False, checkpoint_every=None,
        noisy=True, seed=3),
)


class MaskedScanEqualsPiecesTest(absltest.TestCase):
  """Both implementations (fused for the LSTM and GRU) against the docstring's definition."""

  def _check(self, case):
    cell = _cell(case['kind'], case['hidden'])
    # Data from numpy (jax.random would compile for every new shape).
    np_rng = np.random.default_rng(case['seed'])
    params = _random_params(case['kind'], case['hidden'], np_rng)
    strategy = initstate.noisy_learned(0.5) if case['noisy'] else initstate.learned()
    # Non-zero learned values, so that a reset to the fresh carry is visible.
    carry_params = jax.tree.map(lambda p: jnp.asarray(np_rng.normal(size=p.shape), p.dtype),
                                strategy.init(None, cell.carry_template))
    rng = jax.random.key(case['seed'] + 1) if case['noisy'] else None
    x = np_rng.normal(size=(case['batch'], case['steps'], D)).astype(np.float32)
    lengths = None if case['lengths'] is None else np.asarray(case['lengths'], np.int32)
    run = _runner(case['kind'], case['hidden'], case['burn_in'], case['stop_gradient_burn_in'],
                  case['reverse'], case['time_major'], case['checkpoint_every'], case['noisy'])
    results = run(params, carry_params, x, lengths, case['resets'], rng)
    self.assertEqual(set(results),
                     {'generic'} if case['kind'] == 'elman' else {'fused', 'generic'})
    final, outputs, mask = _expected(case, params, carry_params, rng, x)
    n = np.asarray(case['lengths'] or [case['steps']] * case['batch'])[:, None]
    t = np.arange(case['steps'])[None, :]
    # The docstring's formula: mask = valid & (position >= burn_in), the position counted in
    # processing order (with reverse, the burn-in is the last N valid steps).
    position = n - 1 - t if case['reverse'] else t
    np.testing.assert_array_equal(mask, (t < n) & (position >= case['burn_in']))
    for implementation, out in results.items():
      np.testing.assert_array_equal(out.mask, mask, err_msg=implementation)
      np.testing.assert_allclose(out.outputs, outputs, err_msg=implementation, **TOL)
      chex.assert_trees_all_close(out.final_carry, final, **TOL)
      chex.assert_trees_all_equal_shapes_and_dtypes(out.final_carry, final)
      # Padding outputs are exact zeros (not merely close).
      np.testing.assert_array_equal(np.asarray(out.outputs)[t >= n], 0.0, err_msg=implementation)

  def test_explicit_examples(self):
    for case in EXAMPLES:
      with self.subTest(kind=case['kind']):
        self._check(case)

  @pytest.mark.slow   # Every example compiles afresh.
  @hypothesis.given(cases(kinds=['lstm', 'gru', 'lstm', 'gru', 'elman']))
  @SETTINGS
  def test_fused_and_generic_equal_separate_pieces(self, case):
    self._check(case)


if __name__ == '__main__':
  absltest.main()
