"""Tests for the HMM task: generator, sampler and the exact Bayes floor."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import pytest
import jax.numpy as jnp
import numpy as np

from initstate import tasks


def _brute_force_step_losses(hmm, xs):
  """-log p(x_{t+1} | x_0..x_t) by summing the joint over every hidden path."""
  pi, a, e = (np.asarray(m, np.float64) for m in hmm)
  k = len(pi)

  def marginal(prefix):
    total = 0.0
    for zs in itertools.product(range(k), repeat=len(prefix)):
      p = pi[zs[0]] * e[zs[0], prefix[0]]
      for t in range(1, len(prefix)):
        p *= a[zs[t - 1], zs[t]] * e[zs[t], prefix[t]]
      total += p
    return total

  return [-np.log(marginal(xs[:t + 2]) / marginal(xs[:t + 1])) for t in range(len(xs) - 1)]


# One HMM size (K = 3 states, V = 4 symbols) for every test: drawing an HMM (Dirichlet rows)
# compiles for every new size, which takes seconds.
K, V = 3, 4


class RandomHMMTest(parameterized.TestCase):

  def test_probabilities_and_structure(self):
    hmm = tasks.random_hmm(jax.random.key(0), K, V, stickiness=0.7)
    self.assertEqual(hmm.initial.shape, (K,))
    self.assertEqual(hmm.transition.shape, (K, K))
    self.assertEqual(hmm.emission.shape, (K, V))
    np.testing.assert_allclose(hmm.initial.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(hmm.transition.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(hmm.emission.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.diag(hmm.transition), 0.7, atol=1e-6)  # Sticky.
    self.assertGreater(float(hmm.initial.max() - hmm.initial.min()), 0.1)  # Non-uniform.
    for m in hmm:
      self.assertTrue(bool(jnp.all(m >= 0)))

  @pytest.mark.slow   # Compiles the Dirichlet sampler twice (4 s).
  def test_deterministic_in_key(self):
    a = tasks.random_hmm(jax.random.key(1), K, V)
    b = tasks.random_hmm(jax.random.key(1), K, V)
    c = tasks.random_hmm(jax.random.key(2), K, V)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    self.assertFalse(np.allclose(a.emission, c.emission))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'num_states'):
      tasks.random_hmm(jax.random.key(0), 1, 4)
    with self.assertRaisesRegex(ValueError, 'stickiness'):
      tasks.random_hmm(jax.random.key(0), stickiness=1.0)


class SampleTest(absltest.TestCase):

  def test_shapes_and_marginals(self):
    hmm = tasks.random_hmm(jax.random.key(0), K, V)
    xs = tasks.sample(jax.random.key(1), hmm, 20000, 3)
    self.assertEqual(xs.shape, (20000, 3))
    self.assertEqual(xs.dtype, jnp.int32)
    first = np.bincount(np.asarray(xs[:, 0]), minlength=V) / 20000
    np.testing.assert_allclose(first, hmm.initial @ hmm.emission, atol=0.015)
    second = np.bincount(np.asarray(xs[:, 1]), minlength=V) / 20000
    np.testing.assert_allclose(second, hmm.initial @ hmm.transition @ hmm.emission, atol=0.015)


class BayesFloorTest(absltest.TestCase):

  def test_matches_brute_force_enumeration(self):
    hmm = tasks.random_hmm(jax.random.key(3), K, V, stickiness=0.6)
    xs = tasks.sample(jax.random.key(4), hmm, 4, 6)
    floor = np.asarray(tasks.bayes_step_losses(hmm, xs))
    self.assertEqual(floor.shape, (4, 5))
    for n in range(4):
      np.testing.assert_allclose(floor[n], _brute_force_step_losses(hmm, list(np.asarray(xs[n]))),
                                 rtol=1e-4)

  def test_floor_is_the_best_expected_loss(self):
    """On average the floor beats a predictor that ignores the history (the marginal)."""
    hmm = tasks.random_hmm(jax.random.key(5), K, V)
    xs = tasks.sample(jax.random.key(6), hmm, 4000, 8)
    floor = float(jnp.mean(tasks.bayes_step_losses(hmm, xs)))
    counts = np.bincount(np.asarray(xs[:, 1:]).ravel(), minlength=V) / xs[:, 1:].size
    marginal = float(np.mean(-np.log(counts[np.asarray(xs[:, 1:])])))
    self.assertLess(floor, marginal)

  def test_rank_error(self):
    hmm = tasks.random_hmm(jax.random.key(0), K, V)
    with self.assertRaisesRegex(ValueError, r'\[N, T\]'):
      tasks.bayes_step_losses(hmm, jnp.zeros((5,), jnp.int32))


if __name__ == '__main__':
  absltest.main()
