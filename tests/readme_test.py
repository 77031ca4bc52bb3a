"""The README: its Python examples run as written, its links lead somewhere, and it stays short.

Fast (seconds): the quickstart is one small model, one gradient.
"""

import pathlib
import re
import unicodedata

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
MAX_LINES = 200
# The two set-up commands, verbatim (CI's .ci/run runs the second).
SETUP_COMMANDS = (
    'pip install -e ".[studies]" && python -m initstate',
    'pip install -e ".[test]" && python -m pytest -q -n 2',
)


def _python_blocks():
  return re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.DOTALL)


def _github_anchor(heading):
  """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, '-' for ' '."""
  text = heading.strip().lower().replace('`', '')
  kept = ''.join(ch for ch in text
                 if ch in ' -_' or unicodedata.category(ch)[0] in ('L', 'N'))
  return kept.replace(' ', '-')


def _anchors(path):
  text = re.sub(r'^```.*?^```', '', path.read_text(), flags=re.DOTALL | re.M)  # no code
  return {_github_anchor(h) for h in re.findall(r'^#{1,6} (.+)$', text, flags=re.M)}


class ReadmeTest(absltest.TestCase):

  def test_has_examples(self):
    self.assertNotEmpty(_python_blocks())

  def test_examples_run(self):
    for i, block in enumerate(_python_blocks()):
      with self.subTest(block=i):
        namespace = {'__name__': f'readme_block_{i}'}
        exec(compile(block, f'README.md[python block {i}]', 'exec'), namespace)  # pylint: disable=exec-used

  def test_is_short(self):
    lines = len(README.read_text().splitlines())
    self.assertLessEqual(lines, MAX_LINES, f'README.md has {lines} lines; move details to docs/.')

  def test_states_the_setup_commands(self):
    text = README.read_text()
    for command in SETUP_COMMANDS:
      self.assertIn(command, text)

  def test_relative_links_lead_somewhere(self):
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', README.read_text()):
      if re.match(r'[a-z]+:', target):
        continue  # An absolute URL.
      path, _, anchor = target.partition('#')
      resolved = (ROOT / path) if path else README
      if not resolved.exists():
        broken.append(f'{target}: no such file')
      elif anchor and resolved.suffix == '.md' and anchor not in _anchors(resolved):
        broken.append(f'{target}: no heading with anchor #{anchor}')
    self.assertEmpty(broken, f'broken links in README.md: {broken}')


if __name__ == '__main__':
  absltest.main()
