"""Tests for the Flax NNX layers: the same numbers as the linen layer and `scan_rnn`, NNX
training tools (jit, grad, Optimizer, split/merge, vmap, checkpoints), cleaning noise's state,
conditional carries and the bidirectional layer."""

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import initstate

B, T, D, H = 3, 7, 2, 8
STRATEGIES = {
    'zeros': initstate.zeros,
    'learned': lambda: initstate.learned(0.3),
    'noisy': lambda: initstate.noisy(0.5),
    'noisy_learned': lambda: initstate.noisy_learned(0.5, 0.2),
    'latent': lambda: initstate.latent(3),
    'cleaning': lambda: initstate.cleaning_noise(8, 0.5),
}


def _values(tree):
  return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


def _inputs():
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  lengths = jnp.array([7, 5, 2])
  resets = jnp.zeros((B, T), bool).at[0, 3].set(True).at[1, 2].set(True)
  return x, lengths, resets


class RNNAgreesTest(parameterized.TestCase):
  """initstate.nnx.RNN == initstate.nn.RNN == scan_rnn, given the same variables and key."""

  @parameterized.product(strategy=tuple(STRATEGIES), train=(False, True))
  def test_nnx_linen_and_scan_rnn_agree(self, strategy, train):
    self._agree(strategy, train, reverse=False)

  @parameterized.parameters('noisy_learned', 'cleaning')
  def test_reversed_with_noise(self, strategy):
    self._agree(strategy, True, reverse=True)

  def _agree(self, strategy, train, reverse):
    x, lengths, resets = _inputs()
    cell = initstate.lstm(H)
    make = STRATEGIES[strategy]
    model = initstate.nnx.RNN(cell, carry=make(), in_features=D, burn_in=1, reverse=reverse,
                              deterministic=not train, rngs=nnx.Rngs(params=1, carry=2))
    cell_params, carry_params = _values(model.cell), _values(model.carry)
    state = _values(model.carry_state)
    if strategy == 'cleaning':  # A buffer with entries, so that training draws real noise.
      state = model.strategy.update_state(
          state, jax.tree.map(lambda s: jnp.full((5,) + s.shape, 0.25), cell.carry_template))
      jax.tree.map(lambda v, s: v.set_value(s), model.carry_state, state,
                   is_leaf=lambda v: isinstance(v, nnx.Variable))
    key = jax.random.key(5)
    out = model(x, seq_lengths=lengths, resets=resets, rngs=nnx.Rngs(carry=key))

    # The functional core, with the key the layer drew from its stream.
    rng = nnx.Rngs(carry=key).carry() if model.strategy.needs_rng and train else None
    ref = initstate.scan_rnn(
        cell.bind(cell_params), x,
        init_carry_fn=lambda k, b: model.strategy.init_carry(carry_params, k, b, train=train,
                                                             state=state),
        rng=rng, seq_lengths=lengths, resets=resets, burn_in=1, reverse=reverse)
    np.testing.assert_allclose(out.outputs, ref.outputs, atol=1e-6)
    np.testing.assert_array_equal(out.mask, ref.mask)

    # The linen layer with the same variables. With noise on, linen derives its key from the
    # given one (make_rng), so only the noise-free runs can match it number for number; the
    # noisy ones are checked against scan_rnn above.
    if train and model.strategy.needs_rng:
      return
    linen = initstate.nn.RNN(cell, carry=make(), burn_in=1, reverse=reverse)
    variables = {'params': {'cell': cell_params}}
    if jax.tree.leaves(carry_params):
      variables['params']['carry'] = carry_params
    linen_out = linen.apply(variables, x, seq_lengths=lengths, resets=resets, train=train)
    np.testing.assert_allclose(linen_out.outputs, out.outputs, atol=1e-6)
    np.testing.assert_array_equal(linen_out.mask, out.mask)

  def test_nnx_cell_with_zeros_equals_flax_nnx_rnn(self):
    x, lengths, _ = _inputs()
    for make_cell in (nnx.LSTMCell, nnx.GRUCell, nnx.SimpleCell, nnx.OptimizedLSTMCell):
      flax_cell = make_cell(D, H, rngs=nnx.Rngs(3))
      ours = initstate.nnx.RNN(flax_cell, rngs=nnx.Rngs(0))
      theirs = nnx.RNN(flax_cell)
      np.testing.assert_allclose(ours(x, seq_lengths=lengths).outputs * (
          jnp.arange(T)[None, :, None] < lengths[:, None, None]),
                                 theirs(x, seq_lengths=lengths) * (
          jnp.arange(T)[None, :, None] < lengths[:, None, None]), atol=1e-6)

  def test_learned_carry_and_cell_are_params_strategy_state_is_not(self):
    model = initstate.nnx.RNN(initstate.stack([initstate.lstm(H), initstate.gru(4)]),
                              carry=initstate.cleaning_noise(8), in_features=D,
                              rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    carry = params['carry']
    self.assertEqual(carry[0]['h'].shape, (H,))
    self.assertEqual(carry[0]['c'].shape, (H,))
    self.assertEqual(carry[1].shape, (4,))
    self.assertNotIn('carry_state', params)
    buffer = nnx.state(model, initstate.nnx.CarryState)['carry_state']
    self.assertEqual(buffer['values'][0]['h'].shape, (8, H))

  def test_fused_path_is_kept_for_builtin_lstms(self):
    model = initstate.nnx.RNN(initstate.lstm(32), in_features=D, implementation='fused',
                              rngs=nnx.Rngs(0))
    x, lengths, _ = _inputs()
    fused = model(x, seq_lengths=lengths).outputs
    model.implementation = 'generic'
    np.testing.assert_allclose(fused, model(x, seq_lengths=lengths).outputs, atol=1e-5)


@pytest.mark.slow   # The reversed runs of every strategy (a mark on the class: pytest does
class RNNAgreesReversedTest(parameterized.TestCase):   # not see one on generated methods).

  @parameterized.product(strategy=tuple(STRATEGIES), train=(False, True))
  def test_nnx_linen_and_scan_rnn_agree_reversed(self, strategy, train):
    RNNAgreesTest._agree(self, strategy, train, reverse=True)  # pylint: disable=protected-access


class ModesAndErrorsTest(absltest.TestCase):

  def test_eval_is_deterministic_and_exact_train_draws_fresh_noise(self):
    x, _, _ = _inputs()
    model = initstate.nnx.RNN(initstate.gru(H), carry=initstate.noisy_learned(1.0, 0.5),
                              in_features=D, rngs=nnx.Rngs(0))
    a, b = model(x).outputs, model(x).outputs
    self.assertGreater(float(jnp.abs(a - b).max()), 1e-3)
    model.eval()
    c = model(x, rngs=None).outputs
    np.testing.assert_array_equal(c, model(x).outputs)
    learned = initstate.scan_rnn(initstate.gru(H).bind(_values(model.cell)), x,
                                 jnp.broadcast_to(_values(model.carry), (B, H))).outputs
    np.testing.assert_allclose(c, learned, atol=1e-6)
    model.train()
    self.assertFalse(model.deterministic)

  def test_noise_without_a_carry_stream_is_a_clear_error(self):
    x, _, _ = _inputs()
    model = initstate.nnx.RNN(initstate.gru(H), carry=initstate.noisy(0.3), in_features=D,
                              rngs=nnx.Rngs(params=0))
    with self.assertRaisesRegex(ValueError, 'rngs'):
      model(x)
    model(x, rngs=nnx.Rngs(carry=1))   # A stream at call time is enough.
    model.eval()
    model(x)                           # No noise in evaluation mode: no key needed.

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'in_features'):
      initstate.nnx.RNN(initstate.lstm(H), rngs=nnx.Rngs(0))
    with self.assertRaisesRegex(TypeError, 'CarryStrategy'):
      initstate.nnx.RNN(initstate.lstm(H), carry='zeros', in_features=D, rngs=nnx.Rngs(0))
    with self.assertRaisesRegex(TypeError, 'cell'):
      initstate.nnx.RNN(object(), in_features=D, rngs=nnx.Rngs(0))
    with self.assertRaisesRegex(ValueError, 'in_features'):
      initstate.nnx.RNN(nnx.GRUCell(D, H, rngs=nnx.Rngs(0)), in_features=D + 1,
                        rngs=nnx.Rngs(0))
    model = initstate.nnx.RNN(initstate.lstm(H), in_features=D, rngs=nnx.Rngs(0))
    with self.assertRaisesRegex(ValueError, 'inputs'):
      model(jnp.ones((B, T)))
    with self.assertRaisesRegex(ValueError, 'context_carry'):
      model(jnp.ones((B, T, D)), context=jnp.ones((B, 4)))


