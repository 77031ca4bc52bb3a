"""A worked example of sequence generation: reverse a digit string with an encoder-decoder LSTM.

The task: a string of n digits (n uniform in [min_length, max_length], digits uniform in 0-9),
e.g. `3 1 4`, is to be written back reversed and closed by the end token: `4 1 3 <end>`.
Vocabulary: the digits 0-9, START = 10, END = 11 (V = 12).

The model, pure functions over one param tree (no Flax module):

* encoder: an LSTM (`initstate.lstm`) reads the one-hot digits with `scan_rnn(...,
  seq_lengths=n)`, from a zero carry; its final carry (the carry after digit n - 1) is
* the decoder's initial carry: a second LSTM of the same size reads one-hot tokens (START,
  then the previous target) and a linear read-out gives the logits over the vocabulary.

Training: teacher forcing (`initstate.teacher_forcing`) on the reversed string plus END, the
masked softmax cross-entropy over the n + 1 valid steps, Adam; one jitted step per batch of
fresh strings. Evaluation: free-running greedy decoding (`initstate.decode`) of fresh strings
drawn with a key training never uses, for n + 1 steps at most; exact match = the whole reversed
string and the end token right.

Baseline: the same model and data with the decoder starting from a zero carry: it never sees
the input, so it cannot do better than guessing and must stay near chance (10^-n exact).

Run `python -m initstate.studies.reverse_digits --help`.
"""

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import initstate

Params = dict[str, Any]   # {'encoder': ..., 'decoder': ..., 'readout': {'w', 'b'}}
StepFn = Callable[[initstate.LSTMCarry, jax.Array], tuple[initstate.LSTMCarry, jax.Array]]

NUM_DIGITS = 10
START = 10
END = 11
VOCAB = 12
CARRY_SOURCES = {'encoder carry': 'encoder', 'zero carry': 'zeros'}
MAX_CODE_LENGTH = 18  # 11^18 < 2^63.


@dataclasses.dataclass(frozen=True)
class Config:
  steps: int = 2000
  batch_size: int = 128
  hidden_size: int = 64
  learning_rate: float = 3e-3
  min_length: int = 2
  max_length: int = 5
  eval_size: int = 2000
  seed: int = 0


class DigitsBatch(NamedTuple):
  """A batch of the task, N = max_length.

  Attributes:
    digits: int32 [B, N], the input strings; 0 after each string's length.
    lengths: int32 [B], n per string, in [min_length, max_length].
    targets: int32 [B, N + 1]: the digits reversed, then END, then END as padding.
    target_lengths: int32 [B], n + 1 (the end token counts).
  """
  digits: jax.Array
  lengths: jax.Array
  targets: jax.Array
  target_lengths: jax.Array


def make_batch(key: jax.Array, batch: int, min_length: int, max_length: int) -> DigitsBatch:
  """Draws `batch` digit strings and their reversed targets (see `DigitsBatch`).

  Args:
    key: a PRNG key; the batch is a deterministic function of it.
    batch: B.
    min_length: the shortest string, >= 1.
    max_length: N, the longest string, >= min_length.

  Returns:
    A `DigitsBatch`.
  """
  if not 1 <= min_length <= max_length:
    raise ValueError(f'need 1 <= min_length <= max_length, got min_length={min_length}, '
                     f'max_length={max_length}.')
  k_len, k_dig = jax.random.split(key)
  lengths = jax.random.randint(k_len, (batch,), min_length, max_length + 1, jnp.int32)
  positions = jnp.arange(max_length)[None, :]                       # [1, N]
  valid = positions < lengths[:, None]                              # [B, N]
  digits = jax.random.randint(k_dig, (batch, max_length), 0, NUM_DIGITS, jnp.int32)
  digits = jnp.where(valid, digits, 0)
  # targets[b, i] = digits[b, n - 1 - i] for i < n, END for i >= n.
  source = jnp.clip(lengths[:, None] - 1 - positions, 0, max_length - 1)
  reversed_digits = jnp.take_along_axis(digits, source, axis=1)
  targets = jnp.where(valid, reversed_digits, END)
  targets = jnp.concatenate([targets, jnp.full((batch, 1), END, jnp.int32)], axis=1)
  return DigitsBatch(digits, lengths, targets, lengths + 1)


