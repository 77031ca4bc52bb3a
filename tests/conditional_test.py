"""Tests for conditional carries: from_context, bridge and latent."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import pytest
import jax.numpy as jnp
import numpy as np
import optax

import initstate

LSTM4 = initstate.lstm(4)
GRU3 = initstate.gru(3)
STACK = initstate.stack([initstate.lstm(4), initstate.gru(3)])


def _shapes(tree):
  return [l.shape for l in jax.tree.leaves(tree)]


class FromContextTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('linear', ()), ('mlp', (8, 5)))
  def test_shapes_and_range_for_a_stack(self, hidden_sizes):
    net = initstate.from_context(hidden_sizes)
    params = net.init(jax.random.key(0), 6, STACK.carry_template)
    context = 3.0 * jax.random.normal(jax.random.key(1), (7, 6))
    carry = self.variant(net.apply)(params, context)
    chex.assert_trees_all_equal_structs(carry, STACK.carry_template)
    self.assertEqual(_shapes(carry), [(7, 4), (7, 4), (7, 3)])
    for leaf in jax.tree.leaves(carry):
      self.assertTrue(np.all(np.abs(np.asarray(leaf)) <= 1.0))  # tanh squash
      self.assertGreater(float(jnp.std(leaf)), 0.1)               # depends on the context
    # Batch elements are independent: each row equals the map of its own context.
    one = net.apply(params, context[3])
    chex.assert_trees_all_close(one, jax.tree.map(lambda l: l[3], carry), atol=1e-6)

  def test_linear_without_squash(self):
    net = initstate.from_context(squash=None)
    params = net.init(jax.random.key(0), 3, LSTM4.carry_template)
    a, b = jax.random.normal(jax.random.key(1), (2, 5, 3))
    f = functools.partial(net.apply, params)
    # Affine: f(a + b) - f(b) = f(a) - f(0).
    lhs = jax.tree.map(jnp.subtract, f(a + b), f(b))
    rhs = jax.tree.map(jnp.subtract, f(a), f(jnp.zeros_like(a)))
    chex.assert_trees_all_close(lhs, rhs, atol=1e-5)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, 'hidden_sizes'):
      initstate.from_context((0,))
    with self.assertRaisesRegex(TypeError, 'squash'):
      initstate.from_context(squash='tanh')
    net = initstate.from_context()
    with self.assertRaisesRegex(ValueError, 'context_size'):
      net.init(jax.random.key(0), 0, LSTM4.carry_template)
    params = net.init(jax.random.key(0), 3, LSTM4.carry_template)
    with self.assertRaisesRegex(ValueError, r'F = 3.*\(2, 4\)'):
      net.apply(params, jnp.zeros((2, 4)))

  @pytest.mark.slow   # A short training run (5 s).
  def test_learns_what_the_context_says(self):
    """Class given only as context, predicted at every step: zeros cannot, the carry can."""
    batch, steps, classes = 32, 3, 4
    cell = initstate.lstm(8)
    net = initstate.from_context()
    readout_init = jax.nn.initializers.lecun_normal()

    def init(key, conditional):
      k1, k2, k3 = jax.random.split(key, 3)
      params = {'cell': cell.init(k1, 1), 'readout': readout_init(k2, (8, classes))}
      if conditional:
        params['init'] = net.init(k3, classes, cell.carry_template)
      return params

    def loss_fn(params, labels):
      context = jax.nn.one_hot(labels, classes)
      carry = (net.apply(params['init'], context) if 'init' in params
               else initstate.zeros().init_carry(
                   initstate.zeros().init(None, cell.carry_template), None, batch, train=False))
      out = initstate.scan_rnn(cell.bind(params['cell']),
                               jnp.zeros((batch, steps, 1)), carry)
      logits = jnp.matmul(out.outputs, params['readout'])
      targets = jnp.broadcast_to(labels[:, None], (batch, steps))
      return jnp.mean(initstate.softmax_cross_entropy(logits, targets))

    final = {}
    for conditional in (False, True):
      params = init(jax.random.key(0), conditional)
      opt = optax.adam(3e-2)
      state = opt.init(params)

      @jax.jit
      def step(params, state, key):
        labels = jax.random.randint(key, (batch,), 0, classes)
        loss, grads = jax.value_and_grad(loss_fn)(params, labels)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

      for i in range(60):
        params, state, loss = step(params, state, jax.random.key(i))
      final[conditional] = float(loss_fn(params, jnp.arange(batch) % classes))
    self.assertGreater(final[False], 0.9 * np.log(classes))  # chance: log 4 = 1.386
    self.assertLess(final[True], 0.2)


class RNNContextCarryTest(absltest.TestCase):

  def test_params_in_the_layer_tree_and_the_carry_from_context(self):
    net = initstate.from_context(hidden_sizes=(5,))
    model = initstate.nn.RNN(STACK, carry=initstate.learned(), context_carry=net)
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    context = jax.random.normal(jax.random.key(1), (3, 6))
    variables = model.init(jax.random.key(2), x, context=context, train=False)
    params = variables['params']
    self.assertEqual(set(params), {'cell', 'carry', 'context_carry'})
    out = model.apply(variables, x, context=context, train=False)
    # The same as running scan_rnn from the map's carry.
    carry = net.apply(params['context_carry'], context)
    expected = initstate.scan_rnn(STACK.bind(params['cell']), x, carry)
    chex.assert_trees_all_close(out.outputs, expected.outputs, atol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(model.apply(
        {'params': p}, x, context=context, train=False).outputs ** 2))(params)
    self.assertGreater(float(jnp.abs(grads['context_carry']['hidden'][0].kernel).sum()), 0.0)
    with self.assertRaisesRegex(ValueError, 'context'):
      model.apply(variables, x, train=False)
    with self.assertRaisesRegex(ValueError, r'\[B, F\]'):
      model.apply(variables, x, context=context[:2], train=False)
    with self.assertRaisesRegex(ValueError, 'context_carry'):
      initstate.nn.RNN(STACK).init(jax.random.key(0), x, context=context, train=False)


class BridgeTest(parameterized.TestCase):

  def test_same_shapes_pass_through(self):
    enc_to_dec = initstate.bridge(STACK.carry_template, STACK.carry_template)
    params = enc_to_dec.init(jax.random.key(0))
    self.assertEqual(params, ((), ()))
    self.assertEmpty(jax.tree.leaves(params))
    carry = jax.tree.map(lambda t: jax.random.normal(jax.random.key(1), (2,) + t.shape),
                         STACK.carry_template)
    chex.assert_trees_all_equal(enc_to_dec.apply(params, carry), carry)

  @chex.variants(with_jit=True, without_jit=True)
  def test_different_sizes_and_cells_project(self):
    enc = initstate.stack([initstate.gru(5), initstate.gru(6)])
    dec = initstate.stack([initstate.lstm(4), initstate.gru(6)])
    enc_to_dec = initstate.bridge(enc.carry_template, dec.carry_template)
    params = enc_to_dec.init(jax.random.key(0))
    # Layer 0: GRU(5) -> LSTM(4) needs a map; layer 1: GRU(6) -> GRU(6) passes through.
    self.assertEqual(_shapes(params[0]), [(5, 4), (4,), (5, 4), (4,)])
    self.assertEqual(params[1], ())
    self.assertIsInstance(params[0].h, initstate.LinearParams)
    self.assertIsInstance(params[0].c, initstate.LinearParams)
    carry = (jax.random.normal(jax.random.key(1), (3, 5)),
             jax.random.normal(jax.random.key(2), (3, 6)))
    out = self.variant(enc_to_dec.apply)(params, carry)
    chex.assert_trees_all_equal_structs(out, dec.carry_template)
    self.assertEqual(_shapes(out), [(3, 4), (3, 4), (3, 6)])
    np.testing.assert_array_equal(out[1], carry[1])
    expected_h = jnp.tanh(carry[0] @ params[0].h.kernel + params[0].h.bias[None])
    np.testing.assert_allclose(out[0].h, expected_h, rtol=1e-5, atol=1e-6)

  def test_one_encoder_layer_feeds_every_decoder_layer(self):
    enc_to_dec = initstate.bridge(LSTM4.carry_template, STACK.carry_template)
    params = enc_to_dec.init(jax.random.key(0))
    self.assertEqual(params[0], ())                       # LSTM(4) -> LSTM(4)
    self.assertEqual(_shapes(params[1]), [(8, 3), (3,)])  # [h, c] of LSTM(4) -> GRU(3)
    carry = initstate.LSTMCarry(jnp.ones((2, 4)), -jnp.ones((2, 4)))
    out = enc_to_dec.apply(params, carry)
    self.assertIsInstance(out, tuple)
    chex.assert_trees_all_equal(out[0], carry)
    self.assertEqual(out[1].shape, (2, 3))

  def test_single_decoder_layer_reads_the_last_encoder_layer(self):
    enc_to_dec = initstate.bridge(STACK.carry_template, GRU3.carry_template)
    params = enc_to_dec.init(jax.random.key(0))
    self.assertEqual(params, ((),))
    carry = (initstate.LSTMCarry(jnp.ones((2, 4)), jnp.ones((2, 4))), jnp.full((2, 3), 0.5))
    np.testing.assert_array_equal(enc_to_dec.apply(params, carry), carry[1])

  def test_always_projects(self):
    enc_to_dec = initstate.bridge(GRU3.carry_template, GRU3.carry_template, project='always',
                                  squash=None)
    params = enc_to_dec.init(jax.random.key(0))
    self.assertEqual(_shapes(params), [(3, 3), (3,)])
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(enc_to_dec.apply(params, x), x @ params[0].kernel, rtol=1e-6)

  def test_gradient_reaches_encoder_and_projection(self):
    enc_to_dec = initstate.bridge(GRU3.carry_template, LSTM4.carry_template)
    params = enc_to_dec.init(jax.random.key(0))
    loss = lambda p, c: jnp.sum(enc_to_dec.apply(p, c).c ** 2)
    g_params, g_carry = jax.grad(loss, argnums=(0, 1))(params, jnp.ones((2, 3)))
    self.assertGreater(float(jnp.abs(g_carry).sum()), 0.0)
    self.assertGreater(float(jnp.abs(g_params[0].c.kernel).sum()), 0.0)
    np.testing.assert_array_equal(g_params[0].h.kernel, 0.0)  # h is not in the loss

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "project='auto'"):
      initstate.bridge(GRU3.carry_template, LSTM4.carry_template, project='never')
    with self.assertRaisesRegex(ValueError, 'project'):
      initstate.bridge(GRU3.carry_template, LSTM4.carry_template, project='sometimes')
    three = initstate.stack([GRU3] * 3).carry_template
    with self.assertRaisesRegex(ValueError, '3 layers.*2 layers'):
      initstate.bridge(three, STACK.carry_template)
    enc_to_dec = initstate.bridge(GRU3.carry_template, LSTM4.carry_template)
    params = enc_to_dec.init(jax.random.key(0))
    with self.assertRaisesRegex(ValueError, 'unit shapes'):
      enc_to_dec.apply(params, jnp.ones((2, 4)))
    with self.assertRaisesRegex(ValueError, 'layers'):
      enc_to_dec.apply(params, (jnp.ones((2, 3)), jnp.ones((2, 3))))


class LatentTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_train_eval_and_fixed_z(self):
    strategy = initstate.latent(5)
    params = strategy.init(jax.random.key(0), STACK.carry_template)
    self.assertEqual(_shapes(params), [(5, 4), (4,), (5, 4), (4,), (5, 3), (3,)])
    # One linear head (LinearParams: kernel [Z, *unit], bias [*unit]) per carry leaf.
    heads = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, initstate.LinearParams))
    self.assertLen(heads, 3)
    for head in heads:
      self.assertIsInstance(head, initstate.LinearParams)
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases
    init_carry = self.variant(functools.partial(strategy.init_carry, batch=6),
                              static_argnames='train')
    eval_a = init_carry(params, jax.random.key(1), train=False)
    eval_b = init_carry(params, None, train=False)
    chex.assert_trees_all_equal(eval_a, eval_b)           # deterministic: z = 0
    for leaf, p in zip(jax.tree.leaves(eval_a), jax.tree.leaves(params)[1::2]):
      np.testing.assert_allclose(leaf, jnp.broadcast_to(jnp.tanh(p), leaf.shape), rtol=1e-6)
    train_a = init_carry(params, jax.random.key(1), train=True)
    train_b = init_carry(params, jax.random.key(2), train=True)
    for a, b in zip(jax.tree.leaves(train_a), jax.tree.leaves(train_b)):
      self.assertGreater(float(jnp.abs(a - b).max()), 0.1)   # fresh z per key
      self.assertGreater(float(jnp.std(a, axis=0).mean()), 0.05)  # and per sequence
      self.assertTrue(np.all(np.abs(np.asarray(a)) < 1.0))
    z = jax.random.normal(jax.random.key(3), (6, 5))
    fixed = init_carry(params, None, train=True, z=z)
    chex.assert_trees_all_equal(fixed, init_carry(params, None, train=False, z=z))
    np.testing.assert_allclose(fixed[1], jnp.tanh(z @ params[1].kernel + params[1].bias[None]),
                               rtol=1e-5, atol=1e-6)

  def test_z_distribution_is_standard_normal(self):
    strategy = initstate.latent(2, squash=None)
    template = jnp.zeros((2,))
    params = initstate.LinearParams(jnp.eye(2), jnp.zeros((2,)))   # carry = z
    carry = strategy.init_carry(params, jax.random.key(0), 20000, train=True)
    np.testing.assert_allclose(np.mean(carry, 0), 0.0, atol=0.03)
    np.testing.assert_allclose(np.cov(np.asarray(carry).T), np.eye(2), atol=0.04)
    del template

  def test_in_the_rnn_module(self):
    model = initstate.nn.RNN(initstate.gru(3), carry=initstate.latent(2))
    x = jnp.ones((4, 5, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    self.assertEqual(_shapes(variables['params']['carry']), [(2, 3), (3,)])
    a = model.apply(variables, x, train=True, rngs={'carry': jax.random.key(1)})
    b = model.apply(variables, x, train=True, rngs={'carry': jax.random.key(2)})
    self.assertGreater(float(jnp.abs(a.outputs - b.outputs).max()), 1e-3)
    grads = jax.grad(lambda p: jnp.sum(model.apply(
        {'params': p}, x, train=True, rngs={'carry': jax.random.key(1)}).outputs))(
            variables['params'])
    self.assertGreater(float(jnp.abs(grads['carry'].kernel).sum()), 0.0)
    with self.assertRaisesRegex(ValueError, 'rngs'):
      model.apply(variables, x, train=True)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, 'latent_size'):
      initstate.latent(0)
    strategy = initstate.latent(2)
    with self.assertRaisesRegex(ValueError, 'PRNG key'):
      strategy.init(None, GRU3.carry_template)
    params = strategy.init(jax.random.key(0), GRU3.carry_template)
    with self.assertRaisesRegex(ValueError, 'PRNG key'):
      strategy.init_carry(params, None, 2, train=True)
    with self.assertRaisesRegex(ValueError, r'\(2, 2\)'):
      strategy.init_carry(params, None, 2, train=False, z=jnp.zeros((2, 3)))


if __name__ == '__main__':
  absltest.main()