@pytest.mark.slow   # Training runs, a checkpoint round trip, vmap over seeds.
class TrainingTest(absltest.TestCase):

  def test_learned_carry_trains_with_nnx_optimizer_and_beats_zeros_early(self):
    # Delay by one step: y_t = x_{t-1} (first feature), and y_0 = 0.8, as if the input before
    # the window had been 0.8. The ideal initial state remembers 0.8; a zero carry remembers 0.
    x = jax.random.normal(jax.random.key(1), (32, 6, D))
    y = jnp.concatenate([jnp.full((32, 1, 1), 0.8), x[:, :-1, :1]], axis=1)

    def train(strategy):
      model = initstate.nnx.RNN(initstate.gru(H), carry=strategy, in_features=D,
                                rngs=nnx.Rngs(0))
      readout = nnx.Linear(H, 1, rngs=nnx.Rngs(1))
      both = nnx.List([model, readout])
      optimizer = nnx.Optimizer(both, optax.adam(3e-2), wrt=nnx.Param)

      def loss_fn(both):
        out = both[0](x)
        return jnp.mean((both[1](out.outputs) - y) ** 2), out

      @nnx.jit
      def step(both, optimizer):
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(both)
        optimizer.update(both, grads)
        return loss

      for _ in range(150):
        step(both, optimizer)
      first_step = jnp.mean((readout(model(x).outputs[:, :1]) - y[:, :1]) ** 2)
      return model, float(first_step)

    learned, learned_loss = train(initstate.learned())
    _, zeros_loss = train(initstate.zeros())
    self.assertGreater(float(jnp.abs(_values(learned.carry)).max()), 0.05)
    self.assertLess(learned_loss, zeros_loss)

  def test_split_merge_and_checkpoint_resume_bit_identical(self):
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    x, lengths, _ = _inputs()
    model = initstate.nnx.RNN(initstate.lstm(H), carry=initstate.noisy_learned(0.2),
                              in_features=D, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    clone = nnx.merge(graphdef, state)
    clone.eval()   # (In training the two would share one noise stream.)
    model.eval()
    np.testing.assert_array_equal(clone(x, seq_lengths=lengths).outputs,
                                  model(x, seq_lengths=lengths).outputs)
    model.train()

    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
      loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x).outputs ** 2))(model)
      optimizer.update(model, grads)
      return loss

    for _ in range(2):
      step(model, optimizer)
    with tempfile.TemporaryDirectory() as tmp:
      checkpointer = ocp.StandardCheckpointer()
      checkpointer.save(f'{tmp}/ckpt', nnx.state((model, optimizer)))
      checkpointer.wait_until_finished()
      for _ in range(3):
        step(model, optimizer)
      expected = _values(model.carry)

      fresh = initstate.nnx.RNN(initstate.lstm(H), carry=initstate.noisy_learned(0.2),
                                in_features=D, rngs=nnx.Rngs(7))
      fresh_opt = nnx.Optimizer(fresh, optax.adam(1e-2), wrt=nnx.Param)
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.state((fresh, fresh_opt)))
      restored = checkpointer.restore(f'{tmp}/ckpt', abstract)
      nnx.update((fresh, fresh_opt), restored)
      for _ in range(3):
        step(fresh, fresh_opt)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(_values(fresh.carry))):
      np.testing.assert_array_equal(a, b)

  def test_vmap_over_seeds(self):
    x, _, _ = _inputs()

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
      return initstate.nnx.RNN(initstate.gru(H), carry=initstate.learned(), in_features=D,
                               rngs=rngs)

    models = create(nnx.Rngs(0))

    @nnx.vmap(in_axes=(0, None), out_axes=0)
    def run(model, x):
      return model(x).outputs

    out = run(models, x)
    self.assertEqual(out.shape, (4, B, T, H))
    self.assertGreater(float(jnp.abs(out[0] - out[1]).max()), 1e-4)   # different seeds