def chance_exact_match(min_length: int, max_length: int) -> float:
  """Exact-match accuracy of a uniform guess of the digits: 10^-n averaged over the lengths."""
  return float(np.mean([10.0 ** -n for n in range(min_length, max_length + 1)]))


def blind_per_token(min_length: int, max_length: int) -> float:
  """The best per-token accuracy of a decoder that cannot see the input.

  Blind greedy decoding emits one fixed string, k digits then END, for every input: it gets a
  digit right with probability 1/10 at each of the first min(k, n) positions and the end token
  right when k = n. Returns the best k's expected correct tokens over the expected n + 1.
  """
  ns = np.arange(min_length, max_length + 1)
  return float(max(np.sum(0.1 * np.minimum(k, ns) + (k == ns)) / np.sum(ns + 1) for k in ns))


# ---------------------------------------------------------------------------------------------
# The model.


def init_params(key: jax.Array, hidden_size: int) -> Params:
  """Encoder LSTM (one-hot digits in), decoder LSTM (one-hot tokens in), read-out [H, V]."""
  k_enc, k_dec, k_out = jax.random.split(key, 3)
  cell = initstate.lstm(hidden_size)
  w = jax.nn.initializers.lecun_normal()(k_out, (hidden_size, VOCAB), jnp.float32)
  return {'encoder': cell.init(k_enc, NUM_DIGITS), 'decoder': cell.init(k_dec, VOCAB),
          'readout': {'w': w, 'b': jnp.zeros((VOCAB,), jnp.float32)}}


def _cell(params: Params) -> initstate.RecurrentCell:
  return initstate.lstm(params['decoder']['w_h'].shape[0])


def _zero_carry(params: Params, batch: int) -> initstate.LSTMCarry:
  zeros = initstate.zeros()
  return zeros.init_carry(zeros.init(None, _cell(params).carry_template), None, batch,
                          train=False)


def encode(params: Params, digits: jax.Array, lengths: jax.Array) -> initstate.LSTMCarry:
  """The encoder's carry after each string's last digit: `LSTMCarry` leaves [B, H]."""
  cell = _cell(params)
  out = initstate.scan_rnn(cell.bind(params['encoder']), jax.nn.one_hot(digits, NUM_DIGITS),
                           _zero_carry(params, digits.shape[0]), seq_lengths=lengths)
  return out.final_carry


def decoder_step(params: Params) -> StepFn:
  """The decoder as `(carry, tokens int [B]) -> (carry, logits [B, V])`."""
  cell = _cell(params)

  def step_fn(carry: initstate.LSTMCarry,
              tokens: jax.Array) -> tuple[initstate.LSTMCarry, jax.Array]:
    carry, h = cell.apply(params['decoder'], carry, jax.nn.one_hot(tokens, VOCAB))
    logits = h @ params['readout']['w'] + params['readout']['b'][None, :]
    return carry, logits

  return step_fn


def initial_carry(params: Params, batch: DigitsBatch, source: str) -> initstate.LSTMCarry:
  """The decoder's initial carry: the encoder's final carry, or zeros (the baseline)."""
  if source == 'encoder':
    return encode(params, batch.digits, batch.lengths)
  if source == 'zeros':
    return _zero_carry(params, batch.digits.shape[0])
  raise ValueError(f'unknown carry source {source!r}; choose from '
                   f'{sorted(CARRY_SOURCES.values())}.')


def loss_fn(params: Params, batch: DigitsBatch, source: str) -> jax.Array:
  """Teacher-forced masked cross-entropy, nats per target token (end token included)."""
  out = initstate.teacher_forcing(decoder_step(params), initial_carry(params, batch, source),
                                  batch.targets, start_token=START, lengths=batch.target_lengths)
  return initstate.masked_mean(initstate.softmax_cross_entropy(out.logits, batch.targets),
                               out.mask)


