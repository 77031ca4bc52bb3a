"""Tests for the strategy study (the main job): data, metrics, verdicts, a tiny end-to-end run."""

import contextlib
import csv
import io
import json
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import pytest

from initstate import tasks
from initstate.studies import carry_strategies as study


class SplitTest(parameterized.TestCase):

  @pytest.mark.slow   # Compiles the HMM sampler (5 s).
  def test_short_split(self):
    config = study.Config(seq_len=6)
    hmm = tasks.random_hmm(jax.random.key(0), config.num_states, config.num_symbols)
    split = study.make_split(jax.random.key(1), hmm, config, 10)
    for key in ('inputs', 'targets', 'mask', 'resets', 'position', 'bayes'):
      self.assertEqual(split[key].shape, (10, 6), key)
    # Targets are the inputs shifted by one step.
    np.testing.assert_array_equal(split['inputs'][:, 1:], split['targets'][:, :-1])
    np.testing.assert_array_equal(split['position'][0], np.arange(1, 7))
    self.assertTrue(split['mask'].all())
    self.assertTrue(np.all(split['bayes'] > 0))

  def test_stream_split(self):
    config = study.Config(task='stream', seq_len=8, min_seq_len=3)
    hmm = tasks.random_hmm(jax.random.key(0), config.num_states, config.num_symbols)
    split = study.make_split(jax.random.key(1), hmm, config, 20)
    self.assertEqual(split['inputs'].shape, (20, 8))
    # Within a window, the next input is the current target.
    np.testing.assert_array_equal(split['inputs'][:, 1:], split['targets'][:, :-1])
    # A reset at step t + 1 means the target at step t starts a new sequence: masked out.
    np.testing.assert_array_equal(split['mask'][:, :-1], ~split['resets'][:, 1:])
    self.assertTrue(split['resets'].any())
    self.assertTrue(np.all(split['position'][split['mask']] >= 1))
    self.assertTrue(np.all(split['position'][split['mask']] <= 7))
    np.testing.assert_array_equal(split['bayes'][~split['mask']], 0.0)
    # Positions count symbols read since the last reset.
    for n in range(20):
      for t in range(8):
        if split['resets'][n, t] and split['mask'][n, t]:
          self.assertEqual(split['position'][n, t], 1)


  def test_stream_context_is_the_same_sequence_before_the_window(self):
    config = study.Config(task='stream', seq_len=6, min_seq_len=2)
    hmm = tasks.random_hmm(jax.random.key(0), config.num_states, config.num_symbols)
    split = study.make_split(jax.random.key(1), hmm, config, 40)
    context, inputs, resets = split['context'], split['inputs'], split['resets']
    width = config.seq_len
    self.assertEqual(context.shape, (40, study.CONTEXT_STEPS, config.num_symbols))
    np.testing.assert_array_equal(context[0], 0.0)  # The stream starts at window 0.
    for n in range(1, 40):
      for j in range(1, study.CONTEXT_STEPS + 1):
        # Symbol j steps back belongs to the window's first sequence iff no reset since.
        same = not resets[n, 0] and not resets[n - 1, width - j + 1:].any()
        expected = np.eye(config.num_symbols)[inputs[n - 1, width - j]] if same else 0.0
        np.testing.assert_array_equal(context[n, j - 1], expected, f'window {n}, {j} back')
    self.assertGreater(context.sum(), 10)
    short = study.make_split(jax.random.key(1), hmm, study.Config(seq_len=6), 4)
    np.testing.assert_array_equal(short['context'], 0.0)


