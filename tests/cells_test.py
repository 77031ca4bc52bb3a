"""Tests of the cells: agreement with Flax (and PyTorch), converters, stack, errors."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import initstate
from initstate import LSTMCarry

B, D, H, T = 3, 4, 5, 4
TOL = dict(atol=1e-5, rtol=1e-5)
F32 = jnp.float32

# name, Flax module class, our cell factory, converter Flax -> ours, converter ours -> Flax.
FLAX_CASES = (
    ('lstm', nn.LSTMCell, initstate.lstm, initstate.convert.lstm_params_from_flax,
     initstate.convert.lstm_params_to_flax),
    ('optimized_lstm', nn.OptimizedLSTMCell, initstate.lstm,
     initstate.convert.lstm_params_from_flax, initstate.convert.lstm_params_to_flax),
    ('gru', nn.GRUCell, initstate.gru, initstate.convert.gru_params_from_flax,
     initstate.convert.gru_params_to_flax),
    ('elman', nn.SimpleCell, initstate.elman, initstate.convert.elman_params_from_flax,
     initstate.convert.elman_params_to_flax),
)


def _flat(seed):
  """(1, (2, 3)) -> (1, 2, 3): NumPy's SeedSequence takes a flat sequence of ints only."""
  return (seed,) if isinstance(seed, int) else tuple(i for s in seed for i in _flat(s))


def _normal(seed, shape, scale=1.0):
  """Random float32 data from NumPy: no JAX compilation per new shape, so the tests stay fast.

  `seed` is an int or a nested tuple of ints (flattened; NumPy 2.5 refuses nested seeds).
  """
  return jnp.asarray(scale * np.random.default_rng(_flat(seed)).standard_normal(shape), F32)


def _random_like(tree, seed, scale=0.5):
  """A pytree of the structure/shapes of `tree` (arrays or ShapeDtypeStructs), random values.

  Used for parameters: every leaf, biases included, is random and non-zero.
  """
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(
      treedef, [_normal((seed, i), l.shape, scale) for i, l in enumerate(leaves)])


def _is_lstm(module_cls):
  return module_cls in (nn.LSTMCell, nn.OptimizedLSTMCell)


def _flax_carry(module_cls, seed, batch=(B,)):
  """A random carry in Flax's format: (c, h) for the LSTMs, h otherwise."""
  if _is_lstm(module_cls):
    return (_normal((seed, 0), batch + (H,)), _normal((seed, 1), batch + (H,)))
  return _normal(seed, batch + (H,))


def _to_ours(module_cls, flax_carry):
  """Flax carry -> our carry, written out by hand (not through `lstm_carry_from_flax`)."""
  if _is_lstm(module_cls):
    c, h = flax_carry
    return LSTMCarry(h=h, c=c)
  return flax_carry


def _setup(module_cls, seed, real_init=False):
  """Returns (module, random Flax params, carry in Flax format, x [B, D]).

  The Flax params have the structure and shapes of `module.init`'s and random values
  everywhere, so that the biases (zero at Flax's init) are non-zero: `module.init`'s values
  plus noise if `real_init`, else pure noise (cheaper: shapes read with `eval_shape`).
  """
  module = module_cls(features=H)
  flax_carry = _flax_carry(module_cls, (seed, 0))
  x = _normal((seed, 1), (B, D))
  if real_init:
    params = module.init(jax.random.key(seed), flax_carry, x)['params']
    noise = _random_like(params, (seed, 2))
    return module, jax.tree.map(jnp.add, params, noise), flax_carry, x
  shapes = jax.eval_shape(module.init, jax.random.key(0), flax_carry, x)['params']
  return module, _random_like(shapes, (seed, 2)), flax_carry, x


def _our_param_shapes(cell, input_size=D):
  return jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))


def _with_zero_rz(b_h):
  """GRU `b_h` [3H] with its r and z parts zeroed (Flax's GRUCell has only the n part)."""
  b_h = np.array(b_h)
  b_h[:2 * H] = 0.0
  return jnp.asarray(b_h)


def _weighted_sum(tree, weights):
  return sum(jnp.sum(a * w) for a, w in zip(jax.tree.leaves(tree), jax.tree.leaves(weights)))


