"""The main job: initial-carry strategies head to head on HMM sentences with an exact floor.

Re-checks R2RT, "Non-Zero Initial States for Recurrent Neural Networks" (2016):

  1. every non-zero initial state sped up training and improved generalisation;
  2. a learned initial state beat zero-mean noise;
  3. noise on top of a learned initial state added only a marginal gain;

and their condition: non-zero carries pay off where the state is reset often.

Sentences come from a fixed random hidden Markov model whose start distribution is far from its
stationary one. Each sentence is read from a begin-of-sentence token with a reset carry and
every symbol is scored, its first included, so the first prediction of a sentence comes from
the carry alone (`initstate.studies.sentences`). The exact Bayes floor (log-space forward
algorithm) gives every prediction's excess loss.

Two regimes, reported separately: **online** (fresh sentences at every step: optimisation
alone) and **fixed** (a training set of `train_windows` windows; the stopping step chosen on a
validation split, every number reported on a separate test split), with a data-limited
reference: the Bayes predictor of an HMM fitted to the same training set by EM. A sweep over the
mean sentence length measures the gains over zeros against the share of predictions made within
3 steps of a reset. Within a seed every strategy, regime and length sees the same test data and
starts from the same weights; all models of a strategy train at once as one
`initstate.training.sweep`.

Run `python -m initstate --help`.
"""

import argparse
import csv
import dataclasses
import functools
import json
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
from initstate.studies import sentences
from initstate.studies import stats

STRATEGIES = {
    'zeros': initstate.zeros,
    'noisy(0.3)': lambda: initstate.noisy(0.3),
    'noisy(1.0)': lambda: initstate.noisy(1.0),
    'learned': initstate.learned,
    'noisy_learned(0.3)': lambda: initstate.noisy_learned(0.3),
    # Zimmermann et al. (2012) trick 3: deviations drawn from the last 256 per-window
    # gradients at the initial carry, random sign per unit. The loss is a mean over the
    # batch's scored steps, so the gradients are scaled by that count: a deviation is the
    # gradient of one window's summed loss (the error flow at s0 of the source's
    # sum-of-errors objective).
    'cleaning': lambda: initstate.cleaning_noise(256),
    # z ~ N(0, I_4) through a learned projection (tanh); z = 0 at evaluation.
    'latent': lambda: initstate.latent(4),
    # Stream task only: an MLP maps the CONTEXT_STEPS symbols before the window (those of the
    # sentence the window starts in) to the first carry; resets use a learned carry.
    'conditional': initstate.learned,
}
CONDITIONAL = 'conditional'
CONTEXT_STEPS = 4
DEFAULT_STRATEGIES = ('zeros', 'noisy(0.3)', 'noisy(1.0)', 'learned', 'noisy_learned(0.3)',
                      'cleaning', 'latent')
REGIMES = ('online', 'fixed')
POSITIONS = (0, 1, 2, 4)
PROFILE_POSITIONS = 12   # positions 0..11 in the excess-by-position plot (covers POSITIONS).
NEAR_RESET = 3           # "within 3 steps of a reset": positions 0, 1 and 2.
SPEED_FRACTION = 0.2     # training speed: mean validation excess over the first 20% of steps.
MIN_EFFECT = 1e-3        # nats: smaller mean differences are ties, however consistent.
ALPHA = 0.05             # family-wise error rate (Holm) over every comparison of a run.


@dataclasses.dataclass(frozen=True)
class Config:
  """Every setting of a study run (the defaults are the default run)."""
  task: str = 'sentences'         # windows of whole 'sentences', or a 'stream' cut anywhere.
  num_states: int = 6             # K hidden states.
  num_symbols: int = 16           # V symbols (the model reads V + 1: a BOS token).
  stickiness: float = 0.8
  initial_concentration: float = 0.1  # Dirichlet of the start distribution: small = peaked.
  mean_len: int = 8               # mean sentence length of both regimes' main runs.
  lengths: tuple[int, ...] = (2, 4, 8, 16, 32)   # the sentence-length sweep
  sweep_strategies: tuple[str, ...] = ('zeros', 'noisy(0.3)', 'learned')
  sweep_regimes: tuple[str, ...] = REGIMES
  width: int = 48                 # scored symbols per window.
  train_windows: int = 128        # the fixed regime's training set (per seed).
  val_windows: int = 64
  test_windows: int = 256
  cell: str = 'lstm'
  hidden_size: int = 32
  batch_size: int = 8             # windows per step.
  learning_rate: float = 3e-3
  steps: int = 400
  eval_every: int = 20
  seeds: int = 10
  task_seed: int = 0
  em_iterations: int = 20         # EM steps of the data-limited reference.
  strategies: tuple[str, ...] = DEFAULT_STRATEGIES  # stream: CONDITIONAL is added
  chunk_size: int | None = None   # models vectorised together (None: all; see training.sweep)
  devices: int = 1                # split the models across this many devices

  @property
  def lead(self) -> int:
    """Symbols generated before each window: 0 for sentences, the longest sentence for streams."""
    return 0 if self.task == 'sentences' else max(
        sentences.length_range(n)[1] for n in self.all_lengths)

  @property
  def all_lengths(self) -> tuple[int, ...]:
    return tuple(sorted({self.mean_len, *self.lengths}))

  def conditions(self, strategy: str) -> list[tuple[str, int]]:
    """(regime, mean length) pairs a strategy trains on: both regimes, plus the sweep."""
    out = {(r, self.mean_len) for r in REGIMES}
    if strategy in self.sweep_strategies:
      out |= {(r, n) for r in self.sweep_regimes for n in self.lengths}
    return sorted(out, key=lambda c: (REGIMES.index(c[0]), c[1]))


