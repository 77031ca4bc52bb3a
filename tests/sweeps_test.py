"""Tests for sweeps: `training.sweep` equals `jax.vmap` in every chunking and on several
devices, and a model trained inside a sweep equals the same model trained alone."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import initstate
from initstate import training

B, T, D, H = 6, 7, 2, 4


def make_model(hp):
  """One model of a sweep from its hyperparameters (Python scalars, or traced per model).

  hp: learning_rate (Adam), burn_in (steps left out of the loss), noise (stddev of the
  noisy learned carry) and seed (initial weights and the step keys).
  """
  cell = initstate.lstm(H)
  strategy = initstate.noisy_learned(hp['noise'])
  optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=hp['learning_rate'])

  def loss_fn(params, batch, rng, initial_carry):
    keys = training.example_keys(rng, B)
    out = initstate.scan_rnn(cell.bind(params['cell']), batch['x'],
                             initial_carry(params['carry'], keys))
    per_step = initstate.squared_error(out.outputs @ params['readout'], batch['y'])
    mask = initstate.loss_mask(None, T, burn_in=hp['burn_in'], batch_size=B)
    return initstate.masked_mean(per_step, mask)

  def init():
    key = jax.random.key(hp['seed'])
    k_cell, k_out, k_carry, k_rng = jax.random.split(key, 4)
    params = {'cell': cell.init(k_cell, D),
              'readout': 0.3 * jax.random.normal(k_out, (H, 1)),
              'carry': strategy.init(k_carry, cell.carry_template)}
    return training.TrainState.create(params, optimizer, k_rng)

  return init, training.train_step(loss_fn, optimizer, strategy=strategy)


def batches(steps):
  k = jax.random.key(42)
  x = jax.random.normal(k, (steps, B, T, D))
  return {'x': x, 'y': jnp.cumsum(x[..., :1], axis=2)}


def init(hp):
  return make_model(hp)[0]()


def fit(state, hp, data):
  """One step per batch of `data` ([steps, ...] leaves) from `state`."""
  return jax.lax.scan(make_model(hp)[1], state, data)


def train(hp, data):
  """Initialises one model and takes one step per batch of `data`."""
  return fit(init(hp), hp, data)


class GridTest(absltest.TestCase):

  def test_product_order_last_axis_fastest(self):
    g = training.grid(m=[0, 5], lr=[1e-3, 1e-2, 1e-1])
    np.testing.assert_array_equal(g['m'], [0, 0, 0, 5, 5, 5])
    np.testing.assert_allclose(g['lr'], [1e-3, 1e-2, 1e-1] * 2)

  def test_bad_axes(self):
    with self.assertRaisesRegex(ValueError, 'at least one'):
      training.grid()
    with self.assertRaisesRegex(ValueError, '`m` has no values'):
      training.grid(m=[])
    with self.assertRaisesRegex(TypeError, '`m` must be a sequence'):
      training.grid(m=3)
    with self.assertRaisesRegex(TypeError, '`m` must be a sequence'):
      training.grid(m='abc')

  def test_take_and_num_models(self):
    tree = {'a': jnp.arange(6).reshape(3, 2), 'b': jnp.arange(3.0)}
    self.assertEqual(training.num_models(tree), 3)
    np.testing.assert_array_equal(training.take(tree, 1)['a'], [2, 3])
    np.testing.assert_array_equal(training.take(tree, -1)['b'], 2.0)
    with self.assertRaisesRegex(IndexError, r'in \[-3, 2\]'):
      training.take(tree, 3)
    with self.assertRaisesRegex(ValueError, 'same leading model axis'):
      training.num_models({'a': jnp.zeros(3), 'b': jnp.zeros(4)})
    with self.assertRaisesRegex(ValueError, 'same leading model axis'):
      training.num_models({'a': jnp.zeros(3), 'b': 1.0})


class SweepTest(parameterized.TestCase):

  @parameterized.parameters(None, 1, 2, 3, 5, 8)
  def test_equals_vmap(self, chunk_size):
    def fn(w, lr, x):
      return {'w': w - lr * jnp.tanh(w @ x)[:, None], 'norm': jnp.sum(w ** 2)}

    w = jax.random.normal(jax.random.key(0), (5, 3, 3))
    lr = jnp.linspace(0.1, 0.5, 5)
    x = jnp.ones((3,))
    got = jax.jit(training.sweep(fn, (0, 0, None), chunk_size=chunk_size))(w, lr, x)
    want = jax.vmap(fn, (0, 0, None))(w, lr, x)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, e, rtol=1e-6)

  @parameterized.parameters((None, 10, 1), (5, 10, 1), (4, 8, 1), (4, 10, 2), (12, 10, 1))
  def test_traces_once_unless_the_chunk_size_leaves_a_rest(self, chunk_size, models, traces):
    traced = []

    def fn(w):
      traced.append(w.shape)
      return 2 * w

    jax.jit(training.sweep(fn, chunk_size=chunk_size)).lower(jnp.ones((models, 3)))
    self.assertLen(traced, traces)

  def test_per_model_keys(self):
    keys = jax.random.split(jax.random.key(3), 4)
    draw = lambda k: jax.random.normal(k, (2,))
    np.testing.assert_array_equal(training.sweep(draw, chunk_size=3)(keys),
                                  jax.vmap(draw)(keys))

  def test_one_device_list(self):
    f = training.sweep(lambda a: 2 * a, devices=jax.devices()[:1])
    np.testing.assert_array_equal(jax.jit(f)(jnp.arange(3.0)), [0.0, 2.0, 4.0])

  def test_bad_arguments(self):
    f = lambda a, b: a + b
    with self.assertRaisesRegex(ValueError, 'chunk_size'):
      training.sweep(f, chunk_size=0)
    with self.assertRaisesRegex(TypeError, 'devices'):
      training.sweep(f, devices=['cpu'])
    with self.assertRaisesRegex(TypeError, '`fn` must be a callable'):
      training.sweep(3)
    with self.assertRaisesRegex(ValueError, 'has 3 entries for 2 arguments'):
      training.sweep(f, (0, 0, 0))(jnp.ones(2), jnp.ones(2))
    with self.assertRaisesRegex(ValueError, 'must be 0'):
      training.sweep(f, (1, 0))(jnp.ones(2), jnp.ones(2))
    with self.assertRaisesRegex(ValueError, 'maps no argument'):
      training.sweep(f, None)(jnp.ones(2), jnp.ones(2))
    with self.assertRaisesRegex(ValueError, 'same leading model axis'):
      training.sweep(f)(jnp.ones(2), jnp.ones(3))

  def test_traced_burn_in_must_be_an_int_scalar(self):
    mask = jax.vmap(lambda m: initstate.loss_mask(None, 4, burn_in=m, batch_size=1))(
        jnp.array([0, 2]))
    np.testing.assert_array_equal(mask[:, 0].astype(int), [[1, 1, 1, 1], [0, 0, 1, 1]])
    with self.assertRaisesRegex(ValueError, 'traced `burn_in` must be an int scalar'):
      jax.jit(lambda m: initstate.loss_mask(None, 4, burn_in=m, batch_size=1))(1.0)


def check_sweep_equals_alone(test, chunk_size, models):
  hps = training.grid(learning_rate=[1e-2, 3e-2], burn_in=[0, 3], noise=[0.0, 0.5], seed=[7])
  hps = {k: jnp.asarray(v) for k, v in hps.items()}
  data = batches(steps=3)
  states, losses = jax.jit(training.sweep(train, (0, None), chunk_size=chunk_size))(hps, data)
  test.assertEqual(training.num_models(states.params), 8)
  for i in models:  # Alone: Python-scalar hyperparameters, no model axis.
    hp = {k: v.item() for k, v in training.take(hps, i).items()}
    alone, alone_losses = jax.jit(lambda d, hp=hp: train(hp, d))(data)
    np.testing.assert_allclose(losses[i], alone_losses, rtol=1e-5, atol=1e-7)
    for g, e in zip(jax.tree.leaves(training.take(states.params, i)),
                    jax.tree.leaves(alone.params)):
      np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
  # The hyperparameters matter: models that differ only in one of them end apart.
  for a, b in ((0, 4), (0, 2), (0, 1)):  # learning rate, burn-in, noise
    test.assertFalse(np.allclose(losses[a], losses[b]), (a, b))


class TrainedInASweepTest(absltest.TestCase):
  """Per-model learning rate, burn-in, noise and seed, stacked with `grid` and trained
  together, give each model what training it alone gives."""

  def test_sweep_equals_alone(self):
    check_sweep_equals_alone(self, chunk_size=3, models=(7,))


@pytest.mark.slow
class TrainedInASweepMoreTest(parameterized.TestCase):

  @parameterized.parameters(None, 1, 8)
  def test_sweep_equals_alone(self, chunk_size):
    check_sweep_equals_alone(self, chunk_size=chunk_size, models=(0, 2, 5))


_DEVICES_SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update('jax_num_cpu_devices', 2)
    sys_path = __import__('sys').path.insert(0, {tests!r})
    from sweeps_test import batches, fit, init, train
    from initstate import training
    assert jax.device_count() == 2, jax.devices()
    hps = {{k: jnp.asarray(v) for k, v in training.grid(
        learning_rate=[1e-2, 3e-2], burn_in=[0, 3], noise=[0.0, 0.5], seed=[7]).items()}}
    data = batches(steps=3)
    want = jax.jit(jax.vmap(train, (0, None)))(hps, data)
    # Initialised on one device (batched QR on two CPU devices at once can deadlock).
    states = jax.jit(jax.vmap(init))(hps)
    for chunk_size in (None, 3):
      got = jax.jit(training.sweep(fit, (0, 0, None), chunk_size=chunk_size,
                                   devices=jax.devices()))(states, hps, data)
      assert len(got[1].sharding.device_set) == 2, got[1].sharding
      for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        if jnp.issubdtype(g.dtype, jax.dtypes.prng_key):
          g, e = jax.random.key_data(g), jax.random.key_data(e)
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    three = jax.tree.map(lambda a: a[:3], (states, hps))  # not a multiple of 2: padded
    got = jax.jit(training.sweep(fit, (0, 0, None), chunk_size=2, devices=jax.devices()))(
        *three, data)
    assert got[1].shape[0] == 3, got[1].shape
    np.testing.assert_allclose(got[1], want[1][:3], rtol=1e-5, atol=1e-7)
    print('ok')
''')


@pytest.mark.slow
class DevicesTest(absltest.TestCase):

  def test_two_devices_equal_vmap(self):
    script = _DEVICES_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('ok', proc.stdout)


if __name__ == '__main__':
  absltest.main()