def make_train_step(config: Config, source: str, optimizer: optax.GradientTransformation):
  """One jitted Adam step: `(params, opt_state, key) -> (params, opt_state, loss)`.

  The batch of fresh strings is drawn inside the step from `key`.
  """

  @jax.jit
  def train_step(params, opt_state, key):
    batch = make_batch(key, config.batch_size, config.min_length, config.max_length)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, source)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return train_step


@functools.partial(jax.jit, static_argnames=('source',))
def greedy_decode(params: Params, batch: DigitsBatch, source: str) -> initstate.DecodeOutput:
  """Free-running greedy decoding for N + 1 steps (room for the longest string and END)."""
  return initstate.decode(decoder_step(params), initial_carry(params, batch, source),
                          start_token=START, max_length=batch.targets.shape[1], end_token=END)


def score(decoded: initstate.DecodeOutput, batch: DigitsBatch) -> dict[str, Any]:
  """Exact-match and per-token accuracy of decoded tokens [B, N + 1] against the targets.

  A string matches exactly when its decoded tokens equal the reversed digits and the end token,
  so the decoded length is right too. Per-token accuracy: the fraction of the n + 1 target
  positions of each string (end token included) where the decoder emitted the target token
  (positions after the decoder's own end token count as wrong).
  """
  tokens, targets = np.asarray(decoded.tokens), np.asarray(batch.targets)
  emitted = np.asarray(decoded.mask)
  lengths, target_lengths = np.asarray(batch.lengths), np.asarray(batch.target_lengths)
  valid = np.arange(targets.shape[1])[None, :] < target_lengths[:, None]
  correct = (tokens == targets) & emitted & valid
  exact = np.all(correct == valid, axis=1)
  return {
      'exact_match': float(np.mean(exact)),
      'per_token': float(np.sum(correct) / np.sum(valid)),
      'exact_match_by_length': {int(n): float(np.mean(exact[lengths == n]))
                                for n in np.unique(lengths)},
      'exact': exact,
  }