FULL: dict[str, Any] = dict(steps=1500, eval_every=50, seeds=20, batch_size=16)


def check(config: Config) -> None:
  """Raises ValueError for a configuration the study cannot run."""
  if config.task not in ('sentences', 'stream'):
    raise ValueError(f'unknown task {config.task!r}; use "sentences" or "stream".')
  for name in config.strategies:
    if name not in STRATEGIES:
      raise ValueError(f'unknown strategy {name!r}; choose from {list(STRATEGIES)}.')
    if name == CONDITIONAL and config.task != 'stream':
      raise ValueError(f'{CONDITIONAL!r} needs context, which only the stream task has '
                       '(--task stream).')
  for regime in config.sweep_regimes:
    if regime not in REGIMES:
      raise ValueError(f'unknown regime {regime!r}; choose from {REGIMES}.')
  if config.seeds < 2:
    raise ValueError(f'--seeds must be at least 2 to measure a spread, got {config.seeds}.')
  if config.steps % config.eval_every:
    raise ValueError(f'--steps ({config.steps}) must be a multiple of --eval-every '
                     f'({config.eval_every}).')
  for name in ('steps', 'eval_every', 'hidden_size', 'batch_size', 'width', 'train_windows',
               'val_windows', 'test_windows', 'mean_len'):
    if getattr(config, name) < 1:
      raise ValueError(f'--{name.replace("_", "-")} must be positive, got '
                       f'{getattr(config, name)}.')
  if any(n < 1 for n in config.lengths):
    raise ValueError(f'--lengths must be positive, got {config.lengths}.')


def make_hmm(config: Config) -> tasks.HMM:
  return tasks.random_hmm(jax.random.key(config.task_seed), config.num_states,
                          config.num_symbols, stickiness=config.stickiness,
                          initial_concentration=config.initial_concentration)


def stationary(hmm: tasks.HMM) -> np.ndarray:
  """The stationary distribution of the hidden chain [K]."""
  a = np.asarray(hmm.transition, np.float64)
  values, vectors = np.linalg.eig(a.T)
  v = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
  return v / v.sum()


# ---------------------------------------------------------------------------------------------
# Data. Keys: a seed's windows come from disjoint streams, so the splits never share a window.

TRAIN, ONLINE, VAL, TEST, STEPS, INIT = range(6)


def _window_fn(config: Config, hmm: tasks.HMM):
  def make(key, min_len, max_len):
    w = sentences.windows(key, hmm, 1, config.width, min_len, max_len, lead=config.lead,
                          context_steps=CONTEXT_STEPS if config.task == 'stream' else 0)
    return jax.tree.map(lambda a: a[0], w)
  return make


SPLIT_BLOCK = 64   # windows generated per call: one compilation serves every split size.


def make_split(config: Config, hmm: tasks.HMM, seed_keys: jax.Array, stream: int,
               num: int, min_len: Any, max_len: Any) -> dict[str, jax.Array]:
  """Windows `0 .. num-1` of a split stream for each model: arrays [M, num, W, ...]."""
  block = _split_block(config)
  blocks = [block(hmm, seed_keys, stream, start, min_len, max_len)
            for start in range(0, num, SPLIT_BLOCK)]
  return jax.tree.map(lambda *b: jnp.concatenate(b, axis=1)[:, :num], *blocks)


@functools.cache
def _split_block(config: Config):
  """Jitted: windows `start .. start + SPLIT_BLOCK - 1` of a stream, for each model."""

  def one(hmm, seed_key, stream, start, lo, hi):
    base = jax.random.fold_in(seed_key, stream)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(start + jnp.arange(SPLIT_BLOCK))
    return jax.vmap(_window_fn(config, hmm), (0, None, None))(keys, lo, hi)

  return jax.jit(jax.vmap(one, (None, 0, None, None, 0, 0)))


def training_batch(config: Config, hmm: tasks.HMM, seed_key, online, min_len, max_len, step,
                   pick_key):
  """One step's windows: fresh ones (online) or a random draw from the training set (fixed)."""
  b = config.batch_size
  index = jnp.where(online, step * b + jnp.arange(b),
                    jax.random.randint(pick_key, (b,), 0, config.train_windows))
  base = jax.random.fold_in(seed_key, jnp.where(online, ONLINE, TRAIN))
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(index)
  return jax.vmap(_window_fn(config, hmm), (0, None, None))(keys, min_len, max_len)


