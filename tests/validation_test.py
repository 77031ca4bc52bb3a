"""Bad input to every public function gets a clear error that names the argument.

`CASES` is the list of argument checks: for each, the public function, the argument, what is
checked, the exception type, and a call that breaks the check. Every case must raise that
exception with a message naming the argument (or, for a cell's own checks, the cell); the
checks run at trace time, so the same errors come from inside `jax.jit` (tested for a sample).

The table in `docs/input_checks.md` is generated from `CASES`
(`python tests/validation_test.py --table`), and a test keeps the two identical, so the docs
list exactly what is tested.
"""

import functools
import pathlib
import sys
import tempfile
from typing import Any, Callable, NamedTuple

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import initstate
from initstate import tasks

DOCS_TABLE = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'input_checks.md'
# Checkpoint cases write here; removed when the test process exits.
TMP = tempfile.TemporaryDirectory()

KEY = jax.random.key(0)
B, T, D, H = 2, 5, 3, 4
LSTM = initstate.lstm(H)
LSTM_PARAMS = LSTM.init(KEY, D)
GRU = initstate.gru(H)
GRU_PARAMS = GRU.init(KEY, D)
ELMAN = initstate.elman(H)
ELMAN_PARAMS = ELMAN.init(KEY, D)
X = jnp.ones((B, T, D))
X_T = jnp.ones((B, D))
CARRY = initstate.LSTMCarry(jnp.zeros((B, H)), jnp.zeros((B, H)))
CELL_FN = LSTM.bind(LSTM_PARAMS)
TEMPLATE = LSTM.carry_template
LEARNED = initstate.learned()
LEARNED_PARAMS = LEARNED.init(None, TEMPLATE)
NOISY = initstate.noisy(0.1)
NOISY_PARAMS = NOISY.init(None, TEMPLATE)
CLEANING = initstate.cleaning_noise(4)
BUFFER = CLEANING.init_state(TEMPLATE)
MESH = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
STATE = initstate.training.TrainState.create({'w': jnp.ones(2)}, optax.adam(1e-3), KEY)
CLEANING_STATE = initstate.training.TrainState.create(
    {'w': jnp.ones(2), 'carry': CLEANING.init(None, TEMPLATE)}, optax.adam(1e-3), KEY, BUFFER)
# A hand-made HMM (2 states, 4 symbols): drawing one would compile its Dirichlet sampler here,
# at collection.
HMM = tasks.HMM(jnp.full((2,), 0.5), jnp.full((2, 2), 0.5), jnp.full((2, 4), 0.25))
VOCAB = 4


def _decoder_step(carry, tokens):
  return carry, jnp.zeros((tokens.shape[0], VOCAB))


def _fresh(key, batch):
  return LEARNED.init_carry(LEARNED_PARAMS, key, batch, train=True)


def _wrong_fresh(key, batch):
  del key
  return initstate.LSTMCarry(jnp.zeros((batch, H + 1)), jnp.zeros((batch, H + 1)))


def _rnn(**kwargs):
  call = {k: kwargs.pop(k) for k in list(kwargs) if k in ('seq_lengths', 'resets', 'context',
                                                            'initial_carry')}
  inputs = kwargs.pop('inputs', X)
  module = initstate.nn.RNN(**{'cell': LSTM, 'train': False, **kwargs})
  return module.init(KEY, inputs, **call)


class Case(NamedTuple):
  function: str     # as a user writes it
  argument: str     # the argument the check is about
  check: str        # what must hold
  error: type       # the exception raised when it does not
  call: Callable[[], Any]
  name: str = ''    # the text the message must contain (default: the argument's name)