class MetricsTest(absltest.TestCase):

  def test_excess_by_position(self):
    split = {'mask': np.array([[True, True, True], [True, False, True]]),
             'position': np.array([[1, 2, 3], [1, 2, 1]]),
             'bayes': np.array([[1., 1., 1.], [0.5, 0.5, 0.5]])}
    per_step = np.array([[2., 3., 1.5], [1., 100., 2.5]])
    out = study.excess_by_position(per_step, split, (1, 2, 3, 5))
    self.assertAlmostEqual(out[1], (1.0 + 0.5 + 2.0) / 3)
    self.assertAlmostEqual(out[2], 2.0)  # The masked 100 is left out.
    self.assertAlmostEqual(out[3], 0.5)
    self.assertTrue(np.isnan(out[5]))

  def test_steps_to_margin(self):
    steps = np.array([10, 20, 30])
    self.assertEqual(study.steps_to_margin(np.array([3., 2., 1.]), steps, 2.0), 20.0)
    self.assertTrue(np.isnan(study.steps_to_margin(np.array([3., 2., 1.]), steps, 0.5)))

  def test_compare(self):
    base = np.array([1.0, 1.1, 0.9, 1.0])
    self.assertEqual(study.compare(base - 0.1, base)[0], 'better')
    self.assertEqual(study.compare(base + 0.1, base)[0], 'worse')
    noisy = base + np.array([0.05, -0.05, 0.04, -0.04])
    self.assertEqual(study.compare(noisy, base)[0], 'tie')
    # Consistent but negligible differences are ties.
    self.assertEqual(study.compare(base - 1e-5, base)[0], 'tie')
    kind, mean, se = study.compare(base - 0.1, base)
    self.assertAlmostEqual(mean, 0.1)
    self.assertAlmostEqual(se, 0.0)
    with self.assertRaisesRegex(ValueError, '2 seeds'):
      study.compare(np.array([1.0]), np.array([2.0]))

  def test_verdicts(self):
    s = lambda v: {'final_val': np.asarray(v), study.SPEED_METRIC: np.asarray(v) + 0.5}
    metrics = {
        'zeros': s([2.0, 2.1, 2.2]),
        'noisy(0.3)': s([1.9, 2.0, 2.1]),
        'learned': s([1.5, 1.6, 1.7]),
        'noisy_learned(0.3)': s([1.49, 1.6, 1.7]),
    }
    lines = study.verdicts(metrics)
    self.assertIn('Claim 1', lines[0])
    self.assertIn('REPRODUCED', lines[0])
    self.assertNotIn('NOT REPRODUCED', lines[0])
    self.assertIn('Claim 2', lines[1])
    self.assertIn(': REPRODUCED', lines[1])
    self.assertIn(': REPRODUCED', lines[2])  # A tie is at most a marginal gain.
    metrics['noisy(0.3)'] = s([2.2, 2.3, 2.4])  # Worse than zeros.
    metrics['noisy_learned(0.3)'] = s([1.2, 1.3, 1.4])  # A large gain over learned.
    lines = study.verdicts(metrics)
    self.assertIn('NOT REPRODUCED', lines[0])
    self.assertIn('NOT REPRODUCED', lines[2])
    self.assertIn('n/a', study.verdicts({'learned': s([1., 2.])})[0])