# ---------------------------------------------------------------------------------------------
# Model and training.


def make_cell(config: Config) -> initstate.RecurrentCell:
  """The study's cell: an LSTM or a GRU of `config.hidden_size` units."""
  return {'lstm': initstate.lstm, 'gru': initstate.gru}[config.cell](config.hidden_size)


class Predictor(nn.Module):
  """Reads symbols (V + 1 with BOS) one-hot, predicts the next symbol: [B, W] -> [B, W, V]."""
  config: Config
  carry: initstate.CarryStrategy
  conditional: bool = False

  @nn.compact
  def __call__(self, symbols, resets, context, *, train: bool):
    c = self.config
    cell = make_cell(c)
    x = jax.nn.one_hot(symbols, c.num_symbols + 1)
    initial_carry = None
    if self.conditional:
      net = initstate.from_context(hidden_sizes=(c.hidden_size,))
      flat = jnp.reshape(context, (context.shape[0], -1))   # [B, C * V]
      initial_carry = net.apply(
          self.param('init_net', net.init, flat.shape[-1], cell.carry_template), flat)
    out = initstate.nn.RNN(cell, carry=self.carry, name='rnn')(
        x, resets=resets, initial_carry=initial_carry, train=train)
    return nn.Dense(c.num_symbols, name='readout')(out.outputs)


def _losses(model, variables, data, *, train, rng=None):
  logits = model.apply(variables, data['inputs'], data['resets'], data['context'], train=train,
                       rngs=None if rng is None else {'carry': rng})
  return initstate.softmax_cross_entropy(logits, data['targets'])   # [B, W]


def make_trainer(config: Config, hmm: tasks.HMM, strategy_name: str):
  """Jitted (init, train_chunk, evaluate, test) over the model axis (`training.sweep`).

  Per model: a seed key and its condition (online: bool, min_len, max_len). The state holds
  params, optimiser state, the carry state (cleaning noise's gradient buffer; empty otherwise),
  and the best params so far by validation loss with that loss (early stopping).
  """
  if strategy_name == CONDITIONAL and config.task != 'stream':
    raise ValueError('the conditional carry needs context, which only the stream task has '
                     '(--task stream).')
  strategy = STRATEGIES[strategy_name]()
  model = Predictor(config, strategy, conditional=strategy_name == CONDITIONAL)
  template = make_cell(config).carry_template
  stateful = strategy.is_stateful(template)
  optimizer = optax.adam(config.learning_rate)
  b = config.batch_size

  def init(seed_key):
    context_steps = CONTEXT_STEPS if config.task == 'stream' else 0
    variables = model.init(
        jax.random.fold_in(seed_key, INIT), jnp.zeros((b, config.width), jnp.int32),
        jnp.zeros((b, config.width), bool),
        jnp.zeros((b, context_steps, config.num_symbols)), train=False)
    params = variables['params']
    return dict(params=params, opt_state=optimizer.init(params),
                carry_state=variables['carry_state'] if stateful else {},
                best_params=params, best_val=jnp.array(jnp.inf, jnp.float32))

  def train_chunk(state, seed_key, cond, first_step):
    def step(state, i):
      k_pick, k_noise = jax.random.split(
          jax.random.fold_in(jax.random.fold_in(seed_key, STEPS), i))
      batch = training_batch(config, hmm, seed_key, cond['online'], cond['min_len'],
                             cond['max_len'], i, k_pick)
      params, carry_state = state['params'], state['carry_state']

      def loss_fn(p, perturbations):
        variables = {'params': p}
        if stateful:
          variables.update(carry_state=carry_state, perturbations=perturbations)
        return jnp.mean(_losses(model, variables, batch, train=True, rng=k_noise))

      perturbations = {}
      if stateful:  # A zero probe at the initial carry: its gradient is dLoss/dcarry.
        perturbations = {'rnn': {'initial_carry': jax.tree.map(
            lambda t: jnp.zeros((b,) + t.shape, t.dtype), template)}}
      loss, (grads, carry_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
          params, perturbations)
      if stateful:  # Per-window gradients of each window's summed loss (the loss is a mean
        # over the batch's b * width scored steps).
        carry_grads = jax.tree.map(lambda g: g * (b * config.width), carry_grads)
        carry_state = initstate.nn.update_carry_state(strategy, carry_state, carry_grads)
      updates, opt_state = optimizer.update(grads, state['opt_state'], params)
      return dict(state, params=optax.apply_updates(params, updates), opt_state=opt_state,
                  carry_state=carry_state), loss

    return jax.lax.scan(step, state, first_step + jnp.arange(config.eval_every))

  def evaluate(state, val):
    loss = jnp.mean(_losses(model, {'params': state['params']}, val, train=False))
    better = loss < state['best_val']
    best = jax.tree.map(lambda new, old: jnp.where(better, new, old), state['params'],
                        state['best_params'])
    return dict(state, best_params=best, best_val=jnp.minimum(loss, state['best_val'])), loss

  def test(state, data):
    return _losses(model, {'params': state['best_params']}, data, train=False)

  sweep = devices.sweeper(config.chunk_size, config.devices)
  return (sweep(init, 0, one_device=True), sweep(train_chunk, (0, 0, 0, None)),
          sweep(evaluate, 0), sweep(test, 0))


