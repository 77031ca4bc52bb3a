"""Tests for scan_rnn: lengths, resets, burn-in, reverse, unroll, carries, errors, gradients."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import initstate

B, T, D, H = 3, 7, 2, 4


def _setup(cell=None, seed=0):
  cell = cell or initstate.lstm(H)
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = cell.init(k1, D)
  x = jax.random.normal(k2, (B, T, D))
  return cell, params, x


def _learned_params(template, seed=1):
  params = initstate.learned().init(None, template)
  keys = jax.random.split(jax.random.fold_in(jax.random.key(0), seed),
                          len(jax.tree.leaves(params)))
  leaves = [jax.random.normal(k, p.shape) for k, p in zip(keys, jax.tree.leaves(params))]
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


def _loop(cell, params, carry, x_seq):
  """Reference: a Python loop over [T, ...] steps of one example (carry leaves unbatched)."""
  outputs = []
  for t in range(x_seq.shape[0]):
    carry, y = cell.apply(params, carry, x_seq[t])
    outputs.append(y)
  out = jnp.stack(outputs) if outputs else jnp.zeros((0, cell.output_size))
  return carry, out


def _row(tree, b):
  return jax.tree.map(lambda a: a[b], tree)


class BasicTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('lstm', initstate.lstm(H)), ('gru', initstate.gru(H)), ('elman', initstate.elman(H)),
      ('stack', initstate.stack([initstate.lstm(H), initstate.gru(3)])),
      ('flax_lstm', initstate.from_flax(nn.OptimizedLSTMCell(H))))
  def test_matches_python_loop(self, cell):
    cell, params, x = _setup(cell)
    carry0 = _learned_params(cell.carry_template)
    init_fn = lambda k, b: initstate.learned().init_carry(carry0, k, b, train=True)
    out = self.variant(lambda p, x: initstate.scan_rnn(
        cell.bind(p), x, init_carry_fn=init_fn))(params, x)
    self.assertEqual(out.outputs.shape, (B, T, cell.output_size))
    self.assertTrue(bool(jnp.all(out.mask)))
    self.assertIsNone(out.carries)
    for b in range(B):
      final, ys = _loop(cell, params, carry0, x[b])
      np.testing.assert_allclose(out.outputs[b], ys, atol=1e-6)
      chex.assert_trees_all_close(_row(out.final_carry, b), final, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_time_major_and_unroll_agree(self):
    cell, params, x = _setup()
    carry = initstate.zeros().init_carry(initstate.zeros().init(None, cell.carry_template),
                                         None, B, train=False)
    lengths = jnp.array([7, 3, 0])
    fn = cell.bind(params)
    ref = initstate.scan_rnn(fn, x, carry, seq_lengths=lengths)
    tm = self.variant(lambda x: initstate.scan_rnn(
        fn, x, carry, seq_lengths=lengths, time_major=True))(jnp.swapaxes(x, 0, 1))
    un = self.variant(lambda x: initstate.scan_rnn(
        fn, x, carry, seq_lengths=lengths, unroll=3))(x)
    np.testing.assert_allclose(jnp.swapaxes(tm.outputs, 0, 1), ref.outputs, atol=1e-6)
    np.testing.assert_array_equal(tm.mask.T, ref.mask)
    np.testing.assert_allclose(un.outputs, ref.outputs, atol=1e-6)
    chex.assert_trees_all_close(tm.final_carry, ref.final_carry, atol=1e-6)
    chex.assert_trees_all_close(un.final_carry, ref.final_carry, atol=1e-6)

  def test_vmap_over_a_sweep_of_learned_carries(self):
    cell, params, x = _setup()
    sweep = jax.vmap(lambda k: _learned_params(cell.carry_template, k))(jnp.arange(3))

    def run(carry_params):
      init_fn = lambda k, b: initstate.learned().init_carry(carry_params, k, b, train=True)
      return initstate.scan_rnn(cell.bind(params), x,
                                init_carry_fn=init_fn, burn_in=2).outputs

    batched = jax.jit(jax.vmap(run))(sweep)
    for i in range(3):
      np.testing.assert_allclose(batched[i], run(_row(sweep, i)), atol=1e-6)

  def test_pytree_inputs(self):
    cell, params, x = _setup()
    fn = lambda c, xs: cell.apply(params, c, xs['a'] + xs['b'])
    carry = initstate.zeros().init_carry(initstate.zeros().init(None, cell.carry_template),
                                         None, B, train=False)
    out = initstate.scan_rnn(fn, {'a': x, 'b': 2 * x}, carry)
    ref = initstate.scan_rnn(cell.bind(params), 3 * x, carry)
    np.testing.assert_allclose(out.outputs, ref.outputs, atol=1e-6)


class LengthsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_padding_matches_unpadded_runs(self):
    cell, params, x = _setup()
    carry0 = _learned_params(cell.carry_template)
    init_fn = lambda k, b: initstate.learned().init_carry(carry0, k, b, train=True)
    lengths = jnp.array([T, 4, 0])
    # Garbage (NaN) in the padding must not reach outputs or carries.
    x = x.at[1, 4:].set(jnp.nan).at[2].set(jnp.nan)
    out = self.variant(lambda p, x, l: initstate.scan_rnn(
        cell.bind(p), x, init_carry_fn=init_fn, seq_lengths=l,
        return_carries=True))(params, x, lengths)
    for b, length in enumerate([T, 4, 0]):
      final, ys = _loop(cell, params, carry0, x[b, :length])
      np.testing.assert_allclose(out.outputs[b, :length], ys, atol=1e-6)
      np.testing.assert_array_equal(out.outputs[b, length:], 0.0)
      np.testing.assert_array_equal(out.mask[b], np.arange(T) < length)
      chex.assert_trees_all_close(_row(out.final_carry, b), final, atol=1e-6)
      # The carry is held on padding steps.
      for t in range(length, T):
        chex.assert_trees_all_close(_row(_row(out.carries, b), t), final, atol=1e-6)

  def test_out_of_range_lengths(self):
    cell, params, x = _setup()
    fn = cell.bind(params)
    init_fn = lambda k, b: initstate.zeros().init_carry(
        initstate.zeros().init(None, cell.carry_template), k, b, train=False)
    with self.assertRaisesRegex(ValueError, r'seq_lengths.*\[0, T\] = \[0, 7\]'):
      initstate.scan_rnn(fn, x, init_carry_fn=init_fn, seq_lengths=jnp.array([8, 1, 1]))
    with self.assertRaisesRegex(ValueError, r'seq_lengths.*\[0, T\]'):
      initstate.scan_rnn(fn, x, init_carry_fn=init_fn, seq_lengths=jnp.array([-1, 1, 1]))
    with self.assertRaisesRegex(ValueError, r'seq_lengths.*shape \[B\] = \(3,\)'):
      initstate.scan_rnn(fn, x, init_carry_fn=init_fn, seq_lengths=jnp.array([1, 1]))
    with self.assertRaisesRegex(ValueError, 'int array'):
      initstate.scan_rnn(fn, x, init_carry_fn=init_fn, seq_lengths=jnp.array([1., 1., 1.]))


class ResetsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_resets_match_separate_segments_learned(self):
    cell, params, x = _setup(initstate.gru(H))
    carry0 = _learned_params(cell.carry_template)
    strategy = initstate.learned()
    init_fn = lambda k, b: strategy.init_carry(carry0, k, b, train=True)
    resets = np.zeros((B, T), bool)
    resets[0, 3] = resets[0, 5] = True   # Segments [0, 3), [3, 5), [5, 7).
    resets[1, 0] = True                  # A reset at step 0 is a no-op here.
    resets[2, 6] = True
    out = self.variant(lambda p, x, r: initstate.scan_rnn(
        cell.bind(p), x, init_carry_fn=init_fn, resets=r))(
            params, x, jnp.asarray(resets))
    for b in range(B):
      starts = sorted(set([0] + list(np.nonzero(resets[b])[0])))
      ends = starts[1:] + [T]
      for s, e in zip(starts, ends):
        final, ys = _loop(cell, params, carry0, x[b, s:e])
        np.testing.assert_allclose(out.outputs[b, s:e], ys, atol=1e-6)
      np.testing.assert_allclose(out.final_carry[b], final, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_resets_draw_fresh_noise(self):
    cell, params, x = _setup()
    strategy = initstate.noisy(0.5)
    sparams = strategy.init(None, cell.carry_template)
    init_fn = lambda k, b: strategy.init_carry(sparams, k, b, train=True)
    resets = np.zeros((B, T), bool)
    resets[:, 2] = resets[:, 4] = True
    rng = jax.random.key(42)
    out = self.variant(lambda p, x, r, k: initstate.scan_rnn(
        cell.bind(p), x, init_carry_fn=init_fn, resets=r, rng=k))(
            params, x, jnp.asarray(resets), rng)
    init_key, reset_key = jax.random.split(rng)
    starts = [(0, 2, init_fn(init_key, B)),
              (2, 4, init_fn(jax.random.fold_in(reset_key, 2), B)),
              (4, T, init_fn(jax.random.fold_in(reset_key, 4), B))]
    for s, e, carries in starts:
      for b in range(B):
        _, ys = _loop(cell, params, _row(carries, b), x[b, s:e])
        np.testing.assert_allclose(out.outputs[b, s:e], ys, atol=1e-5)
    # Different resets got different noise.
    self.assertFalse(np.allclose(starts[1][2].h, starts[2][2].h))
    self.assertFalse(np.allclose(starts[0][2].h, starts[1][2].h))

  def test_reset_on_padding_is_ignored(self):
    cell, params, x = _setup()
    carry0 = _learned_params(cell.carry_template)
    init_fn = lambda k, b: initstate.learned().init_carry(carry0, k, b, train=True)
    lengths = jnp.array([4, 4, 4])
    resets = jnp.zeros((B, T), bool).at[:, 5].set(True)
    fn = cell.bind(params)
    a = initstate.scan_rnn(fn, x, init_carry_fn=init_fn, seq_lengths=lengths, resets=resets)
    b = initstate.scan_rnn(fn, x, init_carry_fn=init_fn, seq_lengths=lengths)
    chex.assert_trees_all_close(a.final_carry, b.final_carry, atol=1e-6)

  def test_reset_errors(self):
    cell, params, x = _setup()
    fn = cell.bind(params)
    init_fn = lambda k, b: initstate.zeros().init_carry(
        initstate.zeros().init(None, cell.carry_template), k, b, train=False)
    carry = init_fn(None, B)
    with self.assertRaisesRegex(ValueError, r'resets.*\[B, T\] = \(3, 7\)'):
      initstate.scan_rnn(fn, x, init_carry_fn=init_fn, resets=jnp.zeros((T, B), bool))
    with self.assertRaisesRegex(ValueError, 'bool'):
      initstate.scan_rnn(fn, x, init_carry_fn=init_fn, resets=jnp.zeros((B, T)))
    with self.assertRaisesRegex(ValueError, 'init_carry_fn'):
      initstate.scan_rnn(fn, x, carry, resets=jnp.zeros((B, T), bool))

  def test_noisy_resets_without_key_are_an_error(self):
    cell, params, x = _setup()
    strategy = initstate.noisy(0.5)
    sparams = strategy.init(None, cell.carry_template)
    init_fn = lambda k, b: strategy.init_carry(sparams, k, b, train=True)
    with self.assertRaisesRegex(ValueError, 'needs a PRNG key'):
      initstate.scan_rnn(cell.bind(params), x, init_carry_fn=init_fn)


class BurnInTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_mask_and_values(self, stop):
    cell, params, x = _setup()
    carry0 = _learned_params(cell.carry_template)
    init_fn = lambda k, b: initstate.learned().init_carry(carry0, k, b, train=True)
    fn = lambda p, x: initstate.scan_rnn(
        cell.bind(p), x, init_carry_fn=init_fn, burn_in=3,
        stop_gradient_burn_in=stop, seq_lengths=jnp.array([7, 5, 2]), return_carries=True)
    out = self.variant(fn)(params, x)
    ref = initstate.scan_rnn(cell.bind(params), x, init_carry_fn=init_fn,
                             seq_lengths=jnp.array([7, 5, 2]), return_carries=True)
    np.testing.assert_allclose(out.outputs, ref.outputs, atol=1e-6)
    chex.assert_trees_all_close(out.carries, ref.carries, atol=1e-6)
    chex.assert_trees_all_close(out.final_carry, ref.final_carry, atol=1e-6)
    expected = np.array([[t >= 3 and t < n for t in range(T)] for n in (7, 5, 2)])
    np.testing.assert_array_equal(out.mask, expected)

  @parameterized.parameters(False, True)
  def test_gradient_through_burn_in(self, stop):
    cell, params, x = _setup()
    carry0 = _learned_params(cell.carry_template)

    def loss(carry_params, x):
      init_fn = lambda k, b: initstate.learned().init_carry(carry_params, k, b, train=True)
      out = initstate.scan_rnn(cell.bind(params), x, init_carry_fn=init_fn,
                               burn_in=3, stop_gradient_burn_in=stop)
      return initstate.masked_mean(jnp.sum(out.outputs ** 2, axis=-1), out.mask)

    g_carry, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(carry0, x)
    burn_grad = float(jnp.sum(jnp.abs(g_x[:, :3])))
    carry_grad = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(g_carry))
    self.assertGreater(float(jnp.sum(jnp.abs(g_x[:, 3:]))), 0.0)
    if stop:
      self.assertEqual(burn_grad, 0.0)
      self.assertEqual(carry_grad, 0.0)
    else:
      self.assertGreater(burn_grad, 0.0)
      self.assertGreater(carry_grad, 0.0)

  def test_burn_in_errors(self):
    cell, params, x = _setup()
    fn = cell.bind(params)
    init_fn = lambda k, b: initstate.zeros().init_carry(
        initstate.zeros().init(None, cell.carry_template), k, b, train=False)
    for bad in (-1, T, T + 3):
      with self.assertRaisesRegex(ValueError, r'burn_in.*\[0, 6\]'):
        initstate.scan_rnn(fn, x, init_carry_fn=init_fn, burn_in=bad)
    with self.assertRaisesRegex(TypeError, 'burn_in'):
      initstate.scan_rnn(fn, x, init_carry_fn=init_fn, burn_in=2.0)
    out = initstate.scan_rnn(fn, x, init_carry_fn=init_fn, burn_in=T - 1)
    np.testing.assert_array_equal(out.mask, np.arange(T)[None, :].repeat(B, 0) == T - 1)


class ReverseTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_reverse_with_lengths(self):
    cell, params, x = _setup()
    carry0 = _learned_params(cell.carry_template)
    init_fn = lambda k, b: initstate.learned().init_carry(carry0, k, b, train=True)
    lengths = [T, 5, 0]
    out = self.variant(lambda p, x: initstate.scan_rnn(
        cell.bind(p), x, init_carry_fn=init_fn, reverse=True, burn_in=2,
        seq_lengths=jnp.array(lengths)))(params, x)
    for b, n in enumerate(lengths):
      final, ys = _loop(cell, params, carry0, x[b, :n][::-1])
      np.testing.assert_allclose(out.outputs[b, :n], ys[::-1], atol=1e-6)
      np.testing.assert_array_equal(out.outputs[b, n:], 0.0)
      chex.assert_trees_all_close(_row(out.final_carry, b), final, atol=1e-6)
      # Burn-in counts in processing order: the last two valid steps.
      np.testing.assert_array_equal(out.mask[b], np.arange(T) < n - 2)

  def test_reverse_without_lengths_is_flip(self):
    cell, params, x = _setup()
    fn = cell.bind(params)
    carry = initstate.zeros().init_carry(initstate.zeros().init(None, cell.carry_template),
                                         None, B, train=False)
    rev = initstate.scan_rnn(fn, x, carry, reverse=True)
    fwd = initstate.scan_rnn(fn, x[:, ::-1], carry)
    np.testing.assert_allclose(rev.outputs, fwd.outputs[:, ::-1], atol=1e-6)


class CarriesAndErrorsTest(parameterized.TestCase):

  def test_return_carries(self):
    cell, params, x = _setup()
    carry0 = _learned_params(cell.carry_template)
    init_fn = lambda k, b: initstate.learned().init_carry(carry0, k, b, train=True)
    out = initstate.scan_rnn(cell.bind(params), x, init_carry_fn=init_fn,
                             return_carries=True)
    self.assertEqual(out.carries.h.shape, (B, T, H))
    carry = carry0
    for t in range(T):
      carry, _ = cell.apply(params, carry, x[0, t])
      chex.assert_trees_all_close(_row(_row(out.carries, 0), t), carry, atol=1e-6)
    chex.assert_trees_all_close(_row(out.carries, 0), _row(out.carries, 0))
    np.testing.assert_allclose(out.carries.h[:, -1], out.final_carry.h, atol=0)

  @parameterized.named_parameters(
      ('lstm', initstate.lstm(H)), ('gru', initstate.gru(H)), ('elman', initstate.elman(H)),
      ('stack', initstate.stack([initstate.lstm(H), initstate.gru(3)])),
      ('lstm_d_equals_b', initstate.lstm(H), B))
  def test_inputs_without_a_feature_axis(self, cell, input_size=D):
    """Inputs [B, T] (token ids, one feature without its axis) name `inputs` and the shape."""
    params = cell.init(jax.random.key(0), input_size)
    carry = initstate.zeros().init_carry(initstate.zeros().init(None, cell.carry_template),
                                         None, B, train=False)
    x = jnp.ones((B, T))
    for implementation in ('auto', 'generic'):
      for cell_fn in (cell.bind(params), functools.partial(cell.apply, params)):
        with self.assertRaisesRegex(ValueError,
                                    r'`inputs` of shape \(3, 7\) has no feature axis'):
          initstate.scan_rnn(cell_fn, x, carry, implementation=implementation)
    # With a feature axis added it runs.
    out = initstate.scan_rnn(cell.bind(params), jnp.ones((B, T, input_size)), carry)
    self.assertEqual(out.outputs.shape, (B, T, cell.output_size))

  def test_shape_errors(self):
    cell, params, x = _setup()
    fn = cell.bind(params)
    strategy = initstate.zeros()
    sparams = strategy.init(None, cell.carry_template)
    with self.assertRaisesRegex(ValueError, r'leading batch dim B = 3'):
      initstate.scan_rnn(fn, x, strategy.init_carry(sparams, None, B + 1, train=False))
    with self.assertRaisesRegex(ValueError, r'rank >= 2'):
      initstate.scan_rnn(fn, x[0, 0], strategy.init_carry(sparams, None, B, train=False))
    with self.assertRaisesRegex(ValueError, 'share batch and time'):
      initstate.scan_rnn(lambda c, xs: fn(c, xs[0]), (x, x[:, :3]),
                         strategy.init_carry(sparams, None, B, train=False))
    with self.assertRaisesRegex(ValueError, 'initial_carry` or `init_carry_fn'):
      initstate.scan_rnn(fn, x)


class GradientTest(parameterized.TestCase):

  @pytest.mark.slow   # Numerical gradients (4 s).
  def test_check_grads_learned_carry(self):
    cell, params, x = _setup(initstate.lstm(3))
    carry0 = _learned_params(cell.carry_template)
    resets = jnp.zeros((B, T), bool).at[1, 3].set(True)

    def loss(carry_params):
      init_fn = lambda k, b: initstate.learned().init_carry(carry_params, k, b, train=True)
      out = initstate.scan_rnn(cell.bind(params), x, init_carry_fn=init_fn,
                               resets=resets, seq_lengths=jnp.array([7, 6, 4]))
      return initstate.masked_mean(jnp.sum(jnp.sin(out.outputs), axis=-1), out.mask)

    with jax.enable_x64(False):
      check_grads(loss, (carry0,), order=1, modes=('rev',), eps=1e-2, atol=2e-3, rtol=2e-3)

  def test_gradient_only_through_steps_after_start_or_reset(self):
    """The learned carry's gradient is the sum over the segments it starts, run alone."""
    cell, params, x = _setup(initstate.elman(H))
    carry0 = _learned_params(cell.carry_template)
    k = 4
    resets = jnp.zeros((B, T), bool).at[:, k].set(True)
    w = jax.random.normal(jax.random.key(9), (B, T, H))

    def loss_full(carry_params, x):
      init_fn = lambda key, b: initstate.learned().init_carry(carry_params, key, b, train=True)
      out = initstate.scan_rnn(cell.bind(params), x, init_carry_fn=init_fn,
                               resets=resets)
      return jnp.sum(out.outputs * w)

    def loss_segment(carry_params, x, s, e):
      carry = initstate.learned().init_carry(carry_params, None, B, train=True)
      out = initstate.scan_rnn(cell.bind(params), x[:, s:e], carry)
      return jnp.sum(out.outputs * w[:, s:e])

    g_full, gx_full = jax.grad(loss_full, argnums=(0, 1))(carry0, x)
    g_a = jax.grad(loss_segment)(carry0, x, 0, k)
    g_b = jax.grad(loss_segment)(carry0, x, k, T)
    np.testing.assert_allclose(g_full, g_a + g_b, atol=1e-5)
    # Nothing after the reset depends on inputs before it.
    gx_late = jax.grad(lambda x: loss_segment(carry0, x, k, T))(x)
    np.testing.assert_array_equal(gx_late[:, :k], 0.0)
    gx_only_late = jax.grad(lambda x: jnp.sum(initstate.scan_rnn(
        cell.bind(params), x,
        init_carry_fn=lambda key, b: initstate.learned().init_carry(carry0, key, b, train=True),
        resets=resets).outputs[:, k:] * w[:, k:]))(x)
    np.testing.assert_array_equal(gx_only_late[:, :k], 0.0)
    self.assertGreater(float(jnp.sum(jnp.abs(gx_full[:, :k]))), 0.0)


