"""Tests for the system-identification data and the burn-in study."""

import contextlib
import csv
import dataclasses
import io
import json
import pathlib
import shlex
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

import initstate
from initstate.studies import burn_in
from initstate.studies import burn_in_report
from initstate.studies import sysid

ROOT = pathlib.Path(__file__).resolve().parents[1]


class DataTest(parameterized.TestCase):

  @parameterized.parameters(('silverbox', 20000, 1, 1), ('wienerhammerstein', 20000, 1, 1),
                            ('rlc', 6667, 1, 2))
  def test_read_split_shapes(self, name, length, du, dy):
    s = sysid.read_split(name, 'train')
    self.assertEqual(s.u.shape, (length, du))
    self.assertEqual(s.y.shape, (length, dy))
    self.assertTrue(np.all(np.isfinite(s.u)) and np.all(np.isfinite(s.y)))

  def test_rlc_rows(self):
    """RLC: row 0 is time (left out), row 1 the input, rows 2 and 3 the outputs."""
    rows = np.loadtxt(pathlib.Path(sysid.__file__).parent / 'data' / 'sysid' /
                      'data_rlc_val_3333.csv', delimiter=',')
    s = sysid.read_split('rlc', 'val')
    np.testing.assert_array_equal(s.u[:, 0], rows[1])
    np.testing.assert_array_equal(s.y, rows[2:].T)

  def test_scaling_fitted_on_train(self):
    data, scaler = sysid.load('silverbox')
    np.testing.assert_allclose(data['train'].u.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data['train'].y.std(0), 1.0, atol=1e-4)
    raw = sysid.read_split('silverbox', 'test')
    train = sysid.read_split('silverbox', 'train')
    expected = (raw.y - train.y.mean(0)) / train.y.std(0)  # Population std, as sklearn.
    np.testing.assert_allclose(data['test'].y, expected, rtol=1e-5, atol=1e-5)
    self.assertEqual(data['test'].y.dtype, np.float32)
    self.assertFalse(np.allclose(data['test'].y.mean(0), 0.0, atol=1e-4))  # Not refitted.
    self.assertEqual(scaler.u_mean.shape, (1,))

  def test_bad_names(self):
    with self.assertRaisesRegex(ValueError, 'unknown dataset'):
      sysid.read_split('nope', 'train')
    with self.assertRaisesRegex(ValueError, 'unknown split'):
      sysid.read_split('rlc', 'dev')

  def test_windows(self):
    x = np.arange(20.0).reshape(10, 2)
    starts = sysid.window_starts(10, 4)
    self.assertLen(starts, 7)  # Shift by one: len - N + 1.
    w = sysid.gather_windows(x, starts, 4)
    self.assertEqual(w.shape, (7, 4, 2))
    for s in starts:
      np.testing.assert_array_equal(w[s], x[s:s + 4])
    np.testing.assert_array_equal(sysid.gather_windows(jnp.asarray(x), jnp.array([3]), 4)[0],
                                  x[3:7])
    with self.assertRaisesRegex(ValueError, 'window length'):
      sysid.window_starts(10, 11)

  def test_default_burn_ins(self):
    self.assertEqual(burn_in.default_burn_ins(100), (0, 20, 40, 60, 80, 94))
    self.assertEqual(max(burn_in.default_burn_ins(5)), 4)


def _model_and_params(variants=('zeros',), burn_ins=(0, 3)):
  config = burn_in.Config(window=8, burn_ins=burn_ins, hidden_size=4).resolved()
  model = burn_in.Model(config, 1, 2, use_conditional='conditional' in variants)
  params = model.init(jax.random.key(0))
  params['carry'] = jax.tree.map(lambda p: p + 0.3, params['carry'])
  return config, model, params


def _mc(m, variant):
  config = burn_in.Config(window=8, burn_ins=(m,), noise=0.1)
  _, mc = burn_in.model_configs(config, (variant,))
  return jax.tree.map(lambda a: a[0], mc)


