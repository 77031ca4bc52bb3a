"""Tests for sequence generation: shift_right, teacher_forcing and decode (greedy and sampled)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initstate

B, V, H = 4, 6, 8


def _lstm_decoder(seed=0, hidden=H, vocab=V, scale=3.0):
  """An LSTM decoder over one-hot tokens with a linear read-out, and random initial carries."""
  cell = initstate.lstm(hidden)
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  params = {'cell': cell.init(k1, vocab),
            'w': scale * jax.random.normal(k2, (hidden, vocab)) / np.sqrt(hidden)}

  def step_fn(carry, tokens):
    carry, h = cell.apply(params['cell'], carry, jax.nn.one_hot(tokens, vocab))
    return carry, h @ params['w']

  def carry(batch, key=k3):
    kh, kc = jax.random.split(key)
    return initstate.LSTMCarry(h=jax.random.normal(kh, (batch, hidden)),
                               c=2.0 * jax.random.normal(kc, (batch, hidden)))

  return step_fn, carry


def _row(tree, b):
  """Row b of every leaf, keeping a batch axis of size 1."""
  return jax.tree.map(lambda a: a[b:b + 1], tree)


def _greedy_loop(step_fn, carry, b, *, start, max_length, end, pad):
  """Reference: greedy decoding of row b alone with a Python loop, stopping at `end`."""
  carry = _row(carry, b)
  token, tokens, logits = start, [], []
  for _ in range(max_length):
    carry, lg = step_fn(carry, jnp.array([token], jnp.int32))
    token = int(jnp.argmax(lg[0]))
    tokens.append(token)
    logits.append(np.asarray(lg[0]))
    if token == end:
      break
  n = len(tokens)
  tokens = np.array(tokens + [pad] * (max_length - n))
  logits = np.concatenate([np.stack(logits), np.zeros((max_length - n, lg.shape[-1]))])
  return tokens, logits, n, carry


# A hand-made decoder whose choices are known in advance. Carry: `count` (steps taken), `stop`
# (the step count at which it emits the end token), `h` (a running sum of the tokens read).
# Step t of row b reads token x and emits END if count + 1 == stop[b], else (x + 1) % END.
END = V - 1


def _counter_step(carry, tokens):
  count = carry['count'] + 1
  nxt = jnp.where(count == carry['stop'], END, (tokens + 1) % END)
  logits = 5.0 * jax.nn.one_hot(nxt, V)
  return {'count': count, 'stop': carry['stop'],
          'h': carry['h'] + tokens[:, None].astype(jnp.float32)}, logits


def _counter_carry(stops):
  stops = jnp.asarray(stops, jnp.int32)
  n = stops.shape[0]
  return {'count': jnp.zeros((n,), jnp.int32), 'stop': stops, 'h': jnp.zeros((n, 2))}


class ShiftRightTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values(self):
    targets = jnp.array([[1, 2, 3], [4, 5, 0]])
    out = self.variant(lambda y: initstate.shift_right(y, 7))(targets)
    np.testing.assert_array_equal(out, [[7, 1, 2], [7, 4, 5]])
    self.assertEqual(out.dtype, targets.dtype)

  def test_length_one_and_traced_start(self):
    out = jax.jit(initstate.shift_right)(jnp.array([[3], [4]]), jnp.int32(9))
    np.testing.assert_array_equal(out, [[9], [9]])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, r'targets.*\[B, L\].*float32 \(2, 3\)'):
      initstate.shift_right(jnp.zeros((2, 3)), 0)
    with self.assertRaisesRegex(ValueError, r'targets.*\[B, L\].*\(2, 3, 1\)'):
      initstate.shift_right(jnp.zeros((2, 3, 1), jnp.int32), 0)
    with self.assertRaisesRegex(ValueError, 'no time steps'):
      initstate.shift_right(jnp.zeros((2, 0), jnp.int32), 0)
    with self.assertRaisesRegex(ValueError, 'start_token.*int token id'):
      initstate.shift_right(jnp.zeros((2, 3), jnp.int32), 1.0)
    with self.assertRaisesRegex(ValueError, 'start_token.*int token id'):
      initstate.shift_right(jnp.zeros((2, 3), jnp.int32), True)


class TeacherForcingTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_python_loop(self):
    step_fn, make_carry = _lstm_decoder()
    carry0 = make_carry(B)
    targets = jax.random.randint(jax.random.key(1), (B, 5), 0, V)
    lengths = jnp.array([5, 3, 0, 1])
    out = self.variant(lambda c, y, l: initstate.teacher_forcing(
        step_fn, c, y, start_token=END, lengths=l))(carry0, targets, lengths)
    self.assertEqual(out.logits.shape, (B, 5, V))
    for b, n in enumerate([5, 3, 0, 1]):
      carry, token = _row(carry0, b), END
      for t in range(n):
        carry, lg = step_fn(carry, jnp.array([token], jnp.int32))
        np.testing.assert_allclose(out.logits[b, t], lg[0], atol=1e-5)
        token = int(targets[b, t])
      np.testing.assert_array_equal(out.logits[b, n:], 0.0)
      np.testing.assert_array_equal(out.mask[b], np.arange(5) < n)
      chex.assert_trees_all_close(_row(out.final_carry, b), carry, atol=1e-5)

  def test_without_lengths_all_valid(self):
    step_fn, make_carry = _lstm_decoder()
    targets = jnp.zeros((B, 3), jnp.int32)
    out = initstate.teacher_forcing(step_fn, make_carry(B), targets, start_token=1)
    self.assertTrue(bool(jnp.all(out.mask)))

  def test_on_own_greedy_output_reproduces_decode(self):
    """Teacher forcing on the decoder's own greedy tokens is free-running initstate."""
    step_fn, make_carry = _lstm_decoder(seed=3)
    carry0 = make_carry(B)
    dec = initstate.decode(step_fn, carry0, start_token=0, max_length=6, end_token=2)
    tf = initstate.teacher_forcing(step_fn, carry0, dec.tokens, start_token=0,
                                  lengths=dec.lengths)
    np.testing.assert_allclose(tf.logits, dec.logits, atol=1e-5)
    np.testing.assert_array_equal(tf.mask, dec.mask)
    chex.assert_trees_all_close(tf.final_carry, dec.final_carry, atol=1e-5)

  def test_masked_loss_trains(self):
    step_fn, make_carry = _lstm_decoder()
    targets = jnp.array([[1, 2, END], [3, END, 0]])
    out = initstate.teacher_forcing(step_fn, make_carry(2), targets, start_token=0,
                                   lengths=jnp.array([3, 2]))
    loss = initstate.masked_mean(initstate.softmax_cross_entropy(out.logits, targets), out.mask)
    self.assertTrue(np.isfinite(float(loss)))

  def test_errors(self):
    step_fn, make_carry = _lstm_decoder()
    carry = make_carry(B)
    targets = jnp.zeros((B, 3), jnp.int32)
    with self.assertRaisesRegex(ValueError, r'targets.*\[B, L\]'):
      initstate.teacher_forcing(step_fn, carry, targets[0], start_token=0)
    with self.assertRaisesRegex(ValueError, r'seq_lengths.*\[0, T\] = \[0, 3\]'):
      initstate.teacher_forcing(step_fn, carry, targets, start_token=0,
                               lengths=jnp.array([4, 1, 1, 1]))
    with self.assertRaisesRegex(ValueError, r'start_token` = 6 is outside.*\[0, 6\)'):
      initstate.teacher_forcing(step_fn, carry, targets, start_token=V)
    with self.assertRaisesRegex(ValueError, r'logits of shape \[B, V\] = \(4, V\).*\(4, 6, 1\)'):
      initstate.teacher_forcing(lambda c, x: (c, step_fn(c, x)[1][..., None]), carry, targets,
                               start_token=0)
    with self.assertRaisesRegex(ValueError, 'leading batch dim B = 4'):
      initstate.teacher_forcing(step_fn, make_carry(B + 1), targets, start_token=0)


class GreedyDecodeTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0, 2, None), (1, 4, -1), (5, 0, 3))
  def test_matches_python_loop(self, seed, end, pad):
    step_fn, make_carry = _lstm_decoder(seed=seed)
    batch, max_length = 8, 7
    carry0 = make_carry(batch)
    out = self.variant(lambda c: initstate.decode(
        step_fn, c, start_token=END, max_length=max_length, end_token=end,
        pad_token=pad))(carry0)
    self.assertEqual(out.tokens.dtype, jnp.int32)
    self.assertEqual(out.lengths.dtype, jnp.int32)
    self.assertEqual(out.tokens.shape, (batch, max_length))
    self.assertEqual(out.logits.shape, (batch, max_length, V))
    lengths = []
    for b in range(batch):
      tokens, logits, n, carry = _greedy_loop(step_fn, carry0, b, start=END,
                                              max_length=max_length, end=end,
                                              pad=end if pad is None else pad)
      lengths.append(n)
      np.testing.assert_array_equal(out.tokens[b], tokens)
      np.testing.assert_allclose(out.logits[b], logits, atol=1e-5)
      np.testing.assert_array_equal(out.mask[b], np.arange(max_length) < n)
      self.assertEqual(int(out.lengths[b]), n)
      chex.assert_trees_all_close(_row(out.final_carry, b), carry, atol=1e-5)
    # The case is informative: some rows stop early, some do not.
    self.assertLess(min(lengths), max_length)
    self.assertGreater(len(set(lengths)), 1)

  @chex.variants(with_jit=True, without_jit=True)
  def test_per_sequence_stopping(self):
    stops = [2, 4, 1, 9, 5]   # Emits END at steps 1, 3, 0, never, 4.
    max_length = 5
    out = self.variant(lambda c: initstate.decode(
        _counter_step, c, start_token=0, max_length=max_length, end_token=END,
        pad_token=-1))(_counter_carry(stops))
    p = -1
    np.testing.assert_array_equal(out.tokens, [
        [1, END, p, p, p],
        [1, 2, 3, END, p],
        [END, p, p, p, p],
        [1, 2, 3, 4, 0],
        [1, 2, 3, 4, END]])
    expected_lengths = [2, 4, 1, 5, 5]
    np.testing.assert_array_equal(out.lengths, expected_lengths)
    np.testing.assert_array_equal(out.mask, np.arange(max_length)[None] <
                                  np.array(expected_lengths)[:, None])
    # Masked steps: zero logits; unmasked steps: the step's logits (5 on the chosen token).
    np.testing.assert_array_equal(np.where(out.mask[..., None], 0.0, out.logits), 0.0)
    chosen = np.where(out.mask, out.tokens, 0)
    np.testing.assert_array_equal(
        np.take_along_axis(np.asarray(out.logits), chosen[..., None], -1)[..., 0],
        np.where(out.mask, 5.0, 0.0))
    # The carry is held after the end: `count` is the number of steps taken, and `h` sums
    # only the tokens read on unmasked steps (start 0, then each emitted token but the last).
    np.testing.assert_array_equal(out.final_carry['count'], expected_lengths)
    read = [sum([0] + [t for t in row[:n - 1]]) for row, n in
            zip(np.asarray(out.tokens), expected_lengths)]
    np.testing.assert_array_equal(out.final_carry['h'][:, 0], read)
    np.testing.assert_array_equal(out.final_carry['stop'], stops)

  def test_default_pad_is_end_token(self):
    out = initstate.decode(_counter_step, _counter_carry([1, 3]), start_token=0, max_length=4,
                          end_token=END)
    np.testing.assert_array_equal(out.tokens, [[END] * 4, [1, 2, END, END]])
    np.testing.assert_array_equal(out.mask, [[1, 0, 0, 0], [1, 1, 1, 0]])

  def test_traced_tokens_under_jit(self):
    step_fn, make_carry = _lstm_decoder(seed=1)
    carry0 = make_carry(B)
    ref = initstate.decode(step_fn, carry0, start_token=1, max_length=5, end_token=3,
                          pad_token=0)
    out = jax.jit(lambda c, s, e, p: initstate.decode(
        step_fn, c, start_token=s, max_length=5, end_token=e, pad_token=p))(
            carry0, jnp.int32(1), jnp.int32(3), jnp.int32(0))
    chex.assert_trees_all_close(out, ref, atol=1e-5)

  def test_python_int_tokens_checked_under_jit(self):
    step_fn, make_carry = _lstm_decoder()
    with self.assertRaisesRegex(ValueError, r'end_token` = 6 is outside'):
      jax.jit(lambda c: initstate.decode(step_fn, c, start_token=0, max_length=3,
                                        end_token=V))(make_carry(B))


