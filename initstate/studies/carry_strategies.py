"""The main job: initial-carry strategies head to head on a reset-rich HMM task.

Re-checks the findings of R2RT, "Non-Zero Initial States for Recurrent Neural Networks" (2016),
for data with many state resets:

  1. every non-zero initial state sped up training and improved generalisation;
  2. a learned initial state beat zero-mean noise;
  3. noise on top of a learned initial state added only a marginal gain.

Sequences come from a fixed random hidden Markov model, so the Bayes-optimal loss is known
exactly (forward algorithm); every strategy is reported as excess loss over that floor, overall
and at positions 1, 2, 3 and 5 after a reset. Within a seed, every strategy sees the same data
and starts from the same weights; all seeds of a strategy train at once as one sweep
(`initstate.training.sweep`, by default chunks of 4 seeds and one CPU device per core).

Run `python -m initstate --help`.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import pathlib
import platform
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import initstate
from initstate import tasks
from initstate.studies import devices

STRATEGIES = {
    'zeros': initstate.zeros,
    'noisy(0.3)': lambda: initstate.noisy(0.3),
    'noisy(0.01)': lambda: initstate.noisy(0.01),
    'learned': initstate.learned,
    'noisy_learned(0.3)': lambda: initstate.noisy_learned(0.3),
    # Zimmermann et al. (2012) trick 3: deviations drawn from the last 256 per-sequence
    # gradients at the initial carry, random sign per unit. The loss is a mean over the
    # batch's counted steps, so the gradients are scaled by that count: a deviation is the
    # gradient of one sequence's summed loss (the error flow at s0 of the source's
    # sum-of-errors objective).
    'cleaning': lambda: initstate.cleaning_noise(256),
    # z ~ N(0, I_4) through a learned projection (tanh); z = 0 at evaluation.
    'latent(4)': lambda: initstate.latent(4),
    # Stream task only: an MLP maps the CONTEXT_STEPS symbols before the window (those of the
    # sequence the window starts in) to the first carry; resets use a learned carry.
    'conditional': initstate.learned,
}
CONDITIONAL = 'conditional'
CONTEXT_STEPS = 4
DEFAULT_STRATEGIES = ('zeros', 'noisy(0.3)', 'noisy(0.01)', 'learned', 'noisy_learned(0.3)',
                      'cleaning', 'latent(4)')
POSITIONS = (1, 2, 3, 5)
BUDGET_FRACTIONS = (0.1, 0.25, 0.5)
SPEED_MARGIN = 0.02  # nats: "within the margin of the best final validation loss".
SPEED_METRIC = 'val_at_10%'  # Training speed in the verdicts: validation loss at 10% of steps.


@dataclasses.dataclass(frozen=True)
class Config:
  """Every setting of a study run (the defaults are the default run)."""
  task: str = 'short'             # 'short' sequences, or a 'stream' cut into windows.
  num_states: int = 4             # K hidden states.
  num_symbols: int = 8            # V symbols.
  stickiness: float = 0.8
  seq_len: int = 12               # T symbols per sequence (short) / window length (stream).
  min_seq_len: int = 4            # stream: sequences have lengths in [min_seq_len, seq_len].
  train_sequences: int = 1024     # a fixed, limited training set (per seed).
  val_sequences: int = 2048
  cell: str = 'lstm'
  hidden_size: int = 32
  batch_size: int = 32
  learning_rate: float = 3e-3
  steps: int = 1500
  eval_every: int = 25
  seeds: int = 5
  task_seed: int = 0
  strategies: tuple[str, ...] = DEFAULT_STRATEGIES  # stream: CONDITIONAL is added
  chunk_size: int | None = 4      # seeds vectorised together (None: all; see training.sweep)
  devices: int = 1                # split the seeds across this many devices


FULL = dict(hidden_size=64, steps=5000, seeds=10, eval_every=50)


# ---------------------------------------------------------------------------------------------
# Data.


def make_split(key: jax.Array, hmm: tasks.HMM, config: Config, num: int) -> dict[str, Any]:
  """A split as numpy arrays [N, W]: inputs, targets, mask, resets, position, bayes; context.

  At step t the model reads `inputs[:, t]` and predicts `targets[:, t]`. `position` is how
  many symbols of the current sequence it has read (1 = first prediction after a reset);
  `bayes` is the exact Bayes-optimal loss of that prediction; `mask` marks steps with a target
  of the same sequence; `resets` marks steps where a new sequence starts. `context` [N, C, V]
  holds, one-hot, the C = CONTEXT_STEPS symbols just before the window that belong to the
  sequence the window starts in (most recent first; zeros elsewhere, and always zeros for the
  short task, whose sequences start with the window).
  """
  if config.task == 'short':
    symbols = tasks.sample(key, hmm, num, config.seq_len + 1)
    bayes = np.asarray(tasks.bayes_step_losses(hmm, symbols))
    symbols = np.asarray(symbols)
    width = config.seq_len
    return dict(inputs=symbols[:, :-1], targets=symbols[:, 1:],
                mask=np.ones((num, width), bool), resets=np.zeros((num, width), bool),
                position=np.broadcast_to(np.arange(1, width + 1), (num, width)).copy(),
                bayes=bayes,
                context=np.zeros((num, CONTEXT_STEPS, config.num_symbols), np.float32))
  if config.task != 'stream':
    raise ValueError(f'unknown task {config.task!r}; use "short" or "stream".')
  # A long stream of sequences with random lengths, cut into windows of `seq_len` steps.
  lo, hi, width = config.min_seq_len, config.seq_len, config.seq_len
  k_len, k_seq = jax.random.split(key)
  count = 2 * num * width // lo + 2
  lengths = np.asarray(jax.random.randint(k_len, (count,), lo, hi + 1))
  symbols = tasks.sample(k_seq, hmm, count, hi)
  bayes = np.asarray(tasks.bayes_step_losses(hmm, symbols))
  symbols = np.asarray(symbols)
  stream_x, stream_pos, stream_bayes = [], [], []
  for i, n in enumerate(lengths):
    stream_x.append(symbols[i, :n])
    stream_pos.append(np.arange(n))
    stream_bayes.append(np.concatenate([bayes[i, :n - 1], [0.0]]))
  stream_x, stream_pos = np.concatenate(stream_x), np.concatenate(stream_pos)
  stream_bayes = np.concatenate(stream_bayes)
  total = num * width
  if len(stream_x) < total + 1:
    raise AssertionError('stream too short')  # Cannot happen: count covers it.
  cut = lambda a: a[:total].reshape(num, width)
  next_pos = stream_pos[1:total + 1].reshape(num, width)
  starts = np.arange(num) * width
  context = np.zeros((num, CONTEXT_STEPS, config.num_symbols), np.float32)
  for j in range(1, CONTEXT_STEPS + 1):  # j steps back: same sequence iff j <= its position.
    same = (stream_pos[starts] >= j) & (starts >= j)
    context[same, j - 1, stream_x[starts[same] - j]] = 1.0
  return dict(inputs=cut(stream_x), targets=stream_x[1:total + 1].reshape(num, width),
              mask=next_pos > 0, resets=cut(stream_pos) == 0, position=next_pos,
              bayes=np.where(next_pos > 0, cut(stream_bayes), 0.0), context=context)


# ---------------------------------------------------------------------------------------------
# Model and training.


def make_cell(config: Config) -> initstate.RecurrentCell:
  """The study's cell: an LSTM or a GRU of `config.hidden_size` units."""
  return {'lstm': initstate.lstm, 'gru': initstate.gru}[config.cell](config.hidden_size)


