"""The burn-in paper's released models: read without PyTorch, and evaluated by the study's own
code they give the published train and test MSE of every shipped model."""

import io
import pickle
import zipfile

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np

from initstate.studies import burn_in
from initstate.studies import published
from initstate.studies import sysid

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None


def _agrees(got: float, published_value: float) -> bool:
  """`got` equals the published figure to 3 significant digits, or to as many as it shows."""
  text = f'{published_value:g}'
  digits = len(text.replace('.', '').lstrip('0'))
  sig = max(1, min(3, digits))
  return f'{got:.{sig}g}' == f'{published_value:.{sig}g}'


class ReadStateDictTest(absltest.TestCase):

  def test_keys_shapes_and_dtype(self):
    state = published.load_model('rlc', 200, 110)
    self.assertEqual({k: v.shape for k, v in state.items()}, {
        'lstm.weight_ih_l0': (32, 1), 'lstm.weight_hh_l0': (32, 8),
        'lstm.bias_ih_l0': (32,), 'lstm.bias_hh_l0': (32,),
        'fc.weight': (2, 8), 'fc.bias': (2,)})
    self.assertTrue(all(v.dtype == np.float32 for v in state.values()))
    # The four LSTM tensors share one storage at different offsets: they must differ.
    self.assertFalse(np.array_equal(state['lstm.bias_ih_l0'], state['lstm.bias_hh_l0']))

  @absltest.skipIf(torch is None, 'PyTorch is not installed (optional oracle).')
  def test_matches_torch_load(self):
    for key, name in published.MODELS.items():
      data = published._file(name).read_bytes()   # pylint: disable=protected-access
      want = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
      got = published.read_state_dict(data)
      self.assertEqual(set(got), set(want), key)
      for k, v in want.items():
        np.testing.assert_array_equal(got[k], v.numpy(), err_msg=f'{key} {k}')

  def test_refuses_anything_but_tensors(self):
    class Evil:
      def __reduce__(self):
        return (print, ('pwned',))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as zf:
      zf.writestr('archive/data.pkl', pickle.dumps({'x': Evil()}, protocol=2))
    with self.assertRaisesRegex(pickle.UnpicklingError, 'unexpected object.*print'):
      published.read_state_dict(buffer.getvalue())
    with self.assertRaisesRegex(ValueError, 'not a torch.save'):
      published.read_state_dict(_empty_zip())

  def test_unknown_model_and_dataset(self):
    with self.assertRaisesRegex(ValueError, 'no released model'):
      published.load_model('rlc', 100, 5)
    with self.assertRaisesRegex(ValueError, 'unknown dataset'):
      published.table('nope')


def _empty_zip() -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as zf:
    zf.writestr('readme.txt', 'nothing')
  return buffer.getvalue()


class PublishedFiguresTest(parameterized.TestCase):

  def test_agrees(self):
    self.assertTrue(_agrees(3.5265, 3.527))
    self.assertTrue(_agrees(0.041931, 0.042))
    self.assertFalse(_agrees(0.0405, 0.042))
    self.assertFalse(_agrees(3.49, 3.527))

  @parameterized.parameters(*sorted(published.MODELS))
  def test_released_model_gives_the_published_mse(self, dataset, window, burn_in):
    row = [r for r in published.table(dataset) if r['N'] == window]
    self.assertLen(row, 1)
    column = 'm0' if burn_in == 0 else 'm_star'
    if burn_in:
      self.assertEqual(row[0]['m_star'], burn_in)
    for split in ('test', 'train'):
      got = published.evaluate(dataset, window, burn_in, split)
      want = row[0][f'{column} {split}']
      self.assertTrue(_agrees(got, want), f'{dataset} N={window} m={burn_in} {split}: '
                      f'{got:.5g} against the published {want}')

  def test_both_parametrizations_give_the_same_predictions(self):
    """Summed biases (parametrization='initstate') predict exactly as the two kept apart."""
    signal = sysid.load('rlc')[0]['test']
    state = published.load_model('rlc', 200, 110)
    losses = []
    for parametrization, separate in (('pytorch', True), ('initstate', False)):
      config = burn_in.Config(dataset='rlc', window=200, burn_ins=(110,),
                              parametrization=parametrization).resolved()
      model = burn_in.Model(config, 1, 2, use_conditional=False)
      params = published.study_params(state, model, 'rlc', separate_biases=separate)
      self.assertEqual('b' in params['cell'], not separate)
      per_step, _ = model.step_losses(params, burn_in.zero_carry_config(),
                                      jnp.asarray(signal.u)[None], jnp.asarray(signal.y)[None])
      losses.append(np.asarray(per_step))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4, atol=1e-7)
    self.assertTrue(_agrees(100 * float(losses[1].mean()), 0.307))


if __name__ == '__main__':
  absltest.main()
