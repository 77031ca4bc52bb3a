"""Tests for the Flax module initstate.nn.RNN, and training with optax."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import initstate
from initstate.studies import demo

B, T, D, H = 2, 5, 3, 4


def _x(seed=0):
  return jax.random.normal(jax.random.key(seed), (B, T, D))


class ParamTreeTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('zeros', initstate.zeros(), False), ('noisy', initstate.noisy(0.3), False),
      ('learned', initstate.learned(), True), ('noisy_learned', initstate.noisy_learned(0.3), True))
  def test_layout(self, strategy, has_carry):
    model = initstate.nn.RNN(initstate.lstm(H), carry=strategy)
    params = model.init(jax.random.key(0), _x(), train=False)['params']
    self.assertEqual(set(params), {'cell', 'carry'} if has_carry else {'cell'})
    if has_carry:
      self.assertIsInstance(params['carry'], initstate.LSTMCarry)
      self.assertEqual(params['carry'].h.shape, (H,))

  def test_flax_cell_and_stack(self):
    model = initstate.nn.RNN(nn.GRUCell(H), carry=initstate.learned())
    params = model.init(jax.random.key(0), _x(), train=False)['params']
    self.assertIn('hn', params['cell'])
    self.assertEqual(params['carry'].shape, (H,))
    stacked = initstate.nn.RNN(initstate.stack([initstate.lstm(H), initstate.elman(2)]),
                               carry=initstate.learned())
    params = stacked.init(jax.random.key(0), _x(), train=False)['params']
    self.assertLen(params['carry'], 2)
    self.assertLen(params['cell'], 2)

  def test_cell_params_do_not_depend_on_strategy(self):
    p_zero = initstate.nn.RNN(initstate.lstm(H)).init(jax.random.key(0), _x(), train=False)
    p_learned = initstate.nn.RNN(initstate.lstm(H), carry=initstate.learned()).init(
        jax.random.key(0), _x(), train=False)
    chex.assert_trees_all_equal(p_zero['params']['cell'], p_learned['params']['cell'])


class ApplyTest(parameterized.TestCase):

  def test_matches_scan_rnn(self):
    cell = initstate.lstm(H)
    model = initstate.nn.RNN(cell, carry=initstate.learned(0.3), burn_in=1)
    variables = model.init(jax.random.key(0), _x(), train=False)
    lengths = jnp.array([5, 3])
    out = jax.jit(functools.partial(model.apply, train=True))(
        variables, _x(), seq_lengths=lengths)
    p = variables['params']
    ref = initstate.scan_rnn(
        cell.bind(p['cell']), _x(),
        initstate.learned().init_carry(p['carry'], None, B, train=True), seq_lengths=lengths,
        burn_in=1)
    chex.assert_trees_all_close(out, ref, atol=1e-6)

  def test_train_switch_and_rng_stream(self):
    model = initstate.nn.RNN(initstate.lstm(H), carry=initstate.noisy(0.5))
    variables = model.init(jax.random.key(0), _x(), train=False)
    zero_model = initstate.nn.RNN(initstate.lstm(H))
    apply = jax.jit(model.apply, static_argnames='train')
    evaluation = apply(variables, _x(), train=False)
    chex.assert_trees_all_close(evaluation, zero_model.apply(variables, _x(), train=False))
    a = apply(variables, _x(), train=True, rngs={'carry': jax.random.key(1)})
    b = apply(variables, _x(), train=True, rngs={'carry': jax.random.key(1)})
    c = apply(variables, _x(), train=True, rngs={'carry': jax.random.key(2)})
    chex.assert_trees_all_equal(a, b)
    self.assertFalse(np.allclose(a.outputs, c.outputs))
    self.assertFalse(np.allclose(a.outputs, evaluation.outputs))
    with self.assertRaisesRegex(ValueError, r'rngs=\{"carry": key\}'):
      model.apply(variables, _x(), train=True)

  def test_train_attribute_and_merge(self):
    model = initstate.nn.RNN(initstate.lstm(H), carry=initstate.noisy(0.5), train=False)
    variables = model.init(jax.random.key(0), _x())
    out = model.apply(variables, _x())
    self.assertTrue(np.all(np.isfinite(out.outputs)))
    with self.assertRaises(ValueError):
      initstate.nn.RNN(initstate.lstm(H)).init(jax.random.key(0), _x())  # No train given.

  def test_resets_and_initial_carry(self):
    model = initstate.nn.RNN(initstate.gru(H), carry=initstate.learned(0.5))
    variables = model.init(jax.random.key(0), _x(), train=False)
    resets = jnp.zeros((B, T), bool).at[:, 2].set(True)
    out = model.apply(variables, _x(), resets=resets, train=False)
    tail = model.apply(variables, _x()[:, 2:], train=False)
    np.testing.assert_allclose(out.outputs[:, 2:], tail.outputs, atol=1e-6)
    # Stateful use: hand the final carry of one window to the next.
    first = model.apply(variables, _x()[:, :2], train=False)
    second = model.apply(variables, _x()[:, 2:], initial_carry=first.final_carry, train=False)
    whole = model.apply(variables, _x(), train=False)
    np.testing.assert_allclose(second.outputs, whole.outputs[:, 2:], atol=1e-6)

  def test_bad_inputs(self):
    model = initstate.nn.RNN(initstate.lstm(H))
    with self.assertRaisesRegex(ValueError, r'\[B, T, D\]'):
      model.init(jax.random.key(0), jnp.ones((B, T)), train=False)
    with self.assertRaisesRegex(TypeError, 'CarryStrategy'):
      initstate.nn.RNN(initstate.lstm(H), carry='learned').init(
          jax.random.key(0), _x(), train=False)


class CarryStateTest(parameterized.TestCase):
  """A stateful strategy keeps its state in collection 'carry_state', variable 'state'."""

  @parameterized.named_parameters(
      ('zeros', initstate.zeros()), ('learned', initstate.learned()),
      ('noisy', initstate.noisy(0.3)), ('noisy_learned', initstate.noisy_learned(0.3)),
      ('latent', initstate.latent(2)))
  def test_stateless_strategies_create_no_state(self, strategy):
    model = initstate.nn.RNN(initstate.lstm(H), carry=strategy)
    variables = model.init({'params': jax.random.key(0), 'carry': jax.random.key(1)}, _x(),
                           train=True)
    self.assertEqual(set(variables), {'params'})
    # Training needs no state collection and makes none.
    out, mutated = model.apply(variables, _x(), train=True, rngs={'carry': jax.random.key(2)},
                               mutable=True)
    self.assertEqual(out.outputs.shape, (B, T, H))
    self.assertNotIn('carry_state', mutated)
    self.assertNotIn('perturbations', mutated)

  def test_cleaning_state_in_the_carry_state_collection(self):
    cleaning = initstate.cleaning_noise(buffer_size=8)
    model = initstate.nn.RNN(initstate.gru(H), carry=cleaning)
    variables = model.init({'params': jax.random.key(0)}, _x(), train=False)
    self.assertEqual(set(variables), {'params', 'carry_state', 'perturbations'})
    self.assertEqual(set(variables['carry_state']), {'state'})
    state = variables['carry_state']['state']
    self.assertIsInstance(state, initstate.GradientBuffer)
    chex.assert_trees_all_equal(state, cleaning.init_state(initstate.gru(H).carry_template))
    self.assertEqual(variables['perturbations']['initial_carry'].shape, (B, H))
    # update_carry_state pushes one entry per sequence, into the same place.
    carry_grads = {'initial_carry': jnp.arange(B * H, dtype=jnp.float32).reshape(B, H)}
    updated = jax.jit(lambda s, g: initstate.nn.update_carry_state(cleaning, s, g))(
        variables['carry_state'], carry_grads)
    self.assertEqual(set(updated), {'state'})
    self.assertEqual(int(updated['state'].count), B)
    np.testing.assert_array_equal(updated['state'].values[:B], carry_grads['initial_carry'])
    # Training without the collection is a clear error; evaluation needs none.
    with self.assertRaisesRegex(ValueError, r'variables\["carry_state"\].*train=False'):
      model.apply({'params': variables['params']}, _x(), train=True,
                  rngs={'carry': jax.random.key(1)})
    out = model.apply({'params': variables['params']}, _x(), train=False)
    self.assertEqual(out.outputs.shape, (B, T, H))

  def test_update_carry_state_errors(self):
    cleaning = initstate.cleaning_noise(buffer_size=8)
    with self.assertRaisesRegex(TypeError, '`strategy`'):
      initstate.nn.update_carry_state('cleaning', {}, {})
    with self.assertRaisesRegex(TypeError, '`carry_state`'):
      initstate.nn.update_carry_state(cleaning, cleaning.init_state(jnp.zeros((H,))), {})
    # Nothing stateful in the collection: nothing to update.
    self.assertEqual(initstate.nn.update_carry_state(cleaning, {}, {}), {})


class TrainingTest(absltest.TestCase):

  @pytest.mark.slow   # An end-to-end study: two compiled training runs.
  def test_learned_carry_beats_zero_carry_early(self):
    key = jax.random.key(0)
    zero = demo.train(key, initstate.zeros(), steps=300)
    learned = demo.train(key, initstate.learned(), steps=300)
    # Training ran and improved.
    self.assertLess(float(learned.train_loss[-20:].mean()), float(learned.train_loss[:20].mean()))
    self.assertEqual(float(zero.learned_carry_norm), 0.0)
    self.assertGreater(float(learned.learned_carry_norm), 0.1)  # Moved away from zero.
    early_zero = float(zero.eval_loss_by_step[:2].mean())
    early_learned = float(learned.eval_loss_by_step[:2].mean())
    self.assertLess(early_learned, early_zero)

  def test_optax_loop_updates_carry_param(self):
    model = initstate.nn.RNN(initstate.lstm(H), carry=initstate.noisy_learned(0.1))
    params = model.init(jax.random.key(0), _x(), train=False)['params']
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, rng):
      def loss_fn(p):
        out = model.apply({'params': p}, _x(), train=True, rngs={'carry': rng})
        return initstate.masked_mean(jnp.sum(jnp.square(out.outputs - 0.5), -1), out.mask)
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    for i in range(3):
      new_params, opt_state, loss = step(params, opt_state, jax.random.key(i))
      self.assertTrue(np.isfinite(loss))
    self.assertFalse(np.allclose(new_params['carry'].h, params['carry'].h))


@pytest.mark.slow   # An end-to-end study: three compiled training runs.
class MainTest(absltest.TestCase):

  def test_demo_main_prints_a_row_per_strategy(self):
    import contextlib
    import io
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
      demo.main(['--steps', '5'])
    text = buffer.getvalue()
    for name in ('zeros', 'learned', 'noisy_learned(0.1)'):
      self.assertIn(f'\n{name} ', text)


if __name__ == '__main__':
  absltest.main()