class Predictor(nn.Module):
  """Reads one-hot symbols, predicts the next symbol's logits: [B, W] -> [B, W, V]."""
  config: Config
  carry: initstate.CarryStrategy
  conditional: bool = False

  @nn.compact
  def __call__(self, symbols, resets, context, *, train: bool):
    c = self.config
    cell = make_cell(c)
    x = jax.nn.one_hot(symbols, c.num_symbols)
    initial_carry = None
    if self.conditional:
      net = initstate.from_context(hidden_sizes=(c.hidden_size,))
      flat = jnp.reshape(context, (context.shape[0], -1))   # [B, C * V]
      initial_carry = net.apply(
          self.param('init_net', net.init, flat.shape[-1], cell.carry_template), flat)
    out = initstate.nn.RNN(cell, carry=self.carry, name='rnn')(
        x, resets=resets, initial_carry=initial_carry, train=train)
    return nn.Dense(c.num_symbols, name='readout')(out.outputs)


def _apply(model, variables, split, *, train, rng=None):
  resets = jnp.asarray(split['resets']) if model.config.task == 'stream' else None
  logits = model.apply(variables, split['inputs'], resets, split['context'], train=train,
                       rngs=None if rng is None else {'carry': rng})
  return initstate.softmax_cross_entropy(logits, split['targets'])