class CleaningTest(absltest.TestCase):

  def test_buffer_update_through_capture_and_optimizer_leaves_it_alone(self):
    x, _, _ = _inputs()
    cleaning = initstate.cleaning_noise(8, 1.0)
    model = initstate.nnx.RNN(initstate.gru(H), carry=cleaning, in_features=D,
                              rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    _, perturbations = nnx.capture(lambda m, x: m(x).outputs, nnx.Perturbation)(model, x)

    def loss_fn(model, perturbations):
      def forward(model, x):
        return jnp.sum(model(x).outputs ** 2)
      return nnx.capture(forward, init=perturbations)(model, x)

    before = _values(model.carry_state)
    grads, carry_grads = nnx.grad(loss_fn, argnums=(0, 1))(model, perturbations)
    optimizer.update(model, grads)
    after_opt = _values(model.carry_state)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_opt)):
      np.testing.assert_array_equal(a, b)   # The optimizer did not touch the buffer.
    initstate.nnx.update_carry_state(model, carry_grads)
    self.assertEqual(int(model.carry_state.count.get_value()), B)

    # The entries are the gradients at the initial carry that the step computed (checked by
    # hand against scan_rnn in test_lstm_and_stack_carries_match_the_hand_computed_gradient).
    grad_before = carry_grads['initial_carry_0'].get_value()
    np.testing.assert_allclose(model.carry_state.values.get_value()[:B], grad_before,
                               atol=1e-6)
    self.assertGreater(float(jnp.abs(grad_before).max()), 0)

  def test_lstm_and_stack_carries_match_the_hand_computed_gradient(self):
    x, _, _ = _inputs()
    for cell in (initstate.lstm(H), initstate.stack([initstate.lstm(H), initstate.gru(4)])):
      model = initstate.nnx.RNN(cell, carry=initstate.cleaning_noise(8), in_features=D,
                                rngs=nnx.Rngs(0))
      loss = lambda m, x: jnp.sum(m(x).outputs ** 2)
      _, perturbations = nnx.capture(loss, nnx.Perturbation)(model, x)
      carry_grads = nnx.grad(lambda m, p: nnx.capture(loss, init=p)(m, x), argnums=1)(
          model, perturbations)
      initstate.nnx.update_carry_state(model, carry_grads)
      # The buffer is empty before this step, so the carry was exactly the learned one.
      carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (B,) + c.shape), _values(model.carry))
      hand = jax.grad(lambda c: jnp.sum(initstate.scan_rnn(
          cell.bind(_values(model.cell)), x, c).outputs ** 2))(carry)
      buffer = _values(model.carry_state)
      self.assertEqual(int(buffer.count), B)
      for got, want in zip(jax.tree.leaves(buffer.values), jax.tree.leaves(hand)):
        np.testing.assert_allclose(got[:B], want, atol=1e-5)

  def test_capture_works_with_an_nnx_cell(self):
    x, _, _ = _inputs()
    model = initstate.nnx.RNN(nnx.LSTMCell(D, H, rngs=nnx.Rngs(0)),
                              carry=initstate.cleaning_noise(8), rngs=nnx.Rngs(1))
    loss = lambda m, x: jnp.sum(m(x).outputs ** 2)
    _, perturbations = nnx.capture(loss, nnx.Perturbation)(model, x)
    carry_grads = nnx.grad(lambda m, p: nnx.capture(loss, init=p)(m, x), argnums=1)(
        model, perturbations)
    initstate.nnx.update_carry_state(model, carry_grads)
    self.assertEqual(int(model.carry_state.count.get_value()), B)
    _, intermediates = nnx.capture(model, nnx.Intermediate)(x)   # Any capture runs.
    del intermediates

  def test_update_without_a_stateful_rnn_is_an_error(self):
    model = initstate.nnx.RNN(initstate.gru(H), in_features=D, rngs=nnx.Rngs(0))
    with self.assertRaisesRegex(ValueError, 'stateful'):
      initstate.nnx.update_carry_state(model, nnx.State({}))