# ---------------------------------------------------------------------------------------------
# Metrics.


def excess_by_position(per_step: np.ndarray, data: dict[str, np.ndarray],
                       positions: Sequence[int] = POSITIONS) -> dict[int, float]:
  """Mean excess loss over Bayes at each position after a reset (NaN where none occurs)."""
  excess = per_step - data['bayes']
  return {p: float(np.mean(excess[data['position'] == p])) if np.any(data['position'] == p)
          else float('nan') for p in positions}


def speed_auc(val_excess: np.ndarray, eval_steps: np.ndarray, steps: int) -> np.ndarray:
  """Mean validation excess over the evaluations in the first 20% of steps: [..., E] -> [...]."""
  early = eval_steps <= SPEED_FRACTION * steps
  if not early.any():
    early = eval_steps == eval_steps[0]
  return val_excess[..., early].mean(axis=-1)


def reference_excess(config: Config, hmm: tasks.HMM, seed_keys, min_len, max_len,
                     test: dict[str, jax.Array]) -> np.ndarray:
  """Test excess of the Bayes predictor of an HMM fitted by EM to each model's training set.

  EM starts from the true HMM, so it finds the maximum-likelihood estimate near the truth: what
  a learner that knows the model class could do with the same data. [M].
  """
  train = make_split(config, hmm, seed_keys, TRAIN, config.train_windows, min_len, max_len)

  def one(train_symbols, train_starts, test_symbols, test_starts, test_bayes):
    fitted, _ = tasks.fit_hmm(hmm, train_symbols, train_starts,
                              iterations=config.em_iterations)
    return jnp.mean(tasks.bayes_step_losses(fitted, test_symbols, test_starts) - test_bayes)

  starts = lambda d: d['resets'].at[..., 0].set(True)
  return np.asarray(jax.jit(jax.vmap(one))(train['targets'], starts(train), test['targets'],
                                             starts(test), test['bayes']))


# ---------------------------------------------------------------------------------------------
# Verdicts.


VERDICT_RULE = (
    'Rule (fixed before the run): per seed, gain = metric(baseline) - metric(candidate), '
    'lower is better; metric = early-stopped test excess (generalisation) or mean validation '
    f'excess over the first {SPEED_FRACTION:.0%} of steps (speed). A comparison is "better" '
    f'when a two-sided paired t-test over seeds, Holm-corrected over all comparisons of the run '
    f'(family-wise alpha {ALPHA}), rejects zero gain AND the mean gain exceeds {MIN_EFFECT} '
    'nats; "worse" likewise below zero; else "tie". A claim is REPRODUCED when every '
    'comparison it makes comes out as it says, NOT REPRODUCED when one goes against it, '
    'INCONCLUSIVE otherwise. Condition, per metric: for learned and noisy(0.3), the gain over '
    'zeros at the most reset-rich (shortest) length is "better", and so is its excess over the '
    'gain at the least reset-rich (longest) length.')


def _comparisons(metrics, config: Config) -> dict[str, np.ndarray]:
  """Every comparison of the run: name -> per-seed gains [S]."""
  gains = {}
  main = lambda s, r, m: metrics[s][(r, config.mean_len)][m]
  have = set(metrics)
  for r in REGIMES:
    for s in sorted(have - {'zeros'}, key=list(STRATEGIES).index):
      if 'zeros' in have:
        for m, label in (('speed', 'speed'), ('test_excess', 'test')):
          gains[f'{r}: {s} vs zeros, {label}'] = main('zeros', r, m) - main(s, r, m)
    for noise in ('noisy(0.3)', 'noisy(1.0)'):
      if {'learned', noise} <= have:
        gains[f'{r}: learned vs {noise}, test'] = (main(noise, r, 'test_excess')
                                                   - main('learned', r, 'test_excess'))
    if {'learned', 'noisy_learned(0.3)'} <= have:
      gains[f'{r}: noisy_learned(0.3) vs learned, test'] = (
          main('learned', r, 'test_excess') - main('noisy_learned(0.3)', r, 'test_excess'))
  for r in config.sweep_regimes:
    if len(config.lengths) < 2 or 'zeros' not in config.sweep_strategies:
      continue
    short, long = min(config.lengths), max(config.lengths)
    for s in ('learned', 'noisy(0.3)'):
      if s not in config.sweep_strategies or s not in have:
        continue
      for m, label in (('test_excess', 'test'), ('speed', 'speed')):
        gain = {n: metrics['zeros'][(r, n)][m] - metrics[s][(r, n)][m]
                for n in sorted(config.lengths)}
        for n, g in gain.items():
          gains[f'{r}: {s} vs zeros at length {n}, {label}'] = g
        gains[f'{r}: {s} gain at length {short} vs at {long}, {label}'] = (gain[short]
                                                                         - gain[long])
  return gains