class LossTest(parameterized.TestCase):

  def _direct(self, params, model, u, y, carry0, start=0, carry_at_start=None):
    """The model by hand: our LSTM over u from carry0, linear read-out, squared error."""
    cell = model.cell
    carry = carry_at_start if carry_at_start is not None else carry0
    outputs = []
    for t in range(start, u.shape[1]):
      carry, h = cell.apply(params['cell'], carry, u[:, t])
      outputs.append(h)
    h = jnp.stack(outputs, axis=1)
    pred = h @ params['readout']['kernel'] + params['readout']['bias'][None, None, :]
    return jnp.mean((pred - y[:, start:]) ** 2, axis=-1)

  @parameterized.parameters(0, 3, 7)
  def test_loss_over_m_to_n_minus_1_is_a_direct_slice(self, m):
    _, model, params = _model_and_params()
    u = jax.random.normal(jax.random.key(1), (5, 8, 1))
    y = jax.random.normal(jax.random.key(2), (5, 8, 2))
    per_step, _ = model.step_losses(params, _mc(m, 'zeros'), u, y)
    zero = initstate.LSTMCarry(h=jnp.zeros((5, 4)), c=jnp.zeros((5, 4)))
    direct = self._direct(params, model, u, y, zero)
    np.testing.assert_allclose(per_step, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(burn_in.after_burn_in(per_step, m),
                               jnp.mean(direct[:, m:]), rtol=1e-5)

  def test_learned_carry_is_used_and_noise_only_in_training(self):
    _, model, params = _model_and_params()
    u = jax.random.normal(jax.random.key(1), (3, 8, 1))
    y = jnp.zeros((3, 8, 2))
    learned = initstate.learned().init_carry(params['carry'], None, 3, train=False)
    per_step, _ = model.step_losses(params, _mc(0, 'learned'), u, y)
    np.testing.assert_allclose(per_step, self._direct(params, model, u, y, learned), rtol=1e-5)
    noisy = model.step_losses(params, _mc(0, 'noisy_learned'), u, y, rng=jax.random.key(0))[0]
    self.assertFalse(np.allclose(noisy, per_step))
    clean = model.step_losses(params, _mc(0, 'noisy_learned'), u, y)[0]
    np.testing.assert_allclose(clean, per_step, rtol=1e-6)

  @pytest.mark.slow   # 5 s.
  def test_conditional_carry_replaces_the_burn_in(self):
    _, model, params = _model_and_params(('conditional',), burn_ins=(0, 3))
    u = jax.random.normal(jax.random.key(1), (2, 8, 1))
    y = jax.random.normal(jax.random.key(2), (2, 8, 2))
    m = 3
    mc = _mc(m, 'conditional')
    per_step, _ = model.step_losses(params, mc, u, y)
    cond = model.conditional_carry(params, mc, u, y)
    direct = self._direct(params, model, u, y, None, start=m, carry_at_start=cond)
    np.testing.assert_allclose(per_step[:, m:], direct, rtol=1e-5, atol=1e-6)
    # The carry reads only the first m steps: later observations do not change it.
    y_late = y.at[:, m:].set(100.0)
    late_cond = model.conditional_carry(params, mc, u, y_late)
    np.testing.assert_allclose(late_cond.h, cond.h)
    self.assertFalse(np.allclose(model.conditional_carry(params, mc, u, y.at[:, 0].set(5.)).h,
                                 cond.h))


class EvaluationTest(absltest.TestCase):

  def test_evaluate_runs_the_whole_split_as_one_sequence(self):
    data, _ = sysid.load('rlc')
    data = {k: sysid.Signal(v.u[:300], v.y[:300]) for k, v in data.items()}
    config = burn_in.Config(dataset='rlc', window=20, burn_ins=(0, 5), hidden_size=4,
                            epochs=1, seeds=2).resolved()
    self.assertEqual(config.offset, 200)
    grid, mc = burn_in.model_configs(config, ('zeros', 'learned'))
    self.assertLen(grid, 8)  # 2 variants x 2 burn-ins x 2 seeds.
    init, _, evaluate, _ = burn_in.make_group(config, data, ('zeros', 'learned'))
    state = init(jax.random.key(0), mc)
    every_step, after_m, after_offset, windows = evaluate(
        state, mc, jnp.asarray(data['test'].u), jnp.asarray(data['test'].y))
    model = burn_in.Model(config, 1, 2, use_conditional=False)
    for i, (_, m, _) in enumerate(grid):
      params = jax.tree.map(lambda a: a[i], state[0])
      mc_i = jax.tree.map(lambda a: a[i], mc)
      fn = model.cell.bind(params['cell'])
      carry = model.initial_carry(params, mc_i, 1, None)
      out = initstate.scan_rnn(fn, jnp.asarray(data['test'].u)[None], carry)
      pred = out.outputs @ params['readout']['kernel'] + params['readout']['bias'][None, None, :]
      err = np.mean((np.asarray(pred[0]) - data['test'].y) ** 2, axis=-1)
      self.assertAlmostEqual(float(every_step[i]), float(err.mean()), places=5)
      self.assertAlmostEqual(float(after_m[i]), float(err[m:].mean()), places=5)
      self.assertAlmostEqual(float(after_offset[i]), float(err[200:].mean()), places=5)
      # 15 windows of 20 steps, each from the initial carry, steps m..19 of each.
      u_w = jnp.asarray(data['test'].u).reshape(15, 20, 1)
      out = initstate.scan_rnn(fn, u_w, model.initial_carry(params, mc_i, 15, None))
      pred = out.outputs @ params['readout']['kernel'] + params['readout']['bias'][None, None, :]
      err_w = np.mean((np.asarray(pred) - data['test'].y.reshape(15, 20, 2)) ** 2, axis=-1)
      self.assertAlmostEqual(float(windows[i]), float(err_w[:, m:].mean()), places=5)


class GridTest(absltest.TestCase):

  def test_paper_grid(self):
    grid100 = burn_in.paper_burn_ins(100)
    self.assertLen(grid100, 20)
    self.assertEqual(grid100[:5], (0, 5, 10, 16, 21))   # round(i * 99 / 19), Python's round.
    self.assertEqual(grid100[-2:], (94, 99))
    grid200 = burn_in.paper_burn_ins(200)
    self.assertLen(grid200, 30)
    self.assertEqual(grid200[:20], grid100)
    self.assertEqual(grid200[20:], (110, 120, 130, 140, 150, 159, 169, 179, 189, 199))
    # Every published m* lies on the grid.
    for dataset in sysid.DATASETS:
      for row in sysid.published_table(dataset):
        self.assertIn(int(row['m_star']), burn_in.paper_burn_ins(int(row['N'])), (dataset, row))
    with self.assertRaisesRegex(ValueError, 'defined for N in'):
      burn_in.paper_burn_ins(150)

  def test_tokens(self):
    self.assertEqual(burn_in.resolve_burn_ins((0, 'mstar'), 'rlc', 200), (0, 110))
    self.assertEqual(burn_in.resolve_burn_ins(('mstar', 5, 0), 'wienerhammerstein', 100),
                     (0, 5, 21))
    self.assertEqual(burn_in.resolve_burn_ins((), 'rlc', 100), burn_in.default_burn_ins(100))
    self.assertEqual(burn_in.resolve_burn_ins(('grid',), 'rlc', 100),
                     burn_in.paper_burn_ins(100))
    with self.assertRaisesRegex(ValueError, 'no m\\*'):
      burn_in.resolve_burn_ins(('mstar',), 'rlc', 500)
    with self.assertRaisesRegex(ValueError, 'an int'):
      burn_in.resolve_burn_ins(('magic',), 'rlc', 100)


class ParametrizationAndSeedsTest(parameterized.TestCase):

  def test_pytorch_start(self):
    config = burn_in.Config(window=8, burn_ins=(0,), hidden_size=64).resolved()
    model = burn_in.Model(config, 1, 64, use_conditional=False)
    params = model.init(jax.random.key(0))
    self.assertEqual(set(params['cell']), {'w_i', 'w_h', 'b_i', 'b_h'})
    bound = 1 / 8.0  # 1 / sqrt(H)
    for leaf in (params['readout']['kernel'], params['readout']['bias'], params['cell']['b_h']):
      x = np.asarray(leaf).ravel()
      result = scipy_stats.kstest(x, 'uniform', args=(-bound, 2 * bound))
      self.assertGreater(result.pvalue, 1e-3)
    default = burn_in.Model(dataclasses.replace(config, parametrization='initstate'), 1, 64,
                            use_conditional=False).init(jax.random.key(0))
    self.assertEqual(set(default['cell']), {'w_i', 'w_h', 'b'})
    with self.assertRaisesRegex(ValueError, 'parametrization'):
      burn_in.Config(parametrization='keras').resolved()
    with self.assertRaisesRegex(ValueError, 'seeds'):
      burn_in.Config(seeds=0).resolved()

  def test_seeds_differ_and_burn_ins_share_a_seed(self):
    data, _ = sysid.load('rlc')
    data = {k: sysid.Signal(v.u[:300], v.y[:300]) for k, v in data.items()}
    config = burn_in.Config(dataset='rlc', window=20, burn_ins=(0, 5), hidden_size=4,
                            batch_size=50, epochs=1, seeds=2).resolved()
    grid, mc = burn_in.model_configs(config, ('zeros',))
    self.assertEqual(grid, [('zeros', 0, 0), ('zeros', 0, 1), ('zeros', 5, 0), ('zeros', 5, 1)])
    init, epoch, _, _ = burn_in.make_group(config, data, ('zeros',))
    state = init(jax.random.key(0), mc)
    w = np.asarray(state[0]['cell']['w_h'])
    np.testing.assert_array_equal(w[0], w[2])   # Seed 0 at m = 0 and m = 5.
    self.assertFalse(np.allclose(w[0], w[1]))   # Seeds 0 and 1.
    # The same weights and burn-in, different seeds: different shuffling, different result.
    same_start = jax.tree.map(lambda a: jnp.stack([a[0], a[0]]), state)
    pair = jax.tree.map(lambda a: a[:2], mc)._replace(burn_in=jnp.array([0, 0], jnp.int32))
    trained, _ = epoch(same_start, pair, jax.random.key(1))
    w = np.asarray(trained[0]['cell']['w_h'])
    self.assertFalse(np.allclose(w[0], w[1]))
    same_seed = pair._replace(seed=jnp.array([1, 1], jnp.int32))
    trained, _ = epoch(same_start, same_seed, jax.random.key(1))
    np.testing.assert_allclose(trained[0]['cell']['w_h'][0], trained[0]['cell']['w_h'][1])


def _rows(dataset, window, values):
  """Synthetic result rows: values maps (m, seed) to (train_all, val_all, test_all)."""
  rows = []
  for (m, seed), (train, val, test) in values.items():
    rows.append({'dataset': dataset, 'window': window, 'variant': 'zeros', 'burn_in': m,
                 'seed': seed, 'train_all': train, 'val_all': val, 'test_all': test,
                 'val_after_m': val * (2.0 if m == 0 else 0.5), 'test_after_m': test,
                 'test_after_offset': test, 'test_windows': test, 'offset': 200,
                 'group_seconds': 10.0, 'group_models': 2})
  return rows


class ReportTest(absltest.TestCase):

  def test_select_paper_and_val(self):
    rows = _rows('rlc', 100, {(0, 0): (1.0, 1.0, 1.0), (40, 0): (0.5, 2.0, 1.0),
                              (83, 0): (0.6, 0.6, 1.0)})
    # 0.7 train + 0.3 val: 1.0, 0.95, 0.6.
    pick = burn_in_report.select_m(rows, 'paper')[('rlc', 100, 'zeros', 0)]
    self.assertEqual(pick['burn_in'], 83)
    # val over t >= m: 2.0, 1.0, 0.3.
    self.assertEqual(burn_in_report.select_m(rows, 'val')[('rlc', 100, 'zeros', 0)]['burn_in'],
                     83)
    rows = _rows('silverbox', 200, {(0, 0): (1.0, 1.0, 1.0), (94, 0): (0.5, 0.5, 1.0),
                                    (120, 0): (0.1, 0.1, 1.0)})
    self.assertEqual(
        burn_in_report.select_m(rows, 'paper')[('silverbox', 200, 'zeros', 0)]['burn_in'], 94)
    with self.assertRaisesRegex(ValueError, 'select'):
      burn_in_report.selection_score(rows[0], 'test')

  def test_paper_table_verdicts(self):
    # Published RLC N=200: m* = 110; m0 test 1.462e-2, m* test 0.307e-2 (MSE x 100 / 100).
    rows = _rows('rlc', 200, {
        (0, 0): (0.01, 0.01, 0.0140), (0, 1): (0.01, 0.01, 0.0150),      # inside
        (110, 0): (0.003, 0.003, 0.0040), (110, 1): (0.003, 0.003, 0.0050)})  # above
    text = burn_in_report.paper_table(rows)
    self.assertIn(burn_in_report.RULE, text)
    line = lambda label, split: next(
        l for l in text.splitlines() if label in l and f' {split} ' in l)
    self.assertIn('0.01462', line('m=0', 'test'))
    self.assertTrue(line('m=0', 'test').rstrip().endswith('REPRODUCED'))
    self.assertNotIn('NOT', line('m=0', 'test'))
    self.assertIn('NOT REPRODUCED (ours above)', line("paper's m*=110", 'test'))
    self.assertIn('NOT REPRODUCED (ours above)', line('m=0', 'train'))    # 0.01 > 0.00971.
    self.assertIn('NOT REPRODUCED (ours below)', line("paper's m*=110", 'train'))  # < 0.00309.
    self.assertIn('m*=[110]', line('our m* (paper)', 'test'))
    rows = _rows('rlc', 200, {(0, 0): (0.01, 0.01, 0.0140)})
    self.assertIn('not run', burn_in_report.paper_table(rows))
    # A setting asked for but not finished is listed as such, with the paper's figures.
    partial = burn_in_report.paper_table(rows, settings=[('rlc', 200), ('silverbox', 100)])
    self.assertIn('silverbox          100  NOT RUN', partial)
    self.assertIn('m* = 94 test 0.00142', partial)
    self.assertIn('publishes no row', burn_in_report.paper_table(_rows('rlc', 20, {
        (0, 0): (1.0, 1.0, 1.0)})))

  def test_beyond_paper_answers(self):
    rows = _rows('rlc', 200, {(0, 0): (1, 1, 1.0), (100, 0): (1, 1, 0.5)})
    learned = [dict(r, variant='learned', test_after_offset=t) for r, t in
               zip(_rows('rlc', 200, {(0, 0): (1, 1, 0.4), (100, 0): (1, 1, 0.3)}), (0.4, 0.3))]
    lines = burn_in_report.beyond_paper(rows + learned)
    self.assertLen(lines, 1)
    self.assertIn('YES: it reaches', lines[0])
    self.assertIn('(zeros, m=100: median test MSE over t >= 200 0.50000) already at m=0 '
                  '(0.40000)', lines[0])
    self.assertIn('cost: 5 s wall-clock per model (zeros: 5 s wall-clock per model)', lines[0])
    worse = [dict(r, variant='conditional', test_after_offset=0.9) for r in learned]
    self.assertIn('NO: its best median, at m=0 (0.90000), stays above',
                  burn_in_report.beyond_paper(rows + worse)[0])
    # Several seeds: the medians decide, their [min, max] is printed beside them.
    seeds = rows + [dict(r, seed=1, test_after_offset=t) for r, t in zip(rows, (2.0, 0.7))]
    same = [dict(r, variant='learned', test_after_offset=t) for r, t in
            zip(seeds, (1.0, 0.45, 1.5, 0.6))]
    line = burn_in_report.beyond_paper(seeds + same)[0]
    self.assertIn('WITH THE SAME burn-in: it first reaches the best burn-in (zeros, m=100: '
                  'median test MSE over t >= 200 0.60000 [0.50000, 0.70000]) at m=100 '
                  '(0.52500 [0.45000, 0.60000])', line)
    # Zero-carry models from two groups (read back from another command, say): the cost is
    # their seconds over their models, and the report lists both groups.
    more = [dict(r, burn_in=50, group_seconds=40.0, group_models=1, resumed_at_epoch=7)
            for r in rows[:1]]
    self.assertIn('(zeros: 17 s wall-clock per model)',
                  burn_in_report.beyond_paper(rows + more + learned)[0])
    self.assertEqual(burn_in_report._trained_groups(rows + more + learned),
                     [('zeros', 10.0, 2, 0), ('zeros', 40.0, 1, 7), ('learned', 10.0, 2, 0)])


class ResumeTest(absltest.TestCase):

  def _run(self, folder, epochs=4, every=2):
    data, _ = sysid.load('rlc')
    data = {k: sysid.Signal(v.u[:300], v.y[:300]) for k, v in data.items()}
    config = burn_in.Config(dataset='rlc', window=20, burn_ins=(0, 5), hidden_size=4,
                            batch_size=50, epochs=epochs, seeds=2).resolved()
    return burn_in.run_group(config, data, ('zeros',), folder=folder, checkpoint_every=every,
                             progress=False)

  @pytest.mark.slow   # Three short trainings, one interrupted and resumed.
  def test_interrupted_run_resumes_to_the_same_rows(self):
    with tempfile.TemporaryDirectory() as tmp:
      whole = self._run(pathlib.Path(tmp) / 'whole')
      folder = pathlib.Path(tmp) / 'stopped'
      real_epoch = burn_in.make_group

      def stop_at_epoch_3(*args, **kwargs):
        init, epoch, evaluate, steps = real_epoch(*args, **kwargs)
        calls = []

        def epoch_then_stop(*a):
          calls.append(1)
          if len(calls) == 3:
            raise KeyboardInterrupt
          return epoch(*a)
        return init, epoch_then_stop, evaluate, steps

      with mock.patch.object(burn_in, 'make_group', stop_at_epoch_3):
        with self.assertRaises(KeyboardInterrupt):
          self._run(folder)
      self.assertEqual([p.name for p in folder.glob('epoch_*')], ['epoch_000002'])
      self.assertFalse((folder / 'rows.json').exists())
      resumed = self._run(folder)
      self.assertEqual([r['resumed_at_epoch'] for r in resumed], [2] * 4)
      for a, b in zip(whole, resumed):
        for k in ('train_all', 'val_all', 'test_all', 'test_after_m', 'test_after_offset',
                  'test_windows'):
          self.assertAlmostEqual(a[k], b[k], places=6)
      self.assertEqual(list(folder.glob('epoch_*')), [])   # Cleaned up when done.
      # The trained models are kept: restored, they give the rows' figures again.
      config = burn_in.Config(dataset='rlc', window=20, burn_ins=(0, 5), hidden_size=4,
                              batch_size=50, epochs=4, seeds=2).resolved()
      data, _ = sysid.load('rlc')
      data = {k: sysid.Signal(v.u[:300], v.y[:300]) for k, v in data.items()}
      _, mc = burn_in.model_configs(config, ('zeros',))
      init, _, evaluate, _ = burn_in.make_group(config, data, ('zeros',))
      final = initstate.training.restore_checkpoint(folder / 'final',
                                                    like=init(jax.random.key(0), mc))
      test_all = evaluate(final, mc, jnp.asarray(data['test'].u), jnp.asarray(data['test'].y))[0]
      np.testing.assert_allclose(test_all, [r['test_all'] for r in resumed], rtol=1e-5)
      # A finished group is read back, not trained again.
      with mock.patch.object(burn_in, 'make_group', side_effect=AssertionError('trained')):
        self.assertEqual(self._run(folder), resumed)
      with self.assertRaisesRegex(ValueError, 'other settings'):
        self._run(folder, epochs=5)


  def test_commands_share_saved_models(self):
    """Finished groups serve later commands by variant, m and seed; only the rest trains."""
    data, _ = sysid.load('rlc')
    data = {k: sysid.Signal(v.u[:300], v.y[:300]) for k, v in data.items()}
    config = burn_in.Config(dataset='rlc', window=20, burn_ins=(0, 5), hidden_size=4,
                            batch_size=100, epochs=1, variants=('zeros',), seeds=2)
    with tempfile.TemporaryDirectory() as tmp:
      runs = pathlib.Path(tmp) / 'shared'
      first = burn_in.run_one(config, data, out=pathlib.Path(tmp) / 'a', runs=runs,
                              progress=False)
      self.assertEqual([p.name for p in runs.iterdir()], ['rlc_N20_zeros_m0-5_s2'])
      trained = []
      real = burn_in.make_group

      def record(config, data, variants):
        trained.append((tuple(variants), config.burn_ins, config.seeds))
        return real(config, data, variants)

      with mock.patch.object(burn_in, 'make_group', record):
        more = burn_in.run_one(
            dataclasses.replace(config, variants=('zeros', 'learned'), burn_ins=(0, 3, 5),
                                seeds=1), data, out=pathlib.Path(tmp) / 'b', runs=runs,
            progress=False)
      # zeros at m=0 and 5, seed 0, were read back; zeros at m=3 and learned trained.
      self.assertEqual(trained, [(('zeros',), (3,), 1), (('learned',), (0, 3, 5), 1)])
      self.assertEqual([(r['variant'], r['burn_in'], r['seed']) for r in more],
                       [('zeros', 0, 0), ('zeros', 3, 0), ('zeros', 5, 0), ('learned', 0, 0),
                        ('learned', 3, 0), ('learned', 5, 0)])
      self.assertEqual(more[0], first[0])
      self.assertEqual(more[2], first[2])
      # A model trained in a group of its own equals the same model trained beside others.
      alone = burn_in.run_one(dataclasses.replace(config, burn_ins=(5,), seeds=1), data,
                              progress=False)
      self.assertAlmostEqual(alone[0]['test_all'], first[2]['test_all'], places=6)
      # Two seeds asked for and one saved at m=3: that m trains again, under a new name.
      with mock.patch.object(burn_in, 'make_group', record):
        burn_in.run_one(dataclasses.replace(config, burn_ins=(3, 5)), data, runs=runs,
                        progress=False)
      self.assertEqual(trained[-1], (('zeros',), (3,), 2))
      self.assertIn('rlc_N20_zeros_m3_s2', [p.name for p in runs.iterdir()])
      # Other settings are never mixed in: their group's folder is refused.
      with self.assertRaisesRegex(ValueError, 'other settings'):
        burn_in.run_one(dataclasses.replace(config, hidden_size=5), data, runs=runs,
                        progress=False)

  def test_conditional_reuse_needs_the_same_context(self):
    """The initializer network reads the command's largest m: a group of conditional models
    is reused only by commands whose context is the same."""
    config = burn_in.Config(dataset='rlc', window=20, burn_ins=(0, 5), variants=('conditional',),
                            seeds=2).resolved()
    saved = burn_in._signature(config, ('conditional',))
    narrower = dataclasses.replace(config, burn_ins=(0, 3), context=None).resolved()
    self.assertEqual(narrower.context, 3)
    self.assertFalse(burn_in._same_settings(saved, burn_in._signature(narrower, ('conditional',)),
                                            ignore=('burn_ins', 'seeds')))
    self.assertTrue(burn_in._same_settings(
        saved, burn_in._signature(dataclasses.replace(narrower, context=5), ('conditional',)),
        ignore=('burn_ins', 'seeds')))
    # Signatures saved before `context` existed read it as their largest m; other variants
    # do not depend on it.
    old = json.loads(json.dumps(saved))
    del old['config']['context']
    self.assertTrue(burn_in._same_settings(old, saved))
    zeros = burn_in._signature(config, ('zeros',))
    self.assertNotIn('context', zeros['config'])
    self.assertTrue(burn_in._same_settings(
        zeros, burn_in._signature(narrower, ('zeros',)), ignore=('burn_ins', 'seeds')))
    with self.assertRaisesRegex(ValueError, 'resolved'):
      burn_in.Model(burn_in.Config(), 1, 2, use_conditional=True)


class RecordedResultsTest(absltest.TestCase):
  """Every recorded report is what its command prints from the committed rows."""

  @pytest.mark.slow   # No training: the recorded reports made again from the saved rows.
  def test_recorded_reports_come_from_the_committed_rows(self):
    recorded = sorted((ROOT / 'results' / 'burn_in').glob('**/results.json'))
    remade = 0
    for path in recorded:
      saved = json.loads(path.read_text())
      argv = shlex.split(saved['command'])[3:]   # After 'python -m initstate.studies.burn_in'.
      if '--report-only' not in argv:
        continue   # A run recorded before the shared runs folder existed.
      self.assertEqual(argv[argv.index('--out') + 1], str(path.parent.relative_to(ROOT)))
      self.assertTrue(argv[argv.index('--runs') + 1].startswith('results/burn_in/'))
      argv[argv.index('--runs') + 1] = str(ROOT / argv[argv.index('--runs') + 1])
      with tempfile.TemporaryDirectory() as tmp:
        argv[argv.index('--out') + 1] = tmp
        with contextlib.redirect_stdout(io.StringIO()), mock.patch.object(
            burn_in, 'make_group', side_effect=AssertionError('trained')):
          rows = burn_in.main(argv)
        again = json.loads((pathlib.Path(tmp) / 'results.json').read_text())
      self.assertEqual(rows, saved['rows'], path)
      self.assertEqual(again['report'], saved['report'], path)
      self.assertEqual(again['not_finished'], saved['not_finished'], path)
      remade += 1
    self.assertGreaterEqual(remade, 2)


class CsvTest(absltest.TestCase):

  def test_rows_saved_before_a_key_was_added_leave_its_cell_empty(self):
    rows = [{'variant': 'zeros', 'burn_in': 0}, {'variant': 'learned', 'burn_in': 0,
                                                  'num_params': 377}]
    with tempfile.TemporaryDirectory() as tmp:
      path = pathlib.Path(tmp) / 'results.csv'
      burn_in.write_csv(path, rows)
      with open(path, newline='') as f:
        read = list(csv.DictReader(f))
    self.assertEqual(read, [{'variant': 'zeros', 'burn_in': '0', 'num_params': ''},
                            {'variant': 'learned', 'burn_in': '0', 'num_params': '377'}])


class EndToEndTest(absltest.TestCase):

  @pytest.mark.slow   # One tiny training, then a report of it.
  def test_report_only_reports_the_finished_part_and_lists_the_rest(self):
    argv = ['--dataset', 'rlc', '--window', '20', '--burn-in', '0,5', '--epochs', '1',
            '--hidden-size', '4', '--no-progress']
    with tempfile.TemporaryDirectory() as tmp:
      with contextlib.redirect_stdout(io.StringIO()):
        burn_in.main(argv + ['--variants', 'zeros', '--out', tmp])
      out = io.StringIO()
      with contextlib.redirect_stdout(out), mock.patch.object(
          burn_in, 'make_group', side_effect=AssertionError('trained')):
        rows = burn_in.main(argv + ['--variants', 'zeros,learned', '--out', tmp,
                                    '--report-only'])
      self.assertEqual({r['variant'] for r in rows}, {'zeros'})
      self.assertIn('NOT FINISHED', out.getvalue())
      self.assertIn('rlc N=20 learned', out.getvalue())
      saved = json.loads((pathlib.Path(tmp) / 'results.json').read_text())
      self.assertEqual(saved['not_finished'], ['rlc N=20 learned'])
      with contextlib.redirect_stdout(io.StringIO()):
        self.assertEqual(burn_in.main(argv + ['--variants', 'stateful', '--out', tmp,
                                              '--report-only']), [])

  @pytest.mark.slow   # An end-to-end study: every variant trained and evaluated.
  def test_tiny_run_of_every_variant(self):
    with tempfile.TemporaryDirectory() as tmp:
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        rows = burn_in.main(['--dataset', 'rlc', '--window', '20', '--burn-in', '0,5',
                             '--epochs', '1', '--hidden-size', '4', '--seeds', '2',
                             '--out', tmp, '--no-progress'])
      text = out.getvalue()
      self.assertLen(rows, 20)  # 5 variants x 2 burn-ins x 2 seeds.
      self.assertEqual({r['variant'] for r in rows}, set(burn_in.VARIANTS))
      self.assertEqual({r['seed'] for r in rows}, {0, 1})
      for r in rows:
        for split in sysid.SPLITS:
          for metric in burn_in.METRICS:
            k = f'{split}_{metric}'
            self.assertTrue(np.isfinite(r[k]) and r[k] > 0, (r, k))
        self.assertEqual(r['epochs'], 1)
        self.assertEqual(r['learning_rate'], 3e-4)  # The published RLC value.
        self.assertEqual(r['parametrization'], 'pytorch')
        # H = 4, Du = 1, Dy = 2: LSTM 4 * 4 * (1 + 4) + 2 * 16 biases, read-out 4 * 2 + 2;
        # a learned carry adds 2 * 4; the initializer network reads 5 steps of (u, y).
        base = 16 * 5 + 32 + 10
        self.assertEqual(r['num_params'], {
            'learned': base + 8, 'noisy_learned': base + 8,
            'conditional': base + (15 * 32 + 32) + (32 * 8 + 8)}.get(r['variant'], base))
      for line in ('m* of zeros (0.7 train + 0.3 val', 'does learned reach the best burn-in',
                   'does conditional reach', 'does stateful reach', '== rlc, N=20',
                   "== The paper's table", 'publishes no row'):
        self.assertIn(line, text)
      tmp = pathlib.Path(tmp)
      self.assertGreater((tmp / 'rlc_N20_test_mse.png').stat().st_size, 1000)
      saved = json.loads((tmp / 'results.json').read_text())
      self.assertIn('--window 20', saved['command'])
      self.assertEqual(saved['select'], 'paper')
      self.assertLen(list(csv.DictReader(open(tmp / 'results.csv'))), 20)
      for variant in burn_in.VARIANTS:   # One saved group per variant.
        self.assertTrue((tmp / 'runs' / f'rlc_N20_{variant}_m0-5_s2' / 'rows.json').exists())

  def test_bad_options(self):
    with contextlib.redirect_stderr(io.StringIO()):
      for argv in (['--dataset', 'nope'], ['--variants', 'magic'], ['--burn-in', '0,100'],
                   ['--burn-in', 'many'], ['--epochs', '0'], ['--chunk-size', '-1'],
                   ['--devices', '-1'], ['--seeds', '0'], ['--checkpoint-every', '-1'],
                   ['--parametrization', 'keras'], ['--select', 'test'],
                   ['--dataset', 'rlc', '--window', '500', '--burn-in', 'mstar']):
        with self.assertRaises(SystemExit):
          burn_in.main(argv + ['--epochs', '1', '--out', tempfile.mkdtemp(), '--no-progress']
                       if '--epochs' not in argv else argv + ['--out', tempfile.mkdtemp()])


if __name__ == '__main__':
  absltest.main()