class EndToEndTest(absltest.TestCase):

  @pytest.mark.slow   # An end-to-end study: three strategies, compiled training runs.
  def test_tiny_run_writes_everything(self):
    with tempfile.TemporaryDirectory() as tmp:
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        results = study.main([
            '--steps', '20', '--eval-every', '10', '--seeds', '2', '--hidden-size', '4',
            '--train-sequences', '16', '--val-sequences', '16', '--seq-len', '6',
            '--strategies', 'zeros,learned,noisy(0.3)', '--out', tmp, '--no-progress'])
      text = out.getvalue()
      for name in ('zeros', 'learned', 'noisy(0.3)'):
        self.assertIn(f'\n{name} ', text)
      self.assertIn('Claim 1', text)
      self.assertIn('Claim 2', text)
      self.assertIn('Claim 3: n/a', text)
      tmp = pathlib.Path(tmp)
      for f in ('results.json', 'results.csv', 'validation_curves.png', 'excess_by_position.png'):
        self.assertGreater((tmp / f).stat().st_size, 100, f)
      saved = json.loads((tmp / 'results.json').read_text())
      self.assertEqual(saved['config']['steps'], 20)
      self.assertEqual(saved['eval_steps'], [10, 20])
      learned = saved['strategies']['learned']
      self.assertLen(learned['val_curve'], 2)     # Seeds.
      self.assertLen(learned['val_curve'][0], 2)  # Evaluations.
      self.assertTrue(np.all(np.isfinite(learned['metrics']['final_val'])))
      self.assertGreater(np.min(learned['metrics']['final_val']), saved['bayes_val_loss'] - 0.5)
      rows = list(csv.DictReader(open(tmp / 'results.csv')))
      self.assertLen(rows, 6)
      self.assertEqual({r['strategy'] for r in rows}, {'zeros', 'learned', 'noisy(0.3)'})
      self.assertEqual(results['verdicts'], saved['verdicts'])

  @pytest.mark.slow   # Two compiled model inits (about 10 s).
  def test_same_initial_weights_and_data_across_strategies(self):
    config = study.Config(hidden_size=4, seq_len=5, train_sequences=8, seeds=2)
    hmm = tasks.random_hmm(jax.random.key(0), config.num_states, config.num_symbols)
    split = study.make_split(jax.random.key(1), hmm, config, 8)
    batched = jax.tree.map(lambda a: np.stack([a, a]), split)
    keys = jax.vmap(jax.random.key)(np.arange(2))
    params = {name: study.make_trainer(config, name)[0](keys, batched)[0]
              for name in ('zeros', 'learned')}
    np.testing.assert_array_equal(params['zeros']['rnn']['cell']['w_h'],
                                  params['learned']['rnn']['cell']['w_h'])
    np.testing.assert_array_equal(params['zeros']['readout']['kernel'],
                                  params['learned']['readout']['kernel'])
    self.assertNotIn('carry', params['zeros']['rnn'])

  @pytest.mark.slow   # Two end-to-end studies, ten strategies in all.
  def test_new_strategies_run_end_to_end(self):
    common = ['--steps', '10', '--eval-every', '5', '--seeds', '2', '--hidden-size', '4',
              '--train-sequences', '16', '--val-sequences', '16', '--seq-len', '6',
              '--no-progress']
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
      short = study.main(common + ['--strategies', 'learned,cleaning,latent(4)', '--out', tmp])
      stream = study.main(common + ['--task', 'stream', '--out', tmp])  # default strategies
    for name in ('cleaning', 'latent(4)'):
      self.assertTrue(np.all(np.isfinite(short['strategies'][name]['metrics']['final_val'])))
      self.assertTrue(any(f'Against learned, {name}' in v for v in short['verdicts']))
    self.assertEqual(list(stream['strategies']),
                     list(study.DEFAULT_STRATEGIES) + [study.CONDITIONAL])
    self.assertTrue(np.all(np.isfinite(
        stream['strategies']['conditional']['metrics']['final_val'])))

  @pytest.mark.slow   # A compiled init and training chunk (over 10 s).
  def test_cleaning_buffer_fills_in_training(self):
    config = study.Config(hidden_size=4, seq_len=5, train_sequences=8, seeds=2, batch_size=4,
                          eval_every=3)
    hmm = tasks.random_hmm(jax.random.key(0), config.num_states, config.num_symbols)
    split = jax.tree.map(lambda a: np.stack([a, a]),
                         study.make_split(jax.random.key(1), hmm, config, 8))
    keys = jax.vmap(jax.random.key)(np.arange(2))
    init, train_chunk, _ = study.make_trainer(config, 'cleaning')
    state = init(keys, split)
    state, _ = train_chunk(state, keys, split, 0)
    buffer = state[2]['rnn']['state']   # The 'carry_state' collection of the model.
    np.testing.assert_array_equal(buffer.count, [12, 12])   # 3 steps x 4 sequences
    self.assertGreater(float(np.abs(buffer.values.h[:, :12]).min(axis=-1).max()), 0.0)
    np.testing.assert_array_equal(buffer.values.h[:, 12:], 0.0)

  def test_conditional_needs_the_stream_task(self):
    with self.assertRaisesRegex(ValueError, 'stream'):
      study.make_trainer(study.Config(), 'conditional')

  def test_bad_options(self):
    with contextlib.redirect_stderr(io.StringIO()):
      for argv in (['--seeds', '1'], ['--strategies', 'nope'], ['--steps', '15'],
                   ['--strategies', 'conditional'], ['--chunk-size', '-1'], ['--devices', '-2']):
        with self.assertRaises(SystemExit):
          study.main(argv + ['--out', tempfile.mkdtemp(), '--no-progress'])


if __name__ == '__main__':
  absltest.main()
