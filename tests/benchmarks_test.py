"""Smoke test of the benchmark suite: `benchmarks/rnn_speed.py --quick` runs and reports ratios.

The numbers of a quick run mean nothing; this only checks that every section runs to the end
(in a subprocess, as a user runs it) and prints its ratio lines. PyTorch parts are expected
only when torch is installed.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'benchmarks' / 'rnn_speed.py'
TIMEOUT_S = 180  # A guard against a hang; the run below takes about 20-35 s on 2 CPU cores.


def _run_quick(json_path: pathlib.Path) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env['JAX_NUMPY_RANK_PROMOTION'] = 'raise'   # The test suite's strict shapes, here too.
  # Compilation dominates a quick run; this roughly halves it. Numbers are not checked.
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  env.setdefault('JAX_PLATFORMS', 'cpu')
  return subprocess.run(
      [sys.executable, str(SCRIPT), '--quick', '--sections', 'speed,strategies,memory',
       '--print-env', '--json', str(json_path)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


class RnnSpeedQuickTest(absltest.TestCase):
  """One test method, so that `pytest -n 2` runs the subprocess once, not once per worker."""

  @pytest.mark.slow   # Runs the benchmark script (a subprocess, 20-35 s).
  def test_quick_run(self):
    with tempfile.TemporaryDirectory() as tmp:
      json_path = pathlib.Path(tmp) / 'quick.json'
      proc = _run_quick(json_path)
      self.out = proc.stdout
      self.assertEqual(proc.returncode, 0,
                       msg=f'stdout:\n{self.out[-4000:]}\nstderr:\n{proc.stderr[-4000:]}')
      self.assertTrue(json_path.exists(), msg='no JSON report was written')
      report = json.loads(json_path.read_text())
    self.assertNotIn('FAILED', self.out)
    for check in (self._check_environment, self._check_speed, self._check_strategies,
                  self._check_memory, self._check_json):
      with self.subTest(check.__name__):
        check(report)

  def _assert_line(self, pattern: str) -> None:
    self.assertRegex(self.out, re.compile(pattern, re.MULTILINE),
                     msg=f'no line matching {pattern!r} in the output:\n{self.out[-3000:]}')

  def _check_environment(self, report):
    self._assert_line(r'^== environment ==$')
    self._assert_line(r'^(MALLOC_\w+=.*|MALLOC_\*: none set .*)$')
    self._assert_line(r'^cpu: .*os\.cpu_count\(\) = \d+')
    self.assertIn('malloc_env', report['env'])

  def _check_speed(self, report):
    has_torch = report['env']['torch'] is not None   # Whether the script imported torch.
    for size in ('standard', 'small', 'sysid'):
      for mode in ('forward', 'train'):
        self._assert_line(rf'^ratio speed lstm {size} {mode}: initstate / flax-\S+ = '
                          r'\d+\.\d+$')
        if has_torch:
          self._assert_line(rf'^ratio speed lstm {size} {mode}: initstate / torch-nn\.LSTM = ')
    self.assertNotIn('DIFFER', self.out)   # All variants compute the same loss.
    self.assertTrue(report['checks'] and all(c['agree'] for c in report['checks']))
    if not has_torch:
      self._assert_line(r'^note: PyTorch is not installed')

  def _check_strategies(self, report):
    del report
    for name in ('learned', r'noisy_learned\(0\.3\)', r'latent\(8\)', 'cleaning_noise',
                 r'burn_in=\d+', r'burn_in=\d+\+stop_gradient', r'resets\(p=[\d.]+\)\S*'):
      self._assert_line(rf'^ratio strategies standard train: {name} / zeros = \d+\.\d+$')

  def _check_memory(self, report):
    self._assert_line(r'^ratio memory T=256 temp: \S+ / initstate = \d+\.\d+$')
    self._assert_line(r'^ratio memory T=256 train: \S+ / initstate = \d+\.\d+$')
    self.assertNotEmpty(report['memory'])
    self.assertTrue(all(r['temp_mib'] > 0 for r in report['memory']))

  def _check_json(self, report):
    self.assertEqual(report['failures'], [])
    self.assertEqual({r['section'] for r in report['timings']},
                     {'speed', 'strategies', 'memory'})
    self.assertTrue(all(r['median_s'] > 0 and len(r['samples_s']) == 2
                        for r in report['timings']))


class LstmProfileTest(absltest.TestCase):
  """`benchmarks/lstm_profile.py` runs every piece of the LSTM forward and prints its row."""

  @pytest.mark.slow   # Runs the profiling script (a subprocess).
  def test_one_round(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'lstm_profile.py'), '--repeats', '1',
         '--min-sample-ms', '0'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    self.assertEqual(proc.returncode, 0, msg=proc.stdout[-3000:] + proc.stderr[-3000:])
    self.assertNotIn('FAILED', proc.stdout)
    for row in ('recurrent matmul', r'\+ input matmul', r'\+ saved gates \(training fwd\)',
                'initstate fused, training fwd', 'input matmul hoisted'):
      self.assertRegex(proc.stdout, re.compile(rf'^{row}\s.*\d+\.\d{{3}}$', re.MULTILINE))


class NnxStepTest(absltest.TestCase):
  """`benchmarks/nnx_step.py --quick` runs every variant, and their losses agree."""

  @pytest.mark.slow   # Runs the benchmark script (a subprocess).
  def test_quick_run(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'nnx_step.py'), '--quick'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)
    self.assertEqual(proc.returncode, 0, msg=proc.stdout[-3000:] + proc.stderr[-3000:])
    checks = re.findall(r'eval losses (\S+) \(scan_rnn\) (\S+) \(nnx\)', proc.stdout)
    self.assertLen(checks, 1)
    for functional, module in checks:
      self.assertAlmostEqual(float(functional), float(module), places=5)
    for name in ('scan_rnn', r'nnx\.jit', r'nnx split\+jit'):
      self.assertLen(re.findall(rf'^  {name}\s.*\d+\.\d{{3}}$', proc.stdout, re.MULTILINE), 1)


class SweepSpeedTest(absltest.TestCase):
  """`benchmarks/sweep_speed.py --quick` times every variant, states the targets and profiles."""

  @pytest.mark.slow   # Runs the benchmark script (a subprocess, about a minute).
  def test_quick_run(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    with tempfile.TemporaryDirectory() as tmp:
      path = pathlib.Path(tmp) / 'rows.json'
      proc = subprocess.run(
          [sys.executable, str(ROOT / 'benchmarks' / 'sweep_speed.py'), '--quick', '--settings',
           'sysid', '--json', str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
          timeout=420, check=False)
      self.assertEqual(proc.returncode, 0, msg=proc.stdout[-3000:] + proc.stderr[-3000:])
      rows = json.loads(path.read_text())
    variants = {(r['setting'], r['models'], r['variant']) for r in rows}
    # The sysid setting only, to keep CI short (the main setting's runner is the carry-strategies
    # study's trainer, tested with that study).
    self.assertIn(('sysid', 1, 'initstate vmap'), variants)
    self.assertIn(('sysid', 2, 'initstate c=1 d=2'), variants)
    for r in rows:
      self.assertGreater(r['s_per_model_epoch'], 0)
    self.assertIn('== targets ==', proc.stdout)
    self.assertRegex(proc.stdout, r'sysid: best cost per model against M \[1, 2\]')
    self.assertRegex(proc.stdout, r'== profile: sysid, M=2')
    self.assertRegex(proc.stdout, re.compile(r'^\S+\s+\d+\s+\d+\.\d\s+\d+\.\d\d\s+\d+\.\d%$',
                                             re.MULTILINE))
    try:
      import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      return
    self.assertIn(('sysid', 2, 'torch loop'), variants)
    self.assertIn(('sysid', 2, 'torch stacked bmm'), variants)


class BurnInCostTest(absltest.TestCase):
  """`benchmarks/burn_in_cost.py --quick` times an epoch of every carry of the burn-in study."""

  @pytest.mark.slow   # Runs the benchmark script (a subprocess, about 30 s).
  def test_quick_run(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'burn_in_cost.py'), '--quick'], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(proc.returncode, 0, msg=proc.stdout[-3000:] + proc.stderr[-3000:])
    self.assertIn('== rlc N=20, m in [0, 5], 1 seed(s)', proc.stdout)
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r'^(\w+)\s+(\d+)\s+(\d+)\s+\d+\s+[\d.]+\s+[\d.]+ \[[\d.]+, [\d.]+\]\s+([\d.]+)\s+'
        r'([\d.]+)x\s+[\d.]+$', proc.stdout, re.MULTILINE)}
    self.assertEqual(set(rows), {'zeros', 'learned', 'noisy_learned', 'conditional',
                                 'stateful'}, proc.stdout)
    self.assertEqual(rows['zeros'][3], '1.00')
    for variant, (models, _, per_model, _) in rows.items():
      self.assertEqual(models, '2', variant)   # m in {0, 5} x 1 seed.
      self.assertGreater(float(per_model), 0, variant)
    # The learned carry adds (h, c) = 2 x 4 parameters; the initializer network many more.
    self.assertEqual(int(rows['learned'][1]), int(rows['zeros'][1]) + 8)
    self.assertGreater(int(rows['conditional'][1]), int(rows['learned'][1]))

  def test_bad_options(self):
    for option, message in ((['--variants', 'zero'], 'unknown variants'),
                            (['--settings', 'wienerhammerstein'], '--settings takes')):
      proc = subprocess.run(
          [sys.executable, str(ROOT / 'benchmarks' / 'burn_in_cost.py')] + option, cwd=ROOT,
          capture_output=True, text=True, timeout=120, check=False)
      self.assertEqual(proc.returncode, 2, option)
      self.assertIn(message, proc.stderr)


if __name__ == '__main__':
  absltest.main()