class SampleDecodeTest(parameterized.TestCase):

  def _sample(self, key, temperature=1.0, seed=0, batch=B, max_length=6):
    step_fn, make_carry = _lstm_decoder(seed=seed)
    return initstate.decode(step_fn, make_carry(batch), start_token=0, max_length=max_length,
                           end_token=END, rng=key, method='sample', temperature=temperature)

  @chex.variants(with_jit=True, without_jit=True)
  def test_same_key_same_tokens_different_keys_differ(self):
    step_fn, make_carry = _lstm_decoder()
    carry0 = make_carry(16)
    run = self.variant(lambda c, k: initstate.decode(
        step_fn, c, start_token=0, max_length=8, end_token=END, rng=k, method='sample'))
    a, b = run(carry0, jax.random.key(1)), run(carry0, jax.random.key(1))
    c = run(carry0, jax.random.key(2))
    chex.assert_trees_all_equal(a, b)
    self.assertFalse(np.array_equal(a.tokens, c.tokens))
    # Stopping also holds for sampled sequences.
    for row, n in zip(np.asarray(a.tokens), np.asarray(a.lengths)):
      self.assertNotIn(END, row[:n - 1])
      if n < 8:
        self.assertEqual(row[n - 1], END)
        np.testing.assert_array_equal(row[n:], END)

  def test_raw_uint32_key(self):
    out = self._sample(jax.random.PRNGKey(0))
    self.assertEqual(out.tokens.shape, (B, 6))

  def test_frequencies_match_softmax(self):
    self._check_frequencies(1.0)

  @parameterized.parameters(0.5, 2.0)
  @pytest.mark.slow
  def test_frequencies_match_softmax_over_temperature(self, temperature):
    self._check_frequencies(temperature)

  def _check_frequencies(self, temperature):
    logits = jnp.array([1.0, -0.5, 0.3, 2.0, 0.0, -1.0])
    n = 20000

    def step_fn(carry, tokens):
      return carry, jnp.broadcast_to(logits, (tokens.shape[0], V))

    out = jax.jit(lambda k: initstate.decode(
        step_fn, jnp.zeros((n, 1)), start_token=0, max_length=2, end_token=END, rng=k,
        method='sample', temperature=temperature))(jax.random.key(7))
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=V) / n
    expected = np.asarray(jax.nn.softmax(logits / temperature))
    # 4.5 standard errors of a frequency estimated from n draws.
    tol = 4.5 * np.sqrt(expected * (1 - expected) / n)
    np.testing.assert_array_less(np.abs(freq - expected), tol)
    # The key of step t is fold_in(rng, t): steps draw independently.
    np.testing.assert_array_equal(out.tokens[:, 0], jax.random.categorical(
        jax.random.fold_in(jax.random.key(7), 0), jnp.broadcast_to(logits, (n, V)) /
        temperature))
    live = np.asarray(out.mask[:, 1])
    np.testing.assert_array_equal(out.tokens[live, 1], np.asarray(jax.random.categorical(
        jax.random.fold_in(jax.random.key(7), 1), jnp.broadcast_to(logits, (n, V)) /
        temperature))[live])
    # Independent draws: P(same token twice | no END first) = sum_k p_k^2 / (1 - p_END).
    same = np.mean(np.asarray(out.tokens[live, 0] == out.tokens[live, 1]))
    p_same = np.sum(expected[:END] ** 2) / (1 - expected[END])
    self.assertLess(abs(same - p_same), 4.5 * np.sqrt(p_same * (1 - p_same) / live.sum()))

  def test_small_temperature_is_greedy(self):
    step_fn, make_carry = _lstm_decoder(seed=2)
    carry0 = make_carry(32)
    greedy = initstate.decode(step_fn, carry0, start_token=0, max_length=6, end_token=END)
    top2 = np.sort(np.asarray(greedy.logits), axis=-1)[..., -2:]
    gap = (top2[..., 1] - top2[..., 0])[np.asarray(greedy.mask)]
    self.assertGreater(gap.min(), 1e-4)   # Precondition: no near-ties.
    for seed in range(2):
      sampled = initstate.decode(step_fn, carry0, start_token=0, max_length=6, end_token=END,
                                rng=jax.random.key(seed), method='sample', temperature=1e-6)
      chex.assert_trees_all_close(sampled, greedy, atol=1e-5)
    # A high temperature does not.
    hot = initstate.decode(step_fn, carry0, start_token=0, max_length=6, end_token=END,
                          rng=jax.random.key(0), method='sample', temperature=5.0)
    self.assertFalse(np.array_equal(hot.tokens, greedy.tokens))


