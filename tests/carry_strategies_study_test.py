"""Tests for the strategy study (the main job): data, splits, metrics, verdicts, end to end."""

import contextlib
import csv
import io
import itertools
import json
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initstate import tasks
from initstate.studies import carry_strategies as study
from initstate.studies import sentences
from initstate.studies import stats

# One small task for every data test: each new shape compiles the sampler again.
TINY = study.Config(num_states=3, num_symbols=5, width=12, mean_len=4, lengths=(4,),
                    train_windows=6, val_windows=6, test_windows=6, batch_size=4,
                    hidden_size=4, seeds=2, steps=6, eval_every=3)


def _hmm(config=TINY):
  return study.make_hmm(config)


class WindowsTest(parameterized.TestCase):

  def test_bos_is_read_first_and_x0_is_scored(self):
    hmm = _hmm()
    w = jax.tree.map(np.asarray, sentences.windows(jax.random.key(1), hmm, 20, 12, 2, 6))
    bos = TINY.num_symbols
    starts = w['position'] == 0
    self.assertTrue(starts[:, 0].all())
    # The input at a sentence's first symbol is BOS; elsewhere it is the previous symbol.
    np.testing.assert_array_equal(w['inputs'][starts], bos)
    np.testing.assert_array_equal(w['inputs'][:, 1:][~starts[:, 1:]],
                                  w['targets'][:, :-1][~starts[:, 1:]])
    # Resets at every sentence start but the window's first step (the initial carry's).
    np.testing.assert_array_equal(w['resets'][:, 1:], starts[:, 1:])
    self.assertFalse(w['resets'][:, 0].any())
    # x_0 is scored: its floor is -log p(x_0) = -log (pi @ E)[x_0], from the carry alone.
    p_first = np.asarray(hmm.initial, np.float64) @ np.asarray(hmm.emission, np.float64)
    np.testing.assert_allclose(w['bayes'][starts], -np.log(p_first[w['targets'][starts]]),
                               rtol=1e-5)
    self.assertGreater(starts[:, 1:].sum(), 20)   # Several sentences per window.

  def test_stream_context_is_the_same_sentence_before_the_window(self):
    hmm = _hmm()
    lead, width, c = 6, 12, 4
    w = jax.tree.map(np.asarray, sentences.windows(
        jax.random.key(2), hmm, 40, width, 2, 6, lead=lead, context_steps=c))
    full = jax.tree.map(np.asarray, tasks.sample_sentences(
        jax.random.key(2), hmm, 40, lead + width, 2, 6))
    np.testing.assert_array_equal(w['targets'], full.symbols[:, lead:])
    self.assertFalse((w['position'][:, 0] == 0).all())   # Windows start inside sentences.
    for n in range(40):
      pos = full.position[n, lead]
      for j in range(1, c + 1):
        expected = np.eye(TINY.num_symbols)[full.symbols[n, lead - j]] if j <= pos else 0.0
        np.testing.assert_array_equal(w['context'][n, j - 1], expected)

  def test_length_range(self):
    self.assertEqual(sentences.length_range(8), (4, 12))
    self.assertEqual(sentences.length_range(1), (1, 2))
    with self.assertRaisesRegex(ValueError, '>= 1'):
      sentences.length_range(0)

  def test_near_reset_share(self):
    self.assertAlmostEqual(float(sentences.near_reset_share(np.array([0, 1, 2, 3, 0, 1]))),
                           5 / 6)


class SplitsTest(absltest.TestCase):

  def test_splits_and_online_batches_never_share_a_window(self):
    hmm = _hmm()
    keys = jax.vmap(jax.random.key)(np.arange(2))
    lo, hi = np.array([2, 2], np.int32), np.array([6, 6], np.int32)
    make = lambda stream, num: np.asarray(
        study.make_split(TINY, hmm, keys, stream, num, lo, hi)['targets'])
    train, val, test = make(study.TRAIN, 6), make(study.VAL, 6), make(study.TEST, 6)
    online = np.concatenate([np.asarray(study.training_batch(
        TINY, hmm, keys[0], True, 2, 6, step, keys[0])['targets']) for step in range(3)])
    for s in range(2):
      rows = {name: {tuple(r) for r in a[s]} for name, a in
              (('train', train), ('val', val), ('test', test))}
      if s == 0:
        rows['online'] = {tuple(r) for r in online}
      for (a, rows_a), (b, rows_b) in itertools.combinations(rows.items(), 2):
        self.assertEmpty(rows_a & rows_b, f'seed {s}: {a} and {b} share a window')
    # Online batches are fresh at every step; fixed batches come from the training split.
    self.assertLen({tuple(r) for r in online}, 3 * TINY.batch_size)
    fixed = np.asarray(study.training_batch(TINY, hmm, keys[1], False, 2, 6, 0,
                                            jax.random.key(5))['targets'])
    train_rows = {tuple(r) for r in train[1]}
    self.assertTrue(all(tuple(r) in train_rows for r in fixed))


