"""Tests for the initial-carry strategies."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import initstate

H = 3
LSTM_TEMPLATE = initstate.lstm(H).carry_template
STACK_TEMPLATE = initstate.stack([initstate.lstm(2), initstate.gru(4)]).carry_template
TEMPLATES = {'lstm': LSTM_TEMPLATE, 'stack': STACK_TEMPLATE, 'array': jnp.zeros((H,))}


def _assert_batched_like(test, carry, template, batch):
  chex.assert_trees_all_equal_structs(carry, template)
  for leaf, t in zip(jax.tree.leaves(carry), jax.tree.leaves(template)):
    test.assertEqual(leaf.shape, batch + t.shape)
    test.assertEqual(leaf.dtype, t.dtype)


class ZerosTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(name, t) for name, t in TEMPLATES.items()])
  def test_zeros_shape_and_value(self, template):
    strategy = initstate.zeros()
    params = strategy.init(None, template)
    self.assertEmpty(jax.tree.leaves(params))  # Nothing trainable.
    carry = self.variant(lambda p: strategy.init_carry(p, None, 5, train=True))(params)
    _assert_batched_like(self, carry, template, (5,))
    for leaf in jax.tree.leaves(carry):
      np.testing.assert_array_equal(leaf, 0.0)

  def test_tuple_batch(self):
    strategy = initstate.zeros()
    carry = strategy.init_carry(strategy.init(None, LSTM_TEMPLATE), None, (2, 3), train=False)
    _assert_batched_like(self, carry, LSTM_TEMPLATE, (2, 3))

  def test_bad_batch_and_train(self):
    strategy = initstate.zeros()
    params = strategy.init(None, LSTM_TEMPLATE)
    with self.assertRaisesRegex(ValueError, '`batch`'):
      strategy.init_carry(params, None, -1, train=True)
    with self.assertRaisesRegex(ValueError, '`batch`'):
      strategy.init_carry(params, None, 2.5, train=True)
    with self.assertRaisesRegex(TypeError, '`train`'):
      strategy.init_carry(params, None, 2, train=jnp.array(True))

  def test_params_of_another_strategy_rejected(self):
    params = initstate.learned().init(None, LSTM_TEMPLATE)
    with self.assertRaisesRegex(TypeError, 'CarrySpec'):
      initstate.zeros().init_carry(params, None, 2, train=True)


class LearnedTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(name, t) for name, t in TEMPLATES.items()])
  def test_broadcast_of_params(self, template):
    strategy = initstate.learned()
    params = strategy.init(None, template)
    chex.assert_trees_all_equal_structs(params, template)
    for leaf in jax.tree.leaves(params):
      np.testing.assert_array_equal(leaf, 0.0)  # Zeros by default.
    params = jax.tree.map(lambda p: p + jnp.arange(p.shape[-1], dtype=p.dtype), params)
    carry = self.variant(lambda p: strategy.init_carry(p, None, 4, train=True))(params)
    _assert_batched_like(self, carry, template, (4,))
    for leaf, p in zip(jax.tree.leaves(carry), jax.tree.leaves(params)):
      for b in range(4):
        np.testing.assert_array_equal(leaf[b], p)

  def test_one_value_per_layer_and_field(self):
    params = initstate.learned().init(None, STACK_TEMPLATE)
    self.assertIsInstance(params[0], initstate.LSTMCarry)
    self.assertEqual(params[0].h.shape, (2,))
    self.assertEqual(params[0].c.shape, (2,))
    self.assertEqual(params[1].shape, (4,))

  def test_initial_value(self):
    params = initstate.learned(0.5).init(None, LSTM_TEMPLATE)
    np.testing.assert_array_equal(params.h, 0.5)
    init = jax.nn.initializers.normal(1.0)
    p1 = initstate.learned(init).init(jax.random.key(1), LSTM_TEMPLATE)
    p2 = initstate.learned(init).init(jax.random.key(2), LSTM_TEMPLATE)
    self.assertFalse(np.allclose(p1.h, p2.h))
    self.assertFalse(np.allclose(p1.h, p1.c))  # A key per leaf.
    with self.assertRaisesRegex(ValueError, 'PRNG key'):
      initstate.learned(init).init(None, LSTM_TEMPLATE)

  def test_train_flag_does_not_matter(self):
    strategy = initstate.learned(0.25)
    params = strategy.init(None, LSTM_TEMPLATE)
    chex.assert_trees_all_equal(strategy.init_carry(params, None, 2, train=True),
                                strategy.init_carry(params, None, 2, train=False))


class NoisyTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_eval_is_exactly_zeros(self):
    strategy = initstate.noisy(0.3)
    params = strategy.init(None, LSTM_TEMPLATE)
    carry = self.variant(lambda p: strategy.init_carry(p, None, 3, train=False))(params)
    for leaf in jax.tree.leaves(carry):
      np.testing.assert_array_equal(leaf, 0.0)

  def test_missing_key_in_training_is_an_error(self):
    strategy = initstate.noisy(0.3)
    with self.assertRaisesRegex(ValueError, 'needs a PRNG key'):
      strategy.init_carry(strategy.init(None, LSTM_TEMPLATE), None, 3, train=True)

  @parameterized.parameters(-0.1, float('nan'), float('inf'))
  def test_bad_stddev(self, stddev):
    with self.assertRaisesRegex(ValueError, '`stddev`'):
      initstate.noisy(stddev)
    with self.assertRaisesRegex(ValueError, '`stddev`'):
      initstate.noisy_learned(stddev)

  @chex.variants(with_jit=True, without_jit=True)
  def test_stddev_zero_is_zeros(self):
    strategy = initstate.noisy(0.0)
    params = strategy.init(None, STACK_TEMPLATE)
    carry = self.variant(
        lambda p, k: strategy.init_carry(p, k, 3, train=True))(params, jax.random.key(0))
    expected = initstate.zeros().init_carry(params, None, 3, train=True)
    chex.assert_trees_all_equal(carry, expected)

  @chex.variants(with_jit=True, without_jit=True)
  def test_keys(self):
    strategy = initstate.noisy(0.3)
    params = strategy.init(None, LSTM_TEMPLATE)
    fn = self.variant(lambda p, k: strategy.init_carry(p, k, 4, train=True))
    a, b = fn(params, jax.random.key(0)), fn(params, jax.random.key(0))
    c = fn(params, jax.random.key(1))
    chex.assert_trees_all_equal(a, b)
    self.assertFalse(np.allclose(a.h, c.h))
    # Independent per batch element and per field.
    self.assertFalse(np.allclose(a.h[0], a.h[1]))
    self.assertFalse(np.allclose(a.h, a.c))

  def test_moments(self):
    strategy = initstate.noisy(0.3)
    carry = strategy.init_carry(strategy.init(None, jnp.zeros((64,))), jax.random.key(3),
                                (512,), train=True)
    self.assertAlmostEqual(float(jnp.mean(carry)), 0.0, delta=0.01)
    self.assertAlmostEqual(float(jnp.std(carry)), 0.3, delta=0.01)
    # Correlation between units is near zero.
    corr = np.corrcoef(np.asarray(carry[:, :2]).T)[0, 1]
    self.assertLess(abs(corr), 0.15)


class NoisyLearnedTest(parameterized.TestCase):

  def _params(self, template=LSTM_TEMPLATE):
    params = initstate.noisy_learned(0.3).init(None, template)
    return jax.tree.map(lambda p: p + 1.5, params)

  @chex.variants(with_jit=True, without_jit=True)
  def test_eval_is_exactly_learned(self):
    params = self._params()
    fn = self.variant(
        lambda p: initstate.noisy_learned(0.3).init_carry(p, None, 3, train=False))
    chex.assert_trees_all_equal(
        fn(params), initstate.learned().init_carry(params, None, 3, train=False))

  @chex.variants(with_jit=True, without_jit=True)
  def test_stddev_zero_is_learned(self):
    params = self._params(STACK_TEMPLATE)
    fn = self.variant(
        lambda p, k: initstate.noisy_learned(0.0).init_carry(p, k, 3, train=True))
    chex.assert_trees_all_equal(
        fn(params, jax.random.key(5)), initstate.learned().init_carry(params, None, 3, train=True))

  def test_noise_is_around_the_learned_carry(self):
    strategy = initstate.noisy_learned(0.2)
    params = jax.tree.map(lambda p: p + 1.5, strategy.init(None, jnp.zeros((32,))))
    carry = strategy.init_carry(params, jax.random.key(0), 1024, train=True)
    self.assertAlmostEqual(float(jnp.mean(carry)), 1.5, delta=0.01)
    self.assertAlmostEqual(float(jnp.std(carry)), 0.2, delta=0.01)
    with self.assertRaisesRegex(ValueError, 'needs a PRNG key'):
      strategy.init_carry(params, None, 2, train=True)

  def test_same_key_same_carry(self):
    strategy = initstate.noisy_learned(0.2)
    params = self._params()
    a = strategy.init_carry(params, jax.random.key(7), 2, train=True)
    b = strategy.init_carry(params, jax.random.key(7), 2, train=True)
    c = strategy.init_carry(params, jax.random.key(8), 2, train=True)
    chex.assert_trees_all_equal(a, b)
    self.assertFalse(np.allclose(a.c, c.c))

  def test_gradient_reaches_learned_carry(self):
    strategy = initstate.noisy_learned(0.1)
    params = self._params()
    grads = jax.grad(lambda p: jnp.sum(jnp.square(
        strategy.init_carry(p, jax.random.key(0), 3, train=True).h)))(params)
    self.assertGreater(float(jnp.sum(jnp.abs(grads.h))), 0.0)
    np.testing.assert_array_equal(grads.c, 0.0)


# Every strategy, made for the protocol tests: name -> (factory, stateful).
STRATEGIES = {
    'zeros': (initstate.zeros, False),
    'learned': (lambda: initstate.learned(0.5), False),
    'noisy': (lambda: initstate.noisy(0.3), False),
    'noisy_learned': (lambda: initstate.noisy_learned(0.3), False),
    'latent': (lambda: initstate.latent(2), False),
    'cleaning_noise': (lambda: initstate.cleaning_noise(buffer_size=4), True),
}


class StateProtocolTest(parameterized.TestCase):
  """Every strategy follows the optax-style state protocol (init_state / update_state)."""

  @parameterized.named_parameters(*[(n, f, s) for n, (f, s) in STRATEGIES.items()])
  def test_init_state_and_is_stateful(self, make, stateful):
    strategy = make()
    self.assertIsInstance(strategy, initstate.CarryStrategy)
    for template in (LSTM_TEMPLATE, STACK_TEMPLATE):
      state = strategy.init_state(template)
      self.assertIs(strategy.is_stateful(template), stateful)
      if stateful:
        self.assertIsInstance(state, initstate.GradientBuffer)
        self.assertEqual(state.capacity, 4)
        self.assertEqual(int(state.count), 0)
        chex.assert_trees_all_equal_structs(state.values, template)
        for leaf, t in zip(jax.tree.leaves(state.values), jax.tree.leaves(template)):
          self.assertEqual(leaf.shape, (4,) + t.shape)
      else:
        self.assertEqual(state, initstate.EmptyState())
        self.assertIsInstance(state, initstate.EmptyState)
        self.assertEmpty(jax.tree.leaves(state))

  @parameterized.named_parameters(*[(n, f, s) for n, (f, s) in STRATEGIES.items()])
  def test_update_state(self, make, stateful):
    strategy = make()
    state = strategy.init_state(LSTM_TEMPLATE)
    grads = initstate.LSTMCarry(h=jnp.full((2, H), 0.5), c=jnp.full((2, H), -0.5))
    new_state = jax.jit(strategy.update_state)(state, grads)
    self.assertIs(type(new_state), type(state))
    if stateful:
      self.assertEqual(int(new_state.count), 2)  # One entry per row.
      np.testing.assert_array_equal(new_state.values.h[:2], grads.h)
      np.testing.assert_array_equal(new_state.values.c[:2], grads.c)
    else:
      self.assertIs(strategy.update_state(state, grads), state)  # The identity.
      self.assertIs(strategy.update_state(state, grads, axis_name='data'), state)
      self.assertEqual(new_state, initstate.EmptyState())

  @parameterized.named_parameters(*[(n, f, s) for n, (f, s) in STRATEGIES.items()])
  def test_init_carry_accepts_state(self, make, stateful):
    strategy = make()
    params = strategy.init(jax.random.key(0), LSTM_TEMPLATE)
    state = strategy.init_state(LSTM_TEMPLATE)
    init_carry = jax.jit(
        lambda p, k, s, train: strategy.init_carry(p, k, 3, train=train, state=s),
        static_argnames='train')
    for train in (True, False):
      with_state = init_carry(params, jax.random.key(1), state, train=train)
      _assert_batched_like(self, with_state, LSTM_TEMPLATE, (3,))
      if stateful:  # An empty buffer: exactly the learned carry, in training too.
        want = init_carry(params, None, None, train=False)
      else:  # The state changes nothing.
        want = init_carry(params, jax.random.key(1), None, train=train)
      chex.assert_trees_all_equal(with_state, want)

  def test_cleaning_without_a_state_in_training_is_a_clear_error(self):
    cleaning = initstate.cleaning_noise(buffer_size=4)
    params = cleaning.init(None, LSTM_TEMPLATE)
    with self.assertRaisesRegex(ValueError, r'`state`.*init_state'):
      cleaning.init_carry(params, jax.random.key(0), 2, train=True)
    # Evaluation needs none.
    chex.assert_trees_all_equal(cleaning.init_carry(params, None, 2, train=False),
                                initstate.learned().init_carry(params, None, 2, train=False))
    with self.assertRaisesRegex(TypeError, '`state`'):
      cleaning.init_carry(params, jax.random.key(0), 2, train=True,
                          state=initstate.EmptyState())

  def test_optimizer_does_not_touch_the_state(self):
    cleaning = initstate.cleaning_noise(buffer_size=4)
    params = {'carry': cleaning.init(None, LSTM_TEMPLATE)}
    rows = initstate.LSTMCarry(h=jnp.ones((2, H)), c=jnp.full((2, H), 2.0))
    state = cleaning.update_state(cleaning.init_state(LSTM_TEMPLATE), rows)
    optimizer = optax.adam(0.1)
    opt_state = optimizer.init(params)
    # The optimiser state holds no copy of the buffer: it is not a param.
    self.assertEqual(len(jax.tree.leaves(opt_state)),
                     1 + 2 * len(jax.tree.leaves(params)))

    def loss_fn(params, state):
      carry = cleaning.init_carry(params['carry'], jax.random.key(0), 2, train=True,
                                  state=state)
      return sum(jnp.sum(jnp.square(l)) for l in jax.tree.leaves(carry))

    for _ in range(3):
      grads = jax.grad(loss_fn)(params, state)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    # The learned carry moved, the buffer is exactly what was pushed.
    self.assertGreater(float(jnp.max(jnp.abs(params['carry'].h))), 0.1)
    self.assertEqual(int(state.count), 2)
    np.testing.assert_array_equal(state.values.h[:2], rows.h)
    np.testing.assert_array_equal(state.values.c[:2], rows.c)
    np.testing.assert_array_equal(state.values.h[2:], 0.0)

  def test_empty_state_is_static_under_jit(self):
    strategy = initstate.noisy(0.3)
    state = strategy.init_state(LSTM_TEMPLATE)
    out = jax.jit(lambda s: s)(state)
    self.assertEqual(out, initstate.EmptyState())


if __name__ == '__main__':
  absltest.main()