class ConditionalTest(absltest.TestCase):

  def test_context_carry_is_a_submodule_and_matches_the_functional_map(self):
    x, _, _ = _inputs()
    context = jax.random.normal(jax.random.key(4), (B, 5))
    net = initstate.from_context((6,))
    model = initstate.nnx.RNN(initstate.lstm(H), carry=initstate.learned(), in_features=D,
                              context_carry=net, context_features=5, rngs=nnx.Rngs(0))
    self.assertIn('context_carry', nnx.state(model, nnx.Param))
    out = model(x, context=context)
    carry = net.apply(_values(model.context_carry), context)
    ref = initstate.scan_rnn(initstate.lstm(H).bind(_values(model.cell)), x, carry)
    np.testing.assert_allclose(out.outputs, ref.outputs, atol=1e-6)
    with self.assertRaisesRegex(ValueError, 'context_features'):
      initstate.nnx.RNN(initstate.lstm(H), in_features=D, context_carry=net, rngs=nnx.Rngs(0))

  def test_bridge_from_encoder_to_decoder(self):
    x, _, _ = _inputs()
    encoder = initstate.nnx.RNN(initstate.gru(6), in_features=D, rngs=nnx.Rngs(0))
    decoder = initstate.nnx.RNN(initstate.lstm(H), in_features=D, rngs=nnx.Rngs(1))
    bridge = initstate.nnx.CarryMapModule(
        initstate.bridge(initstate.gru(6).carry_template, initstate.lstm(H).carry_template),
        rngs=nnx.Rngs(2))
    enc = encoder(x)
    out = decoder(x, initial_carry=bridge(enc.final_carry))
    self.assertEqual(out.outputs.shape, (B, T, H))
    grads = nnx.grad(lambda b: jnp.sum(decoder(x, initial_carry=b(enc.final_carry)).outputs))(
        bridge)
    self.assertGreater(float(max(jnp.abs(l).max() for l in jax.tree.leaves(grads))), 0)

  def test_latent_strategy(self):
    x, _, _ = _inputs()
    model = initstate.nnx.RNN(initstate.gru(H), carry=initstate.latent(3), in_features=D,
                              rngs=nnx.Rngs(0))
    self.assertIsInstance(nnx.state(model, nnx.Param)['carry']['kernel'], nnx.Param)
    model.eval()
    evaluated = model(x).outputs
    heads = _values(model.carry)
    ref = initstate.scan_rnn(initstate.gru(H).bind(_values(model.cell)), x,
                             jnp.broadcast_to(jnp.tanh(heads.bias), (B, H))).outputs
    np.testing.assert_allclose(evaluated, ref, atol=1e-6)