FLAX_CELLS = ('LSTMCell', 'OptimizedLSTMCell', 'GRUCell', 'SimpleCell')
FLAX_STRATEGIES = ('zeros', 'learned', 'noisy', 'noisy_learned')


class FlaxCellsWithStrategiesTest(parameterized.TestCase):

  # Every cell and every strategy once in the fast suite; the whole product in the slow one.
  @parameterized.parameters(*zip(FLAX_CELLS, FLAX_STRATEGIES))
  def test_every_flax_cell_and_every_strategy(self, flax_cell, strategy):
    self._check_flax_cell_with_strategy(flax_cell, strategy)

  @parameterized.parameters(*[(c, s) for c in FLAX_CELLS for s in FLAX_STRATEGIES
                              if (c, s) not in zip(FLAX_CELLS, FLAX_STRATEGIES)])
  @pytest.mark.slow
  def test_every_flax_cell_with_every_strategy(self, flax_cell, strategy):
    self._check_flax_cell_with_strategy(flax_cell, strategy)

  def _check_flax_cell_with_strategy(self, flax_cell, strategy):
    cell = initstate.from_flax(getattr(nn, flax_cell)(H))
    strategy = {'zeros': initstate.zeros(), 'learned': initstate.learned(0.1),
                'noisy': initstate.noisy(0.2), 'noisy_learned': initstate.noisy_learned(0.2)
                }[strategy]
    _, params, x = _setup(cell)
    sparams = strategy.init(None, cell.carry_template)
    resets = jnp.zeros((B, T), bool).at[:, 3].set(True)

    @jax.jit
    def loss(params, sparams, rng):
      init_fn = lambda k, b: strategy.init_carry(sparams, k, b, train=True)
      out = initstate.scan_rnn(cell.bind(params), x, init_carry_fn=init_fn,
                               rng=rng, resets=resets, seq_lengths=jnp.array([7, 5, 3]))
      return initstate.masked_mean(jnp.sum(out.outputs ** 2, axis=-1), out.mask)

    value, (g_params, g_carry) = jax.value_and_grad(loss, argnums=(0, 1))(
        params, sparams, jax.random.key(0))
    self.assertTrue(np.isfinite(value))
    self.assertGreater(sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(g_params)), 0)
    for g in jax.tree.leaves(g_carry):  # Learned carries get a gradient.
      self.assertGreater(float(jnp.sum(jnp.abs(g))), 0.0)


if __name__ == '__main__':
  absltest.main()
