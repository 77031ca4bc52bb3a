"""Tests for the data-parallel train step: 1 device, a mesh of 8 and pmap over 8 agree."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

import initstate

_SCRIPT = textwrap.dedent('''
    import functools, json
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
        def loss_fn(params, batch, rng, initial_carry=None):
          b = batch['x'].shape[0]
          keys = initstate.example_keys(rng, b, axis_name=axis_name)
          if initial_carry is None:
            carry = initstate.per_example_carry(strategy, params['carry'], keys, train=True)
          else:
            carry = initial_carry(params['carry'], keys)
          out = initstate.scan_rnn(functools.partial(cell.apply, params['cell']), batch['x'],
                                   carry)
          return jnp.mean((out.outputs @ params['readout'] - batch['y']) ** 2)
        return loss_fn

      carry_state = cleaning.init_buffer(cell.carry_template) if is_cleaning else ()
      state0 = initstate.TrainState.create(params, optimizer, jax.random.key(3), carry_state)
      kw = dict(cleaning=cleaning) if is_cleaning else {}
      single = jax.jit(initstate.train_step(make_loss(None), optimizer, **kw))
      mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      sharded_batch = initstate.shard_batch(batch, mesh)
      mesh_step = jax.jit(initstate.train_step(make_loss(None), optimizer, **kw))
      pmap_step = jax.pmap(initstate.train_step(make_loss('data'), optimizer, axis_name='data',
                                                **kw), axis_name='data')
      pmap_batch = initstate.split_for_pmap(batch, 8)
      for steps in (1, 10):
        s1, sm = state0, initstate.replicate(state0, mesh)
        sp = initstate.replicate_for_pmap(state0, 8)
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
    for fn, arg in ((initstate.shard_batch, jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))),
                    (initstate.split_for_pmap, 8)):
      try:
        fn({'x': jnp.ones((12, 3))}, arg)
      except ValueError as e:
        errors.append(str(e))
    print(json.dumps(dict(results=results, errors=errors)))
''')


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
    keys = initstate.example_keys(jax.random.key(0), 6)
    carry = initstate.per_example_carry(strategy, params, keys, train=True)
    self.assertEqual(carry.shape, (6, 4))
    self.assertGreater(float(jnp.min(jnp.abs(carry[1:] - carry[:-1]).max(-1))), 0.1)
    # Examples 2..5 of a batch get the same noise alone as inside the batch.
    np.testing.assert_array_equal(
        initstate.per_example_carry(strategy, params, keys[2:], train=True), carry[2:])
    evaluation = initstate.per_example_carry(strategy, params, keys, train=False)
    np.testing.assert_array_equal(evaluation, 0.0)

  def test_rnn_module_per_example_noise_does_not_depend_on_the_batch_split(self):
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 5, 2)), (8, 5, 2))
    outs = {}
    for per_example in (False, True):
      model = initstate.nn.RNN(initstate.lstm(4), carry=initstate.noisy_learned(0.5),
                               per_example_noise=per_example)
      variables = model.init(jax.random.key(1), x, train=False)
      run = lambda xs, model=model, variables=variables: model.apply(
          variables, xs, train=True, rngs={'carry': jax.random.key(2)},
          resets=jnp.zeros(xs.shape[:2], bool).at[:, 3].set(True)).outputs
      outs[per_example] = (run(x), run(x[:4]))
    full, half = outs[True]
    np.testing.assert_allclose(full[:4], half, atol=1e-6)   # the first 4 examples agree
    # And the noise is really per example: examples 4..7 differ from examples 0..3.
    self.assertGreater(float(jnp.abs(full[4:] - full[:4]).max()), 1e-3)

  def test_single_device_step(self):
    cell = initstate.gru(4)
    optimizer = optax.sgd(0.1)
    params = {'cell': cell.init(jax.random.key(0), 2)}
    batch = {'x': jnp.ones((3, 5, 2))}

    def loss_fn(params, batch, rng):
      del rng
      out = initstate.scan_rnn(lambda c, x: cell.apply(params['cell'], c, x), batch['x'],
                               jnp.zeros((3, 4)))
      return jnp.mean(out.outputs ** 2)

    state = initstate.TrainState.create(params, optimizer, jax.random.key(1))
    new, loss = jax.jit(initstate.train_step(loss_fn, optimizer))(state, batch)
    self.assertEqual(int(new.step), 1)
    self.assertFalse(np.array_equal(jax.random.key_data(new.rng),
                                    jax.random.key_data(state.rng)))
    grads = jax.grad(loss_fn)(params, batch, None)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-6)
    self.assertAlmostEqual(float(loss), float(loss_fn(params, batch, None)), places=6)
    with self.assertRaisesRegex(ValueError, 'leading batch dim'):
      initstate.train_step(loss_fn, optimizer)(state, {'x': jnp.ones((3, 5, 2)),
                                                       'y': jnp.ones((2,))})


if __name__ == '__main__':
  absltest.main()
