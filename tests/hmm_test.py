"""Tests for the HMM task: generator, samplers, the exact Bayes floor and Baum-Welch."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initstate import tasks

# One HMM size (K = 3 states, V = 4 symbols) for every test: drawing an HMM (Dirichlet rows)
# compiles for every new size, which takes seconds, and so does every new shape of the scans.
K, V = 3, 4
# A fixed HMM of that size, for the tests that need no random one (no Dirichlet compile).
TRUE = tasks.HMM(jnp.array([0.6, 0.3, 0.1]),
                 jnp.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.25, 0.25, 0.5]]),
                 jnp.array([[0.7, 0.2, 0.05, 0.05], [0.1, 0.6, 0.2, 0.1],
                            [0.05, 0.05, 0.3, 0.6]]))
# Sentence starts for [4, 5] windows: in the middle of rows, and False at t = 0 in some rows
# (t = 0 starts a sentence whatever `starts` says).
STARTS = np.array([[0, 0, 1, 0, 0], [1, 0, 0, 0, 1], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)

# Jitted, so that they compile once per shape (the tests call them several times with the same
# shapes; eager calls trace and compile their scans every time). Sentence lengths are traced.
bayes_step_losses = jax.jit(tasks.bayes_step_losses)
sample = jax.jit(tasks.sample, static_argnums=(2, 3))
sample_sentences = jax.jit(tasks.sample_sentences, static_argnums=(2, 3))
fit_hmm = jax.jit(tasks.fit_hmm, static_argnames='iterations')


def _sentences(starts):
  """[(begin, end)] of the sentences of one row (t = 0 always begins one)."""
  begins = [t for t in range(len(starts)) if t == 0 or starts[t]]
  return list(zip(begins, begins[1:] + [len(starts)]))


def _brute_force_step_losses(hmm, xs, starts):
  """-log p(x_t | its sentence before t), by summing the joint over every hidden path."""
  pi, a, e = (np.asarray(m, np.float64) for m in hmm)

  def marginal(prefix):
    if not prefix:
      return 1.0
    total = 0.0
    for zs in itertools.product(range(len(pi)), repeat=len(prefix)):
      p = pi[zs[0]] * e[zs[0], prefix[0]]
      for t in range(1, len(prefix)):
        p *= a[zs[t - 1], zs[t]] * e[zs[t], prefix[t]]
      total += p
    return total

  losses = []
  for begin, end in _sentences(starts):
    sentence = list(xs[begin:end])
    losses += [-np.log(marginal(sentence[:t + 1]) / marginal(sentence[:t]))
               for t in range(len(sentence))]
  return losses


def _log_forward_reference(hmm, xs, starts):
  """The forward algorithm in float64 log space (NumPy), one row."""
  with np.errstate(divide='ignore'):
    log_pi, log_a, log_e = (np.log(np.asarray(m, np.float64)) for m in hmm)
  losses, belief = [], log_pi
  for t, x in enumerate(xs):
    predicted = log_pi if t == 0 or starts[t] else np.logaddexp.reduce(
        belief[:, None] + log_a, axis=0)
    joint = predicted + log_e[:, x]
    evidence = np.logaddexp.reduce(joint)
    belief = joint - evidence
    losses.append(-evidence)
  return np.array(losses)


def _linear_forward_float32(hmm, xs):
  """The naive forward algorithm in linear float32 space (normalised each step), one row."""
  pi, a, e = (np.asarray(m, np.float32) for m in hmm)
  losses, belief = [], None
  with np.errstate(all='ignore'):
    for t, x in enumerate(xs):
      joint = (pi if t == 0 else belief @ a) * e[:, x]
      evidence = joint.sum()
      belief = joint / evidence
      losses.append(-np.log(evidence))
  return np.array(losses)


def _em_step_reference(hmm, symbols, starts, pseudocount):
  """One Baum-Welch step in float64 from the textbook (unscaled alpha, beta) formulas, each
  sentence an independent sequence. Returns the new HMM and the data's log-likelihood."""
  pi, a, e = (np.asarray(m, np.float64) for m in hmm)
  counts_pi, counts_a, counts_e = np.zeros_like(pi), np.zeros_like(a), np.zeros_like(e)
  log_likelihood = 0.0
  for row, row_starts in zip(np.asarray(symbols), np.asarray(starts)):
    for begin, end in _sentences(row_starts):
      x = row[begin:end]
      n = len(x)
      alpha, beta = np.zeros((n, len(pi))), np.ones((n, len(pi)))
      alpha[0] = pi * e[:, x[0]]
      for t in range(1, n):
        alpha[t] = (alpha[t - 1] @ a) * e[:, x[t]]
      for t in range(n - 2, -1, -1):
        beta[t] = a @ (e[:, x[t + 1]] * beta[t + 1])
      p = alpha[-1].sum()
      log_likelihood += np.log(p)
      gamma = alpha * beta / p
      counts_pi += gamma[0]
      for t in range(n - 1):
        counts_a += alpha[t][:, None] * a * (e[:, x[t + 1]] * beta[t + 1])[None, :] / p
      for t in range(n):
        counts_e[:, x[t]] += gamma[t]
  new = [(c + pseudocount) / (c + pseudocount).sum(-1, keepdims=True)
         for c in (counts_pi, counts_a, counts_e)]
  return tasks.HMM(*new), log_likelihood


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


