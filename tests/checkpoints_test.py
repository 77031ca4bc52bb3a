"""Checkpoints: a stopped and resumed run ends bit-identical; other configurations are refused."""

import pathlib
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

import initstate

B, T, D = 4, 5, 2


def _setup(hidden=6):
  cell = initstate.lstm(hidden)
  cleaning = initstate.cleaning_noise(buffer_size=6, scale=0.5)
  optimizer = optax.adam(1e-2)
  params = {'cell': cell.init(jax.random.key(0), D),
            'carry': cleaning.init(None, cell.carry_template)}
  state = initstate.training.TrainState.create(params, optimizer, jax.random.key(1),
                                               cleaning.init_state(cell.carry_template))

  def loss_fn(params, batch, rng, initial_carry):
    carry = initial_carry(params['carry'], initstate.training.example_keys(rng, B))
    out = initstate.scan_rnn(cell.bind(params['cell']), batch, carry)
    return jnp.mean((out.outputs[..., 0] - 1.0) ** 2)

  step = jax.jit(initstate.training.train_step(loss_fn, optimizer, strategy=cleaning))
  return state, step


def _batch(i):
  return jax.random.normal(jax.random.key(100 + i), (B, T, D))


def _run(state, step, start, stop):
  for i in range(start, stop):
    state, _ = step(state, _batch(i))
  return state


def _leaves(state):
  return [np.asarray(jax.random.key_data(l)) if jnp.issubdtype(l.dtype, jax.dtypes.prng_key)
          else np.asarray(l) for l in jax.tree.leaves(state)]


class CheckpointTest(absltest.TestCase):

  def test_resume_is_bit_identical(self):
    state0, step = _setup()
    uninterrupted = _run(state0, step, 0, 8)
    with tempfile.TemporaryDirectory() as tmp:
      stopped = _run(state0, step, 0, 3)
      path = initstate.training.save_checkpoint(pathlib.Path(tmp) / 'step_3', stopped)
      fresh, fresh_step = _setup()       # a new process would build these again
      resumed = initstate.training.restore_checkpoint(path, like=fresh)
      self.assertEqual(int(resumed.step), 3)
      self.assertIsInstance(resumed.carry_state, initstate.GradientBuffer)
      self.assertEqual(int(resumed.carry_state.count), 3 * B)
      for a, b in zip(_leaves(resumed), _leaves(stopped)):
        np.testing.assert_array_equal(a, b)
      resumed = _run(resumed, fresh_step, 3, 8)
    for a, b in zip(_leaves(resumed), _leaves(uninterrupted)):
      np.testing.assert_array_equal(a, b)   # bit-identical, not just close
    self.assertEqual(int(resumed.step), 8)

  def test_other_configuration_is_refused(self):
    state, _ = _setup(hidden=6)
    other, _ = _setup(hidden=7)
    with tempfile.TemporaryDirectory() as tmp:
      path = initstate.training.save_checkpoint(pathlib.Path(tmp) / 'ckpt', state)
      with self.assertRaisesRegex(
          ValueError, r"(?s)different configuration.*\['w_h'\]: checkpoint \(6, 24\) "
          r"float32, expected \(7, 28\)"):
        initstate.training.restore_checkpoint(path, like=other)
      with self.assertRaisesRegex(FileExistsError, 'already exists'):
        initstate.training.save_checkpoint(path, state)
      with self.assertRaisesRegex(FileNotFoundError, 'not an initstate checkpoint'):
        initstate.training.restore_checkpoint(pathlib.Path(tmp), like=state)


if __name__ == '__main__':
  absltest.main()
