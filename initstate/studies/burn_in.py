"""Burn-in and initial carries on system-identification data (TBPTT over windows).

Reproduces the protocol of Schiller, Heinrich, Lopez and Müller, "Tuning the burn-in phase in
training recurrent neural networks improves their performance" (ICLR 2026): an LSTM (H = 8)
with a linear read-out reads u[t] and predicts y[t] on every window of N steps of the scaled
training signal (shifted by one, shuffled, batch 100, last partial batch dropped); the loss is
the MSE over steps m..N-1 only (burn-in m); Adam; 400 epochs at learning rate 1e-4 (Silverbox,
Wiener-Hammerstein) or 1,500 at 3e-4 (RLC); evaluation runs each whole split as one sequence from
the initial state and takes the MSE of the scaled outputs.

Then goes past the paper, in the same run and table (variant names):

* `zeros`: the paper (a zero carry at every window start);
* `learned`, `noisy_learned`: a learned initial carry (plus Gaussian noise in training);
* `conditional`: an initializer network maps the first m observed steps (u and y) of a window to
  the carry at step m, in place of running the recurrence over them (Mohajerin and Waslander,
  2017); at evaluation it reads the first m steps of the evaluation sequence;
* `stateful`: stateful TBPTT: every batch row walks K consecutive windows of the training stream,
  the carry handed from one window to the next (gradient stopped in between) and reset to zeros
  where a walk starts; the burn-in mask applies to the first window of a walk only.

For a fair comparison every variant's evaluation MSE counts only the steps t >= m (`test`);
`test_all` counts every step as the paper does (the two differ by at most m of 3,333-10,000
steps). All models of one variant group (every variant x every m) train at once as one sweep
(`initstate.training.sweep`: chunks of `--chunk-size` models, split across `--devices`, by
default one CPU device per core), from the same initial weights and on the same batches; one
epoch is one compiled `lax.scan` over its batches.

Run `python -m initstate.studies.burn_in --help`.
"""

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import initstate
from initstate.studies import devices
from initstate.studies import sysid

WINDOWED = ('zeros', 'learned', 'noisy_learned', 'conditional')
VARIANTS = WINDOWED + ('stateful',)
PUBLISHED = {  # dataset: (epochs, learning rate), from the paper's code.
    'silverbox': (400, 1e-4), 'wienerhammerstein': (400, 1e-4), 'rlc': (1500, 3e-4)}


def default_burn_ins(window: int) -> tuple[int, ...]:
  """0, 20%, 40%, 60%, 80% and 94% of the window (0, 20, 40, 60, 80, 94 for N = 100)."""
  return tuple(sorted({min(round(f * window), window - 1)
                       for f in (0.0, 0.2, 0.4, 0.6, 0.8, 0.94)}))


@dataclasses.dataclass(frozen=True)
class Config:
  dataset: str = 'silverbox'
  window: int = 100
  burn_ins: tuple[int, ...] = ()       # empty: default_burn_ins(window)
  variants: tuple[str, ...] = VARIANTS
  hidden_size: int = 8
  batch_size: int = 100
  epochs: int | None = None            # None: the published value
  learning_rate: float | None = None   # None: the published value
  noise: float = 0.1                   # noisy_learned's stddev
  init_net_width: int = 32             # conditional's initializer network
  stateful_windows: int = 5            # K consecutive windows per stateful walk
  seed: int = 0
  chunk_size: int | None = 4           # models vectorised together (None: all; see sweep)
  devices: int = 1                     # split the models across this many devices

  def resolved(self) -> 'Config':
    epochs, lr = PUBLISHED[self.dataset]
    return dataclasses.replace(
        self, burn_ins=self.burn_ins or default_burn_ins(self.window),
        epochs=self.epochs if self.epochs is not None else epochs,
        learning_rate=self.learning_rate if self.learning_rate is not None else lr)


class ModelConfig(NamedTuple):
  """Per-model settings, vmapped over models: [M] each."""
  burn_in: jax.Array       # int32: m
  learned: jax.Array       # float32: 1 for a learned initial carry
  noise: jax.Array         # float32: training noise stddev on the initial carry
  conditional: jax.Array   # bool: carry at step m from the initializer network