def _sentence_lengths(starts):
  """Lengths of the complete sentences (not the last, cut one) of every row."""
  lengths = []
  for row in np.asarray(starts):
    begins = np.flatnonzero(row)
    lengths += list(np.diff(begins))
  return np.array(lengths)


class SampleSentencesTest(absltest.TestCase):

  def test_layout_and_statistics(self):
    out = sample_sentences(jax.random.key(1), TRUE, 2000, 12, 2, 4)
    self.assertIsInstance(out, tasks.Sentences)
    for array, dtype in zip(out, (jnp.int32, jnp.bool_, jnp.int32)):
      self.assertEqual(array.shape, (2000, 12))
      self.assertEqual(array.dtype, dtype)
    symbols, starts, position = (np.asarray(a) for a in out)
    self.assertTrue(starts[:, 0].all())
    np.testing.assert_array_equal(starts, position == 0)
    np.testing.assert_array_equal(position[:, 1:][~starts[:, 1:]],
                                  position[:, :-1][~starts[:, 1:]] + 1)
    lengths = _sentence_lengths(starts)
    self.assertEqual(set(lengths.tolist()), {2, 3, 4})   # All lengths, none outside.
    self.assertTrue(np.all(position <= 3))                 # Cut sentences are not longer.
    self.assertTrue(np.isin(symbols, np.arange(V)).all())
    # Each sentence starts from pi: first symbols ~ pi E, second ones ~ pi A E.
    pi, a, e = (np.asarray(m) for m in TRUE)
    first = np.bincount(symbols[position == 0], minlength=V) / np.sum(position == 0)
    np.testing.assert_allclose(first, pi @ e, atol=0.02)
    second = np.bincount(symbols[position == 1], minlength=V) / np.sum(position == 1)
    np.testing.assert_allclose(second, pi @ a @ e, atol=0.02)

  def test_one_symbol_sentences_and_one_sentence_rows(self):
    ones = sample_sentences(jax.random.key(2), TRUE, 2000, 12, 1, 1)
    self.assertTrue(bool(ones.starts.all()))
    np.testing.assert_array_equal(ones.position, 0)
    whole = sample_sentences(jax.random.key(2), TRUE, 2000, 12, 12, 20)
    np.testing.assert_array_equal(whole.starts[:, 1:], False)
    np.testing.assert_array_equal(whole.position, np.broadcast_to(np.arange(12), (2000, 12)))

  def test_jit_and_vmap_over_traced_lengths(self):
    keys = jax.random.split(jax.random.key(3), 3)
    lo, hi = jnp.array([1, 2, 5]), jnp.array([1, 3, 5])
    out = jax.jit(jax.vmap(lambda k, a, b: tasks.sample_sentences(k, TRUE, 2000, 12, a, b)))(
        keys, lo, hi)
    self.assertEqual(out.symbols.shape, (3, 2000, 12))
    for m in range(3):
      self.assertEqual(set(_sentence_lengths(out.starts[m]).tolist()),
                       set(range(int(lo[m]), int(hi[m]) + 1)))
    # The same draw as a call with concrete lengths.
    single = sample_sentences(keys[1], TRUE, 2000, 12, 2, 3)
    for batched, alone in zip(out, single):
      np.testing.assert_array_equal(batched[1], alone)

  def test_bad_arguments(self):
    key = jax.random.key(0)
    for args, needle in [((0, 4, 1, 2), 'num'), ((2, 0, 1, 2), 'length'),
                         ((2, 4, 0, 2), 'min_len'), ((2, 4, 3, 2), 'min_len'),
                         ((2, 4, 2.0, 3), 'min_len'), ((2, 4, 1, np.ones(2, int)), 'max_len'),
                         ((2.0, 4, 1, 2), 'num')]:
      with self.assertRaisesRegex(ValueError, needle, msg=str(args)):
        tasks.sample_sentences(key, TRUE, *args)
    with self.assertRaisesRegex(ValueError, 'max_len'):
      jax.jit(lambda b: tasks.sample_sentences(key, TRUE, 2, 4, 1, b))(jnp.ones(2, int))
    with self.assertRaisesRegex(TypeError, 'key'):
      tasks.sample_sentences(0, TRUE, 2, 4, 1, 2)


