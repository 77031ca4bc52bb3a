"""bfloat16 and float16: cells, carries, scan_rnn (fused and generic), gradients and Adam.

A model is low precision when its cell is built with `param_dtype`: the params and the carry
template (so every strategy's carry) take that dtype, and inputs of the same dtype keep the
whole recurrence in it. Mixed dtypes are covered at the end: a float32 model promotes
bfloat16 inputs; a bfloat16 model fed float32 inputs is a clear error (the step would change
the carry's dtype).
"""


from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import initstate

B, T, D, H = 3, 6, 2, 4
DTYPES = {'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
# Loose tolerances for the dtype's 8 (bfloat16) or 11 (float16) significant bits over T steps
# (measured: max output error 6e-3 and 8e-4; gradient error 2.4% and 0.4% of the largest).
OUTPUT_ATOL = {'bfloat16': 5e-2, 'float16': 1e-2}
GRAD_RTOL = {'bfloat16': 0.1, 'float16': 2e-2}
CELLS = {'lstm': initstate.lstm, 'gru': initstate.gru, 'elman': initstate.elman}
CONFIGS = [('lstm', 'fused'), ('lstm', 'generic'), ('gru', 'fused'), ('gru', 'generic'),
           ('elman', 'generic')]
STRATEGIES = {'zeros': initstate.zeros(), 'learned': initstate.learned(0.3),
              'noisy': initstate.noisy(0.5), 'noisy_learned': initstate.noisy_learned(0.5, 0.3)}
OPTIONS = dict(seq_lengths=jnp.array([T, 4, 0]),
               resets=jnp.zeros((B, T), bool).at[:, 3].set(True))
F32 = jnp.float32
AGREE_FAST = (('bfloat16', 'lstm', 'fused'), ('float16', 'gru', 'generic'))
AGREE_SLOW = tuple((d, k, i) for d in DTYPES for k, i in CONFIGS
                   if k != 'elman' and (d, k, i) not in AGREE_FAST)


def _upcast(tree):
  return jax.tree.map(lambda a: a.astype(F32), tree)


def _data(dtype):
  x = jax.random.normal(jax.random.key(2), (B, T, D)).astype(dtype)
  y = jax.random.normal(jax.random.key(3), (B, T, H)).astype(dtype)
  return x, y


def _scan(cell, params, strategy, carry_params, x, implementation, rng=None, **options):
  return initstate.scan_rnn(
      cell.bind(params), x,
      init_carry_fn=lambda k, b: strategy.init_carry(carry_params, k, b, train=True), rng=rng,
      implementation=implementation, **options)


class InitTest(parameterized.TestCase):

  @parameterized.product(kind=list(CELLS), dtype=list(DTYPES))
  def test_init_is_the_float32_init_rounded(self, kind, dtype):
    """The default orthogonal init has no 16-bit QR on CPU: it is drawn in float32, rounded."""
    params = CELLS[kind](H, param_dtype=DTYPES[dtype]).init(jax.random.key(0), D)
    reference = CELLS[kind](H).init(jax.random.key(0), D)
    for p in jax.tree.leaves(params):
      self.assertEqual(p.dtype, DTYPES[dtype])
    chex.assert_trees_all_equal(params, jax.tree.map(lambda a: a.astype(DTYPES[dtype]),
                                                     reference))


class DtypesTest(parameterized.TestCase):
  """Shapes and dtypes only (jax.eval_shape: nothing is compiled)."""

  @parameterized.product(dtype=list(DTYPES), config=[f'{k}_{i}' for k, i in CONFIGS])
  def test_everything_stays_in_the_param_dtype(self, dtype, config):
    kind, implementation = config.split('_')
    dtype = DTYPES[dtype]
    cell = CELLS[kind](H, param_dtype=dtype)
    params = cell.init(jax.random.key(0), D)
    for strategy in STRATEGIES.values():   # Every strategy's carry follows the template.
      carry_params = strategy.init(jax.random.key(1), cell.carry_template)
      for leaf in jax.tree.leaves(strategy.init_carry(carry_params, jax.random.key(4), B,
                                                      train=True)):
        self.assertEqual(leaf.dtype, dtype)
    # One scan with a learned carry plus noise, lengths and resets: outputs, carries and
    # gradients.
    strategy = STRATEGIES['noisy_learned']
    carry_params = strategy.init(jax.random.key(1), cell.carry_template)
    x, _ = _data(dtype)

    def loss(params, carry_params, x):
      out = _scan(cell, params, strategy, carry_params, x, implementation,
                  rng=jax.random.key(5), return_carries=True, **OPTIONS)
      return jnp.sum(out.outputs.astype(F32) ** 2), out

    (_, out), grads = jax.eval_shape(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True),
                                     params, carry_params, x)
    for leaf in jax.tree.leaves((out.outputs, out.final_carry, out.carries)):
      self.assertEqual(leaf.dtype, dtype)
    # Every gradient in its primal's dtype.
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, (params, carry_params, x))

  @parameterized.parameters('fused', 'generic')
  def test_mixed_dtype_gradients_keep_primal_dtypes(self, implementation):
    """Mixed dtypes in the fused backward (float32 weights, bfloat16 inputs or carries, and
    the reverse) used to return float32 cotangents for bfloat16 primals."""
    for param_dtype, carry_dtype, x_dtype in ((F32, F32, jnp.bfloat16),
                                              (jnp.bfloat16, F32, jnp.bfloat16),
                                              (jnp.bfloat16, F32, F32)):
      for kind in ('lstm', 'gru'):
        cell = CELLS[kind](H, param_dtype=param_dtype)
        params = cell.init(jax.random.key(0), D)
        strategy = initstate.learned(0.3)
        carry_params = strategy.init(None, CELLS[kind](H, param_dtype=carry_dtype)
                                     .carry_template)
        x = jnp.ones((B, T, D), x_dtype)
        grads = jax.eval_shape(jax.grad(
            lambda p, c, x: jnp.sum(_scan(cell, p, strategy, c, x, implementation,
                                          **OPTIONS).outputs.astype(F32)),
            argnums=(0, 1, 2)), params, carry_params, x)
        chex.assert_trees_all_equal_shapes_and_dtypes(grads, (params, carry_params, x))