def model_configs(config: Config, variants: Sequence[str]) -> tuple[list[tuple[str, int]],
                                                                   ModelConfig]:
  """The (variant, m) grid of one group and its vmapped `ModelConfig`."""
  grid = [(v, m) for v in variants for m in config.burn_ins]
  mc = ModelConfig(
      burn_in=jnp.array([m for _, m in grid], jnp.int32),
      learned=jnp.array([v in ('learned', 'noisy_learned') for v, _ in grid], jnp.float32),
      noise=jnp.array([config.noise if v == 'noisy_learned' else 0.0 for v, _ in grid],
                      jnp.float32),
      conditional=jnp.array([v == 'conditional' for v, _ in grid]))
  return grid, mc


class Model:
  """The LSTM, read-out, learned carry and initializer network as pure functions."""

  def __init__(self, config: Config, du: int, dy: int, use_conditional: bool):
    self.cell = initstate.lstm(config.hidden_size)
    self.readout = nn.Dense(dy)
    self.init_net = nn.Sequential([
        nn.Dense(config.init_net_width), nn.tanh, nn.Dense(2 * config.hidden_size)])
    self.context = max(*config.burn_ins, 1)  # steps the initializer network can read
    self.du, self.dy, self.hidden = du, dy, config.hidden_size
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


def after_burn_in(step_losses: jax.Array, burn_in: jax.Array) -> jax.Array:
  """Mean of per-step losses [B, T] over steps t >= burn_in (the paper's loss over m..N-1)."""
  steps = step_losses.shape[1]
  mask = jnp.broadcast_to(jnp.arange(steps)[None, :] >= burn_in, step_losses.shape)
  return initstate.masked_mean(step_losses, mask)