def make_trainer(config: Config, strategy_name: str):
  """Returns jitted (init, train_chunk, evaluate) functions over seeds (`training.sweep`).

  The training state is (params, optimiser state, carry state); the carry state is the model's
  'carry_state' collection, which holds the gradient buffer of cleaning noise (an empty dict
  for every strategy without state).
  """
  if strategy_name == CONDITIONAL and config.task != 'stream':
    raise ValueError('the conditional carry needs context, which only the stream task has '
                     '(--task stream).')
  strategy = STRATEGIES[strategy_name]()
  model = Predictor(config, strategy, conditional=strategy_name == CONDITIONAL)
  template = make_cell(config).carry_template
  stateful = strategy.is_stateful(template)
  optimizer = optax.adam(config.learning_rate)
  batch_size = config.batch_size

  def init(seed_key, train_split):
    batch = jax.tree.map(lambda a: a[:batch_size], train_split)
    variables = model.init(jax.random.fold_in(seed_key, 0), batch['inputs'],
                           None if config.task == 'short' else batch['resets'],
                           batch['context'], train=False)
    params = variables['params']
    carry_state = variables['carry_state'] if stateful else {}
    return params, optimizer.init(params), carry_state

  def train_chunk(state, seed_key, train_split, first_step):
    def step(state, i):
      params, opt_state, carry_state = state
      k = jax.random.fold_in(jax.random.fold_in(seed_key, 1), i)
      k_batch, k_noise = jax.random.split(k)
      idx = jax.random.randint(k_batch, (batch_size,), 0, config.train_sequences)
      batch = jax.tree.map(lambda a: a[idx], train_split)

      def loss_fn(p, perturbations):
        variables = {'params': p}
        if stateful:
          variables.update(carry_state=carry_state, perturbations=perturbations)
        per_step = _apply(model, variables, batch, train=True, rng=k_noise)
        return initstate.masked_mean(per_step, batch['mask'])

      perturbations = {}
      if stateful:  # A zero probe at the initial carry: its gradient is dLoss/dcarry.
        perturbations = {'rnn': {'initial_carry': jax.tree.map(
            lambda t: jnp.zeros((batch_size,) + t.shape, t.dtype), template)}}
      loss, (grads, carry_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
          params, perturbations)
      if stateful:  # Per-sequence gradients of each sequence's summed loss.
        count = jnp.sum(batch['mask']).astype(jnp.float32)
        carry_grads = jax.tree.map(lambda g: g * count, carry_grads)
        carry_state = initstate.nn.update_carry_state(strategy, carry_state, carry_grads)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state, carry_state), loss

    return jax.lax.scan(step, state, first_step + jnp.arange(config.eval_every))

  def evaluate(state, split):
    per_step = _apply(model, {'params': state[0]}, split, train=False)
    return initstate.masked_mean(per_step, split['mask']), per_step

  sweep = devices.sweeper(config.chunk_size, config.devices)
  return (sweep(init, 0, one_device=True), sweep(train_chunk, (0, 0, 0, None)),
          sweep(evaluate, 0))