class AgreesWithFloat32Test(parameterized.TestCase):

  # The Elman cell (generic path only) is left to the shape tests above, for time. Every dtype,
  # cell and path in the fast suite; the whole product in the slow one.
  @parameterized.named_parameters(*[(f'{d}_{k}_{i}', d, k, i) for d, k, i in AGREE_FAST])
  def test_values_gradients_and_adam(self, dtype_name, kind, implementation):
    self._check_agreement(dtype_name, kind, implementation)

  @parameterized.named_parameters(*[(f'{d}_{k}_{i}', d, k, i) for d, k, i in AGREE_SLOW])
  @pytest.mark.slow
  def test_values_gradients_and_adam_more(self, dtype_name, kind, implementation):
    self._check_agreement(dtype_name, kind, implementation)

  def _check_agreement(self, dtype_name, kind, implementation):
    dtype = DTYPES[dtype_name]
    cell, cell32 = CELLS[kind](H, param_dtype=dtype), CELLS[kind](H)
    params = cell.init(jax.random.key(0), D)
    strategy = initstate.learned()
    carry_params = jax.tree.map(  # non-zero, so that resets show
        lambda p: (0.5 * jax.random.normal(jax.random.key(1), p.shape)).astype(dtype),
        strategy.init(None, cell.carry_template))
    x, y = _data(dtype)
    optimizer = optax.adam(1e-2)
    # Adam on bfloat16 params works as is. On float16 params it does not, for optax's reasons
    # (its eps=1e-8 rounds to 0 in float16 and (1 - b2) g^2 underflows for |g| < ~8e-3: the
    # update is +-inf or NaN; optax issue #1754): there the optimizer keeps float32 master
    # weights and the model runs on their float16 copy (standard mixed precision).
    master = dtype == jnp.float16
    trainable = _upcast((params, carry_params)) if master else (params, carry_params)

    def loss(cell, params, carry_params, x, y):
      out = _scan(cell, params, strategy, carry_params, x, implementation, **OPTIONS)
      return initstate.masked_mean(initstate.squared_error(out.outputs, y), out.mask), out

    def low_precision_loss(trainable):
      params, carry_params = jax.tree.map(lambda a: a.astype(dtype), trainable)
      return loss(cell, params, carry_params, x, y)

    @jax.jit
    def train_step(trainable, opt_state):
      (value, out), grads = jax.value_and_grad(low_precision_loss, has_aux=True)(trainable)
      updates, opt_state = optimizer.update(grads, opt_state, trainable)
      # The same model in float32 (the params upcast exactly), for comparison.
      (_, out32), grads32 = jax.value_and_grad(
          lambda t: loss(cell32, *t, *_upcast((x, y))), has_aux=True)(_upcast(trainable))
      return optax.apply_updates(trainable, updates), opt_state, value, out, grads, out32, grads32

    opt_state = optimizer.init(trainable)
    new, opt_state, value, out, grads, out32, grads32 = train_step(trainable, opt_state)
    # Values: the expected dtype, close to float32.
    self.assertEqual(value.dtype, dtype)
    for leaf in jax.tree.leaves((out.outputs, out.final_carry)):
      self.assertEqual(leaf.dtype, dtype)
    np.testing.assert_allclose(out.outputs.astype(F32), out32.outputs,
                               atol=OUTPUT_ATOL[dtype_name])
    chex.assert_trees_all_close(_upcast(out.final_carry), out32.final_carry,
                                atol=OUTPUT_ATOL[dtype_name])
    # Gradients: finite, in the trainable dtype, close to float32 relative to their scale.
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, trainable)
    for g, g32 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads32)):
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))))
      scale = float(jnp.max(jnp.abs(g32)))
      self.assertGreater(scale, 0.0)
      np.testing.assert_allclose(g.astype(F32), g32, atol=GRAD_RTOL[dtype_name] * scale)
    # Adam: params keep their dtype, move, stay finite, and a few steps lower the loss.
    chex.assert_trees_all_equal_shapes_and_dtypes(new, trainable)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(trainable)):
      self.assertTrue(bool(jnp.all(jnp.isfinite(a))))
      self.assertFalse(bool(jnp.all(a == b)))
    for _ in range(10):
      new, opt_state, last, *_ = train_step(new, opt_state)
    self.assertTrue(bool(jnp.isfinite(last)))
    self.assertLess(float(last), float(value))