class BidirectionalTest(parameterized.TestCase):

  def _by_hand(self, forward_fn, backward_fn, x, lengths):
    """Each direction run by hand: the backward one on each sequence reversed."""
    fw = forward_fn(x)
    rev = jnp.stack([jnp.concatenate([x[b, :n][::-1], x[b, n:]])
                     for b, n in enumerate(lengths.tolist())])
    out = backward_fn(rev)
    bw = jnp.stack([jnp.concatenate([out[b, :n][::-1], out[b, n:]])
                    for b, n in enumerate(lengths.tolist())])
    return jnp.concatenate([fw, bw], axis=-1)

  def test_nnx_bidirectional_equals_each_direction_by_hand(self):
    x, lengths, _ = _inputs()
    rngs = nnx.Rngs(0)
    model = initstate.nnx.Bidirectional(
        initstate.nnx.RNN(initstate.lstm(H), carry=initstate.learned(0.3), in_features=D,
                          rngs=rngs),
        initstate.nnx.RNN(initstate.gru(4), carry=initstate.learned(-0.2), in_features=D,
                          rngs=rngs))
    out = model(x, seq_lengths=lengths)
    fw, bw = model.forward, model.backward
    valid = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]
    run = lambda cell, m: lambda xs: initstate.scan_rnn(
        cell.bind(_values(m.cell)), xs,
        jax.tree.map(lambda c: jnp.broadcast_to(c, (B,) + c.shape), _values(m.carry)),
        seq_lengths=lengths).outputs
    expected = self._by_hand(run(initstate.lstm(H), fw), run(initstate.gru(4), bw), x,
                             lengths)
    np.testing.assert_allclose(out.outputs, expected * valid, atol=1e-6)
    self.assertEqual(out.outputs.shape, (B, T, H + 4))
    self.assertLen(out.final_carry, 2)

  def test_linen_bidirectional_equals_each_direction_by_hand(self):
    x, lengths, _ = _inputs()
    model = initstate.nn.Bidirectional(
        initstate.nn.RNN(initstate.lstm(H), carry=initstate.learned(0.3)),
        initstate.nn.RNN(initstate.gru(4)), merge_fn=lambda a, b: jnp.concatenate([a, b], -1))
    variables = model.init(jax.random.key(0), x, train=False)
    self.assertEqual(set(variables['params']), {'forward', 'backward'})
    out = model.apply(variables, x, seq_lengths=lengths, train=False)
    p = variables['params']
    fw_fn = lambda xs: initstate.nn.RNN(initstate.lstm(H), carry=initstate.learned()).apply(
        {'params': p['forward']}, xs, seq_lengths=lengths, train=False).outputs
    bw_fn = lambda xs: initstate.nn.RNN(initstate.gru(4)).apply(
        {'params': p['backward']}, xs, seq_lengths=lengths, train=False).outputs
    np.testing.assert_allclose(out.outputs, self._by_hand(fw_fn, bw_fn, x, lengths),
                               atol=1e-6)

  def test_burn_in_mask_covers_both_ends(self):
    x, lengths, _ = _inputs()
    rngs = nnx.Rngs(0)
    model = initstate.nnx.Bidirectional(
        initstate.nnx.RNN(initstate.gru(4), in_features=D, burn_in=1, rngs=rngs),
        initstate.nnx.RNN(initstate.gru(4), in_features=D, burn_in=1, rngs=rngs))
    mask = np.asarray(model(x, seq_lengths=lengths).mask)
    expected = np.zeros((B, T), bool)
    for b, n in enumerate(lengths.tolist()):
      expected[b, 1:n - 1] = True
    np.testing.assert_array_equal(mask, expected)

  def test_errors(self):
    rngs = nnx.Rngs(0)
    rnn = functools.partial(initstate.nnx.RNN, initstate.gru(4), in_features=D, rngs=rngs)
    with self.assertRaisesRegex(TypeError, 'RNN'):
      initstate.nnx.Bidirectional(rnn(), nnx.GRUCell(D, 4, rngs=rngs))
    with self.assertRaisesRegex(ValueError, 'reverse'):
      initstate.nnx.Bidirectional(rnn(reverse=True), rnn())