class DecodeErrorsTest(parameterized.TestCase):

  def _decode(self, step_fn=None, carry=None, **kwargs):
    fn, make_carry = _lstm_decoder()
    args = dict(start_token=0, max_length=4, end_token=END)
    args.update(kwargs)
    return initstate.decode(step_fn or fn, make_carry(B) if carry is None else carry, **args)

  @parameterized.parameters(0, -1, 2.5, True, None)
  def test_max_length(self, value):
    with self.assertRaisesRegex(ValueError, 'max_length` must be a positive Python int'):
      self._decode(max_length=value)

  def test_max_length_traced(self):
    with self.assertRaisesRegex(ValueError, 'max_length` must be a positive Python int'):
      jax.jit(lambda m: self._decode(max_length=m))(4)

  def test_method(self):
    with self.assertRaisesRegex(ValueError, r"method` must be one of \('greedy', 'sample'\), "
                                "got 'beam'"):
      self._decode(method='beam')

  def test_sample_needs_rng(self):
    with self.assertRaisesRegex(ValueError, 'needs a PRNG key: pass `rng`'):
      self._decode(method='sample')

  @parameterized.parameters(0.0, -1.0, float('nan'), float('inf'), (np.ones(2),))
  def test_temperature(self, value):
    with self.assertRaisesRegex(ValueError, 'temperature` must be a finite scalar > 0'):
      self._decode(method='sample', rng=jax.random.key(0), temperature=value)

  def test_tokens(self):
    with self.assertRaisesRegex(ValueError, r'start_token` = 6 is outside the vocabulary '
                                r'\[0, V\) = \[0, 6\)'):
      self._decode(start_token=V)
    with self.assertRaisesRegex(ValueError, r'end_token` = -1 is outside'):
      self._decode(end_token=-1)
    with self.assertRaisesRegex(ValueError, 'end_token` must be an int token id'):
      self._decode(end_token=1.0)
    with self.assertRaisesRegex(ValueError, 'pad_token` must be an int token id'):
      self._decode(pad_token=jnp.zeros((2,), jnp.int32))

  def test_logits_shape(self):
    fn, _ = _lstm_decoder()
    with self.assertRaisesRegex(ValueError, r'logits of shape \[B, V\] = \(4, V\), got shape '
                                r'\(4, 6, 1\)'):
      self._decode(step_fn=lambda c, x: (lambda r: (r[0], r[1][..., None]))(fn(c, x)))
    with self.assertRaisesRegex(ValueError, r'logits of shape \[B, V\] = \(4, V\), got shape '
                                r'\(6,\)'):
      self._decode(step_fn=lambda c, x: (fn(c, x)[0], fn(c, x)[1][0]))
    with self.assertRaisesRegex(ValueError, 'float logits'):
      self._decode(step_fn=lambda c, x: (fn(c, x)[0], jnp.zeros((B, V), jnp.int32)))

  def test_carry(self):
    fn, make_carry = _lstm_decoder()
    with self.assertRaisesRegex(ValueError, 'initial_carry` has no arrays'):
      self._decode(carry=())
    bad = initstate.LSTMCarry(h=jnp.zeros((B, H)), c=jnp.zeros((B + 1, H)))
    with self.assertRaisesRegex(ValueError, r'same leading batch dim B.*\(4, 8\), \(5, 8\)'):
      self._decode(carry=bad)
    with self.assertRaisesRegex(ValueError, r'changed a carry leaf from float32 \(4, 8\) to '
                                r'float32 \(4, 16\)'):
      self._decode(step_fn=lambda c, x: (jax.tree.map(
          lambda a: jnp.concatenate([a, a], -1), fn(c, x)[0]), fn(c, x)[1]))
    with self.assertRaisesRegex(ValueError, 'carry with the structure of `initial_carry`'):
      self._decode(step_fn=lambda c, x: (tuple(fn(c, x)[0]), fn(c, x)[1]))


if __name__ == '__main__':
  absltest.main()
