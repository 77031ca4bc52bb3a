"""Tests for the system-identification data and the burn-in study."""

import contextlib
import csv
import io
import json
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initstate
from initstate.studies import burn_in
from initstate.studies import sysid


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
                            epochs=1).resolved()
    grid, mc = burn_in.model_configs(config, ('zeros', 'learned'))
    init, _, evaluate, _ = burn_in.make_group(config, data, ('zeros', 'learned'))
    state = init(jax.random.key(0), mc)
    after_m, every_step = evaluate(state, mc, jnp.asarray(data['test'].u),
                                   jnp.asarray(data['test'].y))
    model = burn_in.Model(config, 1, 2, use_conditional=False)
    for i, (_, m) in enumerate(grid):
      params = jax.tree.map(lambda a: a[i], state[0])
      mc_i = jax.tree.map(lambda a: a[i], mc)
      fn = model.cell.bind(params['cell'])
      carry = model.initial_carry(params, mc_i, 1, None)
      out = initstate.scan_rnn(fn, jnp.asarray(data['test'].u)[None], carry)
      pred = out.outputs @ params['readout']['kernel'] + params['readout']['bias'][None, None, :]
      err = np.mean((np.asarray(pred[0]) - data['test'].y) ** 2, axis=-1)
      self.assertAlmostEqual(float(every_step[i]), float(err.mean()), places=5)
      self.assertAlmostEqual(float(after_m[i]), float(err[m:].mean()), places=5)


class EndToEndTest(absltest.TestCase):

  @pytest.mark.slow   # An end-to-end study: every variant trained and evaluated.
  def test_tiny_run_of_every_variant(self):
    with tempfile.TemporaryDirectory() as tmp:
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        rows = burn_in.main(['--dataset', 'rlc', '--window', '20', '--burn-in', '0,5',
                             '--epochs', '1', '--hidden-size', '4', '--out', tmp,
                             '--no-progress'])
      text = out.getvalue()
      self.assertLen(rows, 10)  # 5 variants x 2 burn-ins.
      self.assertEqual({r['variant'] for r in rows}, set(burn_in.VARIANTS))
      for r in rows:
        for k in ('train', 'val', 'test', 'test_all'):
          self.assertTrue(np.isfinite(r[k]) and r[k] > 0, (r, k))
        self.assertEqual(r['epochs'], 1)
        self.assertEqual(r['learning_rate'], 3e-4)  # The published RLC value.
      for line in ('best m on validation for zeros', 'does learned reach the best burn-in',
                   'does conditional reach', 'does stateful reach', '== rlc, N=20'):
        self.assertIn(line, text)
      tmp = pathlib.Path(tmp)
      self.assertGreater((tmp / 'rlc_N20_test_mse.png').stat().st_size, 1000)
      saved = json.loads((tmp / 'results.json').read_text())
      self.assertIn('--window 20', saved['command'])
      self.assertLen(list(csv.DictReader(open(tmp / 'results.csv'))), 10)

  def test_bad_options(self):
    with contextlib.redirect_stderr(io.StringIO()):
      for argv in (['--dataset', 'nope'], ['--variants', 'magic'], ['--burn-in', '0,100'],
                   ['--epochs', '0'], ['--chunk-size', '-1'], ['--devices', '-1']):
        with self.assertRaises(SystemExit):
          burn_in.main(argv + ['--epochs', '1', '--out', tempfile.mkdtemp(), '--no-progress']
                       if '--epochs' not in argv else argv + ['--out', tempfile.mkdtemp()])


if __name__ == '__main__':
  absltest.main()