CASES = (
    # ---- Cells. ----
    Case('lstm, gru, elman', 'hidden_size', 'a positive int', ValueError,
         lambda: initstate.lstm(0)),
    Case('lstm, gru', 'parametrization', "'initstate' or 'pytorch'", ValueError,
         lambda: initstate.lstm(4, parametrization='keras')),
    Case('lstm, gru', 'kernel_init, recurrent_kernel_init, forget_bias',
         "the defaults with parametrization='pytorch'", ValueError,
         lambda: initstate.gru(4, parametrization='pytorch',
                               kernel_init=jax.nn.initializers.zeros), 'fixes the initializers'),
    Case('cell.init', 'input_size', 'a positive int', ValueError,
         lambda: LSTM.init(KEY, 0)),
    Case('cell.apply (lstm, gru, elman)', 'params', "the dict of this cell's init", TypeError,
         lambda: LSTM.apply({'hi': {'kernel': jnp.zeros((H, H))}}, CARRY, X_T)),  # Flax's
    Case('cell.apply (lstm, gru, elman)', 'params', 'w_h is [H, G*H] for this H', ValueError,
         lambda: initstate.lstm(H + 1).apply(LSTM_PARAMS, CARRY, X_T), "params['w_h']"),
    Case('cell.apply (lstm, gru, elman)', 'x', 'an array whose last axis is D (as at init)',
         ValueError, lambda: LSTM.apply(LSTM_PARAMS, CARRY, jnp.ones((B, D + 1)))),
    Case('cell.apply (lstm)', 'carry', 'an LSTMCarry(h, c) (not a tuple, e.g. Flax\'s (c, h))',
         TypeError, lambda: LSTM.apply(LSTM_PARAMS, (CARRY.h, CARRY.c), X_T)),
    Case('cell.apply (lstm, gru, elman)', 'carry', 'leaves [*B, H] with the batch dims of x',
         ValueError, lambda: GRU.apply(GRU_PARAMS, jnp.zeros((B + 1, H)), X_T)),
    Case('cell.apply (gru, elman)', 'carry', 'an array', TypeError,
         lambda: ELMAN.apply(ELMAN_PARAMS, CARRY, X_T)),
    Case('stack', 'cells', 'a non-empty sequence of RecurrentCell', ValueError,
         lambda: initstate.stack([LSTM, 3]), 'stack'),
    Case('stack(...).apply', 'carry', 'one entry per layer', ValueError,
         lambda: initstate.stack([LSTM, LSTM]).apply(
             initstate.stack([LSTM, LSTM]).init(KEY, D), (CARRY,), X_T)),
    Case('from_flax, as_cell', 'module', 'a flax.linen cell', TypeError,
         lambda: initstate.from_flax(3), 'flax.linen cell'),
    # ---- Conversions. ----
    Case('convert.lstm_params_from_flax, convert.gru_params_from_flax, '
         'convert.elman_params_from_flax', 'flax_params', 'one Dense (with kernel) per gate',
         ValueError,
         lambda: initstate.convert.lstm_params_from_flax({'ii': {}})),
    Case('convert.lstm_params_to_flax, convert.gru_params_to_flax, '
         'convert.elman_params_to_flax', 'params', 'w_i [D, G*H], w_h [H, G*H], biases [G*H]',
         ValueError,
         lambda: initstate.convert.lstm_params_to_flax({**LSTM_PARAMS, 'b': jnp.zeros(3)})),
    Case('convert.lstm_params_from_torch, convert.gru_params_from_torch', 'weight_ih',
         'weight_ih [G*H, D], weight_hh [G*H, H], biases [G*H]', ValueError,
         lambda: initstate.convert.lstm_params_from_torch(np.ones((12, D)), np.ones((12, 4)),
                                                          np.ones(12), np.ones(12))),
    Case('convert.lstm_carry_from_flax', 'carry', "Flax's (c, h) pair, not an LSTMCarry",
         TypeError, lambda: initstate.convert.lstm_carry_from_flax(CARRY)),
    Case('convert.lstm_carry_to_flax', 'carry', 'an LSTMCarry', TypeError,
         lambda: initstate.convert.lstm_carry_to_flax((CARRY.h, CARRY.c))),
    # ---- Strategies. ----
    Case('strategy.init', 'template', 'leaves with .shape and .dtype', TypeError,
         lambda: LEARNED.init(None, 5), 'template'),
    Case('noisy, noisy_learned', 'stddev', 'a finite scalar >= 0', ValueError,
         lambda: initstate.noisy(-1.0)),
    Case('learned, noisy_learned, cleaning_noise', 'initial_value',
         'a finite number or an initializer', ValueError,
         lambda: initstate.learned('a')),
    Case('learned(initializer).init', 'rng', 'a PRNG key when the initializer draws',
         ValueError, lambda: initstate.learned(nn.initializers.normal()).init(None, TEMPLATE),
         'PRNG key'),
    Case('strategy.init_carry', 'train', 'a Python bool', TypeError,
         lambda: LEARNED.init_carry(LEARNED_PARAMS, None, B, train=jnp.array(True))),
    Case('strategy.init_carry', 'batch', 'an int >= 0 or a tuple of them', ValueError,
         lambda: LEARNED.init_carry(LEARNED_PARAMS, None, -1, train=False)),
    Case('strategy.init_carry (noisy, noisy_learned, latent, cleaning)', 'rng',
         'given when train=True', ValueError,
         lambda: NOISY.init_carry(NOISY_PARAMS, None, B, train=True)),
    Case('strategy.init_carry and every function taking a key', 'rng',
         'one PRNG key (jax.random.key or a raw uint32 [2])', TypeError,
         lambda: NOISY.init_carry(NOISY_PARAMS, 3, B, train=True)),
    Case('strategy.init_carry (zeros, noisy)', 'params', 'the CarrySpec of its own init',
         TypeError, lambda: NOISY.init_carry(LEARNED_PARAMS, KEY, B, train=True), 'CarrySpec'),
    Case('strategy.init_carry (learned, noisy_learned)', 'params',
         'the learned carry of its own init', TypeError,
         lambda: LEARNED.init_carry(NOISY_PARAMS, None, B, train=False), 'init'),
    # ---- Cleaning noise. ----
    Case('cleaning_noise', 'buffer_size', 'a positive int', ValueError,
         lambda: initstate.cleaning_noise(0)),
    Case('cleaning_noise', 'scale', 'a finite scalar >= 0', ValueError,
         lambda: initstate.cleaning_noise(4, scale=float('nan'))),
    Case('cleaning_noise', 'draw, sign, cross_device', 'one of the listed choices', ValueError,
         lambda: initstate.cleaning_noise(4, sign='random'), 'sign'),
    Case('cleaning.init_carry', 'state', 'given when train=True (from init_state)', ValueError,
         lambda: CLEANING.init_carry(LEARNED_PARAMS, KEY, B, train=True)),
    Case('cleaning.init_carry', 'state', 'a GradientBuffer', TypeError,
         lambda: CLEANING.init_carry(LEARNED_PARAMS, KEY, B, train=True,
                                     state=initstate.EmptyState())),
    Case('cleaning.init_carry', 'state', 'matching the carry and buffer_size', ValueError,
         lambda: CLEANING.init_carry(LEARNED_PARAMS, KEY, B, train=True,
                                     state=initstate.cleaning_noise(8).init_state(TEMPLATE))),
    # The message names the GradientBuffer but calls the argument `buffer`.
    Case('cleaning.update_state', 'state', 'a GradientBuffer', TypeError,
         lambda: CLEANING.update_state(BUFFER.values, CARRY), 'GradientBuffer'),
    Case('cleaning.update_state', 'carry_grads', "the carry's structure, leaves [n, *unit]",
         ValueError, lambda: CLEANING.update_state(BUFFER, jnp.zeros((B, H)))),
    Case('nn.update_carry_state', 'strategy', 'a CarryStrategy', TypeError,
         lambda: initstate.nn.update_carry_state('cleaning', {'rnn': {'state': BUFFER}}, {})),
    Case('nn.update_carry_state', 'carry_state', "the model's 'carry_state' collection",
         TypeError, lambda: initstate.nn.update_carry_state(CLEANING, BUFFER, {})),
    Case('nn.update_carry_state', 'carry_grads', 'a gradient for every state', ValueError,
         lambda: initstate.nn.update_carry_state(
             CLEANING, {'rnn': {'state': BUFFER}}, {}), 'initial_carry'),
    # ---- Conditional carries. ----
    Case('from_context', 'hidden_sizes', 'positive ints', ValueError,
         lambda: initstate.from_context(hidden_sizes=(0,))),
    Case('from_context(...).init', 'context_size', 'a positive int', ValueError,
         lambda: initstate.from_context().init(KEY, 0, TEMPLATE)),
    Case('from_context(...).apply', 'context', '[*B, F] with F as at init', ValueError,
         lambda: (lambda m: m.apply(m.init(KEY, 3, TEMPLATE), jnp.ones((B, 4))))(
             initstate.from_context())),
    Case('from_context, latent', 'squash', 'a callable or None', TypeError,
         lambda: initstate.latent(2, squash='tanh')),
    Case('bridge', 'project', "'auto', 'always' or 'never'", ValueError,
         lambda: initstate.bridge(TEMPLATE, TEMPLATE, project='sometimes')),
    Case('bridge', 'decoder_template', 'as many layers as the encoder (or one)', ValueError,
         lambda: initstate.bridge((TEMPLATE, TEMPLATE, TEMPLATE), (TEMPLATE, TEMPLATE)),
         'layers'),
    Case('bridge(...).apply', 'encoder_carry', 'the encoder template\'s layers and shapes',
         ValueError, lambda: (lambda b: b.apply(b.init(KEY), initstate.LSTMCarry(
             jnp.zeros((B, H + 1)), jnp.zeros((B, H + 1)))))(
                 initstate.bridge(TEMPLATE, initstate.gru(H).carry_template)),
         'encoder layer'),
    Case('latent', 'latent_size', 'a positive int', ValueError,
         lambda: initstate.latent(0)),
    Case('latent(...).init_carry', 'z', '[*batch, Z]', ValueError,
         lambda: (lambda s: s.init_carry(s.init(KEY, TEMPLATE), None, B, train=False,
                                         z=jnp.zeros((B, 3))))(initstate.latent(2))),
    # ---- scan_rnn. ----
    Case('scan_rnn', 'cell_fn', 'callable', TypeError,
         lambda: initstate.scan_rnn(3, X, CARRY)),
    Case('scan_rnn', 'init_carry_fn', 'callable', TypeError,
         lambda: initstate.scan_rnn(CELL_FN, X, None, init_carry_fn=3)),
    Case('scan_rnn', 'inputs', 'arrays of rank >= 2 sharing B and T, T >= 1', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, jnp.ones((B, 0, D)), CARRY)),
    Case('scan_rnn', 'inputs', 'a feature axis for a cell that takes [B, D] per step',
         ValueError, lambda: initstate.scan_rnn(CELL_FN, jnp.ones((B, T)), CARRY)),
    Case('scan_rnn', 'initial_carry', 'leaves with leading batch dim B', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, initstate.LSTMCarry(
             jnp.zeros((B + 1, H)), jnp.zeros((B + 1, H)))), 'carry'),
    Case('scan_rnn', 'initial_carry', 'given, or init_carry_fn to make it', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X), 'initial_carry'),
    Case('scan_rnn', 'cell_fn', 'keeps the carry\'s structure', TypeError,
         lambda: initstate.scan_rnn(lambda c, x: (c.h, x), X, CARRY)),
    Case('scan_rnn', 'cell_fn', 'keeps the carry\'s shapes', ValueError,
         lambda: initstate.scan_rnn(lambda c, x: (c[:, :1], x), X, jnp.zeros((B, H)))),
    Case('scan_rnn', 'cell_fn', 'keeps the carry\'s dtype (e.g. bf16 model, f32 inputs)',
         TypeError, lambda: initstate.scan_rnn(
             initstate.lstm(H, param_dtype=jnp.bfloat16).bind(
                 initstate.lstm(H, param_dtype=jnp.bfloat16).init(KEY, D)),
             X, jax.tree.map(lambda c: c.astype(jnp.bfloat16), CARRY))),
    Case('scan_rnn', 'seq_lengths', 'int [B], values in [0, T]', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, seq_lengths=jnp.array([1, T + 1]))),
    Case('scan_rnn', 'resets', 'bool (or 0/1 int) [B, T]', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, init_carry_fn=_fresh,
                                    resets=jnp.zeros((B, T - 1), bool))),
    Case('scan_rnn', 'resets', 'init_carry_fn given', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, resets=jnp.zeros((B, T), bool)),
         'init_carry_fn'),
    Case('scan_rnn', 'init_carry_fn', 'returns a carry like initial_carry (for resets)',
         ValueError, lambda: initstate.scan_rnn(CELL_FN, X, CARRY, init_carry_fn=_wrong_fresh,
                                                resets=jnp.zeros((B, T), bool))),
    Case('scan_rnn, nn.RNN', 'burn_in', 'an int in [0, T - 1]', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, burn_in=T)),
    Case('scan_rnn', 'stop_gradient_burn_in, reverse, time_major, return_carries',
         'Python bools', TypeError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, reverse='yes'), 'reverse'),
    Case('scan_rnn', 'unroll', 'a positive int or a bool', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, unroll=0)),
    Case('scan_rnn, nn.RNN', 'implementation', "'auto', 'fused' or 'generic'", ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, implementation='fast')),
    Case('scan_rnn', 'implementation', "'fused' only for cell.bind(params) of a built-in LSTM, "
         'GRU or stack of them', ValueError,
         lambda: initstate.scan_rnn(functools.partial(LSTM.apply, LSTM_PARAMS), X, CARRY,
                                    implementation='fused'), 'fused'),
    Case('scan_rnn, nn.RNN', 'checkpoint_every', 'a positive int or None', ValueError,
         lambda: initstate.scan_rnn(CELL_FN, X, CARRY, checkpoint_every=0)),
    # ---- Losses. ----
    Case('squared_error', 'targets', 'the shape of predictions', ValueError,
         lambda: initstate.squared_error(jnp.ones((B, T, 1)), jnp.ones((B, T, 2)))),
    Case('softmax_cross_entropy', 'labels', 'ints shaped like logits without the class axis',
         ValueError, lambda: initstate.softmax_cross_entropy(jnp.ones((B, T, 3)),
                                                             jnp.ones((B, T)))),
    Case('masked_mean', 'mask', 'the shape of values', ValueError,
         lambda: initstate.masked_mean(jnp.ones((B, T)), jnp.ones((B, T, 1), bool))),
    Case('masked_mean, loss_mask', 'mask', 'bool or int (a float mask would weigh, silently)',
         TypeError, lambda: initstate.masked_mean(jnp.ones((B, T)), jnp.full((B, T), 0.5))),
    Case('loss_mask', 'num_steps', 'a positive int', ValueError,
         lambda: initstate.loss_mask(None, 0, batch_size=B)),
    Case('loss_mask', 'seq_lengths', 'int [B]', ValueError,
         lambda: initstate.loss_mask(jnp.array([1.0, 2.0]), T)),
    Case('loss_mask', 'batch_size', 'given (or seq_lengths or mask), an int >= 0', ValueError,
         lambda: initstate.loss_mask(None, T), 'batch_size'),
    # ---- Decoding. ----
    Case('shift_right, teacher_forcing', 'targets', 'int [B, L], L >= 1', ValueError,
         lambda: initstate.teacher_forcing(_decoder_step, jnp.zeros((B, H)),
                                           jnp.ones((B, 3)), start_token=0)),
    Case('shift_right, teacher_forcing, decode', 'start_token, end_token, pad_token',
         'int token ids in [0, V)', ValueError,
         lambda: initstate.teacher_forcing(_decoder_step, jnp.zeros((B, H)),
                                           jnp.ones((B, 3), jnp.int32), start_token=VOCAB),
         'start_token'),
    Case('teacher_forcing, decode', 'step_fn', 'returns logits [B, V] and keeps the carry',
         ValueError, lambda: initstate.teacher_forcing(
             lambda c, t: (c, jnp.zeros((B,))), jnp.zeros((B, H)),
             jnp.ones((B, 3), jnp.int32), start_token=0), 'step_fn'),
    Case('decode', 'max_length', 'a positive int', ValueError,
         lambda: initstate.decode(_decoder_step, jnp.zeros((B, H)), start_token=0,
                                  end_token=1, max_length=0)),
    Case('decode', 'method', "'greedy' or 'sample'", ValueError,
         lambda: initstate.decode(_decoder_step, jnp.zeros((B, H)), start_token=0,
                                  end_token=1, max_length=3, method='beam')),
    Case('decode', 'rng', "given for method='sample'", ValueError,
         lambda: initstate.decode(_decoder_step, jnp.zeros((B, H)), start_token=0,
                                  end_token=1, max_length=3, method='sample'), 'PRNG key'),
    Case('decode', 'temperature', 'a finite scalar > 0', ValueError,
         lambda: initstate.decode(_decoder_step, jnp.zeros((B, H)), start_token=0,
                                  end_token=1, max_length=3, method='sample', rng=KEY,
                                  temperature=0.0)),
    # ---- Flax layer. ----
    Case('nn.RNN', 'cell', 'an initstate RecurrentCell or a flax.linen cell', TypeError,
         lambda: _rnn(cell=3), 'RecurrentCell'),
    Case('nn.RNN', 'carry', 'a CarryStrategy', TypeError,
         lambda: _rnn(carry=3)),
    Case('nn.RNN', 'context_carry', 'a CarryMap', TypeError,
         lambda: _rnn(context_carry=3)),
    Case('nn.RNN', 'inputs', '[B, T, D]', ValueError,
         lambda: _rnn(inputs=X[0])),
    Case('nn.RNN', 'context', 'given exactly when context_carry is set, [B, F]', ValueError,
         lambda: _rnn(context=jnp.ones((B, 2)))),
    Case('nn.RNN', 'rngs', "a 'carry' key when a strategy draws noise in training", ValueError,
         lambda: initstate.nn.RNN(LSTM, carry=NOISY, train=True).init(KEY, X), 'rngs'),
    Case('nn.RNN', 'variables', "the 'carry_state' collection when a stateful strategy trains",
         ValueError, lambda: (lambda m: m.apply(
             {'params': m.init(KEY, X, train=False)['params']}, X, train=True,
             rngs={'carry': KEY}))(initstate.nn.RNN(LSTM, carry=CLEANING)), 'carry_state'),
    # ---- Training. ----
    Case('training.train_step', 'loss_fn', 'callable', TypeError,
         lambda: initstate.training.train_step(3, optax.adam(1e-3))),
    Case('training.train_step, training.TrainState.create', 'optimizer',
         'an optax GradientTransformation', TypeError,
         lambda: initstate.training.train_step(lambda p, b, r, c: 0.0, 'adam')),
    Case('training.train_step', 'strategy', 'a CarryStrategy or None', TypeError,
         lambda: initstate.training.train_step(lambda p, b, r, c: 0.0, optax.adam(1e-3),
                                               strategy='cleaning')),
    Case('training.train_step(...)(state, batch)', 'state', 'a TrainState', TypeError,
         lambda: initstate.training.train_step(lambda p, b, r, c: 0.0, optax.adam(1e-3))(
             {'w': jnp.ones(2)}, {'x': X})),
    Case('training.train_step(...)(state, batch)', 'batch', 'leaves sharing a leading batch dim',
         ValueError, lambda: initstate.training.train_step(
             lambda p, b, r, c: 0.0, optax.adam(1e-3))(STATE, {'x': X, 'y': jnp.ones((B + 1,))})),
    Case('training.train_step(..., strategy=)(state, batch)', 'loss_fn',
         "calls initial_carry exactly once (a stateful strategy's)", ValueError,
         lambda: initstate.training.train_step(lambda p, b, r, c: 0.0, optax.adam(1e-3),
                                               strategy=CLEANING)(CLEANING_STATE, {'x': X}),
         'initial_carry'),
    Case('training.train_step(..., strategy=)(state, batch)', 'state.carry_state',
         "the stateful strategy's state (its init_state)", ValueError,
         lambda: initstate.training.train_step(
             lambda p, b, r, c: jnp.sum(c(p['carry'], initstate.training.example_keys(r, B)).h),
             optax.adam(1e-3), strategy=CLEANING)(
                 CLEANING_STATE._replace(carry_state=initstate.EmptyState()), {'x': X}),
         'init_state'),
    Case('training.TrainState.create, training.example_keys', 'rng', 'a PRNG key', TypeError,
         lambda: initstate.training.TrainState.create({'w': jnp.ones(2)}, optax.adam(1e-3), 0)),
    Case('training.example_keys', 'batch_size', 'a positive int', ValueError,
         lambda: initstate.training.example_keys(KEY, 0)),
    Case('training.per_example_carry', 'strategy', 'a CarryStrategy', TypeError,
         lambda: initstate.training.per_example_carry(
             'learned', LEARNED_PARAMS, initstate.training.example_keys(KEY, B), train=True)),
    Case('training.per_example_carry', 'keys', 'one key per example, [B]', TypeError,
         lambda: initstate.training.per_example_carry(NOISY, NOISY_PARAMS, KEY, train=True)),
    Case('training.shard_batch', 'axis', 'an axis of the mesh', ValueError,
         lambda: initstate.training.shard_batch(X, MESH, axis='batch')),
    Case('training.shard_batch, training.split_for_pmap', 'batch',
         'B a multiple of the device count', ValueError,
         lambda: initstate.training.split_for_pmap(jnp.ones((3, 2)), 2), 'batch size'),
    Case('training.split_for_pmap, training.replicate_for_pmap', 'num_devices',
         'a positive int', ValueError, lambda: initstate.training.replicate_for_pmap(STATE, 0)),
    # ---- Checkpoints. ----
    Case('training.save_checkpoint', 'state', 'a pytree of arrays', TypeError,
         lambda: initstate.training.save_checkpoint(
             tempfile.mkdtemp(dir=TMP.name) + '/ck', {'f': print})),
    Case('training.save_checkpoint', 'directory', 'does not exist yet', FileExistsError,
         lambda: initstate.training.save_checkpoint(tempfile.mkdtemp(dir=TMP.name), STATE),
         'already exists'),
    Case('training.restore_checkpoint', 'directory', 'an initstate checkpoint',
         FileNotFoundError, lambda: initstate.training.restore_checkpoint(
             tempfile.mkdtemp(dir=TMP.name), STATE), 'not an initstate'),
    Case('training.restore_checkpoint', 'like', 'the checkpoint\'s tree, shapes and dtypes',
         ValueError,
         lambda: initstate.training.restore_checkpoint(
             initstate.training.save_checkpoint(tempfile.mkdtemp(dir=TMP.name) + '/ck', STATE),
             initstate.training.TrainState.create({'w': jnp.ones(3)}, optax.adam(1e-3), KEY)),
         'different configuration'),
    # ---- Tasks. ----
    Case('tasks.random_hmm', 'num_states, num_symbols', 'ints >= 2', ValueError,
         lambda: tasks.random_hmm(KEY, num_states=1), 'num_states'),
    Case('tasks.random_hmm', 'stickiness', 'in [0, 1)', ValueError,
         lambda: tasks.random_hmm(KEY, stickiness=1.0)),
    Case('tasks.sample', 'num_sequences, length', 'ints >= 1', ValueError,
         lambda: tasks.sample(KEY, HMM, 4, 0), 'length'),
    Case('tasks.sample_sentences', 'num, length', 'ints >= 1', ValueError,
         lambda: tasks.sample_sentences(KEY, HMM, 4, 0, 1, 2), 'length'),
    Case('tasks.sample_sentences', 'min_len, max_len',
         'ints (or traced int scalars), 1 <= min_len <= max_len', ValueError,
         lambda: tasks.sample_sentences(KEY, HMM, 4, 6, 3, 2)),
    Case('tasks.bayes_step_losses, tasks.fit_hmm', 'symbols', 'int [N, T], values in [0, V)',
         ValueError, lambda: tasks.bayes_step_losses(HMM, jnp.full((2, 3), 99))),
    Case('tasks.bayes_step_losses, tasks.fit_hmm', 'starts',
         'bool (or 0/1 int), shaped like symbols', ValueError,
         lambda: tasks.fit_hmm(HMM, jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 4), bool))),
    Case('tasks.fit_hmm', 'iterations', 'a positive int', ValueError,
         lambda: tasks.fit_hmm(HMM, jnp.zeros((2, 3), jnp.int32), iterations=0)),
    Case('tasks.fit_hmm', 'pseudocount', 'a finite scalar > 0', ValueError,
         lambda: tasks.fit_hmm(HMM, jnp.zeros((2, 3), jnp.int32), pseudocount=0.0)),
)

