"""`lstm` / `gru` with parametrization='pytorch': PyTorch's initial distributions, two
separately trained biases, and the same forward pass, gradients and Adam trajectory as
`torch.nn.LSTM` / `nn.GRU` (the PyTorch comparisons skip cleanly where it is not installed)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

import initstate
from initstate import convert

B, T, D, H = 3, 7, 4, 16


def _torch(test):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    test.skipTest('PyTorch is not installed (an optional oracle).')
  torch.set_default_dtype(torch.float32)
  return torch


CELLS = {'lstm': (initstate.lstm, 4), 'gru': (initstate.gru, 3)}


class InitTest(parameterized.TestCase):

  @parameterized.parameters('lstm', 'gru')
  def test_every_tensor_is_uniform_within_one_over_sqrt_h(self, kind):
    make, gates = CELLS[kind]
    hidden = 64
    params = make(hidden, parametrization='pytorch').init(jax.random.key(0), 32)
    self.assertEqual(jax.tree.map(jnp.shape, params), {
        'w_i': (32, gates * hidden), 'w_h': (hidden, gates * hidden),
        'b_i': (gates * hidden,), 'b_h': (gates * hidden,)})
    bound = 1.0 / np.sqrt(hidden)
    for name, value in params.items():
      flat = np.asarray(value).ravel()
      p = stats.kstest(flat, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue
      self.assertGreater(p, 1e-3, f'{kind} {name}: KS p = {p}')
      self.assertLessEqual(np.abs(flat).max(), bound)
    # The default parametrization is not uniform: the KS test can tell them apart.
    default = make(hidden).init(jax.random.key(0), 32)
    flat = np.asarray(default['w_i']).ravel()
    self.assertLess(stats.kstest(flat, stats.uniform(
        loc=flat.min(), scale=flat.max() - flat.min()).cdf).pvalue, 1e-6)
    # The two biases are drawn independently.
    self.assertFalse(np.allclose(params['b_i'], params['b_h']))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'parametrization'):
      initstate.lstm(4, parametrization='keras')
    with self.assertRaisesRegex(ValueError, 'fixes the initializers'):
      initstate.lstm(4, parametrization='pytorch', forget_bias=0.0)
    with self.assertRaisesRegex(ValueError, 'fixes the initializers'):
      initstate.gru(4, parametrization='pytorch',
                    kernel_init=jax.nn.initializers.zeros)

  def test_two_biases_act_as_their_sum_in_every_path(self):
    cell = initstate.lstm(H, parametrization='pytorch')
    params = cell.init(jax.random.key(1), D)
    summed = {'w_i': params['w_i'], 'w_h': params['w_h'], 'b': params['b_i'] + params['b_h']}
    xs = jax.random.normal(jax.random.key(2), (B, T, D))
    carry = initstate.zeros().init_carry(initstate.CarrySpec.from_template(
        cell.carry_template), None, B, train=False)

    def loss(p, implementation):
      out = initstate.scan_rnn(cell.bind(p), xs, carry, implementation=implementation)
      return jnp.sum(out.outputs ** 2)

    want = loss(summed, 'generic')
    for implementation in ('generic', 'fused'):
      np.testing.assert_allclose(loss(params, implementation), want, rtol=1e-5)
      grads = jax.grad(loss)(params, implementation)
      # d/d b_i = d/d b_h = d/d (b_i + b_h).
      g_sum = jax.grad(loss)(summed, 'generic')['b']
      np.testing.assert_allclose(grads['b_i'], g_sum, rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(grads['b_h'], g_sum, rtol=1e-4, atol=1e-6)
    flax = convert.lstm_params_to_flax(params)
    np.testing.assert_allclose(flax['hf']['bias'], summed['b'][H:2 * H])


class TorchOracleTest(parameterized.TestCase):

  @parameterized.parameters('lstm', 'gru')
  def test_outputs_and_gradients_equal_torch(self, kind):
    torch = _torch(self)
    make, _ = CELLS[kind]
    cell = make(H, parametrization='pytorch')
    params = cell.init(jax.random.key(3), D)
    module = (torch.nn.LSTM if kind == 'lstm' else torch.nn.GRU)(D, H, batch_first=True)
    with torch.no_grad():
      module.weight_ih_l0.copy_(torch.tensor(np.asarray(params['w_i']).T))
      module.weight_hh_l0.copy_(torch.tensor(np.asarray(params['w_h']).T))
      module.bias_ih_l0.copy_(torch.tensor(np.asarray(params['b_i'])))
      module.bias_hh_l0.copy_(torch.tensor(np.asarray(params['b_h'])))
    xs = np.random.default_rng(0).normal(size=(B, T, D)).astype(np.float32)
    ys, _ = module(torch.tensor(xs))
    (ys ** 2).sum().backward()

    carry = initstate.zeros().init_carry(initstate.CarrySpec.from_template(
        cell.carry_template), None, B, train=False)
    loss = lambda p: jnp.sum(initstate.scan_rnn(cell.bind(p), jnp.asarray(xs),
                                                carry).outputs ** 2)
    out = initstate.scan_rnn(cell.bind(params), jnp.asarray(xs), carry).outputs
    np.testing.assert_allclose(out, ys.detach().numpy(), atol=1e-5)
    grads = jax.grad(loss)(params)
    for ours, theirs, transpose in (('w_i', 'weight_ih_l0', True),
                                    ('w_h', 'weight_hh_l0', True),
                                    ('b_i', 'bias_ih_l0', False), ('b_h', 'bias_hh_l0', False)):
      want = getattr(module, theirs).grad.numpy()
      np.testing.assert_allclose(grads[ours], want.T if transpose else want, atol=1e-4,
                                 rtol=1e-4, err_msg=ours)

  def test_adam_follows_torch(self):
    torch = _torch(self)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(D, H, batch_first=True)
    head = torch.nn.Linear(H, 2)
    state = {k: v.detach().numpy().copy() for k, v in lstm.state_dict().items()}
    params = {
        'cell': convert.lstm_params_from_torch(
            state['weight_ih_l0'], state['weight_hh_l0'], state['bias_ih_l0'],
            state['bias_hh_l0'], separate_biases=True),
        'head': {'w': jnp.asarray(head.weight.detach().numpy().T),
                 'b': jnp.asarray(head.bias.detach().numpy())},
    }
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(5, B, T, D)).astype(np.float32)
    targets = rng.normal(size=(5, B, T, 2)).astype(np.float32)
    cell = initstate.lstm(H, parametrization='pytorch')
    carry = initstate.zeros().init_carry(initstate.CarrySpec.from_template(
        cell.carry_template), None, B, train=False)

    def loss(p, x, y):
      h = initstate.scan_rnn(cell.bind(p['cell']), x, carry).outputs
      return jnp.mean((h @ p['head']['w'] + p['head']['b'][None, None] - y) ** 2)

    optimizer = optax.adam(1e-2)

    def train(params):
      opt_state = optimizer.init(params)
      for x, y in zip(xs, targets):
        grads = jax.grad(loss)(params, jnp.asarray(x), jnp.asarray(y))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
      return params

    ours = train(params)
    # One summed bias, as the default layout has: the same start, a different trajectory.
    cell_params = params['cell']
    one_bias = train(dict(params, cell={'w_i': cell_params['w_i'], 'w_h': cell_params['w_h'],
                                        'b': cell_params['b_i'] + cell_params['b_h']}))
    torch_opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-2)
    for x, y in zip(xs, targets):
      torch_opt.zero_grad()
      h, _ = lstm(torch.tensor(x))
      ((head(h) - torch.tensor(y)) ** 2).mean().backward()
      torch_opt.step()
    for name, theirs, transpose in (('w_i', 'weight_ih_l0', True),
                                    ('w_h', 'weight_hh_l0', True),
                                    ('b_i', 'bias_ih_l0', False), ('b_h', 'bias_hh_l0', False)):
      want = getattr(lstm, theirs).detach().numpy()
      np.testing.assert_allclose(ours['cell'][name], want.T if transpose else want,
                                 atol=1e-5, err_msg=name)
    np.testing.assert_allclose(ours['head']['w'], head.weight.detach().numpy().T, atol=1e-5)
    np.testing.assert_allclose(ours['head']['b'], head.bias.detach().numpy(), atol=1e-5)
    torch_bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy()
    self.assertGreater(np.abs(np.asarray(one_bias['cell']['b']) - torch_bias).max(), 1e-3)


if __name__ == '__main__':
  absltest.main()
