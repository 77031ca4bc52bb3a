"""The files a published project carries agree with each other: one repository URL everywhere,
the citation and changelog on the package's version, the Python versions that CI tests are the
ones the package declares, and the workflows do what CONTRIBUTING.md says they do."""

import json
import pathlib
import re
import tomllib

from absl.testing import absltest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())
PROJECT = PYPROJECT['project']
REPO = 'initstate/initstate'
# github.com/OWNER/REPO, Colab's github/OWNER/REPO and raw.githubusercontent.com/OWNER/REPO.
GITHUB = re.compile(r'(?:github\.com|githubusercontent\.com|colab\.research\.google\.com/github)'
                    r'/([\w.-]+/[\w.-]+)')


def _texts():
  """Every text a user sees that may name the repository."""
  paths = [ROOT / n for n in ('README.md', 'CONTRIBUTING.md', 'CHANGELOG.md', 'CITATION.cff',
                              'pyproject.toml')]
  paths += sorted((ROOT / 'docs').glob('*.md')) + sorted((ROOT / 'colabs').glob('*.ipynb'))
  for path in paths:
    text = path.read_text()
    if path.suffix == '.ipynb':
      text = '\n'.join(''.join(c['source']) for c in json.loads(text)['cells'])
    yield path, text


def _workflow(name):
  return yaml.safe_load((ROOT / '.github' / 'workflows' / name).read_text())


class ProjectFilesTest(absltest.TestCase):

  def test_one_repository_url_everywhere(self):
    urls = PROJECT['urls']
    self.assertEqual(set(urls), {'Homepage', 'Documentation', 'Source', 'Issues', 'Changelog'})
    self.assertEqual(urls['Source'], f'https://github.com/{REPO}')
    self.assertTrue(urls['Issues'].startswith(urls['Source']))
    seen = 0
    for path, text in _texts():
      for match in GITHUB.finditer(text):
        seen += 1
        self.assertEqual(match.group(1).removesuffix('.git'), REPO,
                         f'{path.name} names another repository: {match.group(0)}')
    self.assertGreater(seen, 10)   # Badges, install cells, citation, URLs: all were looked at.

  def test_citation_and_changelog_on_the_package_version(self):
    cff = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
    self.assertEqual(cff['cff-version'], '1.2.0')
    self.assertEqual(cff['type'], 'software')
    self.assertEqual(str(cff['version']), PROJECT['version'])
    self.assertEqual(cff['repository-code'], PROJECT['urls']['Source'])
    self.assertEqual(cff['url'], PROJECT['urls']['Documentation'])
    self.assertEqual(cff['license'], PROJECT['license'])
    titles = ' | '.join(r['title'] for r in cff['references'])
    for source in ('Tuning the burn-in phase', 'Non-Zero Initial States',
                   'Learning Precise Timing with LSTM', 'State Initialization for Recurrent'):
      self.assertIn(source, titles)
    changelog = (ROOT / 'CHANGELOG.md').read_text()
    headings = re.findall(r'^## \[([^\]]+)\]', changelog, flags=re.M)
    self.assertEqual(headings[0], 'Unreleased')
    self.assertIn(PROJECT['version'], headings)

  def test_declared_python_versions_are_the_tested_ones(self):
    declared = sorted(c.rsplit(' :: ', 1)[1] for c in PROJECT['classifiers']
                      if re.fullmatch(r'Programming Language :: Python :: 3\.\d+', c))
    self.assertEqual(PROJECT['requires-python'], f'>={declared[0]}')
    fast = _workflow('ci.yml')['jobs']['fast-tests']['strategy']['matrix']
    self.assertEqual(sorted(fast['python-version']), declared)
    self.assertEqual(sorted(fast['os']), ['macos-latest', 'ubuntu-latest'])
    oldest = declared[0].replace('.', '')
    self.assertEqual(PYPROJECT['tool']['ruff']['target-version'], f'py{oldest}')

  def test_workflows(self):
    ci = _workflow('ci.yml')
    steps = lambda job: [s.get('run', '') for s in ci['jobs'][job]['steps']]
    self.assertIn('python -m pytest -q -m "not slow" -n 2', steps('fast-tests'))
    self.assertIn('bash .ci/run', steps('full-suite'))
    self.assertIn('actionlint', steps('lint'))
    self.assertTrue(any(s.startswith('sphinx-build -W') for s in steps('docs')))
    release = _workflow('release.yml')
    # YAML reads the key `on` as True.
    self.assertEqual(release[True]['push']['tags'], ['v*'])
    publish = release['jobs']['publish']
    self.assertEqual(publish['permissions'], {'id-token': 'write'})
    self.assertTrue(any(s.get('uses', '').startswith('pypa/gh-action-pypi-publish')
                        for s in publish['steps']))
    self.assertFalse(any('password' in s.get('with', {}) for s in publish['steps']))
    rtd = yaml.safe_load((ROOT / '.readthedocs.yaml').read_text())
    self.assertEqual(rtd['sphinx']['configuration'], 'docs/conf.py')
    self.assertTrue(rtd['sphinx']['fail_on_warning'])
    self.assertEqual(rtd['python']['install'][0]['extra_requirements'], ['docs'])

  def test_contributing_gives_the_readme_commands(self):
    readme = (ROOT / 'README.md').read_text()
    contributing = (ROOT / 'CONTRIBUTING.md').read_text()
    for command in ('python -m pytest -q -m "not slow" -n 2', 'python -m pytest -q -n 2',
                    'pip install -e ".[test]"'):
      self.assertIn(command, readme)
      self.assertIn(command, contributing)
    ci = (ROOT / '.ci' / 'run').read_text()
    for step in ('python -m build', 'twine check', 'wheel_smoke.py', 'check-jsonschema'):
      self.assertIn(step, ci)
      self.assertIn(step.split()[-1].split('.')[0], contributing)


if __name__ == '__main__':
  absltest.main()
