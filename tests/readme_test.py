"""The README's Python examples run as written."""

import pathlib
import re

from absl.testing import absltest

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def _python_blocks():
  return re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.DOTALL)


class ReadmeTest(absltest.TestCase):

  def test_has_examples(self):
    self.assertGreaterEqual(len(_python_blocks()), 2)

  def test_examples_run(self):
    for i, block in enumerate(_python_blocks()):
      with self.subTest(block=i):
        namespace = {'__name__': f'readme_block_{i}'}
        exec(compile(block, f'README.md[python block {i}]', 'exec'), namespace)  # pylint: disable=exec-used


if __name__ == '__main__':
  absltest.main()