class MetricsTest(absltest.TestCase):

  def test_excess_by_position(self):
    data = {'bayes': np.array([[1.0, 1.0, 1.0]]), 'position': np.array([[0, 1, 0]])}
    per_step = np.array([[1.5, 1.2, 1.1]])
    got = study.excess_by_position(per_step, data, (0, 1, 2))
    self.assertAlmostEqual(got[0], 0.3)
    self.assertAlmostEqual(got[1], 0.2)
    self.assertTrue(np.isnan(got[2]))

  def test_speed_auc_is_the_mean_over_the_first_fifth(self):
    curve = np.array([[4.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    steps = np.arange(1, 11) * 10
    np.testing.assert_allclose(study.speed_auc(curve, steps, 100), [3.0])


class StatsTest(absltest.TestCase):

  def test_holm_matches_a_hand_computed_example(self):
    # Sorted p: 0.01, 0.02, 0.03, 0.5 -> 4*0.01, max(.04, 3*.02), max(.06, 2*.03), 0.5.
    np.testing.assert_allclose(stats.holm([0.03, 0.01, 0.5, 0.02]), [0.06, 0.04, 0.5, 0.06])
    np.testing.assert_allclose(stats.holm([0.4, np.nan]), [0.4, np.nan])

  def test_paired_p_value_against_scipy(self):
    from scipy import stats as scipy_stats   # pylint: disable=g-import-not-at-top
    a = np.array([0.3, 0.1, 0.25, 0.4, 0.05])
    b = np.array([0.2, 0.12, 0.1, 0.3, 0.0])
    self.assertAlmostEqual(stats.paired_p_value(a - b), scipy_stats.ttest_rel(a, b).pvalue)
    with self.assertRaisesRegex(ValueError, '2 seeds'):
      stats.paired_p_value(np.array([1.0]))

  def test_win_loss_tie_and_a_tie_only_holm_makes(self):
    rng = np.random.default_rng(0)
    noise = rng.normal(size=10)
    noise = (noise - noise.mean()) / noise.std(ddof=1)   # exactly mean 0, sd 1
    win = 0.05 + 0.001 * noise                            # large, consistent gain
    borderline = 0.0024 + 0.003 * noise                   # t = 2.53: p = 0.032 alone
    family = {
        'win': win,
        'loss': -win,
        'tiny': 0.0005 + 1e-5 * noise,                    # consistent but below min_effect
        'noisy': 0.01 + 0.1 * noise,                      # large but inside the spread
        'borderline': borderline,
    }
    alone = stats.compare_family({'borderline': borderline}, min_effect=1e-3)['borderline']
    self.assertLess(alone.p, 0.05)
    self.assertEqual(alone.verdict, 'better')
    got = stats.compare_family(family, min_effect=1e-3)
    self.assertEqual(got['win'].verdict, 'better')
    self.assertEqual(got['loss'].verdict, 'worse')
    self.assertEqual(got['tiny'].verdict, 'tie')
    self.assertLess(got['tiny'].p_holm, 0.05)             # significant, yet too small
    self.assertEqual(got['noisy'].verdict, 'tie')
    self.assertEqual(got['borderline'].verdict, 'tie')    # only Holm's correction ties it
    self.assertAlmostEqual(got['borderline'].p, alone.p)
    self.assertGreater(got['borderline'].p_holm, 0.05)


class VerdictsTest(absltest.TestCase):

  def _metrics(self, test, speed=None, lengths=None):
    """Synthetic metrics: strategy -> per-seed test excess (speed defaults to 2x test)."""
    rng = np.random.default_rng(1)
    jitter = lambda: 1e-4 * rng.normal(size=10)
    out = {}
    for name, value in test.items():
      by_cond = {}
      for regime in study.REGIMES:
        by_cond[(regime, 8)] = {'test_excess': value + jitter(),
                                'speed': (speed or {}).get(name, 2 * value) + jitter()}
      for n, v in (lengths or {}).get(name, {}).items():
        by_cond[('online', n)] = {'test_excess': v + jitter(), 'speed': v + jitter()}
      out[name] = by_cond
    return out

  def test_claims_reproduced(self):
    config = study.Config(strategies=('zeros', 'noisy(0.3)', 'learned', 'noisy_learned(0.3)'),
                          lengths=(2, 32), sweep_strategies=('zeros', 'learned'),
                          sweep_regimes=('online',))
    metrics = self._metrics(
        {'zeros': 0.05, 'noisy(0.3)': 0.04, 'learned': 0.02, 'noisy_learned(0.3)': 0.0195},
        lengths={'zeros': {2: 0.1, 32: 0.02}, 'learned': {2: 0.05, 32: 0.0199}})
    lines, decided = study.verdicts(metrics, config)
    text = '\n'.join(lines)
    for regime in ('online', 'fixed'):
      self.assertIn(f'[{regime}] Claim 1, every non-zero carry trains faster and generalises '
                    'better than zeros: REPRODUCED', text)
      self.assertIn(f'[{regime}] Claim 2, learned beats zero-mean noise: REPRODUCED', text)
      self.assertIn(f'[{regime}] Claim 3, noise on a learned carry adds at most a marginal '
                    'gain', text)
    self.assertEqual(decided['online: noisy_learned(0.3) vs learned, test'].verdict, 'tie')
    for metric in ('test', 'speed'):
      self.assertIn(f'[online] Condition ({metric}), learned gains over zeros where resets are '
                    'frequent: REPRODUCED', text)
    self.assertIn('[fixed] Condition (carries matter where resets are frequent): not swept',
                  text)

  def test_claims_not_reproduced(self):
    config = study.Config(strategies=('zeros', 'noisy(0.3)', 'learned', 'noisy_learned(0.3)'),
                          lengths=(2, 32), sweep_strategies=('zeros', 'learned'),
                          sweep_regimes=('online',))
    metrics = self._metrics(
        {'zeros': 0.05, 'noisy(0.3)': 0.06, 'learned': 0.045, 'noisy_learned(0.3)': 0.02},
        lengths={'zeros': {2: 0.1, 32: 0.02}, 'learned': {2: 0.1, 32: 0.01}})
    text = '\n'.join(study.verdicts(metrics, config)[0])
    self.assertIn('[online] Claim 1, every non-zero carry trains faster and generalises '
                  'better than zeros: NOT REPRODUCED (4 of 6 better, 0 ties, 2 worse)', text)
    self.assertIn('[online] Claim 2, learned beats zero-mean noise: REPRODUCED', text)
    self.assertIn('NOT REPRODUCED (a large gain', text)
    self.assertIn('[online] Condition (test), learned gains over zeros where resets are '
                  'frequent: NOT REPRODUCED', text)

  def test_missing_strategies_are_na(self):
    config = study.Config(strategies=('learned',), lengths=())
    lines, _ = study.verdicts(self._metrics({'learned': 0.02}), config)
    self.assertIn('Claim 1, every non-zero carry trains faster and generalises better than '
                  'zeros: n/a', lines[0])
    self.assertTrue(any('Claim 3: n/a' in line for line in lines))


class TrainerTest(absltest.TestCase):

  @pytest.mark.slow   # Two compiled model inits.
  def test_same_initial_weights_across_strategies(self):
    hmm = _hmm()
    keys = jax.vmap(jax.random.key)(np.arange(2))
    params = {name: study.make_trainer(TINY, hmm, name)[0](keys)['params']
              for name in ('zeros', 'learned')}
    np.testing.assert_array_equal(params['zeros']['rnn']['cell']['w_h'],
                                  params['learned']['rnn']['cell']['w_h'])
    np.testing.assert_array_equal(params['zeros']['readout']['kernel'],
                                  params['learned']['readout']['kernel'])
    self.assertNotIn('carry', params['zeros']['rnn'])
    # Different seeds start from different weights.
    self.assertFalse(np.array_equal(params['zeros']['readout']['kernel'][0],
                                    params['zeros']['readout']['kernel'][1]))

  @pytest.mark.slow   # A compiled init, training chunk and evaluation.
  def test_cleaning_buffer_fills_and_early_stopping_keeps_the_best(self):
    hmm = _hmm()
    keys = jax.vmap(jax.random.key)(np.arange(2))
    cond = dict(online=np.array([True, False]), min_len=np.array([2, 2], np.int32),
                max_len=np.array([6, 6], np.int32))
    init, train_chunk, evaluate, _ = study.make_trainer(TINY, hmm, 'cleaning')
    state = init(keys)
    state, losses = train_chunk(state, keys, cond, 0)
    self.assertEqual(losses.shape, (2, TINY.eval_every))
    buffer = state['carry_state']['rnn']['state']   # The model's 'carry_state' collection.
    n = TINY.eval_every * TINY.batch_size
    np.testing.assert_array_equal(buffer.count, [n, n])
    self.assertGreater(float(np.abs(buffer.values.h[:, :n]).min(axis=-1).max()), 0.0)
    np.testing.assert_array_equal(buffer.values.h[:, n:], 0.0)
    # The first step's entries are each window's gradient of its own summed loss at its
    # initial carry (the online model: its windows do not depend on the pick key).
    start = jax.tree.map(lambda a: a[0], init(keys))
    k_pick, k_noise = jax.random.split(jax.random.fold_in(
        jax.random.fold_in(keys[0], study.STEPS), 0))
    batch = study.training_batch(TINY, hmm, keys[0], True, 2, 6, 0, k_pick)
    model = study.Predictor(TINY, study.STRATEGIES['cleaning']())
    carry = study.make_cell(TINY).carry_template

    def summed(probe):
      variables = {'params': start['params'], 'carry_state': start['carry_state'],
                   'perturbations': {'rnn': {'initial_carry': probe}}}
      return jnp.sum(study._losses(model, variables, batch, train=True, rng=k_noise))  # pylint: disable=protected-access

    zero = jax.tree.map(lambda t: jnp.zeros((TINY.batch_size,) + t.shape, t.dtype), carry)
    want = jax.grad(summed)(zero)
    b = TINY.batch_size
    np.testing.assert_allclose(buffer.values.h[0, :b], want.h, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(buffer.values.c[0, :b], want.c, rtol=1e-4, atol=1e-7)
    val = study.make_split(TINY, hmm, keys, study.VAL, 4, cond['min_len'], cond['max_len'])
    state, first = evaluate(state, val)
    np.testing.assert_array_equal(state['best_val'], first)
    worse = jax.tree.map(lambda a: a + 1.0, state['params'])
    state2, second = evaluate(dict(state, params=worse), val)
    self.assertTrue(np.all(second > first))
    np.testing.assert_array_equal(state2['best_val'], first)   # The best stays.
    np.testing.assert_array_equal(state2['best_params']['readout']['bias'],
                                  state['params']['readout']['bias'])

  def test_conditional_needs_the_stream_task(self):
    with self.assertRaisesRegex(ValueError, 'stream'):
      study.make_trainer(study.Config(), None, 'conditional')

  def test_conditions(self):
    config = study.Config(mean_len=8, lengths=(2, 8, 32), sweep_strategies=('zeros',),
                          sweep_regimes=('online',))
    self.assertEqual(config.conditions('learned'), [('online', 8), ('fixed', 8)])
    self.assertEqual(config.conditions('zeros'),
                     [('online', 2), ('online', 8), ('online', 32), ('fixed', 8)])
    self.assertEqual(config.lead, 0)
    self.assertEqual(study.Config(task='stream', lengths=(4, 16)).lead, 24)


class EndToEndTest(absltest.TestCase):

  @pytest.mark.slow   # An end-to-end study: compiled training of three strategies.
  def test_tiny_run_writes_everything(self):
    with tempfile.TemporaryDirectory() as tmp:
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        results = study.main([
            '--steps', '6', '--eval-every', '3', '--seeds', '2', '--hidden-size', '4',
            '--width', '8', '--mean-len', '4', '--lengths', '2,4', '--train-windows', '4',
            '--val-windows', '4', '--test-windows', '4', '--batch-size', '2',
            '--em-iterations', '2', '--strategies', 'zeros,learned,noisy(0.3)',
            '--sweep-strategies', 'zeros,learned', '--out', tmp,
            '--no-progress', '--devices', '1'])
      text = out.getvalue()
      for name in ('zeros', 'learned', 'noisy(0.3)', 'hmm fitted by EM'):
        self.assertIn(f'\n{name} ', text)
      for line in ('[online] Claim 1', '[fixed] Claim 2', '[online] Claim 3: n/a',
                   '[online] Condition (test), learned', '[fixed] Condition (speed), learned',
                   'WHEN DOES A CARRY MATTER? (online)', 'WHEN DOES A CARRY MATTER? (fixed)'):
        self.assertIn(line, text)
      tmp = pathlib.Path(tmp)
      for f in ('results.json', 'results.csv', 'validation_curves.png',
                'excess_by_position.png', 'gain_vs_length.png'):
        self.assertGreater((tmp / f).stat().st_size, 1000, f)
      saved = json.loads((tmp / 'results.json').read_text())
      self.assertEqual(saved['config']['steps'], 6)
      self.assertEqual(saved['eval_steps'], [3, 6])
      zeros = saved['strategies']['zeros']
      swept = {'online@2', 'online@4', 'fixed@2', 'fixed@4'}
      self.assertEqual(set(zeros) - {'seconds'}, swept)
      self.assertEqual(set(saved['strategies']['learned']) - {'seconds'}, swept)
      self.assertEqual(set(saved['strategies']['noisy(0.3)']) - {'seconds'},
                       {'online@4', 'fixed@4'})
      curve = np.array(zeros['fixed@4']['val_excess_curve'])
      self.assertEqual(curve.shape, (2, 2))                       # seeds x evaluations
      excess = np.array(zeros['fixed@4']['metrics']['test_excess'])
      self.assertTrue(np.all(np.isfinite(excess)) and np.all(excess > -0.1))
      self.assertLen(saved['data_limited_reference']['fixed@4'], 2)
      self.assertLen(saved['data_limited_reference']['fixed@2'], 2)
      self.assertIn('online: learned vs zeros, test', saved['comparisons'])
      rows = list(csv.DictReader(open(tmp / 'results.csv')))
      self.assertLen(rows, 2 * (4 + 4 + 2) + 2 * 2)               # + the EM reference
      self.assertEqual({r['strategy'] for r in rows},
                       {'zeros', 'learned', 'noisy(0.3)', 'hmm fitted by EM'})
      self.assertEqual(results['verdicts'], saved['verdicts'])

  @pytest.mark.slow   # The stream task with its conditional carry, end to end.
  def test_stream_task_with_the_conditional_carry(self):
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
      results = study.main([
          '--task', 'stream', '--steps', '4', '--eval-every', '2', '--seeds', '2',
          '--hidden-size', '4', '--width', '8', '--mean-len', '4', '--lengths', '',
          '--train-windows', '4', '--val-windows', '4', '--test-windows', '4',
          '--batch-size', '2', '--em-iterations', '1', '--strategies', 'latent,conditional',
          '--out', tmp, '--no-progress', '--devices', '1'])
    for name in ('latent', 'conditional'):
      m = results['strategies'][name]['online@4']['metrics']
      self.assertTrue(np.all(np.isfinite(m['test_excess'])), name)

  def test_bad_options(self):
    with contextlib.redirect_stderr(io.StringIO()):
      for argv in (['--seeds', '1'], ['--strategies', 'nope'], ['--steps', '15'],
                   ['--strategies', 'conditional'], ['--chunk-size', '-1'],
                   ['--devices', '-2'], ['--lengths', 'a,b'], ['--sweep-regimes', 'nope'],
                   ['--width', '0'], ['--task', 'short']):
        with self.assertRaises(SystemExit, msg=str(argv)):
          study.main(argv + ['--out', tempfile.mkdtemp(), '--no-progress'])


if __name__ == '__main__':
  absltest.main()
