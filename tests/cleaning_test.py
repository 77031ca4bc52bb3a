"""Tests for gradient-scaled ("cleaning") noise."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import initstate

H = 3
LSTM = initstate.lstm(H)
STACK_TEMPLATE = initstate.stack([initstate.lstm(2), initstate.gru(4)]).carry_template


def _rows(template, values):
  """A carry-shaped tree of rows: row i of every leaf is filled with values[i]."""
  values = jnp.asarray(values, jnp.float32)
  return jax.tree.map(
      lambda t: jnp.broadcast_to(jnp.reshape(values, (-1,) + (1,) * t.ndim),
                                 values.shape + t.shape), template)


def _first_unit(carry):
  """Values of the first unit of the first leaf: [*batch]."""
  return np.asarray(jax.tree.leaves(carry)[0][..., 0])


class BufferTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_update_fills_slots_in_order_and_retires_the_oldest(self):
    cleaning = initstate.cleaning_noise(buffer_size=4)
    buffer = cleaning.init_state(LSTM.carry_template)
    self.assertEqual(buffer.capacity, 4)
    self.assertEqual(int(buffer.size()), 0)
    update = self.variant(cleaning.update_state)
    buffer = update(buffer, _rows(LSTM.carry_template, [1., 2., 3.]))
    self.assertEqual(int(buffer.count), 3)
    self.assertEqual(int(buffer.size()), 3)
    np.testing.assert_array_equal(buffer.values.h[:, 0], [1., 2., 3., 0.])
    buffer = update(buffer, _rows(LSTM.carry_template, [4., 5.]))
    # Entry 5 went into slot 0, retiring entry 1 (the oldest).
    np.testing.assert_array_equal(buffer.values.h[:, 0], [5., 2., 3., 4.])
    np.testing.assert_array_equal(buffer.values.c[:, 1], [5., 2., 3., 4.])
    self.assertEqual(int(buffer.count), 5)
    self.assertEqual(int(buffer.size()), 4)
    buffer = update(buffer, _rows(LSTM.carry_template, [6.]))
    np.testing.assert_array_equal(buffer.values.h[:, 0], [5., 6., 3., 4.])

  def test_more_rows_than_capacity_keeps_the_newest(self):
    cleaning = initstate.cleaning_noise(buffer_size=3)
    buffer = cleaning.init_state(LSTM.carry_template)
    buffer = cleaning.update_state(buffer, _rows(LSTM.carry_template, [1.]))
    buffer = cleaning.update_state(buffer, _rows(LSTM.carry_template, [2., 3., 4., 5., 6.]))
    self.assertEqual(int(buffer.count), 6)
    # Entries 4, 5, 6 remain, each in slot (entry number - 1) % 3.
    np.testing.assert_array_equal(buffer.values.h[:, 0], [4., 5., 6.])

  def test_update_with_no_rows_is_a_no_op(self):
    cleaning = initstate.cleaning_noise(buffer_size=3)
    buffer = cleaning.init_state(LSTM.carry_template)
    same = cleaning.update_state(buffer, _rows(LSTM.carry_template, jnp.zeros((0,))))
    self.assertEqual(int(same.count), 0)

  def test_stack_carry_buffer(self):
    cleaning = initstate.cleaning_noise(buffer_size=5)
    buffer = cleaning.init_state(STACK_TEMPLATE)
    for leaf, t in zip(jax.tree.leaves(buffer.values), jax.tree.leaves(STACK_TEMPLATE)):
      self.assertEqual(leaf.shape, (5,) + t.shape)
    buffer = cleaning.update_state(buffer, _rows(STACK_TEMPLATE, [7., 8.]))
    for leaf in jax.tree.leaves(buffer.values):
      np.testing.assert_array_equal(leaf[:2].reshape(2, -1)[:, 0], [7., 8.])

  def test_bad_update_input(self):
    cleaning = initstate.cleaning_noise(buffer_size=3)
    buffer = cleaning.init_state(LSTM.carry_template)
    with self.assertRaisesRegex(ValueError, 'unit shape'):
      cleaning.update_state(
          buffer, initstate.LSTMCarry(jnp.zeros((2, H + 1)), jnp.zeros((2, H + 1))))
    with self.assertRaisesRegex(ValueError, 'tree structure'):
      cleaning.update_state(buffer, jnp.zeros((2, H)))
    with self.assertRaisesRegex(ValueError, 'row count'):
      cleaning.update_state(buffer, initstate.LSTMCarry(jnp.zeros((2, H)), jnp.zeros((3, H))))
    with self.assertRaisesRegex(TypeError, 'GradientBuffer'):
      cleaning.update_state(buffer.values, _rows(LSTM.carry_template, [1.]))

  @parameterized.parameters(
      dict(kwargs=dict(buffer_size=0), error='buffer_size'),
      dict(kwargs=dict(buffer_size=True), error='buffer_size'),
      dict(kwargs=dict(scale=-1.0), error='`scale`'),
      dict(kwargs=dict(draw='row'), error='draw'),
      dict(kwargs=dict(sign='random'), error='sign'),
      dict(kwargs=dict(cross_device='sum'), error='cross_device'),
  )
  def test_bad_options(self, kwargs, error):
    with self.assertRaisesRegex(ValueError, error):
      initstate.cleaning_noise(**kwargs)


class SamplingTest(parameterized.TestCase):

  def _filled(self, cleaning, values, template=LSTM.carry_template):
    buffer = cleaning.init_state(template)
    return cleaning.update_state(buffer, _rows(template, values))

  @chex.variants(with_jit=True, without_jit=True)
  def test_each_entry_drawn_about_equally_often(self):
    k = 8
    cleaning = initstate.cleaning_noise(buffer_size=k, sign='none')
    buffer = self._filled(cleaning, np.arange(1, k + 1))
    params = cleaning.init(None, LSTM.carry_template)
    n = 16000
    carry = self.variant(
        lambda p, k, b: cleaning.init_carry(p, k, n, train=True, state=b))(
            params, jax.random.key(0), buffer)
    drawn = _first_unit(carry)
    # draw='vector': every unit and leaf of a sequence comes from the same entry.
    np.testing.assert_array_equal(np.asarray(carry.h), np.asarray(carry.c))
    np.testing.assert_array_equal(np.asarray(carry.h), np.repeat(drawn[:, None], H, axis=1))
    counts = np.array([(drawn == v).sum() for v in range(1, k + 1)])
    self.assertEqual(counts.sum(), n)
    # Multinomial: std of a count is sqrt(n p (1 - p)) ~ 42; allow 5 sigma.
    np.testing.assert_array_less(np.abs(counts - n / k), 5 * np.sqrt(n / k * (1 - 1 / k)))

  def test_partially_filled_buffer_draws_only_filled_slots(self):
    cleaning = initstate.cleaning_noise(buffer_size=8, sign='none')
    buffer = self._filled(cleaning, [1., 2., 3.])
    params = cleaning.init(None, LSTM.carry_template)
    drawn = _first_unit(
        cleaning.init_carry(params, jax.random.key(1), 3000, train=True, state=buffer))
    self.assertEqual(set(np.unique(drawn)), {1., 2., 3.})
    np.testing.assert_array_less(np.abs(np.bincount(drawn.astype(int))[1:] - 1000), 200)

  def test_draw_unit_is_independent_per_unit(self):
    cleaning = initstate.cleaning_noise(buffer_size=4, sign='none', draw='unit')
    buffer = self._filled(cleaning, [1., 2., 3., 4.])
    params = cleaning.init(None, LSTM.carry_template)
    carry = cleaning.init_carry(params, jax.random.key(2), 20000, train=True, state=buffer)
    h = np.asarray(carry.h)
    for u in range(H):
      counts = np.bincount(h[:, u].astype(int))[1:]
      np.testing.assert_array_less(np.abs(counts - 5000), 5 * np.sqrt(20000 * 0.25 * 0.75))
    corr = np.corrcoef(h.T)
    np.testing.assert_array_less(np.abs(corr - np.eye(H)), 0.05)
    # Different leaves draw independently too.
    self.assertLess(abs(np.corrcoef(h[:, 0], np.asarray(carry.c)[:, 0])[0, 1]), 0.05)

  @parameterized.parameters('unit', 'vector')
  def test_signs(self, sign):
    cleaning = initstate.cleaning_noise(buffer_size=2, sign=sign, scale=0.5)
    buffer = self._filled(cleaning, [2., 2.])
    params = cleaning.init(None, LSTM.carry_template)
    carry = cleaning.init_carry(params, jax.random.key(3), 10000, train=True, state=buffer)
    h = np.asarray(carry.h)
    np.testing.assert_array_equal(np.abs(h), 1.0)  # scale * |entry|
    self.assertLess(abs(h.mean()), 0.05)              # random signs: mean zero
    same_sign_rows = np.mean(np.all(h == h[:, :1], axis=1))
    if sign == 'vector':
      self.assertEqual(same_sign_rows, 1.0)
    else:
      self.assertAlmostEqual(same_sign_rows, 2 * 0.5 ** H, delta=0.03)

  @chex.variants(with_jit=True, without_jit=True)
  def test_exactly_the_learned_carry_at_evaluation_and_when_empty(self):
    cleaning = initstate.cleaning_noise(buffer_size=4, initial_value=0.25)
    params = cleaning.init(None, STACK_TEMPLATE)
    empty = cleaning.init_state(STACK_TEMPLATE)
    full = cleaning.update_state(empty, _rows(STACK_TEMPLATE, [1., -2., 3., 4.]))
    learned = initstate.learned(0.25).init_carry(params, None, 6, train=False)
    init_carry = self.variant(
        lambda p, k, b, train: cleaning.init_carry(p, k, 6, train=train, state=b),
        static_argnames='train')
    chex.assert_trees_all_equal(init_carry(params, None, full, train=False), learned)
    chex.assert_trees_all_equal(init_carry(params, jax.random.key(0), empty, train=True),
                                learned)
    noisy = init_carry(params, jax.random.key(0), full, train=True)
    for a, b in zip(jax.tree.leaves(noisy), jax.tree.leaves(learned)):
      self.assertTrue(np.all(np.abs(np.asarray(a - b)) >= 1.0))

  def test_jit_and_no_jit_identical(self):
    cleaning = initstate.cleaning_noise(buffer_size=5, draw='unit', scale=0.3)
    params = cleaning.init(jax.random.key(0), STACK_TEMPLATE)
    buffer = cleaning.update_state(cleaning.init_state(STACK_TEMPLATE),
                             jax.tree.map(lambda t: jax.random.normal(
                                 jax.random.key(1), (3,) + t.shape), STACK_TEMPLATE))
    fn = lambda p, b, k: cleaning.init_carry(p, k, (2, 4), train=True, state=b)
    chex.assert_trees_all_equal(fn(params, buffer, jax.random.key(5)),
                                jax.jit(fn)(params, buffer, jax.random.key(5)))

  def test_no_gradient_through_the_noise(self):
    cleaning = initstate.cleaning_noise(buffer_size=2)
    params = cleaning.init(None, LSTM.carry_template)
    buffer = self._filled(cleaning, [1., 2.])
    def total(p, values):
      b = buffer._replace(values=values)
      return sum(jnp.sum(l) for l in jax.tree.leaves(
          cleaning.init_carry(p, jax.random.key(0), 5, train=True, state=b)))
    g_params, g_values = jax.grad(total, argnums=(0, 1))(params, buffer.values)
    for leaf in jax.tree.leaves(g_params):  # d sum / d learned = batch size
      np.testing.assert_array_equal(leaf, 5.0)
    for leaf in jax.tree.leaves(g_values):
      np.testing.assert_array_equal(leaf, 0.0)

  def test_bad_init_carry_input(self):
    cleaning = initstate.cleaning_noise(buffer_size=2)
    params = cleaning.init(None, LSTM.carry_template)
    buffer = cleaning.init_state(LSTM.carry_template)
    with self.assertRaisesRegex(ValueError, 'PRNG key'):
      cleaning.init_carry(params, None, 2, train=True, state=buffer)
    with self.assertRaisesRegex(TypeError, 'GradientBuffer'):
      cleaning.init_carry(params, jax.random.key(0), 2, train=True, state=buffer.values)
    other = initstate.cleaning_noise(buffer_size=3).init_state(LSTM.carry_template)
    with self.assertRaisesRegex(ValueError, 'buffer_size=2'):
      cleaning.init_carry(params, jax.random.key(0), 2, train=True, state=other)
    with self.assertRaisesRegex(ValueError, 'unit shapes'):
      cleaning.init_carry(params, jax.random.key(0), 2, train=True,
                          state=cleaning.init_state(STACK_TEMPLATE))
    with self.assertRaisesRegex(TypeError, 'train'):
      cleaning.init_carry(params, None, 2, train=None, state=buffer)


def _toy_data(key, batch, steps=6, features=2):
  k1, k2 = jax.random.split(key)
  x = jax.random.normal(k1, (batch, steps, features))
  offset = jax.random.normal(k2, (1, 1, H))
  y = jnp.cumsum(x[..., :1], axis=1) * 0.5 + offset  # targets: [B, T, H]
  return x, jnp.broadcast_to(y, (batch, steps, H))


class TrainingLoopTest(absltest.TestCase):

  def test_buffer_fills_and_noise_tracks_the_gradient_size(self):
    batch, capacity, num_steps = 8, 8, 40
    cleaning = initstate.cleaning_noise(buffer_size=capacity, scale=1.0, sign='unit')
    cell = initstate.lstm(H)
    params = {'cell': cell.init(jax.random.key(0), 2),
              'carry': cleaning.init(None, cell.carry_template)}
    buffer = cleaning.init_state(cell.carry_template)
    optimizer = optax.adam(3e-2)
    opt_state = optimizer.init(params)

    def loss_fn(params, probe, buffer, key, x, y):
      carry = cleaning.init_carry(params['carry'], key, batch, train=True, state=buffer)
      carry = jax.tree.map(jnp.add, carry, probe)
      out = initstate.scan_rnn(cell.bind(params['cell']), x, carry)
      return jnp.mean(initstate.squared_error(out.outputs, y)), carry

    @jax.jit
    def step(params, opt_state, buffer, key):
      k_data, k_noise = jax.random.split(key)
      x, y = _toy_data(k_data, batch)
      probe = jax.tree.map(lambda t: jnp.zeros((batch,) + t.shape), cell.carry_template)
      (loss, carry), (grads, carry_grads) = jax.value_and_grad(
          loss_fn, argnums=(0, 1), has_aux=True)(params, probe, buffer, k_noise, x, y)
      learned = initstate.learned().init_carry(params['carry'], None, batch, train=False)
      deviation = jax.tree.map(jnp.subtract, carry, learned)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      new_buffer = cleaning.update_state(buffer, carry_grads)
      return optax.apply_updates(params, updates), opt_state, new_buffer, dict(
          loss=loss, carry_grads=carry_grads, deviation=deviation, learned_grads=grads['carry'])

    grad_sizes, dev_sizes, counts = [], [], []
    for i in range(num_steps):
      params, opt_state, buffer, info = step(params, opt_state, buffer, jax.random.key(i))
      counts.append(int(buffer.count))
      grad_sizes.append(np.mean([np.abs(l).mean() for l in jax.tree.leaves(info['carry_grads'])]))
      dev_sizes.append(np.mean([np.abs(l).mean() for l in jax.tree.leaves(info['deviation'])]))
      # The probe's gradient summed over the batch is the learned carry's gradient.
      chex.assert_trees_all_close(jax.tree.map(lambda g: g.sum(0), info['carry_grads']),
                                  info['learned_grads'], atol=1e-6)
      if i == 0:  # Empty buffer: no deviation.
        self.assertEqual(dev_sizes[0], 0.0)
    # The buffer fills by one row per sequence and step, and keeps the last `capacity`.
    self.assertEqual(counts, [batch * (i + 1) for i in range(num_steps)])
    np.testing.assert_allclose(
        np.abs(np.asarray(buffer.values.h)),
        np.abs(np.asarray(info['carry_grads'].h)), rtol=0, atol=0)
    # With capacity == batch, step t draws from the gradients of step t - 1: the noise size
    # follows the gradient size (|deviation| = scale * |entry|).
    grad_sizes, dev_sizes = np.array(grad_sizes), np.array(dev_sizes)
    ratio = dev_sizes[1:] / grad_sizes[:-1]
    np.testing.assert_array_less(0.5, ratio)
    np.testing.assert_array_less(ratio, 2.0)
    self.assertGreater(grad_sizes.max() / grad_sizes.min(), 2.0)  # sizes do vary ...
    self.assertGreater(np.corrcoef(np.log(dev_sizes[1:]), np.log(grad_sizes[:-1]))[0, 1], 0.8)


_MULTI_DEVICE_SCRIPT = textwrap.dedent('''
    import functools
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    import initstate
    assert jax.device_count() == 4, jax.devices()
    template = initstate.lstm(3).carry_template
    rows = jax.tree.map(lambda t: jax.random.normal(jax.random.key(0), (4, 2) + t.shape),
                        template)                                   # [devices, rows, H]
    for mode in ('gather', 'mean'):
      cleaning = initstate.cleaning_noise(buffer_size=16, cross_device=mode)
      buffer = cleaning.init_state(template)
      reference_rows = (jax.tree.map(lambda r: r.reshape((8,) + r.shape[2:]), rows)
                        if mode == 'gather' else jax.tree.map(lambda r: r.mean(0), rows))
      reference = cleaning.update_state(buffer, reference_rows)
      replicated = jax.tree.map(lambda b: jnp.broadcast_to(b, (4,) + b.shape), buffer)
      out = jax.pmap(functools.partial(cleaning.update_state, axis_name='d'), axis_name='d')(
          replicated, rows)
      for d in range(4):
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(reference)):
          np.testing.assert_allclose(a[d], b, rtol=1e-6, atol=1e-6)
      mesh = Mesh(np.array(jax.devices()), ('d',))
      flat = jax.tree.map(lambda r: r.reshape((8,) + r.shape[2:]), rows)
      sm = jax.shard_map(functools.partial(cleaning.update_state, axis_name='d'), mesh=mesh,
                         in_specs=(P(), P('d')), out_specs=P(), check_vma=False)
      out = jax.jit(sm)(buffer, flat)
      for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    print('OK')
''')


@pytest.mark.slow
class MultiDeviceTest(absltest.TestCase):

  def test_pmap_and_shard_map_gather_and_mean(self):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
               JAX_PLATFORMS='cpu')
    result = subprocess.run([sys.executable, '-c', _MULTI_DEVICE_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn('OK', result.stdout)


class ModuleTest(absltest.TestCase):

  def test_rnn_module_with_cleaning_noise(self):
    batch, steps = 4, 5
    cleaning = initstate.cleaning_noise(buffer_size=6, scale=2.0)
    model = initstate.nn.RNN(initstate.lstm(H), carry=cleaning)
    x = jax.random.normal(jax.random.key(0), (batch, steps, 2))
    variables = model.init({'params': jax.random.key(1)}, x, train=False)
    self.assertEqual(set(variables), {'params', 'carry_state', 'perturbations'})
    self.assertIsInstance(variables['carry_state']['state'], initstate.GradientBuffer)
    self.assertEqual(int(variables['carry_state']['state'].count), 0)
    params, carry_state = variables['params'], variables['carry_state']

    def loss_fn(params, perturbations, carry_state, key):
      out = model.apply({'params': params, 'carry_state': carry_state,
                         'perturbations': perturbations}, x, train=True, rngs={'carry': key})
      return jnp.mean(out.outputs ** 2)

    perturbations = variables['perturbations']
    grad_fn = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))
    for i in range(3):
      _, carry_grads = grad_fn(params, perturbations, carry_state, jax.random.key(i))
      carry_state = initstate.nn.update_carry_state(cleaning, carry_state, carry_grads)
    self.assertEqual(int(carry_state['state'].count), 3 * batch)
    # Entries 8..11 (the last step's rows) sit in slots 2..5 of the 6.
    np.testing.assert_array_equal(carry_state['state'].values.h[2:],
                                  carry_grads['initial_carry'].h)
    # Training draws noise (the buffer is full of non-zero gradients) ...
    noisy = model.apply({'params': params, 'carry_state': carry_state}, x, train=True,
                        rngs={'carry': jax.random.key(9)})
    # ... evaluation is exactly the learned carry, with or without the state.
    learned_model = initstate.nn.RNN(initstate.lstm(H), carry=initstate.learned())
    reference = learned_model.apply({'params': params}, x, train=False)
    for variables_eval in ({'params': params}, {'params': params, 'carry_state': carry_state}):
      out = model.apply(variables_eval, x, train=False)
      chex.assert_trees_all_equal(out.outputs, reference.outputs)
    self.assertGreater(float(jnp.max(jnp.abs(noisy.outputs - reference.outputs))), 1e-3)
    with self.assertRaisesRegex(ValueError, 'carry_state'):
      model.apply({'params': params}, x, train=True, rngs={'carry': jax.random.key(0)})
    with self.assertRaisesRegex(ValueError, 'perturbations'):
      initstate.nn.update_carry_state(cleaning, carry_state, {})

  def test_nested_module_states(self):
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    cleaning_a, cleaning_b = initstate.cleaning_noise(3), initstate.cleaning_noise(5)

    class Two(nn.Module):
      @nn.compact
      def __call__(self, x, train):
        a = initstate.nn.RNN(initstate.gru(2), carry=cleaning_a, name='a')
        b = initstate.nn.RNN(initstate.lstm(2), carry=cleaning_b, name='b')
        return b(a(x, train=train).outputs, train=train).outputs

    model = Two()
    x = jnp.ones((2, 3, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    grads = jax.grad(lambda p: jnp.sum(model.apply(
        {'params': variables['params'], 'carry_state': variables['carry_state'],
         'perturbations': p}, x, train=True, rngs={'carry': jax.random.key(1)})))(
             variables['perturbations'])
    # One call updates every layer's state (the two strategies differ only in capacity) ...
    states = initstate.nn.update_carry_state(cleaning_a, variables['carry_state'], grads)
    self.assertEqual(set(states), {'a', 'b'})
    self.assertEqual(int(states['a']['state'].count), 2)
    self.assertEqual(states['a']['state'].capacity, 3)
    self.assertEqual(states['b']['state'].capacity, 5)
    self.assertEqual(int(states['b']['state'].count), 2)
    np.testing.assert_array_equal(states['b']['state'].values.c[:2],
                                  grads['b']['initial_carry'].c)
    # ... and each layer's own strategy can update its part of the collection.
    state_b = initstate.nn.update_carry_state(cleaning_b, variables['carry_state']['b'],
                                              grads['b'])
    chex.assert_trees_all_equal(state_b, states['b'])


if __name__ == '__main__':
  absltest.main()
