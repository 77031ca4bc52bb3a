"""NaN safety: degenerate masks give finite losses and gradients; NaN/Inf padding never leaks.

Losses are the documented recipe, `masked_mean(squared_error(outputs, targets), out.mask)` and
`masked_mean(softmax_cross_entropy(outputs, labels), out.mask)`; gradients are taken with
respect to the cell's params, the learned carry's params and the inputs, for both
implementations (and with `checkpoint_every`).
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import initstate

B, T, D, H = 3, 5, 2, 4
CELLS = {
    'lstm': lambda: initstate.lstm(H),
    'gru': lambda: initstate.gru(H),
    'elman': lambda: initstate.elman(H),
    'stack': lambda: initstate.stack([initstate.lstm(3), initstate.gru(H)]),
}
# (cell, implementation)
CONFIGS = {'lstm_fused': ('lstm', 'fused'), 'gru_fused': ('gru', 'fused'),
           'lstm_generic': ('lstm', 'generic'), 'gru_generic': ('gru', 'generic')}
NAN_CONFIGS = dict(CONFIGS, elman_generic=('elman', 'generic'), stack_fused=('stack', 'fused'))
OPTIONS = {
    'lengths': {},
    'burn_in_last': dict(burn_in=T - 1),
    'burn_in_last_stop_gradient': dict(burn_in=T - 1, stop_gradient_burn_in=True),
    'everything': dict(reverse=True, checkpoint_every=2, burn_in=1, stop_gradient_burn_in=True,
                       resets=np.broadcast_to(np.isin(np.arange(T), [2, 4]), (B, T))),
}


@functools.lru_cache(maxsize=None)
def _setup(kind):
  cell = CELLS[kind]()
  k_params, k_carry, k_x, k_y, k_labels = jax.random.split(jax.random.key(0), 5)
  params = cell.init(k_params, D)
  leaves, treedef = jax.tree.flatten(initstate.learned().init(None, cell.carry_template))
  carry_params = jax.tree.unflatten(treedef, [  # non-zero: a gradient to check
      jax.random.normal(k, p.shape) for k, p in zip(jax.random.split(k_carry, len(leaves)),
                                                     leaves)])
  data = dict(x=jax.random.normal(k_x, (B, T, D)),
              targets=jax.random.normal(k_y, (B, T, cell.output_size)),
              labels=jax.random.randint(k_labels, (B, T), 0, cell.output_size))
  return cell, params, carry_params, data


@functools.lru_cache(maxsize=None)  # Tests with the same configuration share the compilation.
def _value_and_grads(kind, implementation, option):
  """jitted (params, carry_params, x, targets, labels, lengths) -> ((mse, ce), grads): the
  gradient of mse + ce with respect to (params, carry_params, x) (one backward pass; NaN from
  either loss would show in it)."""
  cell, options, strategy = _setup(kind)[0], OPTIONS[option], initstate.learned()

  def loss(params, carry_params, x, targets, labels, lengths):
    out = initstate.scan_rnn(
        cell.bind(params), x,
        init_carry_fn=lambda k, b: strategy.init_carry(carry_params, k, b, train=True),
        seq_lengths=lengths, implementation=implementation, **options)
    mse = initstate.masked_mean(initstate.squared_error(out.outputs, targets), out.mask)
    ce = initstate.masked_mean(initstate.softmax_cross_entropy(out.outputs, labels), out.mask)
    return mse + ce, (mse, ce)

  grad_fn = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
  return jax.jit(lambda *args: grad_fn(*args)[::-1])


def _padding(lengths):
  return np.arange(T)[None, :] >= np.asarray(lengths)[:, None]   # [B, T]


class DegenerateMasksTest(parameterized.TestCase):
  """Empty rows, empty batches and a burn-in of T - 1: finite, and exactly zero when empty."""

  def _check_finite(self, results):
    for leaf in jax.tree.leaves(results):
      self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))))

  def _check_zero(self, results):
    for leaf in jax.tree.leaves(results):
      np.testing.assert_array_equal(leaf, 0.0)

  def _check_nonzero(self, grads):
    for g in jax.tree.leaves(grads):
      self.assertGreater(float(jnp.max(jnp.abs(g))), 0.0)

  @parameterized.named_parameters(*[(n, *c) for n, c in CONFIGS.items()])
  def test_zero_length_rows_and_batches(self, kind, implementation):
    cell, params, carry_params, data = _setup(kind)
    fn = _value_and_grads(kind, implementation, 'lengths')
    args = (params, carry_params, data['x'], data['targets'], data['labels'])
    self._check_zero(fn(*args, jnp.array([0, 0, 0])))    # every row empty: 0 and zero grads
    some_empty = fn(*args, jnp.array([T, 0, 2]))         # one empty row among others
    self._check_finite(some_empty)
    g_params, g_carry, g_x = some_empty[1]
    self._check_nonzero((g_params, g_carry))
    np.testing.assert_array_equal(g_x[1], 0.0)           # the empty row
    self.assertGreater(float(jnp.max(jnp.abs(g_x[0]))), 0.0)

  @parameterized.named_parameters(
      *[(n, *c, False) for n, c in CONFIGS.items()],
      ('lstm_fused_stop_gradient', 'lstm', 'fused', True),
      ('gru_generic_stop_gradient', 'gru', 'generic', True))
  def test_burn_in_of_t_minus_one(self, kind, implementation, stop):
    cell, params, carry_params, data = _setup(kind)
    fn = _value_and_grads(kind, implementation,
                          'burn_in_last_stop_gradient' if stop else 'burn_in_last')
    args = (params, carry_params, data['x'], data['targets'], data['labels'])
    # Full rows: only the last step counts.
    full = fn(*args, jnp.array([T, T, T]))
    self._check_finite(full)
    g_params, g_carry, g_x = full[1]
    self._check_nonzero(g_params)
    if stop:  # The carry is cut at the end of the burn-in: nothing before step T - 1.
      self._check_zero((g_carry, g_x[:, :T - 1]))
    else:
      self._check_nonzero(g_carry)
    # Rows shorter than T: only row 0's last step counts ...
    self._check_finite(fn(*args, jnp.array([T, 3, 0])))
    # ... and with none of length T every step is masked: 0 with zero gradients.
    self._check_zero(fn(*args, jnp.array([T - 1, 2, 0])))


class PaddingDoesNotLeakTest(parameterized.TestCase):
  """NaN / Inf in padded inputs and targets, out-of-range padded labels: the losses and every
  gradient equal those of a run with finite padding, bit for bit."""

  @parameterized.named_parameters(
      *[(f'{n}_lengths', *c, 'lengths') for n, c in NAN_CONFIGS.items()],
      *[(f'{n}_everything', *c, 'everything') for n, c in CONFIGS.items()])
  def test_nan_and_inf_padding(self, kind, implementation, option):
    cell, params, carry_params, data = _setup(kind)
    fn = _value_and_grads(kind, implementation, option)
    lengths = jnp.array([T, 3, 0])
    pad = _padding(lengths)
    poisons = {
        'nan': dict(x=jnp.nan, targets=jnp.nan, labels=-1),
        'inf': dict(x=jnp.inf, targets=-jnp.inf, labels=cell.output_size),
        'mixed': dict(x=-jnp.inf, targets=jnp.nan, labels=2**30),
    }
    clean = fn(params, carry_params, data['x'], data['targets'], data['labels'], lengths)
    for name, poison in poisons.items():
      dirty = {k: jnp.where(pad.reshape(pad.shape + (1,) * (v.ndim - 2)), poison[k], v)
               for k, v in data.items()}
      results = fn(params, carry_params, dirty['x'], dirty['targets'], dirty['labels'],
                   lengths)
      chex.assert_trees_all_equal(results, clean, custom_message=name)
      self.assertTrue(all(bool(jnp.isfinite(v)) for v in results[0]), name)
      np.testing.assert_array_equal(np.asarray(results[1][2])[pad], 0.0, err_msg=name)
    # Not vacuous: the clean run has non-zero parameter gradients.
    for g in jax.tree.leaves(clean[1][0]):
      self.assertGreater(float(jnp.max(jnp.abs(g))), 0.0)

  def test_targets_on_burn_in_steps_are_the_callers_to_mask(self):
    """Burn-in steps are real (valid) steps: their outputs are not zeroed, so NaN targets there
    would meet a real output in `squared_error`, and the zero cotangent `masked_mean` sends
    back meets NaN (0 * NaN). Replacing the targets outside `out.mask` first is safe."""
    cell, params, carry_params, data = _setup('lstm')
    targets = data['targets'].at[:, :2].set(jnp.nan)        # NaN on the burn-in steps

    def loss(params, carry_params, x, targets):
      out = initstate.scan_rnn(
          cell.bind(params), x, burn_in=2,
          init_carry_fn=lambda k, b: initstate.learned().init_carry(carry_params, k, b,
                                                                    train=True))
      safe = jnp.where(out.mask[..., None], targets, jnp.zeros_like(targets))
      return initstate.masked_mean(initstate.squared_error(out.outputs, safe), out.mask)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    clean = grad(params, carry_params, data['x'], data['targets'].at[:, :2].set(0.0))
    chex.assert_trees_all_equal(grad(params, carry_params, data['x'], targets), clean)
    for g in jax.tree.leaves(clean):
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))))


if __name__ == '__main__':
  absltest.main()
