"""The fused LSTM/GRU recurrence agrees with the generic step-by-step path."""

import functools
import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initstate
from initstate._src import fused

B, T, D = 3, 7, 2
CELLS = {
    'lstm': lambda: initstate.lstm(4),
    'gru': lambda: initstate.gru(4),
    'stack': lambda: initstate.stack([initstate.lstm(4), initstate.gru(5), initstate.lstm(3)]),
    'stack1': lambda: initstate.stack([initstate.gru(4)]),
}
OPTIONS = {
    'plain': {},
    'lengths': dict(seq_lengths=np.array([7, 4, 0])),
    'resets': dict(resets=np.array([[0, 0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0, 0],
                                    [0, 1, 1, 0, 0, 0, 1]], bool)),
    'lengths_resets_reverse': dict(
        seq_lengths=np.array([7, 4, 2]), reverse=True,
        resets=np.array([[0, 0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 1, 0],
                         [0, 1, 1, 0, 0, 0, 1]], bool)),
    'burn_in_stop_gradient': dict(burn_in=3, stop_gradient_burn_in=True,
                                  seq_lengths=np.array([7, 5, 1])),
    'burn_in': dict(burn_in=2),
}
# A few cases in the fast suite (each compiles a forward and a backward pass twice), the rest of
# the product in the slow suite. The fast suite also compares the two paths in
# scan_property_test (every option at once, time-major, checkpoints) and nan_safety_test.
FAST = (('lstm', 'lengths_resets_reverse'), ('gru', 'burn_in_stop_gradient'),
        ('stack', 'plain'))
SLOW = tuple(c for c in itertools.product(CELLS, OPTIONS) if c not in FAST)


def _setup(cell_name, strategy=None):
  cell = CELLS[cell_name]()
  params = cell.init(jax.random.key(0), D)
  strategy = strategy or initstate.noisy_learned(0.5)
  carry_params = jax.tree.map(lambda a: a + 0.3,
                              strategy.init(jax.random.key(1), cell.carry_template))
  x = jax.random.normal(jax.random.key(2), (B, T, D))
  return cell, params, strategy, carry_params, x


def _loss(cell, strategy, params, carry_params, x, implementation, time_major=False,
          **options):
  if time_major:
    x = jnp.swapaxes(x, 0, 1)
    if 'resets' in options:
      options = dict(options, resets=options['resets'].T)
  out = initstate.scan_rnn(
      cell.bind(params), x,
      init_carry_fn=lambda k, b: strategy.init_carry(carry_params, k, b, train=True),
      rng=jax.random.key(3), implementation=implementation, return_carries=True,
      time_major=time_major, **options)
  weights = jnp.linspace(0.5, 1.5, out.outputs.shape[-1])
  loss = jnp.sum(jnp.where(out.mask[..., None], out.outputs * weights[None, None], 0.0) ** 2)
  loss += sum(jnp.sum(jnp.sin(l)) for l in jax.tree.leaves(out.final_carry))
  loss += sum(jnp.sum(l ** 3) for l in jax.tree.leaves(out.carries))
  return loss, out


class FusedAgreesWithGenericTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(f'{c}_{o}', c, o) for c, o in FAST])
  def test_outputs_and_gradients(self, cell_name, option_name):
    self._check_outputs_and_gradients(cell_name, option_name)

  @parameterized.named_parameters(*[(f'{c}_{o}', c, o) for c, o in SLOW])
  @pytest.mark.slow
  def test_outputs_and_gradients_more(self, cell_name, option_name):
    self._check_outputs_and_gradients(cell_name, option_name)

  def _check_outputs_and_gradients(self, cell_name, option_name):
    cell, params, strategy, carry_params, x = _setup(cell_name)
    options = OPTIONS[option_name]
    results = {}
    for impl in ('fused', 'generic'):
      fn = jax.jit(jax.value_and_grad(
          functools.partial(_loss, cell, strategy, implementation=impl, **options),
          argnums=(0, 1, 2), has_aux=True))
      results[impl] = fn(params, carry_params, x)
    chex.assert_trees_all_close(results['fused'], results['generic'], atol=1e-5, rtol=1e-5)
    # The comparison is not vacuous: every gradient is non-zero somewhere (the carry's is cut
    # by a stop-gradient burn-in without resets).
    g_params, g_carry, g_x = results['fused'][1]
    checked = [g_params, g_x] + ([] if options.get('stop_gradient_burn_in') else [g_carry])
    for g in jax.tree.leaves(checked):
      self.assertGreater(float(jnp.abs(g).max()), 0.0)

  @parameterized.parameters('lstm', 'stack')
  @pytest.mark.slow
  def test_without_return_carries(self, cell_name):
    cell, params, strategy, carry_params, x = _setup(cell_name)

    def loss(params, carry_params, x, impl):
      out = initstate.scan_rnn(
          cell.bind(params), x,
          init_carry_fn=lambda k, b: strategy.init_carry(carry_params, k, b, train=True),
          rng=jax.random.key(3), implementation=impl, **OPTIONS['lengths_resets_reverse'])
      self.assertIsNone(out.carries)
      return (jnp.sum(out.outputs ** 2)
              + sum(jnp.sum(jnp.sin(l)) for l in jax.tree.leaves(out.final_carry)))

    results = [jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)(
        params, carry_params, x, impl) for impl in ('fused', 'generic')]
    chex.assert_trees_all_close(results[0], results[1], atol=1e-5, rtol=1e-5)

  @parameterized.parameters('lstm', 'stack')
  @pytest.mark.slow
  def test_time_major(self, cell_name):
    cell, params, strategy, carry_params, x = _setup(cell_name)
    options = dict(OPTIONS['lengths_resets_reverse'], time_major=True)
    fused_out, generic_out = [jax.jit(jax.value_and_grad(functools.partial(
        _loss, cell, strategy, implementation=impl, **options), argnums=(0, 1, 2),
                                                          has_aux=True))(params, carry_params, x)
                              for impl in ('fused', 'generic')]
    chex.assert_trees_all_close(fused_out, generic_out, atol=1e-5, rtol=1e-5)

  def test_vmap_over_models(self):
    cell, params, strategy, carry_params, x = _setup('lstm')
    stacked = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p]), params)
    grads = {}
    for impl in ('fused', 'generic'):
      grad_fn = jax.grad(lambda p, impl=impl: _loss(cell, strategy, p, carry_params, x, impl,
                                                    **OPTIONS['lengths'])[0])
      grads[impl] = jax.jit(jax.vmap(grad_fn))(stacked)
    chex.assert_trees_all_close(grads['fused'], grads['generic'], atol=1e-5, rtol=1e-5)

  def test_agrees_with_flax_optimized_lstm(self):
    """An outside reference: Flax's OptimizedLSTMCell under nn.RNN, outputs and input grads."""
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    cell = initstate.lstm(4)
    params = cell.init(jax.random.key(0), D)
    x = jax.random.normal(jax.random.key(2), (B, T, D))
    flax_rnn = nn.RNN(nn.OptimizedLSTMCell(4))
    flax_vars = {'params': {'cell': initstate.convert.lstm_params_to_flax(params)}}

    def ours(x):
      carry = initstate.LSTMCarry(jnp.zeros((B, 4)), jnp.zeros((B, 4)))
      return initstate.scan_rnn(cell.bind(params), x, carry, implementation='fused').outputs

    theirs = lambda x: flax_rnn.apply(flax_vars, x)
    np.testing.assert_allclose(jax.jit(ours)(x), jax.jit(theirs)(x), atol=1e-5, rtol=1e-5)
    g_ours = jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(ours(x)))))(x)
    g_theirs = jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(theirs(x)))))(x)
    np.testing.assert_allclose(g_ours, g_theirs, atol=1e-5, rtol=1e-5)