_MESH_SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    import initstate
    assert jax.device_count() == 8, jax.devices()
    B, T, D, H = 16, 6, 3, 8
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    y = jnp.cumsum(x[..., :1], axis=1)

    def build():
      model = initstate.nnx.RNN(initstate.lstm(H), carry=initstate.noisy_learned(0.5),
                                in_features=D, rngs=nnx.Rngs(params=1, carry=2))
      readout = nnx.Linear(H, 1, rngs=nnx.Rngs(3))
      both = nnx.List([model, readout])
      return both, nnx.Optimizer(both, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(both, optimizer, x, y):
      def loss_fn(both):
        return jnp.mean((both[1](both[0](x).outputs) - y) ** 2)
      loss, grads = nnx.value_and_grad(loss_fn)(both)
      optimizer.update(both, grads)
      return loss

    one, one_opt = build()
    many, many_opt = build()
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = nnx.state((many, many_opt))
    nnx.update((many, many_opt), jax.device_put(state, replicated))
    batch = initstate.training.shard_batch({'x': x, 'y': y}, mesh)
    losses = []
    for _ in range(5):
      losses.append((float(step(one, one_opt, x, y)),
                     float(step(many, many_opt, batch['x'], batch['y']))))
    params = lambda m: jax.tree.leaves(nnx.state(m, nnx.Param))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(params(one), params(many)))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(params(one), params(build()[0])))
    devices = len(batch['x'].sharding.device_set)
    print(json.dumps(dict(diff=diff, moved=moved, losses=losses, devices=devices)))
''')


@pytest.mark.slow
class MeshTest(absltest.TestCase):

  def test_one_device_and_an_8_device_mesh_agree(self):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
               JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', _MESH_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(out['devices'], 8)
    self.assertLess(out['diff'], 1e-5)       # the same tolerance the linen path meets
    self.assertGreater(out['moved'], 1e-3)   # training did move the parameters
    for one, many in out['losses']:
      np.testing.assert_allclose(many, one, rtol=1e-5)


if __name__ == '__main__':
  absltest.main()