# ---------------------------------------------------------------------------------------------
# Metrics and verdicts.


def excess_by_position(per_step: np.ndarray, split: dict[str, np.ndarray],
                       positions: Sequence[int] = POSITIONS) -> dict[int, float]:
  """Mean excess loss over Bayes at each position after a reset (NaN where none occurs)."""
  out = {}
  for p in positions:
    sel = split['mask'] & (split['position'] == p)
    out[p] = float(np.mean((per_step - split['bayes'])[sel])) if sel.any() else float('nan')
  return out


def steps_to_margin(curve: np.ndarray, eval_steps: np.ndarray, target: float) -> float:
  """The first evaluated step whose validation loss is <= target; NaN if never."""
  hit = np.nonzero(curve <= target)[0]
  return float(eval_steps[hit[0]]) if hit.size else float('nan')


MIN_EFFECT = 1e-3  # nats: differences smaller than this count as ties, however consistent.


def compare(candidate: np.ndarray, baseline: np.ndarray) -> tuple[str, float, float]:
  """Paired comparison over seeds of a lower-is-better metric.

  Returns ('better' | 'worse' | 'tie', mean gain, standard error), where gain = baseline -
  candidate per seed; 'better' means a mean gain above both 2 standard errors of the mean and
  `MIN_EFFECT`, 'worse' the same below zero, and 'tie' anything else.
  """
  gain = np.asarray(baseline, float) - np.asarray(candidate, float)
  if gain.ndim != 1 or len(gain) < 2:
    raise ValueError(f'need a metric per seed for at least 2 seeds, got shape {gain.shape}.')
  mean = float(np.mean(gain))
  se = float(np.std(gain, ddof=1) / math.sqrt(len(gain)))
  threshold = max(2 * se, MIN_EFFECT)
  if mean > threshold:
    return 'better', mean, se
  if mean < -threshold:
    return 'worse', mean, se
  return 'tie', mean, se


VERDICT_RULE = (
    'Rule: per seed, gain = metric(baseline) - metric(candidate) (lower loss is better); a '
    f'candidate is "better" when the mean gain over seeds exceeds both 2 standard errors and '
    f'{MIN_EFFECT} nats, "worse" when it is below the negative of that, else a "tie" (inside '
    'the seed spread). Speed = validation loss after 10% of the steps; generalisation = final '
    'validation loss. A claim is reproduced when every comparison it makes is "better", not '
    'reproduced when one is "worse", inconclusive otherwise.')