def string_codes(digits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """One int per string (base 11, digit + 1 per position, so lengths are told apart).

  Args:
    digits: int [..., N] with N <= MAX_CODE_LENGTH (the codes are int64).
    lengths: int [...].
  """
  digits, lengths = np.asarray(digits, np.int64), np.asarray(lengths)
  if digits.shape[-1] > MAX_CODE_LENGTH:
    raise ValueError(f'string codes need N <= {MAX_CODE_LENGTH}, got digits {digits.shape}.')
  valid = np.arange(digits.shape[-1]) < lengths[..., None]
  powers = 11 ** np.arange(digits.shape[-1], dtype=np.int64)
  return np.sum(np.where(valid, digits + 1, 0) * powers, axis=-1)


def train_and_evaluate(config: Config, source: str, eval_batch: DigitsBatch) -> dict[str, Any]:
  """Trains one model with its decoder's carry from `source`; decodes `eval_batch` greedily."""
  init_key, data_key, _ = jax.random.split(jax.random.key(config.seed), 3)
  params = init_params(init_key, config.hidden_size)
  optimizer = optax.adam(config.learning_rate)
  opt_state = optimizer.init(params)
  train_step = make_train_step(config, source, optimizer)
  start = time.perf_counter()
  train_loss = []
  for step in range(config.steps):
    params, opt_state, loss = train_step(params, opt_state, jax.random.fold_in(data_key, step))
    train_loss.append(loss)
  train_loss = np.asarray(jax.device_get(train_loss), np.float64)
  decoded = greedy_decode(params, eval_batch, source)
  metrics = score(decoded, eval_batch)
  metrics['seconds'] = time.perf_counter() - start
  window = max(1, min(100, config.steps // 10))
  metrics['final_train_loss'] = float(np.mean(train_loss[-window:]))
  metrics['train_loss'] = train_loss
  metrics['tokens'] = np.asarray(decoded.tokens)
  metrics['decoded_lengths'] = np.asarray(decoded.lengths)
  return metrics


def training_codes(config: Config) -> np.ndarray:
  """The codes of every training string (the batches are regenerated from their keys)."""
  _, data_key, _ = jax.random.split(jax.random.key(config.seed), 3)
  draw = jax.jit(jax.vmap(lambda i: make_batch(jax.random.fold_in(data_key, i),
                                               config.batch_size, config.min_length,
                                               config.max_length)))
  codes = []
  for chunk in range(0, config.steps, 500):
    b = draw(jnp.arange(chunk, min(chunk + 500, config.steps)))
    codes.append(string_codes(b.digits, b.lengths).ravel())
  return np.unique(np.concatenate(codes))


def run(config: Config, out_dir: str | os.PathLike[str] | None = None, *,
        verbose: bool = True) -> dict[str, Any]:
  """Trains both models, prints the table and writes `results.json` into `out_dir` (if given)."""
  for name in ('steps', 'batch_size', 'hidden_size', 'eval_size'):
    if getattr(config, name) < 1:
      raise ValueError(f'`{name}` must be positive, got {getattr(config, name)}.')
  if not 1 <= config.min_length <= config.max_length:
    raise ValueError(f'need 1 <= min_length <= max_length, got {config.min_length}, '
                     f'{config.max_length}.')
  if not config.learning_rate > 0:
    raise ValueError(f'`learning_rate` must be positive, got {config.learning_rate}.')
  start = time.perf_counter()
  eval_key = jax.random.split(jax.random.key(config.seed), 3)[2]
  eval_batch = make_batch(eval_key, config.eval_size, config.min_length, config.max_length)
  if config.max_length <= MAX_CODE_LENGTH:
    seen = np.isin(string_codes(np.asarray(eval_batch.digits), np.asarray(eval_batch.lengths)),
                   training_codes(config))
  else:  # Long strings: (almost) none repeats; not checked.
    seen = np.zeros((config.eval_size,), bool)
  chance = chance_exact_match(config.min_length, config.max_length)
  lengths = list(range(config.min_length, config.max_length + 1))

  models = {}
  for name, source in CARRY_SOURCES.items():
    m = train_and_evaluate(config, source, eval_batch)
    m['exact_match_unseen'] = float(np.mean(m['exact'][~seen])) if np.any(~seen) else None
    models[name] = m

  head = (f'{"decoder carry":<15}{"exact":>8}{"unseen":>8}{"per-token":>10}'
          + ''.join(f'{"n=" + str(n):>8}' for n in lengths) + f'{"loss":>8}{"time s":>8}')
  lines = [
      f'reverse_digits: reverse strings of {config.min_length}-{config.max_length} digits '
      f'(+ end token); LSTM encoder -> LSTM decoder, H={config.hidden_size}; Adam '
      f'{config.learning_rate:g}, {config.steps} steps of batch {config.batch_size}, seed '
      f'{config.seed}; greedy decoding of {config.eval_size} held-out strings '
      f'({np.mean(~seen):.0%} never drawn in training).',
      'exact = whole reversed string and end token right; unseen = exact on the strings never '
      'drawn in training; n=k: exact on strings of k digits; loss = teacher-forced training '
      'loss (nats/token, last steps); time = training and decoding, compilation included.',
      '',
      head,
  ]
  fmt = lambda v: f'{v:>8.3f}' if v is not None else f'{"n/a":>8}'
  for name, m in models.items():
    lines.append(f'{name:<15}{m["exact_match"]:>8.3f}{fmt(m["exact_match_unseen"])}'
                 f'{m["per_token"]:>10.3f}'
                 + ''.join(fmt(m['exact_match_by_length'].get(n)) for n in lengths)
                 + f'{m["final_train_loss"]:>8.3f}{m["seconds"]:>8.1f}')
  blind = blind_per_token(config.min_length, config.max_length)
  eval_lengths = np.asarray(eval_batch.lengths)
  chance_unseen = float(np.mean(10.0 ** -eval_lengths[~seen])) if np.any(~seen) else None
  lines.append(f'{"chance":<15}{chance:>8.4f}'
               + (f'{chance_unseen:>8.0e}' if chance_unseen is not None else f'{"n/a":>8}')
               + f'{blind:>10.3f}'
               + ''.join(f'{10.0 ** -n:>8.0e}' for n in lengths))
  enc, zero = models['encoder carry'], models['zero carry']
  se = np.sqrt(max(chance * (1 - chance), 1e-12) / config.eval_size)
  lines += [
      '',
      f'encoder carry vs zero carry: exact match {enc["exact_match"]:.3f} vs '
      f'{zero["exact_match"]:.3f}; per-token {enc["per_token"]:.3f} vs {zero["per_token"]:.3f}. '
      f'Chance: exact {chance:.4f} = 10^-n averaged over n; per-token {blind:.3f} = the best '
      'input-blind decoder (one fixed string).',
      f'zero carry {"stays near" if zero["exact_match"] <= chance + 4 * se else "is above"} '
      f'chance: it never sees the input.',
  ]
  wall = time.perf_counter() - start
  lines.append(f'wall-clock {wall:.1f} s')
  report = '\n'.join(lines)
  if verbose:
    print(report)

  results = {
      'config': dataclasses.asdict(config),
      'machine': f'{platform.machine()} {os.cpu_count()} cpu, jax {jax.__version__}, '
                 f'backend {jax.default_backend()}',
      'chance_exact_match': chance,
      'chance_exact_match_by_length': {n: 10.0 ** -n for n in lengths},
      'chance_per_token': blind,
      'chance_exact_match_unseen': chance_unseen,
      'eval_fraction_unseen': float(np.mean(~seen)),
      'models': {name: {
          'carry_source': CARRY_SOURCES[name],
          'exact_match': m['exact_match'],
          'exact_match_unseen': m['exact_match_unseen'],
          'per_token': m['per_token'],
          'exact_match_by_length': m['exact_match_by_length'],
          'final_train_loss': m['final_train_loss'],
          'train_loss_every_10_steps': m['train_loss'][::10].tolist(),
          'seconds': m['seconds'],
          'examples': [{'digits': np.asarray(eval_batch.digits[i, :int(eval_batch.lengths[i])]
                                             ).tolist(),
                        'decoded': m['tokens'][i, :m['decoded_lengths'][i]].tolist()}
                       for i in range(min(5, config.eval_size))],
      } for name, m in models.items()},
      'wall_clock_seconds': wall,
      'report': report,
  }
  if out_dir is not None:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'results.json').write_text(json.dumps(results, indent=1))
  return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  d = Config()
  p = argparse.ArgumentParser(
      prog='python -m initstate.studies.reverse_digits',
      description='Trains an LSTM encoder-decoder to reverse digit strings (the encoder\'s '
                  'final carry is the decoder\'s initial carry) and a zero-carry baseline; '
                  'decodes held-out strings greedily; prints a table and writes results.json.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument('--steps', type=int, default=d.steps, help='Adam steps per model')
  p.add_argument('--batch-size', type=int, default=d.batch_size)
  p.add_argument('--hidden-size', type=int, default=d.hidden_size, help='H of both LSTMs')
  p.add_argument('--learning-rate', type=float, default=d.learning_rate)
  p.add_argument('--min-length', type=int, default=d.min_length, help='shortest string')
  p.add_argument('--max-length', type=int, default=d.max_length, help='longest string')
  p.add_argument('--eval-size', type=int, default=d.eval_size, help='held-out strings')
  p.add_argument('--seed', type=int, default=d.seed)
  p.add_argument('--out', default='initstate-results/reverse_digits', help='output folder')
  args = p.parse_args(argv)
  config = Config(steps=args.steps, batch_size=args.batch_size, hidden_size=args.hidden_size,
                  learning_rate=args.learning_rate, min_length=args.min_length,
                  max_length=args.max_length, eval_size=args.eval_size, seed=args.seed)
  try:
    results = run(config, args.out)
  except ValueError as e:
    p.error(str(e))
  print(f'Wrote {args.out}/results.json')
  return results


if __name__ == '__main__':
  main()