class DispatchTest(parameterized.TestCase):

  def test_auto_uses_the_fused_path_for_built_in_cells(self):
    for name in CELLS:
      cell = CELLS[name]()
      params = cell.init(jax.random.key(0), D)
      self.assertIsNotNone(fused.plan(cell.bind(params), jnp.ones((T, B, D))), name)
      # Only a BoundCell is fused: the same function as a partial is not.
      self.assertIsNone(fused.plan(functools.partial(cell.apply, params), jnp.ones((T, B, D))),
                        name)
    elman = initstate.elman(4)
    self.assertIsNone(fused.plan(elman.bind(elman.init(jax.random.key(0), D)),
                                 jnp.ones((T, B, D))))
    lstm = initstate.lstm(4)
    params = lstm.init(jax.random.key(0), D)
    lam = lambda c, x: lstm.apply(params, c, x)
    self.assertIsNone(fused.plan(lam, jnp.ones((T, B, D))))                      # not bound
    self.assertIsNone(fused.plan(lstm.bind(params), {'x': jnp.ones((T, B, D))}))  # pytree input
    self.assertIsNone(fused.plan(lstm.bind(params), jnp.ones((T, B, D + 1))))
    # 'auto' fuses only where it measured faster: LSTMs of at least AUTO_MIN_HIDDEN units.
    n = fused.AUTO_MIN_HIDDEN
    for cells, auto_fuses in (([initstate.lstm(n), initstate.lstm(n)], True),
                              ([initstate.lstm(n), initstate.lstm(n - 1)], False),
                              ([initstate.lstm(n), initstate.gru(n)], False)):
      cell = initstate.stack(cells)
      fn = cell.bind(cell.init(jax.random.key(0), D))
      self.assertIsNotNone(fused.plan(fn, jnp.ones((T, B, D))))
      self.assertEqual(fused.plan(fn, jnp.ones((T, B, D)), auto=True) is not None, auto_fuses)
    mixed = initstate.stack([initstate.lstm(3), initstate.elman(3)])
    self.assertIsNone(fused.plan(mixed.bind(mixed.init(jax.random.key(0), D)),
                                 jnp.ones((T, B, D))))

  @parameterized.parameters('lstm', 'stack')
  def test_forced_fused_with_a_bound_cell(self, cell_name):
    cell, params, strategy, carry_params, x = _setup(cell_name)
    carry = strategy.init_carry(carry_params, None, B, train=False)
    run = lambda p, x, impl: initstate.scan_rnn(cell.bind(p), x, carry, implementation=impl,
                                                return_carries=True)
    outs = {impl: jax.jit(functools.partial(run, impl=impl))(params, x)
            for impl in ('fused', 'generic')}
    chex.assert_trees_all_close(outs['fused'], outs['generic'], atol=1e-5, rtol=1e-5)
    # The fused path really ran: only its jaxpr holds the fused recurrence's custom VJP.
    self.assertIn('custom_vjp', str(jax.make_jaxpr(functools.partial(run, impl='fused'))(
        params, x)))
    self.assertNotIn('custom_vjp', str(jax.make_jaxpr(functools.partial(run, impl='generic'))(
        params, x)))

  def test_forced_fused_errors_and_generic_fallbacks(self):
    elman = initstate.elman(4)
    params = elman.init(jax.random.key(0), D)
    x = jnp.ones((B, T, D))
    carry = jnp.zeros((B, 4))
    with self.assertRaisesRegex(ValueError, r"implementation='fused'.*cell\.bind"):
      initstate.scan_rnn(elman.bind(params), x, carry, implementation='fused')
    with self.assertRaisesRegex(ValueError, '`implementation`'):
      initstate.scan_rnn(elman.bind(params), x, carry, implementation='fast')
    for cell_fn in (elman.bind(params), functools.partial(elman.apply, params)):
      out = initstate.scan_rnn(cell_fn, x, carry)  # auto: generic
      self.assertEqual(out.outputs.shape, (B, T, 4))
    lstm = initstate.lstm(4)
    lstm_params = lstm.init(jax.random.key(0), D)
    lstm_carry = initstate.LSTMCarry(carry, carry)
    # A partial of a built-in cell runs, on the generic path only: forcing 'fused' fails.
    with self.assertRaisesRegex(ValueError, r"implementation='fused'.*cell\.bind"):
      initstate.scan_rnn(functools.partial(lstm.apply, lstm_params), x, lstm_carry,
                         implementation='fused')
    chex.assert_trees_all_close(
        initstate.scan_rnn(functools.partial(lstm.apply, lstm_params), x, lstm_carry),
        initstate.scan_rnn(lstm.bind(lstm_params), x, lstm_carry, implementation='fused'),
        atol=1e-5, rtol=1e-5)
    with self.assertRaisesRegex(ValueError, 'input features'):   # the cell's own message
      initstate.scan_rnn(lstm.bind(lstm.init(jax.random.key(0), D + 1)), x, lstm_carry)

  def test_forward_mode_needs_generic(self):
    cell, params, strategy, carry_params, x = _setup('gru')
    f = lambda x: _loss(cell, strategy, params, carry_params, x, 'generic')[0]
    _, tangent = jax.jit(lambda x: jax.jvp(f, (x,), (jnp.ones_like(x),)))(x)
    g = jax.jit(jax.grad(lambda x: _loss(cell, strategy, params, carry_params, x, 'fused')[0]))(x)
    np.testing.assert_allclose(tangent, jnp.sum(g), rtol=1e-4)

  def test_rnn_module_fuses_and_matches(self):
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    outs, jaxprs = {}, {}
    for impl in ('auto', 'generic'):
      model = initstate.nn.RNN(initstate.lstm(fused.AUTO_MIN_HIDDEN),
                               carry=initstate.learned(0.1), implementation=impl)
      variables = model.init(jax.random.key(1), x, train=False)
      loss = lambda v, model=model: jnp.sum(model.apply(v, x, train=False).outputs ** 2)
      outs[impl] = jax.jit(jax.value_and_grad(loss))(variables)
      jaxprs[impl] = str(jax.make_jaxpr(loss)(variables))
    chex.assert_trees_all_close(outs['auto'], outs['generic'], atol=1e-5, rtol=1e-5)
    # The layer binds its cell, so 'auto' runs the fused recurrence (its custom VJP).
    self.assertIn('custom_vjp', jaxprs['auto'])
    self.assertNotIn('custom_vjp', jaxprs['generic'])


