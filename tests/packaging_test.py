"""The built wheel holds what a user needs: it imports, runs the main job's --help, ships the
study data and the type marker, and declares its version once."""

import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from absl.testing import absltest
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
class WheelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    out = pathlib.Path(cls.tmp.name)
    built = os.environ.get('INITSTATE_WHEEL')   # .ci/run builds the wheel once and names it.
    if built:
      cls.wheel = pathlib.Path(built)
    else:
      subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w',
                      str(out / 'dist'), str(ROOT)], check=True, capture_output=True, text=True)
      cls.wheel = next((out / 'dist').glob('initstate-*.whl'))
    cls.site = out / 'site'
    with zipfile.ZipFile(cls.wheel) as zf:
      zf.extractall(cls.site)
      cls.names = set(zf.namelist())

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _run(self, *args):
    # The unpacked wheel first on the path, run from outside the checkout.
    env = dict(os.environ, PYTHONPATH=str(self.site))
    done = subprocess.run([sys.executable, *args], cwd=self.site.parent, env=env,
                          capture_output=True, text=True, check=False)
    self.assertEqual(done.returncode, 0, f'python {" ".join(args)}:\n{done.stderr}')
    return done.stdout

  def test_wheel_ships_package_data_license_and_type_marker(self):
    self.assertIn('initstate/py.typed', self.names)
    self.assertIn('initstate/studies/data/sysid/README.md', self.names)
    csvs = [n for n in self.names if n.startswith('initstate/studies/data/sysid/data_') and
            n.endswith('.csv')]
    self.assertLen(csvs, 9)
    published = [n for n in self.names
                 if n.startswith('initstate/studies/data/sysid/published_models/')]
    self.assertLen(published, 10 + 3 + 2)   # models, tables, LICENSE and README
    self.assertTrue(any(n.endswith('licenses/LICENSE') for n in self.names), sorted(self.names))
    self.assertFalse(any(n.startswith('tests/') or n.startswith('benchmarks/')
                         for n in self.names))

  def test_installed_wheel_imports_and_runs_the_main_job_help(self):
    where = self._run('-c', 'import initstate; print(initstate.__file__)')
    self.assertTrue(where.strip().startswith(str(self.site)), where)
    self.assertIn('usage', self._run('-m', 'initstate', '--help'))

  def test_version_comes_from_the_metadata(self):
    metadata = next(n for n in self.names if n.endswith('.dist-info/METADATA'))
    text = (self.site / metadata).read_text()
    version = next(l.split(': ', 1)[1] for l in text.splitlines() if l.startswith('Version: '))
    self.assertIn('License-Expression: Apache-2.0', text)
    self.assertEqual(self._run('-c', 'import initstate; print(initstate.__version__)').strip(),
                     version)


if __name__ == '__main__':
  absltest.main()