def verdicts(metrics: dict[str, dict[str, np.ndarray]]) -> list[str]:
  """One line per R2RT claim: reproduced, not reproduced, or inconclusive."""
  lines = []
  have = set(metrics)
  nonzero = [s for s in metrics if s != 'zeros']
  if 'zeros' in have and nonzero:
    results = []
    for s in nonzero:
      speed = compare(metrics[s][SPEED_METRIC], metrics['zeros'][SPEED_METRIC])
      gen = compare(metrics[s]['final_val'], metrics['zeros']['final_val'])
      results.append((s, speed, gen))
    kinds = [r[1][0] for r in results] + [r[2][0] for r in results]
    verdict = ('reproduced' if all(k == 'better' for k in kinds) else
               'not reproduced' if 'worse' in kinds else 'inconclusive')
    detail = '; '.join(f'{s}: speed {sp[0]} ({sp[1]:+.4f}±{sp[2]:.4f}), generalisation '
                       f'{g[0]} ({g[1]:+.4f}±{g[2]:.4f})' for s, sp, g in results)
    lines.append(f'Claim 1, every non-zero carry trains faster and generalises better than '
                 f'zeros: {verdict.upper()} [{detail}]')
  else:
    lines.append('Claim 1: n/a (needs zeros and a non-zero strategy)')
  if {'learned', 'noisy(0.3)'} <= have:
    kind, mean, se = compare(metrics['learned']['final_val'], metrics['noisy(0.3)']['final_val'])
    verdict = {'better': 'reproduced', 'worse': 'not reproduced', 'tie': 'inconclusive'}[kind]
    lines.append(f'Claim 2, learned beats zero-mean noise (0.3): {verdict.upper()} '
                 f'[learned {kind}, gain {mean:+.4f}±{se:.4f} nats]')
  else:
    lines.append('Claim 2: n/a (needs learned and noisy(0.3))')
  if {'learned', 'noisy_learned(0.3)', 'zeros'} <= have:
    kind, mean, se = compare(metrics['noisy_learned(0.3)']['final_val'],
                             metrics['learned']['final_val'])
    _, base_gain, _ = compare(metrics['learned']['final_val'], metrics['zeros']['final_val'])
    if kind == 'worse':
      verdict = 'not reproduced (the noise hurt)'
    elif kind == 'better' and mean > 0.5 * max(base_gain, 0.0):
      verdict = 'not reproduced (a large gain: over half of learned-vs-zeros)'
    else:
      verdict = 'reproduced'
    lines.append(f'Claim 3, noise on a learned carry adds at most a marginal gain (at most half '
                 f'the learned-vs-zeros gain {base_gain:+.4f}): {verdict.upper()} '
                 f'[noisy_learned(0.3) vs learned: {kind}, gain {mean:+.4f}±{se:.4f} nats]')
  else:
    lines.append('Claim 3: n/a (needs zeros, learned and noisy_learned(0.3))')
  if 'learned' in have:
    for s in ('cleaning', 'latent(4)', CONDITIONAL):
      if s in have:
        gen = compare(metrics[s]['final_val'], metrics['learned']['final_val'])
        best = compare(metrics[s]['best_val'], metrics['learned']['best_val'])
        speed = compare(metrics[s][SPEED_METRIC], metrics['learned'][SPEED_METRIC])
        lines.append(f'Against learned, {s}: final {gen[0]} ({gen[1]:+.4f}±{gen[2]:.4f}), '
                     f'best {best[0]} ({best[1]:+.4f}±{best[2]:.4f}), speed {speed[0]} '
                     f'({speed[1]:+.4f}±{speed[2]:.4f})')
  return lines


# ---------------------------------------------------------------------------------------------
# The run.