class CheckpointTest(parameterized.TestCase):

  # Slow: the fast suite checks checkpoint_every on both paths in scan_property_test.
  @parameterized.named_parameters(
      ('fused_lstm', 'lstm', 'fused', 3), ('fused_stack', 'stack', 'fused', 2),
      ('generic_gru', 'gru', 'generic', 3), ('fused_divides', 'gru', 'fused', 7),
      ('generic_longer_than_t', 'lstm', 'generic', 50))
  @pytest.mark.slow
  def test_same_results_with_checkpoint_every(self, cell_name, implementation, every):
    cell, params, strategy, carry_params, x = _setup(cell_name)
    options = OPTIONS['lengths_resets_reverse']
    outs = [jax.jit(jax.value_and_grad(functools.partial(
        _loss, cell, strategy, implementation=implementation, checkpoint_every=k, **options),
        argnums=(0, 1, 2), has_aux=True))(params, carry_params, x) for k in (None, every)]
    chex.assert_trees_all_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)

  @pytest.mark.slow
  def test_with_stop_gradient_burn_in(self):
    cell, params, strategy, carry_params, x = _setup('lstm')
    options = dict(OPTIONS['burn_in_stop_gradient'], resets=OPTIONS['resets']['resets'])
    outs = [jax.jit(jax.value_and_grad(functools.partial(
        _loss, cell, strategy, implementation='fused', checkpoint_every=k, **options),
        argnums=(0, 1, 2), has_aux=True))(params, carry_params, x) for k in (None, 2)]
    chex.assert_trees_all_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)

  def test_cuts_peak_memory(self):
    """XLA's own memory analysis of a training step: chunked recomputation needs less."""
    cell = initstate.lstm(32)
    params = cell.init(jax.random.key(0), 4)
    x = jnp.ones((8, 128, 4))
    carry = initstate.LSTMCarry(jnp.zeros((8, 32)), jnp.zeros((8, 32)))

    def temp_bytes(every):
      def loss(p):
        out = initstate.scan_rnn(cell.bind(p), x, carry, checkpoint_every=every)
        return jnp.sum(out.outputs ** 2)
      compiled = jax.jit(jax.grad(loss)).lower(params).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    self.assertLess(temp_bytes(8), 0.5 * temp_bytes(None))

  @parameterized.parameters(0, -1, 2.5, True)
  def test_bad_value(self, every):
    cell, params, strategy, carry_params, x = _setup('lstm')
    with self.assertRaisesRegex(ValueError, 'checkpoint_every'):
      _loss(cell, strategy, params, carry_params, x, 'auto', checkpoint_every=every)


if __name__ == '__main__':
  absltest.main()