# A sample of checks also run inside `jax.jit`: they hold at trace time.
JITTED = {
    'scan_rnn seq_lengths': lambda: jax.jit(lambda x: initstate.scan_rnn(
        CELL_FN, x, CARRY, seq_lengths=jnp.array([1.0, 2.0])))(X),
    'scan_rnn carry shape': lambda: jax.jit(lambda c: initstate.scan_rnn(CELL_FN, X, c))(
        initstate.LSTMCarry(jnp.zeros((B, H + 1)), jnp.zeros((B, H + 1)))),
    'masked_mean mask': lambda: jax.jit(initstate.masked_mean)(
        jnp.ones((B, T)), jnp.full((B, T), 0.5)),
    'init_carry rng': lambda: jax.jit(lambda p: NOISY.init_carry(p, 3, B, train=True))(
        NOISY_PARAMS),
    'cell carry': lambda: jax.jit(LSTM.apply)(LSTM_PARAMS, (CARRY.h, CARRY.c), X_T),
}
JITTED_ERRORS = {'scan_rnn seq_lengths': (ValueError, 'seq_lengths'),
                 'scan_rnn carry shape': (ValueError, 'carry'),
                 'masked_mean mask': (TypeError, 'mask'),
                 'init_carry rng': (TypeError, 'rng'),
                 'cell carry': (TypeError, 'LSTMCarry')}