def _claim(results: list[stats.Comparison]) -> str:
  """A claim that every comparison is 'better'."""
  kinds = [c.verdict for c in results]
  if all(k == 'better' for k in kinds):
    return 'REPRODUCED'
  worse = sum(k == 'worse' for k in kinds)
  summary = (f'{sum(k == "better" for k in kinds)} of {len(kinds)} better, '
             f'{sum(k == "tie" for k in kinds)} ties, {worse} worse')
  return f'NOT REPRODUCED ({summary})' if worse else f'INCONCLUSIVE ({summary})'


def verdicts(metrics, config: Config) -> tuple[list[str], dict[str, stats.Comparison]]:
  """One line per claim and regime, and every decided comparison behind them."""
  decided = stats.compare_family(_comparisons(metrics, config), min_effect=MIN_EFFECT,
                                 alpha=ALPHA)
  pick = lambda prefix: [c for n, c in decided.items() if n.startswith(prefix)]
  lines = []
  for r in REGIMES:
    c1 = [c for c in pick(f'{r}: ') if c.name.split(': ')[1].split(' vs ')[1].startswith(
        'zeros,')]
    lines.append(f'[{r}] Claim 1, every non-zero carry trains faster and generalises better '
                 f'than zeros: {_claim(c1) if c1 else "n/a"}')
    lines += [f'    {c.name.split(": ", 1)[1]}: {c.describe(" nats")}' for c in c1]
    c2 = pick(f'{r}: learned vs noisy')
    lines.append(f'[{r}] Claim 2, learned beats zero-mean noise: '
                 f'{_claim(c2) if c2 else "n/a"}')
    lines += [f'    {c.name.split(": ", 1)[1]}: {c.describe(" nats")}' for c in c2]
    c3 = pick(f'{r}: noisy_learned(0.3) vs learned')
    if c3 and f'{r}: learned vs zeros, test' in decided:
      base = max(decided[f'{r}: learned vs zeros, test'].mean, 0.0)
      c = c3[0]
      if c.verdict == 'worse':
        verdict = 'NOT REPRODUCED (the noise hurt)'
      elif c.verdict == 'better' and c.mean > 0.5 * base:
        verdict = 'NOT REPRODUCED (a large gain: over half of learned-vs-zeros)'
      else:
        verdict = 'REPRODUCED'
      lines.append(f'[{r}] Claim 3, noise on a learned carry adds at most a marginal gain (at '
                   f'most half the learned-vs-zeros gain, {base:+.4f}): {verdict}')
      lines.append(f'    noisy_learned(0.3) vs learned, test: {c.describe(" nats")}')
    else:
      lines.append(f'[{r}] Claim 3: n/a (needs zeros, learned and noisy_learned(0.3))')
  short = min(config.lengths, default=0)
  for r in REGIMES:
    if not pick(f'{r}: learned gain at') + pick(f'{r}: noisy(0.3) gain at'):
      lines.append(f'[{r}] Condition (carries matter where resets are frequent): not swept '
                   'in this regime' + ('' if r in config.sweep_regimes else
                                       ' (--sweep-regimes)'))
      continue
    for s in ('learned', 'noisy(0.3)'):
      for label in ('test', 'speed'):
        at = [c for n, c in decided.items()
              if n.startswith(f'{r}: {s} vs zeros at length') and n.endswith(f', {label}')]
        diff = [c for n, c in decided.items()
                if n.startswith(f'{r}: {s} gain at') and n.endswith(f', {label}')]
        if not at or not diff:
          continue
        shortest = decided[f'{r}: {s} vs zeros at length {short}, {label}']
        if shortest.verdict == 'better' and diff[0].verdict == 'better':
          verdict = 'REPRODUCED'
        elif shortest.verdict == 'worse' or diff[0].verdict == 'worse':
          verdict = 'NOT REPRODUCED'
        else:
          verdict = 'INCONCLUSIVE'
        lines.append(f'[{r}] Condition ({label}), {s} gains over zeros where resets are '
                     f'frequent: {verdict}')
        lines += [f'    {c.name.split(": ", 1)[1]}: {c.describe(" nats")}' for c in at + diff]
  return lines, decided


# ---------------------------------------------------------------------------------------------
# The run.


