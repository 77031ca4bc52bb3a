"""Burn-in and initial carries on system-identification data (TBPTT over windows).

Reproduces the protocol of Schiller, Heinrich, Lopez and Müller, "Tuning the burn-in phase in
training recurrent neural networks improves their performance" (ICLR 2026): an LSTM (H = 8)
with a linear read-out reads u[t] and predicts y[t] on every window of N steps of the scaled
training signal (shifted by one, shuffled, batch 100, last partial batch dropped); the loss is
the MSE over steps m..N-1 only (burn-in m); Adam; 400 epochs at learning rate 1e-4 (Silverbox,
Wiener-Hammerstein) or 1,500 at 3e-4 (RLC); evaluation runs each whole split as one sequence from
the initial state and takes the MSE of the scaled outputs. By default the model starts as
theirs does (`--parametrization pytorch`: PyTorch's `nn.LSTM` and `nn.Linear` initial
distributions, two LSTM biases trained separately), and m* is chosen as they chose it
(`--select paper`: the m minimising 0.7 x train MSE + 0.3 x validation MSE over every step,
Silverbox capped at m <= 95); `--burn-in grid` runs their grid of m values.

Then goes past the paper, in the same run and table (variant names):

* `zeros`: the paper (a zero carry at every window start);
* `learned`, `noisy_learned`: a learned initial carry (plus Gaussian noise in training);
* `conditional`: an initializer network maps the first m observed steps (u and y) of a window to
  the carry at step m, in place of running the recurrence over them (Mohajerin and Waslander,
  2017); at evaluation it reads the first m steps of the evaluation sequence;
* `stateful`: stateful TBPTT: every batch row walks K consecutive windows of the training stream,
  the carry handed from one window to the next (gradient stopped in between) and reset to zeros
  where a walk starts; the burn-in mask applies to the first window of a walk only.

Four labelled evaluation metrics per split: `all` (every step of the split run as one
sequence, the paper's metric and the headline), `after_m` (its steps t >= m), `after_offset`
(its steps t >= max(200, N): the same steps for every m and every variant) and `windows` (the
split cut into windows of N steps, each run from the initial carry, steps t >= m of each: the
training loss on held-out data, which tells a model that only predicts well a few steps after
its initial carry from one that simulates well).

`--seeds K` trains K seeds (each its own initial weights, shuffling and noise; within a seed
every m and variant shares them). All models of one variant (every m x seed) train at once as
one sweep (`initstate.training.sweep`: chunks of `--chunk-size` models, split
across `--devices`, by default one CPU device per core); one epoch is one compiled `lax.scan`
over its batches. Runs are resumable: every `--checkpoint-every` epochs the group's state is
saved in its folder under `--runs` (default: the output folder's `runs/`), and a finished
group's rows and trained models are kept there, so the same command run again picks up where
it stopped; commands sharing `--runs` read back each other's finished models (the same variant,
m and seed under the same settings) and train only the rest.

Run `python -m initstate.studies.burn_in --help`.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import pathlib
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import initstate
from initstate import training
from initstate.studies import devices
from initstate.studies import sysid

WINDOWED = ('zeros', 'learned', 'noisy_learned', 'conditional')
VARIANTS = WINDOWED + ('stateful',)
PARAMETRIZATIONS = ('pytorch', 'initstate')
PUBLISHED = {  # dataset: (epochs, learning rate), from the paper's code.
    'silverbox': (400, 1e-4), 'wienerhammerstein': (400, 1e-4), 'rlc': (1500, 3e-4)}
# The paper's m grid: this many values per window length N (their Silverbox and
# Wiener-Hammerstein script; every published m*, RLC's included, lies on it).
GRID_SIZES = {100: 20, 200: 30, 500: 40, 1000: 40}
METRICS = ('all', 'after_m', 'after_offset', 'windows')


def default_burn_ins(window: int) -> tuple[int, ...]:
  """0, 20%, 40%, 60%, 80% and 94% of the window (0, 20, 40, 60, 80, 94 for N = 100)."""
  return tuple(sorted({min(round(f * window), window - 1)
                       for f in (0.0, 0.2, 0.4, 0.6, 0.8, 0.94)}))


def _spaced(start: int, stop: int, count: int) -> list[int]:
  """`count` values from start to stop, evenly spaced and rounded (Python's round, as theirs)."""
  step = (stop - start) / (count - 1) if count > 1 else 1
  return [round(start + i * step) for i in range(count)]


def paper_burn_ins(window: int) -> tuple[int, ...]:
  """The paper's grid: 20 values on [0, 99], then the rest on [110, N - 1] (N in GRID_SIZES)."""
  if window not in GRID_SIZES:
    raise ValueError(f'the paper\'s m grid is defined for N in {sorted(GRID_SIZES)}, '
                     f'not {window}.')
  count = GRID_SIZES[window]
  if count <= 20:
    return tuple(_spaced(0, window - 1, count))
  return tuple(_spaced(0, 99, 20) + _spaced(110, window - 1, count - 20))


def paper_m_star(dataset: str, window: int) -> int | None:
  """The published m* for (dataset, N), or None where the paper's table has no such row."""
  rows = [r for r in sysid.published_table(dataset) if r['N'] == window]
  return int(rows[0]['m_star']) if rows else None


def resolve_burn_ins(tokens: Sequence[int | str], dataset: str, window: int) -> tuple[int, ...]:
  """Burn-ins from ints and the tokens 'grid' (the paper's grid) and 'mstar' (its m*)."""
  out: set[int] = set()
  for t in tokens:
    if t == 'grid':
      out.update(paper_burn_ins(window))
    elif t == 'mstar':
      m = paper_m_star(dataset, window)
      if m is None:
        raise ValueError(f'the paper publishes no m* for {dataset} N={window}.')
      out.add(m)
    elif isinstance(t, int):
      out.add(t)
    else:
      raise ValueError(f'a burn-in is an int, "grid" or "mstar", got {t!r}.')
  return tuple(sorted(out)) or default_burn_ins(window)


@dataclasses.dataclass(frozen=True)
class Config:
  dataset: str = 'silverbox'
  window: int = 100
  burn_ins: tuple[int | str, ...] = ()  # empty: default_burn_ins(window); see resolve_burn_ins
  variants: tuple[str, ...] = VARIANTS
  parametrization: str = 'pytorch'      # the paper's initial distributions; or 'initstate'
  hidden_size: int = 8
  batch_size: int = 100
  epochs: int | None = None             # None: the published value
  learning_rate: float | None = None    # None: the published value
  noise: float = 0.1                    # noisy_learned's stddev
  init_net_width: int = 32              # conditional's initializer network
  context: int | None = None            # steps it reads (None: the largest m)
  stateful_windows: int = 5             # K consecutive windows per stateful walk
  seed: int = 0                         # base seed; seed s of K is fold_in(key(seed), s)
  seeds: int = 1                        # K
  chunk_size: int | None = 4            # models vectorised together (None: all; see sweep)
  devices: int = 1                      # split the models across this many devices

  def resolved(self) -> 'Config':
    epochs, lr = PUBLISHED[self.dataset]
    if self.parametrization not in PARAMETRIZATIONS:
      raise ValueError(f'parametrization must be one of {PARAMETRIZATIONS}, got '
                       f'{self.parametrization!r}.')
    if self.seeds < 1:
      raise ValueError(f'seeds must be >= 1, got {self.seeds}.')
    burn_ins = resolve_burn_ins(self.burn_ins, self.dataset, self.window)
    return dataclasses.replace(
        self, burn_ins=burn_ins,
        context=self.context if self.context is not None else max(*burn_ins, 1),
        epochs=self.epochs if self.epochs is not None else epochs,
        learning_rate=self.learning_rate if self.learning_rate is not None else lr)

  @property
  def offset(self) -> int:
    """First step of the fixed-offset metric: max(200, N), past every m."""
    return max(200, self.window)


class ModelConfig(NamedTuple):
  """Per-model settings, vmapped over models: [M] each."""
  burn_in: jax.Array       # int32: m
  learned: jax.Array       # float32: 1 for a learned initial carry
  noise: jax.Array         # float32: training noise stddev on the initial carry
  conditional: jax.Array   # bool: carry at step m from the initializer network
  seed: jax.Array          # int32: which seed (initial weights, shuffling, noise)


def model_configs(config: Config, variants: Sequence[str]) -> tuple[list[tuple[str, int, int]],
                                                                   ModelConfig]:
  """The (variant, m, seed) grid of one group and its vmapped `ModelConfig`."""
  grid = [(v, cast(int, m), s) for v in variants for m in config.burn_ins
          for s in range(config.seeds)]
  mc = ModelConfig(
      burn_in=jnp.array([m for _, m, _ in grid], jnp.int32),
      learned=jnp.array([v in ('learned', 'noisy_learned') for v, _, _ in grid], jnp.float32),
      noise=jnp.array([config.noise if v == 'noisy_learned' else 0.0 for v, _, _ in grid],
                      jnp.float32),
      conditional=jnp.array([v == 'conditional' for v, _, _ in grid]),
      seed=jnp.array([s for _, _, s in grid], jnp.int32))
  return grid, mc


def zero_carry_config() -> ModelConfig:
  """One model's settings for a plain zero initial carry from step 0 (no burn-in)."""
  return ModelConfig(burn_in=jnp.int32(0), learned=jnp.float32(0.0), noise=jnp.float32(0.0),
                     conditional=jnp.bool_(False), seed=jnp.int32(0))


def _uniform_fan_in(fan_in: int):
  """PyTorch's `nn.Linear` start, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weight and bias."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


class Model:
  """The LSTM, read-out, learned carry and initializer network as pure functions."""

  def __init__(self, config: Config, du: int, dy: int, use_conditional: bool):
    h = config.hidden_size
    self.cell = initstate.lstm(h, parametrization=config.parametrization)
    if config.parametrization == 'pytorch':
      self.readout = nn.Dense(dy, kernel_init=_uniform_fan_in(h), bias_init=_uniform_fan_in(h))
    else:
      self.readout = nn.Dense(dy)
    self.init_net = nn.Sequential([
        nn.Dense(config.init_net_width), nn.tanh, nn.Dense(2 * h)])
    if config.context is None:
      raise ValueError('Model takes a resolved Config (Config.resolved()).')
    self.context = config.context  # steps the initializer network can read
    self.du, self.dy, self.hidden = du, dy, h
    self.use_conditional = use_conditional

  def init(self, key: jax.Array) -> dict[str, Any]:
    k_cell, k_out, k_net = jax.random.split(key, 3)
    params = {
        'cell': self.cell.init(k_cell, self.du),
        'readout': self.readout.init(k_out, jnp.zeros((1, self.hidden)))['params'],
        'carry': initstate.learned().init(None, self.cell.carry_template),
    }
    if self.use_conditional:
      params['init_net'] = self.init_net.init(
          k_net, jnp.zeros((1, self.context * (self.du + self.dy))))['params']
    return params

  def conditional_carry(self, params, mc: ModelConfig, u, y) -> initstate.LSTMCarry:
    """Carry at step m from the first m observed steps: u [B, T, Du], y [B, T, Dy]."""
    ctx = jnp.concatenate([u[:, :self.context], y[:, :self.context]], axis=-1)
    ctx = jnp.where((jnp.arange(self.context) < mc.burn_in)[None, :, None], ctx, 0.0)
    out = cast(jax.Array, self.init_net.apply({'params': params['init_net']},
                                              ctx.reshape(ctx.shape[0], -1)))
    h, c = jnp.split(out, 2, axis=-1)
    return initstate.LSTMCarry(h=jnp.tanh(h), c=c)  # h in (-1, 1) as an LSTM's; c unbounded.

  def initial_carry(self, params, mc: ModelConfig, batch: int, rng) -> initstate.LSTMCarry:
    learned = initstate.learned().init_carry(params['carry'], None, batch, train=False)
    carry = jax.tree.map(lambda x: mc.learned * x, learned)
    if rng is not None:
      noise = initstate.noisy(1.0).init_carry(
          initstate.CarrySpec.from_template(self.cell.carry_template), rng, batch, train=True)
      carry = jax.tree.map(lambda x, n: x + mc.noise * n, carry, noise)
    return carry

  def step_losses(self, params, mc: ModelConfig, u, y, *, rng=None, carry=None):
    """Per-step squared errors [B, T] and the final carry, for windows or whole sequences.

    `carry` overrides the initial carry (stateful TBPTT); `rng` turns on training noise.
    """
    batch, steps = u.shape[:2]
    if carry is None:
      carry = self.initial_carry(params, mc, batch, rng)
    cell_fn = self.cell.bind(params['cell'])
    if self.use_conditional:
      cond = self.conditional_carry(params, mc, u, y)
      resets = jnp.broadcast_to(mc.conditional & (jnp.arange(steps) == mc.burn_in),
                                (batch, steps))
      out = initstate.scan_rnn(cell_fn, u, carry, init_carry_fn=lambda key, b: cond,
                               resets=resets)
    else:
      out = initstate.scan_rnn(cell_fn, u, carry)
    pred = cast(jax.Array, self.readout.apply({'params': params['readout']}, out.outputs))
    return initstate.squared_error(pred, y), out.final_carry


def after_burn_in(step_losses: jax.Array, burn_in: jax.Array | int) -> jax.Array:
  """Mean of per-step losses [B, T] over steps t >= burn_in (the paper's loss over m..N-1)."""
  steps = step_losses.shape[1]
  mask = jnp.broadcast_to(jnp.arange(steps)[None, :] >= burn_in, step_losses.shape)
  return initstate.masked_mean(step_losses, mask)


def make_group(config: Config, data: dict[str, sysid.Signal], variants: Sequence[str]):
  """Jitted, vmapped (init, epoch, evaluate, steps per epoch) for one group of variants.

  `init(key, mc)` and `epoch(state, mc, key)` take the run's base key; each model folds its
  seed (`mc.seed`) into it. `evaluate(state, mc, u, y)` gives the METRICS (all, after_m,
  after_offset, windows) of one whole split u [T, Du], y [T, Dy].
  """
  du, dy = data['train'].u.shape[1], data['train'].y.shape[1]
  stateful = tuple(variants) == ('stateful',)
  model = Model(config, du, dy, use_conditional='conditional' in variants)
  optimizer = optax.adam(cast(float, config.learning_rate))  # Set by Config.resolved().
  u_train, y_train = jnp.asarray(data['train'].u), jnp.asarray(data['train'].y)
  length, n = len(u_train), config.window
  num_windows = length - n + 1
  steps_per_epoch = num_windows // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f'{num_windows} windows cannot fill one batch of {config.batch_size}.')
  walk = config.stateful_windows
  if stateful and walk * n > length:
    raise ValueError(f'a stateful walk of {walk} windows of {n} steps exceeds the training '
                     f'split ({length} steps); lower --stateful-windows.')

  def init(key, mc):
    params = model.init(jax.random.fold_in(key, mc.seed))
    return params, optimizer.init(params)

  def update(state, mc, u, y, rng, carry=None, burn_in=None):
    params, opt_state = state

    def loss_fn(p):
      per_step, final = model.step_losses(p, mc, u, y, rng=rng, carry=carry)
      return after_burn_in(per_step, mc.burn_in if burn_in is None else burn_in), final

    (loss, final), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss, final

  def window_epoch(state, mc, key):
    k_perm, k_noise = jax.random.split(jax.random.fold_in(key, mc.seed))
    order = jax.random.permutation(k_perm, num_windows)[:steps_per_epoch * config.batch_size]

    def step(state, xs):
      starts, i = xs
      u = sysid.gather_windows(u_train, starts, n)
      y = sysid.gather_windows(y_train, starts, n)
      state, loss, _ = update(state, mc, u, y, jax.random.fold_in(k_noise, i))
      return state, loss

    state, loss = jax.lax.scan(
        step, state, (order.reshape(steps_per_epoch, config.batch_size),
                      jnp.arange(steps_per_epoch)))
    return state, jnp.mean(loss)

  def stateful_epoch(state, mc, key):
    walks = max(steps_per_epoch // walk, 1)  # about the same number of steps as an epoch

    def one_walk(state, k):
      starts = jax.random.randint(k, (config.batch_size,), 0, length - walk * n + 1)

      def step(carry_state, j):
        state, carry = carry_state
        s = starts + j * n
        u, y = sysid.gather_windows(u_train, s, n), sysid.gather_windows(y_train, s, n)
        burn_in = jnp.where(j == 0, mc.burn_in, 0)
        state, loss, final = update(state, mc, u, y, None, carry=carry, burn_in=burn_in)
        return (state, jax.lax.stop_gradient(final)), loss

      carry0 = model.initial_carry(state[0], mc, config.batch_size, None)
      (state, _), loss = jax.lax.scan(step, (state, carry0), jnp.arange(walk))
      return state, jnp.mean(loss)

    keys = jax.random.split(jax.random.fold_in(key, mc.seed), walks)
    state, loss = jax.lax.scan(one_walk, state, keys)
    return state, jnp.mean(loss)

  def evaluate(state, mc, u, y):
    per_step, _ = model.step_losses(state[0], mc, u[None], y[None])
    k = u.shape[0] // n  # The split cut into windows of N steps, each from the initial carry.
    per_window, _ = model.step_losses(state[0], mc, u[:k * n].reshape(k, n, -1),
                                      y[:k * n].reshape(k, n, -1))
    return (jnp.mean(per_step), after_burn_in(per_step, mc.burn_in),
            after_burn_in(per_step, config.offset), after_burn_in(per_window, mc.burn_in))

  epoch = stateful_epoch if stateful else window_epoch
  steps = (max(steps_per_epoch // walk, 1) * walk) if stateful else steps_per_epoch
  sweep = devices.sweeper(config.chunk_size, config.devices)
  return (sweep(init, (None, 0), one_device=True), sweep(epoch, (0, 0, None)),
          sweep(evaluate, (0, 0, None, None)), steps)


# ---------------------------------------------------------------------------------------------
# Running a group, resumably.


def _signature(config: Config, variants: Sequence[str]) -> dict[str, Any]:
  """What must match for a saved group (checkpoint or rows) to be reused."""
  keep = dataclasses.asdict(config)
  for k in _NOT_COMPARED + (() if 'conditional' in variants else ('context',)):
    keep.pop(k)
  return {'config': keep, 'variants': list(variants)}


# How the work is laid out, not what a group computes (the group's own variants are compared).
_NOT_COMPARED = ('chunk_size', 'devices', 'variants')


def _same_settings(saved: dict[str, Any], current: dict[str, Any],
                   ignore: Sequence[str] = ()) -> bool:
  """Equal signatures (but for the `ignore`d settings), where a setting the saved one lacks
  (added later) is at its default; a saved conditional group without `context` read its
  largest m."""
  defaults = {f.name: f.default for f in dataclasses.fields(Config)}
  config = {k: v for k, v in saved['config'].items() if k not in _NOT_COMPARED}
  if 'conditional' in saved['variants'] and 'context' not in config:
    config['context'] = max(*config['burn_ins'], 1)
  for k, v in current['config'].items():
    if k not in config and v == defaults.get(k):
      config[k] = v
  current = json.loads(json.dumps(current))
  for k in ignore:
    config.pop(k, None)
    current['config'].pop(k, None)
  return {'config': config, 'variants': saved['variants']} == current


def _latest_checkpoint(folder: pathlib.Path) -> tuple[int, pathlib.Path] | None:
  done = sorted((int(p.name.split('_')[1]), p) for p in folder.glob('epoch_*')
                if (p / 'progress.json').exists())
  return done[-1] if done else None


def run_group(config: Config, data: dict[str, sysid.Signal], variants: Sequence[str], *,
              folder: pathlib.Path | None = None, checkpoint_every: int = 0,
              progress: bool = True) -> list[dict[str, Any]]:
  """Trains and evaluates every (variant, m, seed) of one group; returns one row each.

  With `folder`, the finished group's rows (`rows.json`) and trained state (`final/`, a
  `training.save_checkpoint` of (params, optimiser state) with the model axis first, in the
  order of `model_configs`) are saved there, and the rows are returned on the next call
  instead of training again; with `checkpoint_every` > 0 the state is also saved every
  that many epochs and a later call resumes from the last save. A folder written by other
  settings is refused (`ValueError`), never silently mixed in.
  """
  signature = _signature(config, variants)
  if folder is not None:
    folder.mkdir(parents=True, exist_ok=True)
    sig_file = folder / 'signature.json'
    if sig_file.exists():
      if not _same_settings(json.loads(sig_file.read_text()), signature):
        raise ValueError(f'{folder} holds a run with other settings; use another --out or '
                         '--runs (or delete the folder) to start afresh.')
    else:
      sig_file.write_text(json.dumps(signature, indent=1))
    if (folder / 'rows.json').exists():
      return json.loads((folder / 'rows.json').read_text())
  try:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    tqdm = None
  grid, mc = model_configs(config, variants)
  init, epoch, evaluate, steps = make_group(config, data, variants)
  key = jax.random.key(config.seed)
  state = init(jax.random.fold_in(key, 0), mc)
  first, seconds = 0, 0.0
  latest = _latest_checkpoint(folder) if folder is not None else None
  if latest is not None:
    state = training.restore_checkpoint(latest[1] / 'state', like=state)
    first, seconds = latest[0], json.loads((latest[1] / 'progress.json').read_text())['seconds']
  state = devices.place(state, config.devices)
  epochs = cast(int, config.epochs)  # Set by Config.resolved().
  label = f'{config.dataset} N={config.window} {"+".join(variants)} ({len(grid)} models)'
  start = time.perf_counter()
  bar: Any = (tqdm(range(first, epochs), desc=label, unit='epoch', initial=first, total=epochs,
                   disable=None if progress else True) if tqdm else range(first, epochs))
  train_loss = jnp.zeros(len(grid))
  for e in bar:
    state, train_loss = epoch(state, mc, jax.random.fold_in(jax.random.fold_in(key, 1), e))
    if tqdm and e % 10 == 0:
      bar.set_postfix_str(f'train loss {float(jnp.mean(train_loss)):.4f}')
    if folder is not None and checkpoint_every > 0 and (e + 1) % checkpoint_every == 0 and (
        e + 1 < epochs):
      target = folder / f'epoch_{e + 1:06d}'
      if target.exists():
        shutil.rmtree(target)
      training.save_checkpoint(target / 'state', state)
      (target / 'progress.json').write_text(json.dumps(
          {'seconds': seconds + time.perf_counter() - start}))
      for old in folder.glob('epoch_*'):
        if old != target:
          shutil.rmtree(old)
  results = {split: evaluate(state, mc, jnp.asarray(data[split].u), jnp.asarray(data[split].y))
             for split in sysid.SPLITS}
  jax.block_until_ready(results)
  seconds += time.perf_counter() - start
  rows = []
  for i, (variant, m, seed) in enumerate(grid):
    row = {'dataset': config.dataset, 'window': config.window, 'variant': variant,
           'burn_in': m, 'seed': seed, 'parametrization': config.parametrization,
           'offset': config.offset, 'num_params': num_params(state[0], variant)}
    for split in sysid.SPLITS:
      for metric, value in zip(METRICS, results[split]):
        row[f'{split}_{metric}'] = float(value[i])
    row.update({'final_train_loss': float(train_loss[i]), 'epochs': epochs,
                'learning_rate': config.learning_rate, 'adam_steps': epochs * steps,
                'group_seconds': seconds, 'group_models': len(grid),
                'resumed_at_epoch': first})
    rows.append(row)
  if folder is not None:
    final = folder / 'final'   # The trained models, to evaluate them again without training.
    if final.exists():
      shutil.rmtree(final)
    training.save_checkpoint(final, state)
    (folder / 'rows.json').write_text(json.dumps(rows, indent=1))
    for old in folder.glob('epoch_*'):
      shutil.rmtree(old)
  return rows


def write_csv(path: pathlib.Path, rows: Sequence[dict[str, Any]]) -> None:
  """`rows` as CSV, one column per key of any row (in order of appearance); a row without a
  key (saved before that key was added) leaves its cell empty."""
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)


def num_params(params: dict[str, Any], variant: str) -> int:
  """Trained parameters of one model of `variant` (params with the model axis first): the LSTM
  and read-out, plus the learned carry or the initializer network where the variant uses it."""
  used = ['cell', 'readout'] + (['carry'] if variant in ('learned', 'noisy_learned') else []) + (
      ['init_net'] if variant == 'conditional' else [])
  return sum(int(x[0].size) for k in used for x in jax.tree.leaves(params[k]))


def group_name(config: Config, variant: str) -> str:
  """The saved group's folder name: dataset, N, variant, its m values and seed count."""
  ms = cast(tuple[int, ...], config.burn_ins)
  text = '-'.join(map(str, ms)) if len(ms) <= 4 else f'{ms[0]}..{ms[-1]}x{len(ms)}'
  return f'{config.dataset}_N{config.window}_{variant}_m{text}_s{config.seeds}'


def saved_rows(runs: pathlib.Path, config: Config, variant: str) -> dict[int, list[dict]]:
  """Rows this run can reuse from finished groups in `runs`, by m (each m's rows of seeds
  0..K-1): groups of `variant` trained with the same settings but for their m values and a
  seed count of at least K. Seed s of a model is the same wherever it trained (its initial
  weights, shuffling and noise depend only on the base seed and s)."""
  want = _signature(config, (variant,))
  found: dict[int, list[dict]] = {}
  for folder in sorted(runs.glob(f'{config.dataset}_N{config.window}_{variant}*')):
    rows_file, sig_file = folder / 'rows.json', folder / 'signature.json'
    if not (rows_file.exists() and sig_file.exists()):
      continue
    saved = json.loads(sig_file.read_text())
    if (saved['variants'] != [variant] or saved['config']['seeds'] < config.seeds or
        not _same_settings(saved, want, ignore=('burn_ins', 'seeds'))):
      continue
    rows = json.loads(rows_file.read_text())
    for m in cast(tuple[int, ...], config.burn_ins):
      mine = [r for r in rows if r['burn_in'] == m and r['seed'] < config.seeds]
      if m not in found and len(mine) == config.seeds:
        found[m] = sorted(mine, key=lambda r: r['seed'])
  return found


def run_one(config: Config, data: dict[str, sysid.Signal], *, out: pathlib.Path | None = None,
            runs: pathlib.Path | None = None, checkpoint_every: int = 0, progress: bool = True,
            report_only: bool = False) -> list[dict[str, Any]]:
  """Trains every (variant, m, seed) of one (dataset, N) and evaluates it; one row each.

  Each variant trains as one group (one sweep) saved in its own folder of `runs` (default
  `out/runs`), named by `group_name`. What a finished group there already holds (the same
  settings, that m, enough seeds; see `saved_rows`) is read back, not trained again: only the
  variant's other m values train, as a new group. With `report_only`, trains nothing: returns
  the rows of the variants whose every m is already finished.
  """
  config = config.resolved()
  for m in cast(tuple[int, ...], config.burn_ins):
    if not 0 <= m < config.window:
      raise ValueError(f'burn-in {m} must be in [0, N - 1] = [0, {config.window - 1}].')
  if report_only and out is None and runs is None:
    raise ValueError('report_only reads finished runs from `out` (or `runs`); give it.')
  if runs is None and out is not None:
    runs = out / 'runs'
  rows = []
  for variant in dict.fromkeys(config.variants):
    by_m = {} if runs is None else saved_rows(runs, config, variant)
    todo = tuple(m for m in cast(tuple[int, ...], config.burn_ins) if m not in by_m)
    if todo and report_only:
      continue
    if todo:
      group = dataclasses.replace(config, burn_ins=todo)
      folder = None if runs is None else runs / group_name(group, variant)
      for row in run_group(group, data, (variant,), folder=folder,
                           checkpoint_every=checkpoint_every, progress=progress):
        by_m.setdefault(row['burn_in'], []).append(row)
    rows += [r for m in cast(tuple[int, ...], config.burn_ins) for r in by_m[m]]
  return rows


def _parse_burn_ins(text: str) -> tuple[int | str, ...]:
  out: list[int | str] = []
  for token in (t.strip() for t in text.split(',') if t.strip()):
    out.append(token if token in ('grid', 'mstar') else int(token))
  return tuple(out)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  from initstate.studies import burn_in_report  # pylint: disable=g-import-not-at-top

  d = Config()
  p = argparse.ArgumentParser(
      prog='python -m initstate.studies.burn_in',
      description='Burn-in and initial carries for TBPTT on system-identification data '
                  '(Schiller et al., ICLR 2026, and beyond).',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument('--dataset', default='silverbox',
                 help=f'comma-separated, from {",".join(sysid.DATASETS)}')
  p.add_argument('--window', default='100', help='comma-separated window lengths N')
  p.add_argument('--burn-in', default='',
                 help='comma-separated m values; "grid" adds the paper\'s grid (20 values for '
                      'N=100, 30 for N=200), "mstar" the paper\'s published m* (default: 0, '
                      '.2N, .4N, .6N, .8N, .94N)')
  p.add_argument('--variants', default=','.join(VARIANTS), help=f'from {",".join(VARIANTS)}')
  p.add_argument('--parametrization', default=d.parametrization, choices=PARAMETRIZATIONS,
                 help='initial weights: PyTorch\'s nn.LSTM / nn.Linear (the paper) or '
                      'initstate.lstm\'s defaults')
  p.add_argument('--select', default='paper', choices=burn_in_report.SELECTIONS,
                 help='how m* is chosen: paper (min of 0.7 train + 0.3 val MSE over every '
                      'step, Silverbox m <= 95) or val (min of val MSE over t >= m)')
  p.add_argument('--seeds', type=int, default=d.seeds,
                 help='seeds (initial weights, shuffling and noise), trained together')
  p.add_argument('--epochs', type=int, default=None,
                 help='default: the published value (400; 1500 for rlc)')
  p.add_argument('--learning-rate', type=float, default=None,
                 help='default: the published value (1e-4; 3e-4 for rlc)')
  p.add_argument('--hidden-size', type=int, default=d.hidden_size)
  p.add_argument('--batch-size', type=int, default=d.batch_size)
  p.add_argument('--noise', type=float, default=d.noise, help='noisy_learned stddev')
  p.add_argument('--stateful-windows', type=int, default=d.stateful_windows)
  p.add_argument('--seed', type=int, default=d.seed)
  p.add_argument('--chunk-size', type=int, default=d.chunk_size,
                 help='models vectorised together; 0: all at once (see training.sweep)')
  p.add_argument('--devices', type=int, default=0,
                 help='devices to split the models across (0: one CPU device per core)')
  p.add_argument('--checkpoint-every', type=int, default=25,
                 help='save each group\'s state every this many epochs (0: never); the same '
                      'command run again resumes from the last save')
  p.add_argument('--out', default='initstate-results/burn_in', help='output folder')
  p.add_argument('--runs', default=None,
                 help='folder of the saved groups (default: OUT/runs); commands that share '
                      'it reuse each other\'s finished models')
  p.add_argument('--report-only', action='store_true',
                 help='train nothing: report the finished part of this command\'s runs in '
                      '--out and list what is not finished')
  p.add_argument('--no-progress', action='store_true')
  args = p.parse_args(argv)
  if args.chunk_size < 0:
    p.error('--chunk-size must be >= 0')
  if args.seeds < 1:
    p.error('--seeds must be >= 1')
  if args.checkpoint_every < 0:
    p.error('--checkpoint-every must be >= 0')
  try:
    num_devices = devices.setup(args.devices)
  except ValueError as e:
    p.error(str(e))
  split = lambda s: [x.strip() for x in s.split(',') if x.strip()]
  try:
    datasets, windows = split(args.dataset), [int(w) for w in split(args.window)]
    burn_ins = _parse_burn_ins(args.burn_in)
  except ValueError as e:
    p.error(f'--window and --burn-in take integers (and "grid", "mstar"): {e}')
  variants = tuple(split(args.variants))
  for name in datasets:
    if name not in sysid.DATASETS:
      p.error(f'unknown dataset {name!r}; choose from {",".join(sysid.DATASETS)}')
  for v in variants:
    if v not in VARIANTS:
      p.error(f'unknown variant {v!r}; choose from {",".join(VARIANTS)}')
  if args.epochs is not None and args.epochs < 1:
    p.error('--epochs must be positive')
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  runs = pathlib.Path(args.runs) if args.runs else out / 'runs'
  all_rows, report, missing = [], [], []
  for name in datasets:
    data, _ = sysid.load(name)
    for window in windows:
      config = Config(dataset=name, window=window, burn_ins=burn_ins, variants=variants,
                      parametrization=args.parametrization, hidden_size=args.hidden_size,
                      batch_size=args.batch_size, epochs=args.epochs,
                      learning_rate=args.learning_rate, noise=args.noise,
                      stateful_windows=args.stateful_windows, seed=args.seed, seeds=args.seeds,
                      chunk_size=args.chunk_size or None, devices=num_devices)
      try:
        rows = run_one(config, data, out=out, runs=runs, checkpoint_every=args.checkpoint_every,
                       progress=not args.no_progress, report_only=args.report_only)
      except ValueError as e:
        p.error(str(e))
      done = {r['variant'] for r in rows}
      missing += [f'{name} N={window} {v}' for v in variants if v not in done]
      if not rows:
        continue
      text = burn_in_report.report(rows, select=args.select)
      print(text)
      report.append(text)
      burn_in_report.plot(rows, out / f'{name}_N{window}_test_mse.png')
      all_rows += rows
  paper = burn_in_report.paper_table(all_rows, select=args.select,
                                     settings=[(d, w) for d in datasets for w in windows])
  if missing:
    paper += ('NOT FINISHED, left out of this report (the same command without --report-only '
              'trains them, resuming where it stopped): ' + '; '.join(missing) + '\n')
  print(paper)
  report.append(paper)
  if not all_rows:
    print(f'No finished runs in {out} yet.')
    return []
  write_csv(out / 'results.csv', all_rows)
  (out / 'results.json').write_text(json.dumps({
      'command': 'python -m initstate.studies.burn_in ' + ' '.join(
          argv if argv is not None else sys.argv[1:]),
      'machine': f'{platform.machine()} {os.cpu_count()} cpu, jax {jax.__version__}, '
                 f'backend {jax.default_backend()}',
      'select': args.select, 'not_finished': missing, 'rows': all_rows,
      'report': '\n'.join(report)}, indent=1))
  print(f'Wrote {out}/results.csv, results.json and one PNG per dataset and N.')
  return all_rows


if __name__ == '__main__':
  main()