def run_study(config: Config, out_dir: str | os.PathLike[str], *, progress: bool = True,
              plots: bool = True) -> dict[str, Any]:
  """Runs the study, prints the table and verdicts, writes results into `out_dir`."""
  for name in config.strategies:
    if name not in STRATEGIES:
      raise ValueError(f'unknown strategy {name!r}; choose from {list(STRATEGIES)}.')
    if name == CONDITIONAL and config.task != 'stream':
      raise ValueError(f'{CONDITIONAL!r} needs context, which only the stream task has '
                       '(--task stream).')
  if config.seeds < 2:
    raise ValueError(f'--seeds must be at least 2 to measure a spread, got {config.seeds}.')
  if config.steps % config.eval_every:
    raise ValueError(f'--steps ({config.steps}) must be a multiple of --eval-every '
                     f'({config.eval_every}).')
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  hmm = tasks.random_hmm(jax.random.key(config.task_seed), config.num_states,
                           config.num_symbols, stickiness=config.stickiness)
  seed_keys = jax.vmap(jax.random.key)(jnp.arange(config.seeds))
  data_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 7)))(seed_keys)
  splits = [(make_split(dk[0], hmm, config, config.train_sequences),
             make_split(dk[1], hmm, config, config.val_sequences)) for dk in data_keys]
  stacked = lambda i: {k: np.stack([s[i][k] for s in splits]) for k in splits[0][i]}
  train_data, val_data = stacked(0), stacked(1)
  val_bayes = float(np.mean(val_data['bayes'][val_data['mask']]))
  num_chunks = config.steps // config.eval_every
  eval_steps = np.arange(1, num_chunks + 1) * config.eval_every

  try:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:  # The progress bar is optional for library users.
    tqdm = None
  # disable=None: a bar on a terminal, nothing in logs and pipes.
  bar = (tqdm(total=num_chunks * len(config.strategies), desc='training', unit='chunk',
              disable=None if progress else True) if tqdm else None)
  raw = {}
  device_train = jax.tree.map(jnp.asarray, train_data)
  device_val = jax.tree.map(jnp.asarray, val_data)
  for name in config.strategies:
    start = time.perf_counter()
    init, train_chunk, evaluate = make_trainer(config, name)
    state = init(seed_keys, device_train)
    val_curve, train_curve = [], []
    for c in range(num_chunks):
      state, train_loss = train_chunk(state, seed_keys, device_train, c * config.eval_every)
      val_loss, per_step = evaluate(state, device_val)
      val_curve.append(np.asarray(val_loss))
      train_curve.append(np.asarray(train_loss).mean(axis=1))
      if bar:
        bar.set_postfix_str(f'{name} val {float(np.mean(val_loss)):.3f}')
        bar.update(1)
    per_step = np.asarray(per_step)
    raw[name] = dict(val_curve=np.stack(val_curve, 1), train_curve=np.stack(train_curve, 1),
                     per_step=per_step, seconds=time.perf_counter() - start)
  if bar:
    bar.close()

  metrics = {}
  for name, r in raw.items():
    m = {'final_val': r['val_curve'][:, -1], 'best_val': r['val_curve'].min(axis=1),
         'final_train': r['train_curve'][:, -1]}
    m['excess'] = np.array([
        np.mean((r['per_step'][s] - val_data['bayes'][s])[val_data['mask'][s]])
        for s in range(config.seeds)])
    for p in POSITIONS:
      m[f'excess@{p}'] = np.array([excess_by_position(
          r['per_step'][s], {k: v[s] for k, v in val_data.items()})[p]
          for s in range(config.seeds)])
    for f in BUDGET_FRACTIONS:
      idx = max(round(f * num_chunks) - 1, 0)
      m[f'val_at_{int(f * 100)}%'] = r['val_curve'][:, idx]
    metrics[name] = m
  best_final = np.min(np.stack([m['final_val'] for m in metrics.values()]), axis=0)  # [S]
  for name, m in metrics.items():
    m['steps_to_margin'] = np.array([
        steps_to_margin(raw[name]['val_curve'][s], eval_steps, best_final[s] + SPEED_MARGIN)
        for s in range(config.seeds)])

  report = _format_report(config, metrics, raw, val_bayes)
  print(report)
  results = {
      'config': dataclasses.asdict(config),
      'bayes_val_loss': val_bayes,
      'machine': f'{platform.machine()} {os.cpu_count()} cpu, jax {jax.__version__}, '
                 f'backend {jax.default_backend()}',
      'eval_steps': eval_steps.tolist(),
      'strategies': {name: {
          'metrics': {k: v.tolist() for k, v in metrics[name].items()},
          'val_curve': raw[name]['val_curve'].tolist(),
          'train_curve': raw[name]['train_curve'].tolist(),
          'seconds': raw[name]['seconds']} for name in metrics},
      'verdicts': verdicts(metrics),
      'verdict_rule': VERDICT_RULE,
      'report': report,
  }
  (out_dir / 'results.json').write_text(json.dumps(results, indent=1, allow_nan=True))
  with open(out_dir / 'results.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    keys = list(next(iter(metrics.values())))
    writer.writerow(['strategy', 'seed'] + keys)
    for name, m in metrics.items():
      for s in range(config.seeds):
        writer.writerow([name, s] + [f'{m[k][s]:.6g}' for k in keys])
  if plots:
    _plot(config, metrics, raw, eval_steps, val_bayes, val_data, out_dir)
  return results


def _mean_std(values: np.ndarray, fmt: str = '.4f') -> str:
  values = np.asarray(values, float)
  if np.all(np.isnan(values)):
    return 'never'
  finite = values[~np.isnan(values)]
  text = f'{np.mean(finite):{fmt}}±{np.std(finite):{fmt}}'
  return text + (f' ({len(finite)}/{len(values)})' if len(finite) < len(values) else '')


def _format_report(config: Config, metrics, raw, val_bayes: float) -> str:
  cols = (['final_val', 'best_val', 'excess'] + [f'excess@{p}' for p in POSITIONS]
          + [SPEED_METRIC])
  heads = ['val loss', 'best val', 'excess', *[f'exc@{p}' for p in POSITIONS], 'val@10%']
  lines = [
      f'initstate strategy study: HMM K={config.num_states} V={config.num_symbols} '
      f'stickiness={config.stickiness}, task={config.task}, T={config.seq_len}, '
      f'{config.train_sequences} training sequences, {config.cell.upper()} '
      f'H={config.hidden_size}, Adam {config.learning_rate:g}, {config.steps} steps of batch '
      f'{config.batch_size}, {config.seeds} seeds.',
      f'Validation loss in nats per predicted symbol (mean±std over seeds); Bayes-optimal '
      f'floor {val_bayes:.4f}; excess = loss - floor; exc@p = excess at the p-th prediction '
      'after a reset; best val = lowest validation loss seen (early stopping); val@10% = '
      'validation loss after 10% of the steps; steps→margin = first '
      f'evaluated step within {SPEED_MARGIN} nats of the best final loss of its seed; time s = '
      'wall-clock seconds for all seeds of a strategy, compilation included.',
      '',
      f'{"strategy":<20}' + ''.join(f'{h:>15}' for h in heads) + f'{"steps→margin":>14}'
      + f'{"time s":>8}',
  ]
  for name, m in metrics.items():
    lines.append(f'{name:<20}' + ''.join(f'{_mean_std(m[c]):>15}' for c in cols)
                 + f'{_mean_std(m["steps_to_margin"], ".0f"):>14}'
                 + f'{raw[name]["seconds"]:>8.1f}')
  lines += ['', VERDICT_RULE, *verdicts(metrics)]
  return '\n'.join(lines)


def _plot(config, metrics, raw, eval_steps, val_bayes, val_data, out_dir):
  # Figures without pyplot: no backend switch, so a notebook's inline plots stay on.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  styles = ['-', '--', ':', '-.']  # Overlapping curves (zeros vs noisy(0.01)) stay visible.
  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  for i, name in enumerate(metrics):
    curve = raw[name]['val_curve'] - val_bayes
    mean, std = curve.mean(0), curve.std(0)
    ax.plot(eval_steps, mean, label=name, linestyle=styles[i % len(styles)])
    ax.fill_between(eval_steps, mean - std, mean + std, alpha=0.2)
  ax.set_yscale('log')
  ax.set_xlabel('training step')
  ax.set_ylabel('validation excess loss over Bayes (nats, log scale)')
  ax.set_title(f'Validation curves, mean ± std over {config.seeds} seeds')
  ax.legend()
  fig.tight_layout()
  fig.savefig(out_dir / 'validation_curves.png', dpi=120)

  positions = list(range(1, int(val_data['position'].max()) + 1))
  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  for i, name in enumerate(metrics):
    per_seed = np.array([[excess_by_position(
        raw[name]['per_step'][s], {k: v[s] for k, v in val_data.items()}, positions)[p]
        for p in positions] for s in range(config.seeds)])
    ax.errorbar(positions, np.nanmean(per_seed, 0), yerr=np.nanstd(per_seed, 0),
                label=name, marker='o', capsize=3, linestyle=styles[i % len(styles)])
  ax.axhline(0.0, color='k', lw=0.8)
  ax.set_xlabel('position after a reset (symbols read)')
  ax.set_ylabel('excess loss over Bayes (nats)')
  ax.set_title('Where the loss sits: excess by position after a reset')
  ax.legend()
  fig.tight_layout()
  fig.savefig(out_dir / 'excess_by_position.png', dpi=120)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  d = Config()
  p = argparse.ArgumentParser(
      prog='python -m initstate',
      description=(__doc__ or '').split('\n\n')[0] + ' Re-checks R2RT (2016) against the exact '
      'Bayes floor of a hidden Markov model; prints a table and verdicts, writes CSV/JSON and '
      'plots.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument('--out', default='initstate-results', help='output folder')
  p.add_argument('--full', action='store_true',
                 help=f'the larger study: {", ".join(f"{k}={v}" for k, v in FULL.items())} '
                      '(explicit options still win)')
  p.add_argument('--strategies', default=None,
                 help=f'comma-separated, from {",".join(STRATEGIES)}; default '
                      f'{",".join(d.strategies)}, plus {CONDITIONAL} for --task stream')
  p.add_argument('--task', choices=('short', 'stream'), default=d.task,
                 help='short sequences, or a stream of sequences cut into windows with resets')
  for field in ('steps', 'seeds', 'eval_every', 'hidden_size', 'batch_size', 'num_states',
                'num_symbols', 'seq_len', 'min_seq_len', 'train_sequences', 'val_sequences',
                'task_seed'):
    p.add_argument('--' + field.replace('_', '-'), type=int, default=None,
                   help=f'default {FULL.get(field, getattr(d, field))} with --full, '
                        f'else {getattr(d, field)}' if field in FULL else
                   f'default {getattr(d, field)}')
  p.add_argument('--learning-rate', type=float, default=d.learning_rate)
  p.add_argument('--stickiness', type=float, default=d.stickiness)
  p.add_argument('--cell', choices=('lstm', 'gru'), default=d.cell)
  p.add_argument('--chunk-size', type=int, default=d.chunk_size,
                 help='seeds vectorised together; 0: all at once (see training.sweep)')
  p.add_argument('--devices', type=int, default=0,
                 help='devices to split the seeds across (0: one CPU device per core)')
  p.add_argument('--no-progress', action='store_true', help='hide the progress bar')
  args = p.parse_args(argv)
  if args.chunk_size < 0:
    p.error('--chunk-size must be >= 0')
  try:
    args.devices = devices.setup(args.devices)
  except ValueError as e:
    p.error(str(e))
  args.chunk_size = args.chunk_size or None
  values: dict[str, Any] = dict(FULL) if args.full else {}
  for field in dataclasses.fields(Config):
    v = getattr(args, field.name, None)
    if v is not None and field.name not in ('strategies', 'chunk_size'):
      values[field.name] = v
  if args.strategies is None:
    values['strategies'] = d.strategies + ((CONDITIONAL,) if args.task == 'stream' else ())
  else:
    values['strategies'] = tuple(s.strip() for s in args.strategies.split(',') if s.strip())
  config = Config(**values, chunk_size=args.chunk_size)
  for name in ('steps', 'seeds', 'eval_every', 'hidden_size', 'batch_size', 'seq_len',
               'train_sequences', 'val_sequences'):
    if getattr(config, name) < 1:
      p.error(f'--{name.replace("_", "-")} must be positive')
  if config.task == 'stream' and not 1 <= config.min_seq_len <= config.seq_len:
    p.error('--min-seq-len must be in [1, --seq-len]')
  try:
    results = run_study(config, args.out, progress=not args.no_progress)
  except ValueError as e:
    p.error(str(e))
  print(f'\nWrote {args.out}/results.json, results.csv, validation_curves.png, '
        'excess_by_position.png')
  return results