class BayesFloorTest(absltest.TestCase):

  def test_matches_brute_force_enumeration(self):
    hmm = tasks.random_hmm(jax.random.key(3), K, V, stickiness=0.6)
    xs = np.asarray(sample(jax.random.key(4), hmm, 4, 5))
    for starts in (None, STARTS):
      floor = np.asarray(bayes_step_losses(hmm, xs, starts))
      self.assertEqual(floor.shape, (4, 5))
      self.assertEqual(floor.dtype, np.float32)
      row_starts = np.zeros_like(STARTS) if starts is None else starts
      for n in range(4):
        np.testing.assert_allclose(floor[n], _brute_force_step_losses(hmm, xs[n], row_starts[n]),
                                   rtol=1e-4)
    # x_0 is scored: -log sum_k pi_k E[k, x_0].
    np.testing.assert_allclose(floor[:, 0], -np.log((hmm.initial @ hmm.emission)[xs[:, 0]]),
                               rtol=1e-5)

  def test_extreme_probabilities(self):
    tiny = 1e-25
    hmm = tasks.HMM(jnp.array([0.98, 0.01, 0.01]),
                    jnp.array([[1 - 2 * tiny, tiny, tiny], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),
                    jnp.array([[1 - 2 * tiny, tiny, tiny, 0.0], [tiny, 0.5, 0.5 - tiny, 0.0],
                               [tiny, 0.4, 0.6 - tiny, tiny]]))
    # Row 0: state 0 emits 0s, then symbol 3 needs a 1e-25 move to state 2 and its 1e-25
    # emission (an event of ~1e-50); a new sentence starts at t = 4. Row 1 does it at t = 1.
    xs = np.array([[0, 0, 0, 3, 1, 0], [0, 3, 2, 2, 1, 1]])
    starts = np.array([[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]], bool)
    floor = np.asarray(bayes_step_losses(hmm, xs, starts))
    self.assertTrue(np.isfinite(floor).all(), msg=str(floor))
    for n in range(2):
      reference = _log_forward_reference(hmm, xs[n], starts[n])
      np.testing.assert_allclose(floor[n], reference, rtol=1e-4, atol=1e-6)
    self.assertGreater(floor[0, 3], 100.0)   # -log(1e-50) = 115 nats.
    # The same computation in linear float32 space underflows there: +inf, then NaN.
    naive = _linear_forward_float32(hmm, xs[0])
    self.assertEqual(naive[3], np.inf)
    self.assertTrue(np.isnan(naive[4:]).all())

  def test_impossible_symbol_stays_in_its_sentence(self):
    hmm = tasks.HMM(TRUE.initial, TRUE.transition,
                    jnp.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0],
                               [0.5, 0.0, 0.5, 0.0]]))   # Symbol 3 is never emitted.
    xs = np.array([[0, 3, 1, 0, 2], [1, 1, 2, 0, 3]])
    starts = np.array([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], bool)
    floor = np.asarray(bayes_step_losses(hmm, xs, starts))
    self.assertFalse(np.isnan(floor).any(), msg=str(floor))
    np.testing.assert_array_equal(floor[0, 1:3], np.inf)   # The rest of that sentence.
    self.assertTrue(np.isfinite(floor[0, [0, 3, 4]]).all())
    self.assertTrue(np.isfinite(floor[1, :4]).all())
    self.assertEqual(floor[1, 4], np.inf)

  def test_defines_a_distribution_whose_entropy_is_the_mean_floor(self):
    """exp(-sum_t floor_t) sums to one over all V^T sequences (with or without sentence
    starts), and the mean floor of sampled sequences is their entropy."""
    length = 4
    every = np.array(list(itertools.product(range(V), repeat=length)))  # [V^T, T]
    for starts in (None, np.broadcast_to(np.array([1, 0, 1, 0], bool), every.shape)):
      log_p = -np.asarray(bayes_step_losses(TRUE, every, starts), np.float64).sum(1)
      np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-5)
    log_p = -np.asarray(bayes_step_losses(TRUE, every), np.float64).sum(1)
    entropy = -np.sum(np.exp(log_p) * log_p)
    xs = tasks.sample(jax.random.key(6), TRUE, 4000, length)
    floor = np.asarray(bayes_step_losses(TRUE, xs))
    totals = floor.sum(1)
    self.assertAlmostEqual(totals.mean(), entropy, delta=4 * totals.std() / np.sqrt(4000))
    # The floor beats a predictor that ignores the history (the marginal of each symbol).
    counts = np.bincount(np.asarray(xs).ravel(), minlength=V) / xs.size
    self.assertLess(floor.mean(), np.mean(-np.log(counts[np.asarray(xs)])))

  def test_vmap(self):
    xs = np.asarray(sample(jax.random.key(4), TRUE, 4, 5))
    batched = jax.vmap(tasks.bayes_step_losses, in_axes=(None, 0, 0))(
        TRUE, np.stack([xs, xs[::-1]]), np.stack([STARTS, STARTS]))
    np.testing.assert_allclose(batched[1], bayes_step_losses(TRUE, xs[::-1], STARTS),
                               rtol=1e-6)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r'\[N, T\]'):
      tasks.bayes_step_losses(TRUE, jnp.zeros((5,), jnp.int32))
    with self.assertRaisesRegex(ValueError, r'\[0, V\)'):
      tasks.bayes_step_losses(TRUE, jnp.full((2, 3), V))
    with self.assertRaisesRegex(ValueError, 'starts'):
      tasks.bayes_step_losses(TRUE, jnp.zeros((2, 3), int), jnp.zeros((2, 4), bool))
    with self.assertRaisesRegex(ValueError, 'starts'):
      tasks.bayes_step_losses(TRUE, jnp.zeros((2, 3), int), jnp.zeros((2, 3)))