def table() -> str:
  """The Markdown table of `CASES` (what docs/input_checks.md holds)."""
  lines = ['| function | argument | must be | error |', '| --- | --- | --- | --- |']
  for case in CASES:
    check = case.check.replace('*', r'\*')   # Markdown: no emphasis from [*B, H] or G*H.
    lines.append(f'| `{case.function}` | `{case.argument}` | {check} | '
                 f'`{case.error.__name__}` |')
  return '\n'.join(lines) + '\n'


class ArgumentChecksTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (f'{i:03d}_{c.function.split(",")[0].split(" ")[0]}_{c.argument.split(",")[0]}', c)
      for i, c in enumerate(CASES))
  def test_bad_input_is_refused_by_name(self, case):
    needle = case.name or case.argument.split(',')[0].strip()
    with self.assertRaises(case.error) as raised:
      case.call()
    message = str(raised.exception)
    self.assertIn(needle, message, msg=f'{case.function}: the error does not name {needle!r}: '
                                       f'{message!r}')

  @parameterized.named_parameters((name, name) for name in JITTED)
  def test_checks_hold_under_jit(self, name):
    error, needle = JITTED_ERRORS[name]
    with self.assertRaisesRegex(error, needle):
      JITTED[name]()

  def test_good_input_passes_the_same_checks(self):
    # The checks must not refuse what the library documents as valid.
    out = initstate.scan_rnn(CELL_FN, X, None, init_carry_fn=_fresh, rng=KEY,
                             seq_lengths=jnp.array([T, 2]), resets=jnp.zeros((B, T), jnp.int32),
                             burn_in=1, unroll=True, checkpoint_every=2)
    self.assertEqual(out.outputs.shape, (B, T, H))
    raw_key = jax.random.PRNGKey(0)   # Legacy raw keys are accepted wherever a key is.
    NOISY.init_carry(NOISY_PARAMS, raw_key, B, train=True)
    initstate.training.per_example_carry(
        NOISY, NOISY_PARAMS, initstate.training.example_keys(raw_key, B), train=True)
    self.assertEqual(float(initstate.masked_mean(jnp.ones((B, T)), jnp.ones((B, T), int))), 1.)
    initstate.noisy(np.float32(0.5))
    initstate.learned(np.float32(0.5))

  def test_docs_table_lists_exactly_these_checks(self):
    text = DOCS_TABLE.read_text()
    self.assertIn(table(), text, msg='docs/input_checks.md is out of date: regenerate its '
                                     'table with `python tests/validation_test.py --table`.')


if __name__ == '__main__':
  if sys.argv[1:] == ['--table']:
    print(table(), end='')
  else:
    absltest.main()