def run_study(config: Config, out_dir: str | os.PathLike[str], *, progress: bool = True,
              plots: bool = True) -> dict[str, Any]:
  """Runs the study, prints the table and verdicts, writes results into `out_dir`."""
  check(config)
  start_run = time.perf_counter()
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  hmm = make_hmm(config)
  seeds = np.arange(config.seeds)
  num_chunks = config.steps // config.eval_every
  eval_steps = np.arange(1, num_chunks + 1) * config.eval_every

  # Validation and test windows, once per (mean length, seed): shared by regimes and strategies.
  lengths = config.all_lengths
  per_len = lambda f: np.repeat(np.array([f(n) for n in lengths], np.int32), config.seeds)
  data_keys = jax.vmap(jax.random.key)(np.tile(seeds, len(lengths)))
  lo = per_len(lambda n: sentences.length_range(n)[0])
  hi = per_len(lambda n: sentences.length_range(n)[1])
  val = make_split(config, hmm, data_keys, VAL, config.val_windows, lo, hi)
  test = make_split(config, hmm, data_keys, TEST, config.test_windows, lo, hi)
  slot = {(n, s): i * config.seeds + s for i, n in enumerate(lengths) for s in seeds}
  val_bayes = np.asarray(val['bayes'].mean(axis=(1, 2)))          # [L * S]
  test_np = jax.tree.map(np.asarray, test)

  try:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:  # The progress bar is optional for library users.
    tqdm = None
  # disable=None: a bar on a terminal, nothing in logs and pipes.
  bar = (tqdm(total=num_chunks * len(config.strategies), desc='training', unit='chunk',
              disable=None if progress else True) if tqdm else None)
  metrics: dict[str, dict[tuple[str, int], dict[str, np.ndarray]]] = {}
  curves, profiles, seconds = {}, {}, {}
  for name in config.strategies:
    started = time.perf_counter()
    conds = config.conditions(name)
    rows = np.array([slot[(n, s)] for _, n in conds for s in seeds])     # model -> data slot
    cond = dict(online=np.repeat([r == 'online' for r, _ in conds], config.seeds),
                min_len=lo[rows], max_len=hi[rows])
    model_keys = data_keys[rows]
    init, train_chunk, evaluate, test_fn = make_trainer(config, hmm, name)
    state = devices.place(init(model_keys), config.devices)
    model_val = _select(val, rows)
    val_curve = []
    for c in range(num_chunks):
      state, _ = train_chunk(state, model_keys, cond, c * config.eval_every)
      state, val_loss = evaluate(state, model_val)
      val_curve.append(np.asarray(val_loss))
      if bar:
        bar.set_postfix_str(f'{name} val {float(np.mean(val_loss)):.3f}')
        bar.update(1)
    per_step = np.asarray(test_fn(state, _select(test, rows)))
    val_excess = np.stack(val_curve, 1) - val_bayes[rows][:, None]        # [M, E]
    seconds[name] = time.perf_counter() - started
    metrics[name], curves[name], profiles[name] = {}, {}, {}
    for j, (regime, n) in enumerate(conds):
      sl = slice(j * config.seeds, (j + 1) * config.seeds)
      data = [_select(test_np, slot[(n, s)]) for s in seeds]
      m = {'test_excess': np.array([np.mean(per_step[sl][s] - data[s]['bayes'])
                                    for s in seeds]),
           'speed': speed_auc(val_excess[sl], eval_steps, config.steps),
           'final_val_excess': val_excess[sl, -1],
           'best_step': eval_steps[np.argmin(val_excess[sl], axis=1)].astype(float),
           'near_reset_share': np.array([float(sentences.near_reset_share(
               d['position'], NEAR_RESET)) for d in data])}
      profile = np.array([list(excess_by_position(
          per_step[sl][s], data[s], range(PROFILE_POSITIONS)).values()) for s in seeds])
      for p in POSITIONS:
        m[f'excess@{p}'] = profile[:, p]
      metrics[name][(regime, n)] = m
      curves[name][(regime, n)] = val_excess[sl]
      profiles[name][(regime, n)] = profile
  if bar:
    bar.close()

  fixed_lengths = sorted({n for s in config.strategies for r, n in config.conditions(s)
                          if r == 'fixed'})
  rows = np.array([slot[(n, s)] for n in fixed_lengths for s in seeds])
  ref = reference_excess(config, hmm, data_keys[rows], lo[rows], hi[rows],
                         _select(test, rows))
  reference = {n: ref[i * config.seeds:(i + 1) * config.seeds]
               for i, n in enumerate(fixed_lengths)}

  lines, decided = verdicts(metrics, config)
  pi, st = np.asarray(hmm.initial, np.float64), stationary(hmm)
  task = dict(total_variation_start_vs_stationary=float(0.5 * np.abs(pi - st).sum()),
              test_bayes_per_symbol={n: float(test_np['bayes'][[slot[(n, s)] for s in seeds]]
                                              .mean()) for n in lengths})
  report = _format_report(config, metrics, reference, task, seconds, lines,
                          time.perf_counter() - start_run)
  print(report)
  results = {
      'config': dataclasses.asdict(config),
      'machine': f'{platform.machine()} {os.cpu_count()} cpu, jax {jax.__version__}, '
                 f'backend {jax.default_backend()}, {config.devices} device(s)',
      'task': task,
      'eval_steps': eval_steps.tolist(),
      'strategies': {name: {f'{r}@{n}': {
          'metrics': {k: v.tolist() for k, v in m.items()},
          'val_excess_curve': curves[name][(r, n)].tolist(),
          'excess_by_position': profiles[name][(r, n)].tolist()}
          for (r, n), m in metrics[name].items()} | {'seconds': seconds[name]}
          for name in metrics},
      'data_limited_reference': {f'fixed@{n}': v.tolist() for n, v in reference.items()},
      'comparisons': {n: dataclasses.asdict(c) for n, c in decided.items()},
      'verdicts': lines,
      'verdict_rule': VERDICT_RULE,
      'report': report,
  }
  (out_dir / 'results.json').write_text(json.dumps(results, indent=1, allow_nan=True))
  with open(out_dir / 'results.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    keys = list(next(iter(next(iter(metrics.values())).values())))
    writer.writerow(['strategy', 'regime', 'mean_len', 'seed'] + keys)
    for name, by_cond in metrics.items():
      for (r, n), m in by_cond.items():
        for s in seeds:
          writer.writerow([name, r, n, s] + [f'{m[k][s]:.6g}' for k in keys])
    for n, v in reference.items():
      for s in seeds:
        writer.writerow(['hmm fitted by EM', 'fixed', n, s, f'{v[s]:.6g}']
                        + [''] * (len(keys) - 1))
  if plots:
    from initstate.studies import carry_plots  # pylint: disable=g-import-not-at-top
    carry_plots.plot_all(config, metrics, curves, profiles, eval_steps, out_dir)
  return results


def _select(tree: Any, index: Any) -> Any:
  """Every leaf indexed along its first (model) axis."""
  return jax.tree.map(lambda a: a[index], tree)


def _mean_std(values: np.ndarray, fmt: str = '.4f') -> str:
  values = np.asarray(values, float)
  if np.all(np.isnan(values)):
    return 'n/a'
  finite = values[~np.isnan(values)]
  return f'{np.mean(finite):{fmt}}±{np.std(finite):{fmt}}'


def _format_report(config: Config, metrics, reference, task, seconds, verdict_lines,
                   total_seconds) -> str:
  c = config
  lo, hi = sentences.length_range(c.mean_len)
  cols = ['test_excess', *[f'excess@{p}' for p in POSITIONS], 'speed', 'best_step']
  heads = ['test excess', *[f'exc@{p}' for p in POSITIONS], 'speed (AUC)', 'best step']
  lines = [
      f'initstate strategy study: HMM K={c.num_states} V={c.num_symbols} (start distribution '
      f'{task["total_variation_start_vs_stationary"]:.2f} in total variation from the '
      f'stationary one), task={c.task}, sentences of {lo}-{hi} symbols (mean {c.mean_len}) '
      f'read from a BOS token, windows of {c.width}; {c.cell.upper()} H={c.hidden_size}, Adam '
      f'{c.learning_rate:g}, {c.steps} steps of {c.batch_size} windows, {c.seeds} seeds.',
      f'Excess = loss - exact Bayes floor, nats per symbol on the test split (floor '
      f'{task["test_bayes_per_symbol"][c.mean_len]:.4f}), at the step with the lowest '
      f'validation loss; exc@p = excess at the p-th symbol of a sentence (0: the first, read '
      f'from the carry and BOS alone); speed = mean validation excess over the first '
      f'{SPEED_FRACTION:.0%} of steps; mean±std over seeds.',
  ]
  for regime in REGIMES:
    about = ('fresh sentences at every step' if regime == 'online' else
             f'{c.train_windows} training windows ({c.train_windows * c.width} symbols), '
             'stopping step chosen on validation')
    lines += ['', f'{regime.upper()} ({about})',
              f'{"strategy":<20}' + ''.join(f'{h:>15}' for h in heads)]
    for name, by_cond in metrics.items():
      m = by_cond[(regime, c.mean_len)]
      lines.append(f'{name:<20}' + ''.join(
          f'{_mean_std(m[k], ".0f" if k == "best_step" else ".4f"):>15}' for k in cols))
    if regime == 'fixed' and c.mean_len in reference:
      lines.append(f'{"hmm fitted by EM":<20}{_mean_std(reference[c.mean_len]):>15}'
                   '   (data-limited reference: the Bayes predictor of the HMM estimated from '
                   'the same training set)')
  sweep = [s for s in ('zeros', 'learned', 'noisy(0.3)') if s in metrics
           and s in c.sweep_strategies]
  if 'zeros' in sweep and len(sweep) > 1:
    for regime in c.sweep_regimes:
      lines += ['', f'WHEN DOES A CARRY MATTER? ({regime}) by mean sentence length: test '
                'excess of zeros, and the gains over zeros in test excess and in speed',
                f'{"mean length":>12}{"near reset":>12}{"zeros test":>16}'
                + ''.join(f'{f"gain {s}, {m}":>26}' for m in ('test', 'speed')
                          for s in sweep[1:])]
      for n in sorted(c.lengths):
        z = metrics['zeros'][(regime, n)]
        gains = [z[m] - metrics[s][(regime, n)][m] for m in ('test_excess', 'speed')
                 for s in sweep[1:]]
        lines.append(f'{n:>12}{np.mean(z["near_reset_share"]):>12.1%}'
                     f'{_mean_std(z["test_excess"]):>16}'
                     + ''.join(f'{_mean_std(g):>26}' for g in gains))
      lines.append('(near reset = share of predictions within 3 steps of a reset: positions '
                   '0-2)')
  lines += ['', 'Wall-clock: ' + ', '.join(f'{n} {t:.0f} s' for n, t in seconds.items())
            + f'; whole run {total_seconds:.0f} s.', '', VERDICT_RULE, *verdict_lines]
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  d = Config()
  p = argparse.ArgumentParser(
      prog='python -m initstate',
      description=(__doc__ or '').split('\n\n')[0] + ' Re-checks R2RT (2016) against the exact '
      'Bayes floor of a hidden Markov model, online and on a fixed training set; prints a '
      'table and verdicts, writes CSV/JSON and plots.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument('--out', default='initstate-results', help='output folder')
  p.add_argument('--full', action='store_true',
                 help=f'the larger study: {", ".join(f"{k}={v}" for k, v in FULL.items())} '
                      '(explicit options still win)')
  p.add_argument('--strategies', default=None,
                 help=f'comma-separated, from {",".join(STRATEGIES)}; default '
                      f'{",".join(d.strategies)}, plus {CONDITIONAL} for --task stream')
  p.add_argument('--task', choices=('sentences', 'stream'), default=d.task,
                 help='windows of whole sentences, or windows cut anywhere in a stream of '
                      'sentences (adds the conditional carry)')
  p.add_argument('--lengths', default=None,
                 help='mean sentence lengths of the sweep, comma-separated (default '
                      f'{",".join(map(str, d.lengths))}; "" for no sweep)')
  p.add_argument('--sweep-regimes', default=None,
                 help=f'regimes of the length sweep, from {",".join(REGIMES)} (default '
                      f'{",".join(d.sweep_regimes)})')
  p.add_argument('--sweep-strategies', default=None,
                 help=f'strategies of the length sweep (default {",".join(d.sweep_strategies)})')
  for field in ('steps', 'seeds', 'eval_every', 'hidden_size', 'batch_size', 'num_states',
                'num_symbols', 'mean_len', 'width', 'train_windows', 'val_windows',
                'test_windows', 'task_seed', 'em_iterations'):
    p.add_argument('--' + field.replace('_', '-'), type=int, default=None,
                   help=f'default {FULL.get(field, getattr(d, field))} with --full, '
                        f'else {getattr(d, field)}' if field in FULL else
                   f'default {getattr(d, field)}')
  p.add_argument('--learning-rate', type=float, default=d.learning_rate)
  p.add_argument('--stickiness', type=float, default=d.stickiness)
  p.add_argument('--initial-concentration', type=float, default=d.initial_concentration)
  p.add_argument('--cell', choices=('lstm', 'gru'), default=d.cell)
  p.add_argument('--chunk-size', type=int, default=0,
                 help='models vectorised together; 0: all at once (see training.sweep)')
  p.add_argument('--devices', type=int, default=0,
                 help='devices to split the models across (0: one CPU device per core)')
  p.add_argument('--no-progress', action='store_true', help='hide the progress bar')
  args = p.parse_args(argv)
  if args.chunk_size < 0:
    p.error('--chunk-size must be >= 0')
  try:
    args.devices = devices.setup(args.devices)
  except ValueError as e:
    p.error(str(e))
  values: dict[str, Any] = dict(FULL) if args.full else {}
  split = lambda text: tuple(s.strip() for s in text.split(',') if s.strip())
  for field in dataclasses.fields(Config):
    v = getattr(args, field.name, None)
    if v is None or field.name in ('chunk_size',):
      continue
    if field.name in ('strategies', 'sweep_regimes', 'sweep_strategies'):
      v = split(v)
    elif field.name == 'lengths':
      try:
        v = tuple(int(n) for n in split(v))
      except ValueError:
        p.error(f'--lengths must be comma-separated ints, got {v!r}')
    values[field.name] = v
  if args.strategies is None:
    values['strategies'] = d.strategies + ((CONDITIONAL,) if args.task == 'stream' else ())
  config = Config(**values, chunk_size=args.chunk_size or None)
  try:
    check(config)
    results = run_study(config, args.out, progress=not args.no_progress)
  except ValueError as e:
    p.error(str(e))
  print(f'\nWrote {args.out}/results.json, results.csv, validation_curves.png, '
        'excess_by_position.png, gain_vs_length.png')
  return results