class FlaxAgreementTest(parameterized.TestCase):
  """Our cells against the Flax cells, with parameters copied by `*_params_from_flax`."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, m, c, f) for n, m, c, f, _ in FLAX_CASES])
  def test_one_step(self, module_cls, cell_fn, from_flax_fn):
    module, flax_params, flax_carry, x = _setup(module_cls, 0, real_init=True)
    params = from_flax_fn(flax_params)
    cell = cell_fn(H)

    @self.variant
    def both(flax_params, flax_carry, params, carry, x):
      return module.apply({'params': flax_params}, flax_carry, x), cell.apply(params, carry, x)

    (want_carry, want_y), (got_carry, got_y) = both(
        flax_params, flax_carry, params, _to_ours(module_cls, flax_carry), x)

    self.assertEqual(got_y.shape, (B, H))
    np.testing.assert_allclose(got_y, want_y, **TOL)
    if _is_lstm(module_cls):
      self.assertIsInstance(got_carry, LSTMCarry)
      np.testing.assert_allclose(got_carry.c, want_carry[0], **TOL)
      np.testing.assert_allclose(got_carry.h, want_carry[1], **TOL)
    else:
      np.testing.assert_allclose(got_carry, want_carry, **TOL)

  @parameterized.named_parameters(*[(n, m, f) for n, m, _, f, _ in FLAX_CASES])
  def test_perturbed_biases_are_nonzero(self, module_cls, from_flax_fn):
    # Guards the other tests: the biases they copy really are non-zero.
    _, flax_params, _, _ = _setup(module_cls, 0, real_init=True)
    params = jax.tree.map(np.asarray, from_flax_fn(flax_params))
    for name in ('b', 'b_i'):
      if name in params:
        self.assertGreater(np.min(np.abs(params[name])), 0.0)
    if 'b_h' in params:  # Flax's GRU only has the n-gate hidden bias.
      self.assertGreater(np.min(np.abs(params['b_h'][2 * H:])), 0.0)
      np.testing.assert_array_equal(params['b_h'][:2 * H], np.zeros(2 * H))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, m, c, f) for n, m, c, f, _ in FLAX_CASES])
  def test_gradients(self, module_cls, cell_fn, from_flax_fn):
    module, flax_params, flax_carry, x = _setup(module_cls, 1)
    params = from_flax_fn(flax_params)
    cell = cell_fn(H)
    w_y = _normal(2, (B, H))
    w_carry_flax = _flax_carry(module_cls, 3)
    w_carry = _to_ours(module_cls, w_carry_flax)

    def flax_loss(p, c, x):
      new_c, y = module.apply({'params': p}, c, x)
      return jnp.sum(y * w_y) + _weighted_sum(new_c, w_carry_flax)

    def our_loss(p, c, x):
      new_c, y = cell.apply(p, c, x)
      return jnp.sum(y * w_y) + _weighted_sum(new_c, w_carry)

    @self.variant
    def both(flax_params, flax_carry, params, carry, x):
      return (jax.value_and_grad(flax_loss, argnums=(0, 1, 2))(flax_params, flax_carry, x),
              jax.value_and_grad(our_loss, argnums=(0, 1, 2))(params, carry, x))

    (want_loss, want_grads), (got_loss, got_grads) = jax.tree.map(np.asarray, both(
        flax_params, flax_carry, params, _to_ours(module_cls, flax_carry), x))
    want_gp, want_gc, want_gx = want_grads
    got_gp, got_gc, got_gx = got_grads

    np.testing.assert_allclose(got_loss, want_loss, **TOL)
    np.testing.assert_allclose(got_gx, want_gx, **TOL)
    chex.assert_trees_all_close(got_gc, _to_ours(module_cls, want_gc), **TOL)
    self.assertGreater(np.max(np.abs(got_gx)), 0.0)

    # The converter is linear, so it maps Flax's param gradients to ours, except for GRU's
    # hidden r/z biases, which Flax lacks: their gradient is that of the input r/z biases.
    want_gp = jax.tree.map(np.asarray, from_flax_fn(want_gp))
    if 'b_h' in got_gp:
      np.testing.assert_allclose(got_gp['b_h'][:2 * H], want_gp['b_i'][:2 * H], **TOL)
      np.testing.assert_allclose(got_gp['b_h'][2 * H:], want_gp['b_h'][2 * H:], **TOL)
      got_gp = {k: v for k, v in got_gp.items() if k != 'b_h'}
      want_gp = {k: v for k, v in want_gp.items() if k != 'b_h'}
    chex.assert_trees_all_close(got_gp, want_gp, **TOL)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, m, c, f) for n, m, c, f, _ in FLAX_CASES])
  def test_several_steps(self, module_cls, cell_fn, from_flax_fn):
    module, flax_params, flax_carry, _ = _setup(module_cls, 4)
    xs = _normal(5, (T, B, D))
    params = from_flax_fn(flax_params)
    cell = cell_fn(H)

    def flax_run(p, c, xs):
      return jax.lax.scan(lambda c, x: module.apply({'params': p}, c, x), c, xs)

    def our_run(p, c, xs):
      return jax.lax.scan(lambda c, x: cell.apply(p, c, x), c, xs)

    @self.variant
    def both(flax_params, flax_carry, params, carry, xs):
      return flax_run(flax_params, flax_carry, xs), our_run(params, carry, xs)

    (want_carry, want_ys), (got_carry, got_ys) = both(
        flax_params, flax_carry, params, _to_ours(module_cls, flax_carry), xs)
    self.assertEqual(got_ys.shape, (T, B, H))
    np.testing.assert_allclose(got_ys, want_ys, **TOL)
    chex.assert_trees_all_close(got_carry, _to_ours(module_cls, want_carry), **TOL)

    # The same with a plain Python loop over our cell.
    carry = _to_ours(module_cls, flax_carry)
    for t in range(T):
      carry, y = cell.apply(params, carry, np.asarray(xs)[t])
      np.testing.assert_allclose(y, want_ys[t], **TOL)
    chex.assert_trees_all_close(carry, _to_ours(module_cls, want_carry), **TOL)

  @parameterized.named_parameters(*[(n, m, c, f) for n, m, c, f, _ in FLAX_CASES])
  def test_leading_batch_axes(self, module_cls, cell_fn, from_flax_fn):
    # Every leading axis is a batch axis: two batch axes give the rows of no batch axis.
    _, flax_params, _, _ = _setup(module_cls, 6)
    params = from_flax_fn(flax_params)
    cell = cell_fn(H)
    carry = _to_ours(module_cls, _flax_carry(module_cls, 7, batch=(2, 3)))
    x = _normal(8, (2, 3, D))
    got_carry, got_y = cell.apply(params, carry, x)
    self.assertEqual(got_y.shape, (2, 3, H))
    chex.assert_trees_all_equal_shapes(got_carry, carry)
    # Rows taken with NumPy indexing (eager JAX indexing would compile once per index).
    np_carry, np_got_carry = jax.tree.map(np.asarray, (carry, got_carry))
    for i, j in ((0, 0), (1, 2)):
      want_carry, want_y = cell.apply(params, jax.tree.map(lambda a: a[i, j], np_carry),
                                      np.asarray(x)[i, j])
      self.assertEqual(want_y.shape, (H,))
      np.testing.assert_allclose(np.asarray(got_y)[i, j], want_y, **TOL)
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[i, j], np_got_carry), want_carry,
                                  **TOL)


class ConversionTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(n, m, f, t) for n, m, _, f, t in FLAX_CASES])
  def test_flax_round_trip(self, module_cls, from_flax_fn, to_flax_fn):
    _, flax_params, _, _ = _setup(module_cls, 9)
    back = to_flax_fn(from_flax_fn(flax_params))
    chex.assert_trees_all_equal_structs(back, flax_params)
    chex.assert_trees_all_close(back, flax_params, **TOL)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, m, c, f, t) for n, m, c, f, t in FLAX_CASES])
  def test_to_flax_runs_in_flax(self, module_cls, cell_fn, from_flax_fn, to_flax_fn):
    # Ours -> Flax: our params (with random non-zero biases) drive the Flax module identically.
    cell = cell_fn(H)
    params = _random_like(_our_param_shapes(cell), 10)
    if 'b_h' in params:  # Flax's GRU cannot hold hidden r/z biases.
      params['b_h'] = _with_zero_rz(params['b_h'])
    flax_params = to_flax_fn(params)
    # Ours -> Flax -> ours is the identity.
    chex.assert_trees_all_equal_structs(from_flax_fn(flax_params), params)
    chex.assert_trees_all_close(from_flax_fn(flax_params), params, **TOL)
    module = module_cls(features=H)
    flax_carry = _flax_carry(module_cls, 11)
    x = _normal(12, (B, D))

    @self.variant
    def both(flax_params, flax_carry, params, carry, x):
      return module.apply({'params': flax_params}, flax_carry, x), cell.apply(params, carry, x)

    (want_carry, want_y), (got_carry, got_y) = both(
        flax_params, flax_carry, params, _to_ours(module_cls, flax_carry), x)
    np.testing.assert_allclose(got_y, want_y, **TOL)
    chex.assert_trees_all_close(got_carry, _to_ours(module_cls, want_carry), **TOL)

  @parameterized.named_parameters(('r', 0), ('z', 1))
  def test_gru_to_flax_folds_hidden_rz_bias(self, gate):
    """Flax has no hidden r/z bias: ours is folded into the input bias, same function."""
    params = _random_like(_our_param_shapes(initstate.gru(H)), 13)
    b_h = np.zeros(3 * H, np.float32)
    b_h[gate * H + 1] = 0.25
    params['b_h'] = jnp.asarray(b_h)
    flax_params = initstate.convert.gru_params_to_flax(params)
    name = ('ir', 'iz')[gate]
    np.testing.assert_allclose(flax_params[name]['bias'][1],
                               params['b_i'][gate * H + 1] + 0.25, **TOL)
    carry, x = _normal(33, (B, H)), _normal(34, (B, D))
    _, want_y = initstate.gru(H).apply(params, carry, x)
    _, got_y = nn.GRUCell(H).apply({'params': flax_params}, carry, x)
    np.testing.assert_allclose(got_y, want_y, **TOL)

  def test_gru_to_flax_under_jit_keeps_hidden_rz_bias(self):
    params = _random_like(_our_param_shapes(initstate.gru(H)), 30)  # Random b_h: r, z non-zero.
    flax_params = jax.jit(initstate.convert.gru_params_to_flax)(params)
    carry, x = _normal(31, (B, H)), _normal(32, (B, D))
    _, want_y = initstate.gru(H).apply(params, carry, x)
    _, got_y = nn.GRUCell(H).apply({'params': flax_params}, carry, x)
    np.testing.assert_allclose(got_y, want_y, **TOL)

  def test_gru_to_flax_accepts_hidden_n_bias(self):
    params = _random_like(_our_param_shapes(initstate.gru(H)), 14)
    params['b_h'] = jnp.asarray(np.repeat(np.float32([0.0, 0.0, 0.25]), H))
    flax_params = initstate.convert.gru_params_to_flax(params)
    np.testing.assert_allclose(flax_params['hn']['bias'], np.full((H,), 0.25), **TOL)
    self.assertNotIn('bias', flax_params['hr'])
    self.assertNotIn('bias', flax_params['hz'])

  def test_lstm_carry_conversion(self):
    h = jnp.arange(6.0).reshape(2, 3)
    c = -h - 1.0
    carry = LSTMCarry(h=h, c=c)
    self.assertEqual(LSTMCarry._fields, ('h', 'c'))
    flax_carry = initstate.convert.lstm_carry_to_flax(carry)
    self.assertIsInstance(flax_carry, tuple)
    self.assertLen(flax_carry, 2)
    np.testing.assert_array_equal(flax_carry[0], c)  # Flax: (c, h).
    np.testing.assert_array_equal(flax_carry[1], h)
    back = initstate.convert.lstm_carry_from_flax(flax_carry)
    self.assertIsInstance(back, LSTMCarry)
    np.testing.assert_array_equal(back.h, h)
    np.testing.assert_array_equal(back.c, c)
    again = initstate.convert.lstm_carry_to_flax(initstate.convert.lstm_carry_from_flax((c, h)))
    np.testing.assert_array_equal(again[0], c)
    np.testing.assert_array_equal(again[1], h)

  def test_lstm_carry_conversion_matches_flax_cell(self):
    # Feeding Flax's carry through `lstm_carry_from_flax` gives the same step as Flax.
    module, flax_params, flax_carry, x = _setup(nn.LSTMCell, 15)
    want_carry, _ = module.apply({'params': flax_params}, flax_carry, x)
    got_carry, _ = initstate.lstm(H).apply(
        initstate.convert.lstm_params_from_flax(flax_params),
        initstate.convert.lstm_carry_from_flax(flax_carry), x)
    chex.assert_trees_all_close(initstate.convert.lstm_carry_to_flax(got_carry), want_carry, **TOL)


class InitTest(parameterized.TestCase):

  def test_lstm_init(self):
    params = initstate.lstm(H, forget_bias=1.5).init(jax.random.key(0), D)
    chex.assert_shape(params['w_i'], (D, 4 * H))
    chex.assert_shape(params['w_h'], (H, 4 * H))
    want_b = np.zeros(4 * H, np.float32)
    want_b[H:2 * H] = 1.5  # Gates (i, f, g, o): only the forget bias is set.
    np.testing.assert_array_equal(params['b'], want_b)
    self.assertEqual(params['w_i'].dtype, jnp.float32)

  def test_gru_and_elman_init(self):
    p = initstate.gru(H).init(jax.random.key(0), D)
    chex.assert_shape([p['w_i'], p['w_h'], p['b_i'], p['b_h']],
                      [(D, 3 * H), (H, 3 * H), (3 * H,), (3 * H,)])
    np.testing.assert_array_equal(p['b_i'], np.zeros(3 * H))
    p = initstate.elman(H).init(jax.random.key(0), D)
    chex.assert_shape([p['w_i'], p['w_h'], p['b']], [(D, H), (H, H), (H,)])

  @parameterized.named_parameters(('lstm', initstate.lstm), ('gru', initstate.gru),
                                  ('elman', initstate.elman))
  def test_carry_template(self, cell_fn):
    cell = cell_fn(H)
    self.assertEqual(cell.output_size, H)
    leaves = jax.tree.leaves(cell.carry_template)
    self.assertNotEmpty(leaves)
    for leaf in leaves:
      self.assertEqual(leaf, jax.ShapeDtypeStruct((H,), jnp.float32))
    if cell_fn is initstate.lstm:
      self.assertIsInstance(cell.carry_template, LSTMCarry)


class StackTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_stack(self):
    cells = [initstate.lstm(4), initstate.gru(3), initstate.elman(5)]
    stacked = initstate.stack(cells)
    d = 2
    shapes = _our_param_shapes(stacked, d)  # Traces `stacked.init` without compiling it.
    self.assertIsInstance(shapes, tuple)
    self.assertLen(shapes, 3)
    chex.assert_trees_all_equal_structs(
        shapes, tuple(_our_param_shapes(c, n) for c, n in zip(cells, (d, 4, 3))))
    chex.assert_shape([shapes[0]['w_i'], shapes[1]['w_i'], shapes[2]['w_i']],
                      [(d, 16), (4, 9), (3, 5)])
    chex.assert_shape([shapes[0]['w_h'], shapes[1]['w_h'], shapes[2]['w_h']],
                      [(4, 16), (3, 9), (5, 5)])
    self.assertEqual(stacked.output_size, 5)
    template = stacked.carry_template
    self.assertIsInstance(template, tuple)
    self.assertLen(template, 3)
    self.assertEqual(template[0], LSTMCarry(h=jax.ShapeDtypeStruct((4,), F32),
                                            c=jax.ShapeDtypeStruct((4,), F32)))
    self.assertEqual(template[1], jax.ShapeDtypeStruct((3,), F32))
    self.assertEqual(template[2], jax.ShapeDtypeStruct((5,), F32))

    params = _random_like(shapes, 20)
    carry = _random_like(
        jax.tree.map(lambda s: jax.ShapeDtypeStruct((B,) + s.shape, s.dtype), template), 21,
        scale=1.0)
    self.assertIsInstance(carry[0], LSTMCarry)
    x = _normal(22, (B, d))
    got_carry, got_y = self.variant(stacked.apply)(params, carry, x)

    def by_hand(params, carry, x):
      c0, y0 = cells[0].apply(params[0], carry[0], x)
      c1, y1 = cells[1].apply(params[1], carry[1], y0)
      c2, y2 = cells[2].apply(params[2], carry[2], y1)
      return (c0, c1, c2), y2

    (c0, c1, c2), y2 = self.variant(by_hand)(params, carry, x)
    self.assertIsInstance(got_carry, tuple)
    self.assertLen(got_carry, 3)
    self.assertEqual(got_y.shape, (B, 5))
    np.testing.assert_allclose(got_y, y2, **TOL)
    chex.assert_trees_all_close(got_carry, (c0, c1, c2), **TOL)
    np.testing.assert_allclose(got_carry[2], got_y, **TOL)

  def test_stack_layers_get_different_keys(self):
    params = initstate.stack([initstate.elman(H), initstate.elman(H)]).init(
        jax.random.key(0), D)
    self.assertFalse(np.allclose(params[0]['w_h'], params[1]['w_h']))

  def test_stack_wrong_number_of_carries(self):
    stacked = initstate.stack([initstate.elman(3), initstate.elman(3)])
    params = _random_like(_our_param_shapes(stacked, 2), 23)
    with self.assertRaisesRegex(ValueError, 'one per layer'):
      stacked.apply(params, (jnp.zeros((B, 3)),), jnp.zeros((B, 2)))


class FromFlaxTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('from_flax', initstate.from_flax),
                                  ('as_cell', initstate.as_cell))
  def test_lstm_cell(self, wrap):
    module = nn.LSTMCell(4)
    cell = wrap(module)
    self.assertIsInstance(cell, initstate.RecurrentCell)
    sds = jax.ShapeDtypeStruct((4,), jnp.float32)
    self.assertEqual(cell.carry_template, (sds, sds))  # Flax's (c, h).
    self.assertNotIsInstance(cell.carry_template, LSTMCarry)
    self.assertEqual(cell.output_size, 4)

    key = jax.random.key(0)
    params = cell.init(key, 3)
    want_params = module.init(key, (jnp.zeros((1, 4)), jnp.zeros((1, 4))),
                              jnp.zeros((1, 3)))['params']
    chex.assert_trees_all_close(params, want_params)
    chex.assert_shape(params['ii']['kernel'], (3, 4))

    params = jax.tree.map(jnp.add, params, _random_like(params, 24))  # Non-zero biases.
    carry = (_normal(25, (B, 4)), _normal(26, (B, 4)))
    x = _normal(27, (B, 3))
    got_carry, got_y = self.variant(cell.apply)(params, carry, x)
    want_carry, want_y = module.apply({'params': params}, carry, x)
    np.testing.assert_allclose(got_y, want_y, **TOL)
    chex.assert_trees_all_close(got_carry, want_carry, **TOL)
    # And the wrapped cell agrees with our own `lstm` after conversion.
    ours_carry, ours_y = initstate.lstm(4).apply(
        initstate.convert.lstm_params_from_flax(params),
        initstate.convert.lstm_carry_from_flax(carry), x)
    np.testing.assert_allclose(ours_y, got_y, **TOL)
    chex.assert_trees_all_close(initstate.convert.lstm_carry_to_flax(ours_carry), got_carry, **TOL)

  @parameterized.named_parameters(
      ('lstm', nn.LSTMCell(4), 4, 2), ('optimized_lstm', nn.OptimizedLSTMCell(3), 3, 2),
      ('gru', nn.GRUCell(5), 5, 1), ('simple', nn.SimpleCell(6), 6, 1))
  def test_output_size_and_template(self, module, size, num_leaves):
    cell = initstate.from_flax(module)
    self.assertEqual(cell.output_size, size)
    leaves = jax.tree.leaves(cell.carry_template)
    self.assertLen(leaves, num_leaves)
    for leaf in leaves:
      self.assertEqual(leaf, jax.ShapeDtypeStruct((size,), jnp.float32))
    params = _our_param_shapes(cell, 2)
    carry = jax.tree.map(lambda s: jax.ShapeDtypeStruct((B,) + s.shape, s.dtype),
                         cell.carry_template)
    new_carry, y = jax.eval_shape(cell.apply, params, carry, jax.ShapeDtypeStruct((B, 2), F32))
    self.assertEqual(y.shape, (B, size))
    self.assertEqual(new_carry, carry)

  def test_as_cell_returns_cells_unchanged(self):
    cell = initstate.gru(3)
    self.assertIs(initstate.as_cell(cell), cell)


class ErrorTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('lstm_zero', initstate.lstm, 0), ('gru_negative', initstate.gru, -2),
      ('elman_float', initstate.elman, 2.5), ('lstm_none', initstate.lstm, None),
      ('lstm_bool', initstate.lstm, True))
  def test_bad_hidden_size(self, cell_fn, size):
    with self.assertRaises(ValueError):
      cell_fn(size)

  def test_lstm_zero(self):
    with self.assertRaisesRegex(ValueError, 'hidden_size'):
      initstate.lstm(0)

  @parameterized.named_parameters(('lstm', initstate.lstm), ('gru', initstate.gru),
                                  ('elman', initstate.elman))
  def test_bad_input_size(self, cell_fn):
    with self.assertRaisesRegex(ValueError, 'input_size'):
      cell_fn(H).init(jax.random.key(0), 0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('lstm', initstate.lstm), ('gru', initstate.gru),
                                  ('elman', initstate.elman))
  def test_wrong_input_features(self, cell_fn):
    cell = cell_fn(H)
    params = _random_like(_our_param_shapes(cell), 28)
    carry = jax.tree.map(lambda s: np.zeros((B,) + s.shape, s.dtype), cell.carry_template)
    x = np.zeros((B, D + 2), np.float32)
    with self.assertRaisesRegex(ValueError, r'\(3, 6\)'):
      self.variant(cell.apply)(params, carry, x)

  def test_wrong_input_features_in_stack(self):
    stacked = initstate.stack([initstate.lstm(4), initstate.elman(3)])
    params = _random_like(_our_param_shapes(stacked, 2), 29)
    carry = jax.tree.map(lambda s: np.zeros((B,) + s.shape, s.dtype), stacked.carry_template)
    with self.assertRaisesRegex(ValueError, r'\(3, 5\)'):
      stacked.apply(params, carry, np.zeros((B, 5), np.float32))

  def test_empty_stack(self):
    with self.assertRaises(ValueError):
      initstate.stack([])

  def test_stack_of_non_cells(self):
    with self.assertRaises(ValueError):
      initstate.stack([initstate.lstm(3), 'not a cell'])

  def test_as_cell_rejects_non_cells(self):
    with self.assertRaises(TypeError):
      initstate.as_cell(42)

  def test_from_flax_rejects_non_modules(self):
    with self.assertRaises(TypeError):
      initstate.from_flax(42)


class BindTest(parameterized.TestCase):
  """`cell.bind(params)`: the step function, a pytree of the params, and `fused`."""

  @parameterized.named_parameters(('lstm', initstate.lstm), ('gru', initstate.gru),
                                  ('elman', initstate.elman))
  def test_bound_cell_is_the_step_function(self, cell_fn):
    cell = cell_fn(H)
    params = _random_like(_our_param_shapes(cell), 40)
    bound = cell.bind(params)
    self.assertIsInstance(bound, initstate.BoundCell)
    self.assertIs(bound.cell, cell)
    self.assertIs(bound.params, params)
    carry = _random_like(jax.tree.map(lambda s: jax.ShapeDtypeStruct((B,) + s.shape, s.dtype),
                                      cell.carry_template), 41)
    x = _normal(42, (B, D))
    chex.assert_trees_all_equal(bound(carry, x), cell.apply(params, carry, x))

  def test_bound_cell_is_a_pytree_of_the_params(self):
    cell = initstate.stack([initstate.lstm(4), initstate.gru(3)])
    params = _random_like(_our_param_shapes(cell, 2), 43)
    bound = cell.bind(params)
    leaves = jax.tree.leaves(bound)
    self.assertLen(leaves, len(jax.tree.leaves(params)))
    for a, b in zip(leaves, jax.tree.leaves(params)):
      self.assertIs(a, b)
    # The cell is static: mapping over the leaves keeps it and rebuilds a BoundCell.
    doubled = jax.tree.map(lambda p: 2 * p, bound)
    self.assertIsInstance(doubled, initstate.BoundCell)
    self.assertIs(doubled.cell, cell)
    chex.assert_trees_all_close(doubled.params, jax.tree.map(lambda p: 2 * p, params))
    carry = jax.tree.map(lambda s: jnp.zeros((B,) + s.shape, s.dtype), cell.carry_template)
    x = _normal(44, (B, 2))

    @jax.jit
    def step(bound, carry, x):   # A BoundCell passes through jit as an argument.
      self.assertIsInstance(bound, initstate.BoundCell)
      return bound(carry, x)

    chex.assert_trees_all_close(step(bound, carry, x), cell.apply(params, carry, x), **TOL)
    # Its gradient is a BoundCell of the params' gradients.
    grads = jax.grad(lambda b: jnp.sum(b(carry, x)[1]))(bound)
    self.assertIsInstance(grads, initstate.BoundCell)
    chex.assert_trees_all_close(
        grads.params, jax.grad(lambda p: jnp.sum(cell.apply(p, carry, x)[1]))(params), **TOL)

  def test_fused_field(self):
    self.assertEqual(initstate.lstm(H).fused, 'lstm')
    self.assertEqual(initstate.gru(H).fused, 'gru')
    self.assertIsNone(initstate.elman(H).fused)
    self.assertIsNone(initstate.from_flax(nn.LSTMCell(H)).fused)
    self.assertEqual(initstate.stack([initstate.lstm(3), initstate.gru(4),
                                      initstate.lstm(2)]).fused, ('lstm', 'gru', 'lstm'))
    self.assertEqual(initstate.stack([initstate.gru(3)]).fused, ('gru',))
    # One layer that cannot be fused makes the whole stack unfusable.
    self.assertIsNone(initstate.stack([initstate.lstm(3), initstate.elman(3)]).fused)
    self.assertIsNone(initstate.stack([initstate.from_flax(nn.GRUCell(3)),
                                       initstate.gru(3)]).fused)
    # A stack of stacks is not fused either (its layer kinds are not all names).
    inner = initstate.stack([initstate.lstm(3), initstate.lstm(3)])
    self.assertIsNone(initstate.stack([inner, initstate.lstm(3)]).fused)


def _import_torch(test):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    test.skipTest('PyTorch is not installed.')
  return torch


class TorchAgreementTest(parameterized.TestCase):
  """Our cells against one layer of `torch.nn.LSTM` / `torch.nn.GRU` (skipped without torch)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_lstm(self):
    torch = _import_torch(self)
    torch.manual_seed(0)
    module = torch.nn.LSTM(D, H, batch_first=True)
    xs = torch.randn(B, T, D)
    h0, c0 = torch.randn(1, B, H), torch.randn(1, B, H)
    with torch.no_grad():
      want_ys, (want_h, want_c) = module(xs, (h0, c0))
    params = initstate.convert.lstm_params_from_torch(
        module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    chex.assert_shape([params['w_i'], params['w_h'], params['b']],
                      [(D, 4 * H), (H, 4 * H), (4 * H,)])
    cell = initstate.lstm(H)

    def run(p, carry, xs):  # xs [B, T, D] -> ys [B, T, H]
      carry, ys = jax.lax.scan(lambda c, x: cell.apply(p, c, x), carry,
                               jnp.swapaxes(xs, 0, 1))
      return carry, jnp.swapaxes(ys, 0, 1)

    carry0 = LSTMCarry(h=jnp.asarray(h0.numpy()[0]), c=jnp.asarray(c0.numpy()[0]))
    got_carry, got_ys = self.variant(run)(params, carry0, jnp.asarray(xs.numpy()))
    np.testing.assert_allclose(got_ys, want_ys.numpy(), **TOL)
    np.testing.assert_allclose(got_carry.h, want_h.numpy()[0], **TOL)
    np.testing.assert_allclose(got_carry.c, want_c.numpy()[0], **TOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gru(self):
    torch = _import_torch(self)
    torch.manual_seed(1)
    module = torch.nn.GRU(D, H, batch_first=True)
    xs = torch.randn(B, T, D)
    h0 = torch.randn(1, B, H)
    with torch.no_grad():
      want_ys, want_h = module(xs, h0)
    params = initstate.convert.gru_params_from_torch(
        module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    cell = initstate.gru(H)

    def run(p, carry, xs):
      carry, ys = jax.lax.scan(lambda c, x: cell.apply(p, c, x), carry,
                               jnp.swapaxes(xs, 0, 1))
      return carry, jnp.swapaxes(ys, 0, 1)

    got_h, got_ys = self.variant(run)(params, jnp.asarray(h0.numpy()[0]),
                                      jnp.asarray(xs.numpy()))
    np.testing.assert_allclose(got_ys, want_ys.numpy(), **TOL)
    np.testing.assert_allclose(got_h, want_h.numpy()[0], **TOL)

    # A Python loop over time gives the same.
    carry = jnp.asarray(h0.numpy()[0])
    for t in range(T):
      carry, y = cell.apply(params, carry, jnp.asarray(xs.numpy()[:, t]))
      np.testing.assert_allclose(y, want_ys.numpy()[:, t], **TOL)


if __name__ == '__main__':
  absltest.main()