class FitHMMTest(absltest.TestCase):

  def test_matches_a_textbook_em_reference(self):
    xs = np.asarray(sample(jax.random.key(4), TRUE, 4, 5))
    start = tasks.HMM(jnp.array([0.2, 0.5, 0.3]), TRUE.transition[::-1], TRUE.emission[::-1])
    fitted, log_likelihoods = fit_hmm(start, xs, STARTS, iterations=2, pseudocount=0.1)
    one, ll_0 = _em_step_reference(start, xs, STARTS, 0.1)
    two, ll_1 = _em_step_reference(one, xs, STARTS, 0.1)
    np.testing.assert_allclose(log_likelihoods, [ll_0, ll_1], rtol=1e-5)
    for got, want in zip(fitted, two):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

  def test_data_limited_reference(self):
    """Started from the truth, EM on much data stays near the floor; on little data it
    overfits, and its held-out loss shows the excess due to finite data."""
    train, held_out = (sample_sentences(jax.random.key(k), TRUE, 500, 32, 3, 12)
                       for k in (7, 8))
    floor = float(bayes_step_losses(TRUE, held_out.symbols, held_out.starts).mean())
    losses = {}
    for rows in (500, 4):
      fitted, log_likelihoods = fit_hmm(TRUE, train.symbols[:rows], train.starts[:rows],
                                        iterations=8)
      self.assertTrue(np.all(np.diff(log_likelihoods) > -1e-4 * abs(log_likelihoods[0])),
                      msg=str(log_likelihoods))
      for m in fitted:
        self.assertTrue(bool(jnp.all(m > 0)))
        np.testing.assert_allclose(m.sum(-1), 1.0, rtol=1e-5)
      losses[rows] = float(bayes_step_losses(fitted, held_out.symbols, held_out.starts).mean())
    self.assertBetween(losses[500], floor - 0.002, floor + 0.005)   # Seen: floor + 0.0004.
    self.assertGreater(losses[4], floor + 0.02)                      # Seen: floor + 0.05.

  def test_likelihood_does_not_decrease_from_a_wrong_start(self):
    train = sample_sentences(jax.random.key(9), TRUE, 500, 32, 3, 12)
    start = tasks.HMM(jnp.full((K,), 1 / K), TRUE.transition[::-1], TRUE.emission[::-1])
    _, log_likelihoods = fit_hmm(start, train.symbols, train.starts, iterations=8)
    steps = np.diff(log_likelihoods)
    self.assertTrue(np.all(steps > -1e-4 * abs(log_likelihoods[0])), msg=str(log_likelihoods))
    self.assertGreater(float(log_likelihoods[-1] - log_likelihoods[0]), 10.0)

  def test_vmap_over_data(self):
    xs = np.asarray(sample(jax.random.key(4), TRUE, 4, 5))
    data = np.stack([xs, xs[::-1]])
    fitted, log_likelihoods = jax.jit(jax.vmap(
        lambda x: tasks.fit_hmm(TRUE, x, iterations=2, pseudocount=0.1)))(data)
    self.assertEqual(log_likelihoods.shape, (2, 2))
    _, alone_ll = _em_step_reference(TRUE, xs[::-1], np.zeros((4, 5), bool), 0.1)
    np.testing.assert_allclose(log_likelihoods[1, 0], alone_ll, rtol=1e-5)
    self.assertEqual(fitted.emission.shape, (2, K, V))

  def test_bad_arguments(self):
    xs = jnp.zeros((2, 3), jnp.int32)
    with self.assertRaisesRegex(ValueError, 'iterations'):
      tasks.fit_hmm(TRUE, xs, iterations=0)
    with self.assertRaisesRegex(ValueError, 'pseudocount'):
      tasks.fit_hmm(TRUE, xs, pseudocount=0.0)
    with self.assertRaisesRegex(ValueError, 'starts'):
      tasks.fit_hmm(TRUE, xs, jnp.zeros((2, 2), bool))
    with self.assertRaisesRegex(ValueError, 'symbols'):
      tasks.fit_hmm(TRUE, xs + V)


if __name__ == '__main__':
  absltest.main()