def make_group(config: Config, data: dict[str, sysid.Signal], variants: Sequence[str]):
  """Jitted, vmapped (init, epoch, evaluate) for one group of variants."""
  du, dy = data['train'].u.shape[1], data['train'].y.shape[1]
  stateful = variants == ('stateful',)
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
    params = model.init(key)
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
    k_perm, k_noise = jax.random.split(key)
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

    state, loss = jax.lax.scan(one_walk, state, jax.random.split(key, walks))
    return state, jnp.mean(loss)

  def evaluate(state, mc, u, y):
    per_step, _ = model.step_losses(state[0], mc, u[None], y[None])
    return after_burn_in(per_step, mc.burn_in), jnp.mean(per_step)

  epoch = stateful_epoch if stateful else window_epoch
  steps = (max(steps_per_epoch // walk, 1) * walk) if stateful else steps_per_epoch
  sweep = devices.sweeper(config.chunk_size, config.devices)
  return (sweep(init, (None, 0), one_device=True), sweep(epoch, (0, 0, None)),
          sweep(evaluate, (0, 0, None, None)), steps)


def run_one(config: Config, data: dict[str, sysid.Signal], *, progress: bool = True
            ) -> list[dict[str, Any]]:
  """Trains every (variant, m) of one (dataset, N) and evaluates it; returns one row each."""
  config = config.resolved()
  for m in config.burn_ins:
    if not 0 <= m < config.window:
      raise ValueError(f'burn-in {m} must be in [0, N - 1] = [0, {config.window - 1}].')
  groups = [tuple(v for v in config.variants if v in WINDOWED)]
  if 'stateful' in config.variants:
    groups.append(('stateful',))
  try:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    tqdm = None
  rows = []
  key = jax.random.key(config.seed)
  for variants in [g for g in groups if g]:
    start = time.perf_counter()
    grid, mc = model_configs(config, variants)
    init, epoch, evaluate, steps = make_group(config, data, variants)
    state = init(jax.random.fold_in(key, 0), mc)
    label = f'{config.dataset} N={config.window} {"+".join(variants)}'
    epochs = cast(int, config.epochs)  # Set by Config.resolved().
    bar: Any = tqdm(range(epochs), desc=label, unit='epoch',
                    disable=None if progress else True) if tqdm else range(epochs)
    for e in bar:
      state, train_loss = epoch(state, mc, jax.random.fold_in(jax.random.fold_in(key, 1), e))
      if tqdm and e % 10 == 0:
        bar.set_postfix_str(f'train loss {float(jnp.mean(train_loss)):.4f}')
    results = {split: evaluate(state, mc, jnp.asarray(data[split].u), jnp.asarray(data[split].y))
               for split in sysid.SPLITS}
    jax.block_until_ready(results)
    seconds = time.perf_counter() - start
    for i, (variant, m) in enumerate(grid):
      rows.append({
          'dataset': config.dataset, 'window': config.window, 'variant': variant, 'burn_in': m,
          'train': float(results['train'][0][i]), 'val': float(results['val'][0][i]),
          'test': float(results['test'][0][i]), 'test_all': float(results['test'][1][i]),
          'final_train_loss': float(train_loss[i]), 'epochs': config.epochs,
          'learning_rate': config.learning_rate, 'adam_steps': epochs * steps,
          'group_seconds': seconds, 'group_models': len(grid)})
  return rows


# ---------------------------------------------------------------------------------------------
# Reporting.


def summarize(rows: list[dict[str, Any]]) -> list[str]:
  """Best m per variant, change against zeros at m = 0, and whether carries replace burn-in."""
  lines = []
  by_variant: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    by_variant.setdefault(r['variant'], []).append(r)
  base = next((r for r in by_variant.get('zeros', []) if r['burn_in'] == 0), None)
  best = {}
  for variant, rs in by_variant.items():
    b = min(rs, key=lambda r: r['val'])
    best[variant] = b
    change = (f', test {100 * (b["test"] / base["test"] - 1):+.1f}% against zeros m=0'
              if base else '')
    lines.append(f'best m on validation for {variant}: m={b["burn_in"]} (val {b["val"]:.5f}, '
                 f'test {b["test"]:.5f}{change})')
  if 'zeros' in best:
    target = best['zeros']
    for variant in ('learned', 'noisy_learned', 'conditional', 'stateful'):
      if variant not in by_variant:
        continue
      reach = sorted((r for r in by_variant[variant] if r['test'] <= target['test']),
                     key=lambda r: r['burn_in'])
      goal = (f'the best burn-in\'s test MSE {target["test"]:.5f} (zeros, m={target["burn_in"]}, '
              'chosen on validation)')
      if not reach:
        own = min(by_variant[variant], key=lambda r: r['test'])
        verdict = (f'NO: its lowest test MSE {own["test"]:.5f} (m={own["burn_in"]}) stays above '
                   f'{goal}')
      elif reach[0]['burn_in'] < target['burn_in']:
        verdict = (f'YES: it reaches {goal} already at m={reach[0]["burn_in"]} '
                   f'({reach[0]["test"]:.5f})')
      else:
        same = reach[0]['burn_in'] == target['burn_in']
        verdict = (f'{"WITH THE SAME" if same else "ONLY WITH MORE"}: it first reaches {goal} '
                   f'at m={reach[0]["burn_in"]} ({reach[0]["test"]:.5f})')
      lines.append(f'does {variant} reach the best burn-in with less burn-in? {verdict}')
  return lines


def format_table(rows: list[dict[str, Any]]) -> str:
  base = {(r['dataset'], r['window']): r['test'] for r in rows
          if r['variant'] == 'zeros' and r['burn_in'] == 0}
  head = (f'{"variant":<15}{"m":>5}{"train":>11}{"val":>11}{"test":>11}{"test_all":>11}'
          f'{"vs zeros m=0":>14}')
  lines = [head]
  for r in rows:
    b = base.get((r['dataset'], r['window']))
    change = f'{100 * (r["test"] / b - 1):+.1f}%' if b else ''
    lines.append(f'{r["variant"]:<15}{r["burn_in"]:>5}{r["train"]:>11.5f}{r["val"]:>11.5f}'
                 f'{r["test"]:>11.5f}{r["test_all"]:>11.5f}{change:>14}')
  return '\n'.join(lines)


def plot(rows: list[dict[str, Any]], path: pathlib.Path) -> None:
  # Figures without pyplot: no backend switch, so a notebook's inline plots stay on.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  for i, variant in enumerate(dict.fromkeys(r['variant'] for r in rows)):
    rs = sorted((r for r in rows if r['variant'] == variant), key=lambda r: r['burn_in'])
    ax.plot([r['burn_in'] for r in rs], [r['test'] for r in rs], marker='o',
            linestyle=['-', '--', ':', '-.'][i % 4], label=variant)
  r0 = rows[0]
  ax.set_yscale('log')
  ax.set_xlabel('burn-in m (steps left out of the loss)')
  ax.set_ylabel('test MSE (scaled outputs, steps t >= m)')
  ax.set_title(f'{r0["dataset"]}, window N={r0["window"]}, {r0["epochs"]} epochs')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
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
                 help='comma-separated m values (default: 0, .2N, .4N, .6N, .8N, .94N)')
  p.add_argument('--variants', default=','.join(VARIANTS), help=f'from {",".join(VARIANTS)}')
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
  p.add_argument('--out', default='initstate-results/burn_in', help='output folder')
  p.add_argument('--no-progress', action='store_true')
  args = p.parse_args(argv)
  if args.chunk_size < 0:
    p.error('--chunk-size must be >= 0')
  try:
    num_devices = devices.setup(args.devices)
  except ValueError as e:
    p.error(str(e))
  split = lambda s: [x.strip() for x in s.split(',') if x.strip()]
  try:
    datasets, windows = split(args.dataset), [int(w) for w in split(args.window)]
    burn_ins = tuple(int(m) for m in split(args.burn_in))
  except ValueError as e:
    p.error(str(e))
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
  all_rows, report = [], []
  for name in datasets:
    data, _ = sysid.load(name)
    for window in windows:
      config = Config(dataset=name, window=window, burn_ins=burn_ins, variants=variants,
                      hidden_size=args.hidden_size, batch_size=args.batch_size,
                      epochs=args.epochs, learning_rate=args.learning_rate, noise=args.noise,
                      stateful_windows=args.stateful_windows, seed=args.seed,
                      chunk_size=args.chunk_size or None, devices=num_devices)
      try:
        rows = run_one(config, data, progress=not args.no_progress)
      except ValueError as e:
        p.error(str(e))
      r0 = rows[0]
      groups = dict.fromkeys((r['variant'] == 'stateful', r['group_seconds'],
                              r['group_models']) for r in rows)
      timing = '; '.join(f'{"stateful" if s else "windowed"} group: {sec:.1f} s for {k} models'
                         for s, sec, k in groups)
      text = '\n'.join([
          f'== {name}, N={window}: {r0["epochs"]} epochs ({r0["adam_steps"]} Adam steps), '
          f'lr {r0["learning_rate"]:g}, H={args.hidden_size}, batch {args.batch_size}, '
          f'seed {args.seed}. MSE on scaled outputs; wall-clock {timing}.',
          format_table(rows), *summarize(rows), ''])
      print(text)
      report.append(text)
      plot(rows, out / f'{name}_N{window}_test_mse.png')
      all_rows += rows
  with open(out / 'results.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(all_rows[0]))
    writer.writeheader()
    writer.writerows(all_rows)
  (out / 'results.json').write_text(json.dumps({
      'command': 'python -m initstate.studies.burn_in ' + ' '.join(
          argv if argv is not None else sys.argv[1:]),
      'machine': f'{platform.machine()} {os.cpu_count()} cpu, jax {jax.__version__}, '
                 f'backend {jax.default_backend()}',
      'rows': all_rows, 'report': '\n'.join(report)}, indent=1))
  print(f'Wrote {out}/results.csv, results.json and one PNG per dataset and N.')
  return all_rows


if __name__ == '__main__':
  main()
