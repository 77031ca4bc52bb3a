"""Tests for per-step losses, masked_mean and loss_mask."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import initstate


class PerStepLossTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_squared_error(self):
    pred = jnp.array([[[1., 2.], [0., 0.]]])
    target = jnp.array([[[0., 0.], [1., 3.]]])
    out = self.variant(initstate.squared_error)(pred, target)
    np.testing.assert_allclose(out, [[2.5, 5.0]])
    with self.assertRaisesRegex(ValueError, 'same shape'):
      initstate.squared_error(pred, target[..., :1])

  @chex.variants(with_jit=True, without_jit=True)
  def test_softmax_cross_entropy(self):
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5))
    labels = jnp.array([[0, 4, 2], [1, 1, 3]])
    out = self.variant(initstate.softmax_cross_entropy)(logits, labels)
    expected = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with self.assertRaisesRegex(ValueError, 'class axis'):
      initstate.softmax_cross_entropy(logits, labels[:, :2])
    with self.assertRaisesRegex(ValueError, 'integers'):
      initstate.softmax_cross_entropy(logits, labels.astype(jnp.float32))


class MaskedMeanTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value(self):
    loss = jnp.array([[1., 2., 3.], [4., 5., 6.]])
    mask = jnp.array([[True, False, True], [False, False, True]])
    self.assertAlmostEqual(float(self.variant(initstate.masked_mean)(loss, mask)), 10. / 3., places=6)
    self.assertAlmostEqual(float(initstate.masked_mean(loss)), 3.5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_all_masked_is_finite_with_finite_grads(self):
    loss_fn = lambda x: initstate.masked_mean(jnp.square(x), jnp.zeros((2, 3), bool))
    value, grad = self.variant(jax.value_and_grad(loss_fn))(jnp.ones((2, 3)))
    self.assertEqual(float(value), 0.0)
    np.testing.assert_array_equal(grad, 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_nan_in_masked_entries_does_not_leak(self):
    x = jnp.array([[1., jnp.nan], [jnp.inf, 2.]])
    mask = jnp.array([[True, False], [False, True]])
    value, grad = self.variant(jax.value_and_grad(
        lambda x: initstate.masked_mean(x * 3.0, mask)))(x)
    self.assertAlmostEqual(float(value), 4.5)
    np.testing.assert_array_equal(grad, [[1.5, 0.], [0., 1.5]])

  def test_shape_mismatch(self):
    with self.assertRaisesRegex(ValueError, '`mask`'):
      initstate.masked_mean(jnp.ones((2, 3)), jnp.ones((2, 3, 1), bool))


class LossMaskTest(parameterized.TestCase):

  def test_combination(self):
    user = np.ones((3, 5), bool)
    user[0, 4] = False
    mask = initstate.loss_mask(jnp.array([5, 3, 0]), 5, burn_in=1, mask=jnp.asarray(user))
    expected = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(mask, expected)
    tm = initstate.loss_mask(jnp.array([5, 3, 0]), 5, burn_in=1, mask=jnp.asarray(user.T),
                             time_major=True)
    np.testing.assert_array_equal(tm, expected.T)

  def test_without_lengths(self):
    mask = initstate.loss_mask(None, 4, burn_in=2, batch_size=2)
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [0, 0, 1, 1]])
    with self.assertRaisesRegex(ValueError, 'batch_size'):
      initstate.loss_mask(None, 4)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, 'burn_in'):
      initstate.loss_mask(jnp.array([2]), 4, burn_in=4)
    with self.assertRaisesRegex(ValueError, r'`mask` must have shape \(1, 4\)'):
      initstate.loss_mask(jnp.array([2]), 4, mask=jnp.ones((4, 1), bool))

  def test_matches_scan_rnn_mask(self):
    cell = initstate.elman(2)
    params = cell.init(jax.random.key(0), 1)
    lengths = jnp.array([6, 2])
    out = initstate.scan_rnn(lambda c, x: cell.apply(params, c, x), jnp.ones((2, 6, 1)),
                             jnp.zeros((2, 2)), seq_lengths=lengths, burn_in=3)
    np.testing.assert_array_equal(out.mask, initstate.loss_mask(lengths, 6, burn_in=3))


if __name__ == '__main__':
  absltest.main()