class MixedDtypesTest(parameterized.TestCase):

  @parameterized.parameters('fused', 'generic')
  def test_float32_model_promotes_bfloat16_inputs(self, implementation):
    """Documented: the computation promotes to float32 (as `x @ w_i` does); outputs and carries
    are float32 and equal a run on the upcast inputs; the inputs' gradient is bfloat16."""
    cell = initstate.lstm(H)
    params = cell.init(jax.random.key(0), D)
    strategy = initstate.learned(0.3)
    carry_params = strategy.init(None, cell.carry_template)
    x, _ = _data(jnp.bfloat16)

    def loss(params, x):
      out = _scan(cell, params, strategy, carry_params, x, implementation, **OPTIONS)
      return jnp.sum(jnp.sin(out.outputs)), out

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, out), (g_params, g_x) = grad(params, x)
    (_, out32), (g_params32, g_x32) = grad(params, x.astype(F32))
    for leaf in jax.tree.leaves((out.outputs, out.final_carry, g_params)):
      self.assertEqual(leaf.dtype, F32)
    self.assertEqual(g_x.dtype, jnp.bfloat16)
    chex.assert_trees_all_close((out, g_params), (out32, g_params32), atol=1e-6, rtol=1e-6)
    np.testing.assert_array_equal(g_x, g_x32.astype(jnp.bfloat16))

  @parameterized.product(implementation=['fused', 'generic'], dtype=list(DTYPES))
  def test_low_precision_model_with_float32_inputs_is_a_clear_error(self, implementation,
                                                                     dtype):
    """Documented: float32 inputs would turn a 16-bit carry into float32 after one step; a
    scan cannot change its carry's dtype, so this is a TypeError naming the dtypes and the fix
    (cast the inputs), raised before the scan (also for the fused path)."""
    dtype = DTYPES[dtype]
    cell = initstate.gru(H, param_dtype=dtype)
    params = cell.init(jax.random.key(0), D)
    strategy = initstate.learned(0.3)
    carry_params = strategy.init(None, cell.carry_template)
    x, _ = _data(F32)
    with self.assertRaisesRegex(
        TypeError, rf'changes the dtype of the carry \(carry: {jnp.dtype(dtype).name} -> '
        r"float32\).*inputs are \['float32'\].*astype"):
      _scan(cell, params, strategy, carry_params, x, implementation)
    out = _scan(cell, params, strategy, carry_params, x.astype(dtype), implementation)
    self.assertEqual(out.outputs.dtype, dtype)


if __name__ == '__main__':
  absltest.main()
