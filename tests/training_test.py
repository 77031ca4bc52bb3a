"""Tests for the data-parallel train step: 1 device, a mesh of 8 and pmap over 8 agree."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import initstate

_SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import initstate
    assert jax.device_count() == 8, jax.devices()
    B, T, D, H = 16, 6, 3, 8
    cell = initstate.lstm(H)
    optimizer = optax.adam(1e-2)
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    y = jnp.cumsum(x[..., :1], axis=1)
    batch = {'x': x, 'y': y}
    cleaning = initstate.cleaning_noise(buffer_size=24, scale=0.5)
    strategies = {'zeros': initstate.zeros(), 'learned': initstate.learned(0.1),
                  'noisy_learned': initstate.noisy_learned(0.5), 'cleaning': cleaning}
    results = {}
    for name, strategy in strategies.items():
      params = {'cell': cell.init(jax.random.key(1), D), 'readout': jnp.ones((H, 1)) * 0.1,
                'carry': strategy.init(jax.random.key(2), cell.carry_template)}
      is_cleaning = name == 'cleaning'

      def make_loss(axis_name):
        def loss_fn(params, batch, rng, initial_carry):
          b = batch['x'].shape[0]
          keys = initstate.training.example_keys(rng, b, axis_name=axis_name)
          if initial_carry is None:   # strategy=None: the loss draws the carry itself.
            carry = initstate.training.per_example_carry(strategy, params['carry'], keys,
                                                         train=True)
          else:
            carry = initial_carry(params['carry'], keys)
          out = initstate.scan_rnn(cell.bind(params['cell']), batch['x'], carry)
          return jnp.mean((out.outputs @ params['readout'] - batch['y']) ** 2)
        return loss_fn

      carry_state = strategy.init_state(cell.carry_template)
      assert (len(jax.tree.leaves(carry_state)) > 0) == is_cleaning
      state0 = initstate.training.TrainState.create(params, optimizer, jax.random.key(3),
                                                    carry_state)
      # The zero carry runs without `strategy=` (initial_carry is None), the others with it.
      kw = {} if name == 'zeros' else dict(strategy=strategy)
      single = jax.jit(initstate.training.train_step(make_loss(None), optimizer, **kw))
      mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      sharded_batch = initstate.training.shard_batch(batch, mesh)
      mesh_step = jax.jit(initstate.training.train_step(make_loss(None), optimizer, **kw))
      pmap_step = jax.pmap(initstate.training.train_step(
          make_loss('data'), optimizer, axis_name='data', **kw), axis_name='data')
      pmap_batch = initstate.training.split_for_pmap(batch, 8)
      for steps in (1, 10):
        s1, sm = state0, initstate.training.replicate(state0, mesh)
        sp = initstate.training.replicate_for_pmap(state0, 8)
        for _ in range(steps):
          s1, l1 = single(s1, batch)
          sm, lm = mesh_step(sm, sharded_batch)
          sp, lp = pmap_step(sp, pmap_batch)
        assert len(sharded_batch['x'].sharding.device_set) == 8
        float_leaves = lambda s: [l for l in jax.tree.leaves((s.params, s.carry_state))
                                  if jnp.issubdtype(l.dtype, jnp.floating)]
        diff_mesh = max(float(jnp.max(jnp.abs(a - b)))
                        for a, b in zip(float_leaves(s1), float_leaves(sm)))
        diff_pmap = max(float(jnp.max(jnp.abs(a - b[0])))
                        for a, b in zip(float_leaves(s1), float_leaves(sp)))
        spread = max(float(jnp.max(jnp.abs(b - b[:1]))) for b in float_leaves(sp))
        if is_cleaning:
          assert int(s1.carry_state.count) == int(sm.carry_state.count) == 16 * steps
          assert int(sp.carry_state.count[0]) == 16 * steps
          assert float(jnp.abs(s1.carry_state.values.h).max()) > 0
        moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
            jax.tree.leaves(s1.params), jax.tree.leaves(state0.params)))
        results[f'{name}/{steps}'] = dict(mesh=diff_mesh, pmap=diff_pmap, spread=spread,
                                          moved=moved, loss=[float(l1), float(lm),
                                                             float(lp[0])])
    # The Flax layer with per-example noise: pmap over 8 gives the one-device outputs.
    model = initstate.nn.RNN(cell, carry=initstate.noisy_learned(0.5), per_example_noise=True,
                             axis_name='data')
    variables = model.init(jax.random.key(5), x, train=False)
    apply = lambda v, xs: model.apply(v, xs, train=True, rngs={'carry': jax.random.key(6)},
                                      resets=jnp.zeros(xs.shape[:2], bool).at[:, 2].set(True))
    one = initstate.nn.RNN(cell, carry=initstate.noisy_learned(0.5), per_example_noise=True)
    single_out = one.apply(variables, x, train=True, rngs={'carry': jax.random.key(6)},
                           resets=jnp.zeros(x.shape[:2], bool).at[:, 2].set(True)).outputs
    pmap_out = jax.pmap(lambda v, xs: apply(v, xs).outputs, axis_name='data',
                        in_axes=(None, 0))(variables, x.reshape(8, 2, T, D))
    results['module_pmap'] = dict(diff=float(jnp.max(jnp.abs(
        pmap_out.reshape(single_out.shape) - single_out))))
    errors = []
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    for fn, arg in ((initstate.training.shard_batch, mesh),
                    (initstate.training.split_for_pmap, 8)):
      try:
        fn({'x': jnp.ones((12, 3))}, arg)
      except ValueError as e:
        errors.append(str(e))
    print(json.dumps(dict(results=results, errors=errors)))
''')


@pytest.mark.slow
class MultiDeviceTest(absltest.TestCase):

  def test_one_device_mesh_and_pmap_agree(self):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
               JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
    import json  # pylint: disable=g-import-not-at-top
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertLess(out['results'].pop('module_pmap')['diff'], 1e-5)
    self.assertLen(out['results'], 8)
    for key, r in out['results'].items():
      self.assertLess(r['mesh'], 1e-5, key)     # 8-device mesh = 1 device
      self.assertLess(r['pmap'], 1e-5, key)     # pmap over 8 = 1 device
      self.assertEqual(r['spread'], 0.0, key)   # every pmap replica holds the same params
      self.assertGreater(r['moved'], 1e-3, key)  # and training did move them
      np.testing.assert_allclose(r['loss'], r['loss'][0], rtol=1e-5, err_msg=key)
    self.assertLen(out['errors'], 2)
    for message in out['errors']:
      self.assertRegex(message, r'batch size 12 must be a multiple of the 8 devices')


class PerExampleNoiseTest(absltest.TestCase):

  def test_noise_is_per_example_and_independent_of_the_batch(self):
    strategy = initstate.noisy(1.0)
    params = strategy.init(None, initstate.gru(4).carry_template)
    keys = initstate.training.example_keys(jax.random.key(0), 6)
    carry = initstate.training.per_example_carry(strategy, params, keys, train=True)
    self.assertEqual(carry.shape, (6, 4))
    self.assertGreater(float(jnp.min(jnp.abs(carry[1:] - carry[:-1]).max(-1))), 0.1)
    # Examples 2..5 of a batch get the same noise alone as inside the batch.
    np.testing.assert_array_equal(
        initstate.training.per_example_carry(strategy, params, keys[2:], train=True), carry[2:])
    evaluation = initstate.training.per_example_carry(strategy, params, keys, train=False)
    np.testing.assert_array_equal(evaluation, 0.0)

  @pytest.mark.slow   # 5 s.
  def test_rnn_module_per_example_noise_does_not_depend_on_the_batch_split(self):
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 5, 2)), (8, 5, 2))
    model = initstate.nn.RNN(initstate.lstm(4), carry=initstate.noisy_learned(0.5),
                             per_example_noise=True)
    variables = model.init(jax.random.key(1), x, train=False)
    run = jax.jit(lambda xs: model.apply(
        variables, xs, train=True, rngs={'carry': jax.random.key(2)},
        resets=jnp.zeros(xs.shape[:2], bool).at[:, 3].set(True)).outputs)
    full, half = run(x), run(x[:4])
    np.testing.assert_allclose(full[:4], half, atol=1e-6)   # the first 4 examples agree
    # And the noise is really per example: examples 4..7 differ from examples 0..3.
    self.assertGreater(float(jnp.abs(full[4:] - full[:4]).max()), 1e-3)

  def test_single_device_step(self):
    cell = initstate.gru(4)
    optimizer = optax.sgd(0.1)
    params = {'cell': cell.init(jax.random.key(0), 2)}
    batch = {'x': jnp.ones((3, 5, 2))}

    def loss_fn(params, batch, rng, initial_carry):
      del rng
      self.assertIsNone(initial_carry)   # No strategy: no initial carry.
      out = initstate.scan_rnn(cell.bind(params['cell']), batch['x'], jnp.zeros((3, 4)))
      return jnp.mean(out.outputs ** 2)

    state = initstate.training.TrainState.create(params, optimizer, jax.random.key(1))
    new, loss = jax.jit(initstate.training.train_step(loss_fn, optimizer))(state, batch)
    self.assertEqual(int(new.step), 1)
    self.assertFalse(np.array_equal(jax.random.key_data(new.rng),
                                    jax.random.key_data(state.rng)))
    grads = jax.grad(loss_fn)(params, batch, None, None)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-6)
    self.assertAlmostEqual(float(loss), float(loss_fn(params, batch, None, None)), places=6)
    with self.assertRaisesRegex(ValueError, 'leading batch dim'):
      initstate.training.train_step(loss_fn, optimizer)(
          state, {'x': jnp.ones((3, 5, 2)), 'y': jnp.ones((2,))})


B, T, D, H = 3, 4, 2, 4


def _setup(strategy):
  """(cell, params, batch) of a small GRU regression."""
  cell = initstate.gru(H)
  params = {'cell': cell.init(jax.random.key(0), D),
            'carry': strategy.init(jax.random.key(1), cell.carry_template)}
  x = jax.random.normal(jax.random.key(2), (B, T, D))
  batch = {'x': x, 'y': jnp.cumsum(x, axis=1)[..., :1]}
  return cell, params, batch


def _loss_from_carry(cell, params, batch, carry):
  out = initstate.scan_rnn(cell.bind(params['cell']), batch['x'], carry)
  return jnp.mean((out.outputs[..., :1] - batch['y']) ** 2)


class StrategyStepTest(absltest.TestCase):
  """`train_step(..., strategy=...)`: the initial carry it hands the loss and the state."""

  def _loss_fn(self, cell, seen_keys=None):
    def loss_fn(params, batch, rng, initial_carry):
      keys = initstate.training.example_keys(rng, batch['x'].shape[0])
      if seen_keys is not None:  # Records the keys the step's carry is drawn with.
        jax.debug.callback(lambda k: seen_keys.append(np.asarray(k)),
                           jax.random.key_data(keys))
      return _loss_from_carry(cell, params, batch, initial_carry(params['carry'], keys))
    return loss_fn

  def test_cleaning_buffer_holds_the_probe_gradient_times_b(self):
    cleaning = initstate.cleaning_noise(buffer_size=16, scale=1.0)
    cell, params, batch = _setup(cleaning)
    optimizer = optax.sgd(0.1)
    buffer0 = cleaning.init_state(cell.carry_template)
    state = initstate.training.TrainState.create(params, optimizer, jax.random.key(3), buffer0)
    seen_keys = []
    step = jax.jit(initstate.training.train_step(self._loss_fn(cell, seen_keys), optimizer,
                                                 strategy=cleaning))
    states = [state]
    for _ in range(3):
      state, _ = step(state, batch)
      states.append(state)
    self.assertLen(seen_keys, 3)
    self.assertIsInstance(state.carry_state, initstate.GradientBuffer)
    self.assertEqual([int(s.carry_state.count) for s in states], [0, B, 2 * B, 3 * B])

    # By hand: each step's carry (drawn with the state before it), the gradient of the loss
    # there (one row per example), times B; the learned carry's gradient is their mean.
    @jax.jit
    def by_hand(params, carry_state, key_data):
      carry = initstate.training.per_example_carry(
          cleaning, params['carry'], jax.random.wrap_key_data(key_data), train=True,
          state=carry_state)
      grads, carry_grads = jax.grad(lambda p, c: _loss_from_carry(cell, p, batch, c),
                                    argnums=(0, 1))(params, carry)
      return carry, grads, carry_grads

    for i in range(3):
      before, after = states[i], states[i + 1]
      carry, grads, carry_grads = by_hand(before.params, before.carry_state,
                                          jnp.asarray(seen_keys[i]))
      if i == 0:  # An empty buffer: exactly the learned carry.
        np.testing.assert_array_equal(
            carry, jnp.broadcast_to(before.params['carry'], (B, H)))
      else:
        self.assertGreater(float(jnp.abs(carry - before.params['carry'][None]).max()), 0.0)
      rows = after.carry_state.values[i * B:(i + 1) * B]
      np.testing.assert_allclose(rows, B * carry_grads, rtol=1e-5, atol=1e-7)
      self.assertGreater(float(jnp.abs(rows).max()), 1e-4)
      np.testing.assert_array_equal(after.carry_state.values[(i + 1) * B:], 0.0)
      # The update uses the full gradient (the noise carries none into the learned carry).
      np.testing.assert_allclose(
          after.params['carry'], before.params['carry'] - 0.1 * rows.mean(0),
          rtol=1e-5, atol=1e-7)
      chex.assert_trees_all_close(
          after.params['cell'],
          jax.tree.map(lambda p, g: p - 0.1 * g, before.params['cell'], grads['cell']),
          rtol=1e-5, atol=1e-7)

  def test_stateless_strategy_initial_carry_is_per_example_carry(self):
    strategy = initstate.noisy_learned(0.5, initial_value=0.25)
    cell, params, batch = _setup(strategy)
    optimizer = optax.sgd(0.1)
    state = initstate.training.TrainState.create(params, optimizer, jax.random.key(3))
    self.assertEqual(state.carry_state, initstate.EmptyState())
    seen = []

    def loss_fn(params, batch, rng, initial_carry):
      keys = initstate.training.example_keys(rng, batch['x'].shape[0])
      carry = initial_carry(params['carry'], keys)
      jax.debug.callback(lambda k, c: seen.append((np.asarray(k), np.asarray(c))),
                         jax.random.key_data(keys), carry)
      return _loss_from_carry(cell, params, batch, carry)

    new, loss = jax.jit(initstate.training.train_step(loss_fn, optimizer, strategy=strategy))(
        state, batch)
    self.assertLen(seen, 1)
    keys = jax.random.wrap_key_data(jnp.asarray(seen[0][0]))
    want = initstate.training.per_example_carry(strategy, params['carry'], keys, train=True)
    np.testing.assert_allclose(seen[0][1], want, rtol=1e-6, atol=1e-6)
    self.assertGreater(float(np.abs(seen[0][1] - 0.25).max()), 0.05)  # Noise was drawn.
    self.assertEqual(new.carry_state, initstate.EmptyState())
    want_loss, grads = jax.value_and_grad(
        lambda p: _loss_from_carry(cell, p, batch, initstate.training.per_example_carry(
            strategy, p['carry'], keys, train=True)))(params)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    chex.assert_trees_all_close(
        new.params, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), rtol=1e-5,
        atol=1e-7)

  def test_no_strategy_initial_carry_is_none(self):
    _, params, batch = _setup(initstate.learned())
    calls = []

    def loss_fn(params, batch, rng, initial_carry):
      del rng
      calls.append(initial_carry)
      return jnp.mean(batch['x']) * jnp.sum(params['carry'])

    optimizer = optax.sgd(0.1)
    state = initstate.training.TrainState.create(params, optimizer, jax.random.key(3))
    new, _ = initstate.training.train_step(loss_fn, optimizer, strategy=None)(state, batch)
    self.assertNotEmpty(calls)
    self.assertTrue(all(c is None for c in calls))
    self.assertEqual(int(new.step), 1)

  def test_stateful_loss_must_call_initial_carry_once(self):
    cleaning = initstate.cleaning_noise(buffer_size=8)
    cell, params, batch = _setup(cleaning)
    optimizer = optax.sgd(0.1)
    state = initstate.training.TrainState.create(
        params, optimizer, jax.random.key(3), cleaning.init_state(cell.carry_template))

    def never(params, batch, rng, initial_carry):
      del rng, initial_carry
      return _loss_from_carry(cell, params, batch, jnp.zeros((B, H)))

    def twice(params, batch, rng, initial_carry):
      keys = initstate.training.example_keys(rng, B)
      first = initial_carry(params['carry'], keys)
      return _loss_from_carry(cell, params, batch, initial_carry(params['carry'], keys) + first)

    for loss_fn, times in ((never, 0), (twice, 2)):
      step = initstate.training.train_step(loss_fn, optimizer, strategy=cleaning)
      with self.assertRaisesRegex(ValueError, rf'exactly once.*called it {times} times'):
        step(state, batch)

  def test_stateful_strategy_without_its_state_is_an_error(self):
    cleaning = initstate.cleaning_noise(buffer_size=8)
    cell, params, batch = _setup(cleaning)
    optimizer = optax.sgd(0.1)
    state = initstate.training.TrainState.create(params, optimizer, jax.random.key(3))
    step = initstate.training.train_step(self._loss_fn(cell), optimizer, strategy=cleaning)
    with self.assertRaisesRegex(ValueError, r'`state.carry_state` is empty'):
      step(state, batch)

  def test_bad_strategy(self):
    with self.assertRaisesRegex(TypeError, '`strategy`'):
      initstate.training.train_step(lambda *a: 0.0, optax.sgd(0.1), strategy='cleaning')


if __name__ == '__main__':
  absltest.main()
