"""What one model of a sweep costs: seconds per model-epoch against the number of models M.

Two settings, each trained by the study's own code (`make_group` / `make_trainer`):

* `sysid`: the burn-in study on Silverbox, window N=100, LSTM H=8, batch 100, 199 Adam steps
  an epoch (lr 1e-4), models differing in burn-in m (0, 1, ..., M-1).
* `main`: the carry-strategies study's trainer (zeros, fixed-data regime, windows drawn by the
  trainer inside each step), LSTM H=32 over one-hot symbols (V=8 and a begin-of-sentence
  token), windows of T=12, batch 32, Adam (lr 3e-3), 32 steps an "epoch", models = seeds.

Variants, interleaved round by round in one process (the order rotates every round):

* `torch loop`: a lean PyTorch loop of the same protocol for ONE model (`nn.LSTM` +
  `nn.Linear`, `torch.optim.Adam`, no data loader): the baseline.
* `torch.func vmap`: PyTorch's stacked-model route (`torch.func.stack_module_state` +
  `functional_call` + `vmap`), all M models per step, one Adam over the stacked parameters.
* `torch stacked bmm`: the strongest PyTorch route that runs (`torch.func.vmap` has no batching
  rule for `nn.LSTM`): a hand-written LSTM over weights stacked [M, ...], one `torch.bmm` per
  time step for all M models, autograd, one Adam over the stacked tensors.
* `initstate vmap`: `jax.vmap` over all M models (`training.sweep` without chunks).
* `initstate c=K`: `training.sweep(..., chunk_size=K)`: K models vectorised together, the
  chunks one after another.
* `initstate d=2`: `jax.vmap` over each device's share, the models split across two CPU
  devices (one per core).
* `initstate c=K d=2`: chunks of K on each of the two devices.

Each sample is one epoch (the first call, with compilation, is left out); the report gives the
median over the rounds per model-epoch (an epoch of all M models divided by M) and the speed-up
against `torch loop`: its seconds per epoch divided by the variant's per model-epoch.

`--profile M` then traces one epoch of the sysid setting at M models (`jax.profiler`) and prints
the XLA kernels that take the most time, per time step of the recurrence.

Usage:

  python benchmarks/sweep_speed.py                      # M = 1, 4, 16, 20, 64; 3 rounds
  python benchmarks/sweep_speed.py --profile 20         # ... and the profile at M = 20
  python benchmarks/sweep_speed.py --quick              # a smoke test: tiny sizes, 1 round
"""

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

_REPO = pathlib.Path(__file__).resolve().parents[1]
if (_REPO / 'initstate' / '__init__.py').exists():
  sys.path.insert(0, str(_REPO))  # Benchmark the checkout this script lives in.

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 2)  # One CPU device per core, before any computation.

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from initstate.studies import burn_in  # noqa: E402
from initstate.studies import carry_strategies  # noqa: E402
from initstate.studies import devices as studies_devices  # noqa: E402
from initstate.studies import sentences  # noqa: E402
from initstate.studies import sysid  # noqa: E402

try:
  import torch  # noqa: E402
except ImportError:
  torch = None


@dataclasses.dataclass(frozen=True)
class Setting:
  name: str
  hidden: int
  batch: int
  steps: int          # time steps per sequence
  epoch_steps: int    # Adam steps per epoch


SYSID = Setting('sysid', hidden=8, batch=100, steps=100, epoch_steps=199)
MAIN = Setting('main', hidden=32, batch=32, steps=12, epoch_steps=32)


# ---------------------------------------------------------------------------------------------
# initstate: the studies' own training code.


def sysid_runner(models: int, chunk_size: int | None, devices: int, quick: bool):
  data, _ = sysid.load('silverbox')
  if quick:
    data = {k: sysid.Signal(v.u[:1200], v.y[:1200]) for k, v in data.items()}
  config = burn_in.Config(window=SYSID.steps if not quick else 20, burn_ins=tuple(range(models)),
                          variants=('zeros',), chunk_size=chunk_size, devices=devices,
                          epochs=1).resolved()
  grid, mc = burn_in.model_configs(config, ('zeros',))
  init, epoch, _, steps = burn_in.make_group(config, data, ('zeros',))
  state = init(jax.random.key(0), mc)
  counter = iter(range(10 ** 9))

  def run():
    nonlocal state
    state, loss = epoch(state, mc, jax.random.key(next(counter)))
    jax.block_until_ready(loss)

  return run, steps


def main_runner(models: int, chunk_size: int | None, devices: int, quick: bool):
  config = carry_strategies.Config(
      seeds=models, eval_every=MAIN.epoch_steps if not quick else 4, num_symbols=8,
      width=MAIN.steps, batch_size=MAIN.batch, train_windows=1024 if not quick else 64,
      chunk_size=chunk_size, devices=devices, hidden_size=MAIN.hidden if not quick else 8)
  hmm = carry_strategies.make_hmm(config)
  seed_keys = jax.vmap(jax.random.key)(jnp.arange(models))
  lo, hi = sentences.length_range(config.mean_len)
  cond = dict(online=np.zeros(models, bool), min_len=np.full(models, lo, np.int32),
              max_len=np.full(models, hi, np.int32))   # the fixed-data regime
  init, train_chunk, _, _ = carry_strategies.make_trainer(config, hmm, 'zeros')
  state = studies_devices.place(init(seed_keys), devices)
  counter = iter(range(10 ** 9))

  def run():
    nonlocal state
    state, loss = train_chunk(state, seed_keys, cond, next(counter) * config.eval_every)
    jax.block_until_ready(loss)

  return run, config.eval_every


# ---------------------------------------------------------------------------------------------
# PyTorch: the lean loop (one model) and the stacked-model route.


def torch_runner(setting: Setting, models: int | None, quick: bool, stacked_bmm: bool = False):
  """One epoch of one model in a loop (`models` None), or of `models` stacked models
  (torch.func, or with `stacked_bmm` a hand-written LSTM over stacked weights)."""
  assert torch is not None
  torch.manual_seed(0)
  h, b, t = setting.hidden, setting.batch, setting.steps
  if quick:
    h, b, t = min(h, 8), 8, min(t, 20)
  steps = setting.epoch_steps if not quick else 4
  if setting.name == 'sysid':
    data, _ = sysid.load('silverbox')
    u, y = torch.tensor(data['train'].u), torch.tensor(data['train'].y)
    d_in, d_out, burn = 1, 1, 20 if not quick else 2

    def batch_of(starts):
      idx = starts[:, None] + torch.arange(t)[None]
      return u[idx], y[idx]

    def loss_of(pred, target):
      return ((pred - target)[:, burn:] ** 2).mean()

    def new_starts():
      return torch.randperm(len(u) - t + 1)[:steps * b].reshape(steps, b)
  else:
    symbols = torch.randint(0, 8, (1024, t + 1))
    d_in, d_out = 8, 8

    def batch_of(rows):
      s = symbols[rows]
      return torch.nn.functional.one_hot(s[:, :-1], 8).float(), s[:, 1:]

    def loss_of(logits, target):
      return torch.nn.functional.cross_entropy(logits.reshape(-1, d_out), target.reshape(-1))

    def new_starts():
      return torch.randint(0, 1024, (steps, b))

  class Net(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.lstm = torch.nn.LSTM(d_in, h, batch_first=True)
      self.out = torch.nn.Linear(h, d_out)

    def forward(self, x):
      return self.out(self.lstm(x)[0])

  lr = 1e-4 if setting.name == 'sysid' else 3e-3
  if models is None:
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def run():
      for rows in new_starts():
        x, target = batch_of(rows)
        loss = loss_of(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return run, steps

  if stacked_bmm:  # A hand-written LSTM over stacked weights: one bmm per step for all models.
    bound = 1 / h ** 0.5
    uniform = lambda *shape: (torch.rand(models, *shape) * 2 - 1).mul_(bound).requires_grad_()
    w_i, w_h, bias = uniform(d_in, 4 * h), uniform(h, 4 * h), uniform(1, 4 * h)
    w_o, b_o = uniform(h, d_out), uniform(1, d_out)
    opt = torch.optim.Adam([w_i, w_h, bias, w_o, b_o], lr=lr)

    def forward(x):  # x [B, T, D] shared -> [M, B, T, d_out]
      xz = torch.einsum('btd,mdg->mbtg', x, w_i) + bias[:, :, None]
      hh = cc = torch.zeros(models, x.shape[0], h)
      outs = []
      for step in range(x.shape[1]):
        i, f, g, o = (xz[:, :, step] + torch.bmm(hh, w_h)).chunk(4, -1)
        cc = torch.sigmoid(f) * cc + torch.sigmoid(i) * torch.tanh(g)
        hh = torch.sigmoid(o) * torch.tanh(cc)
        outs.append(hh)
      hs = torch.stack(outs, 2)
      return (torch.bmm(hs.reshape(models, -1, h), w_o) + b_o).reshape(
          models, x.shape[0], x.shape[1], d_out)

    def run_bmm():
      for rows in new_starts():
        x, target = batch_of(rows)
        pred = forward(x)
        loss = loss_of(pred.flatten(0, 1), target.repeat(models, *[1] * (target.ndim - 1)))
        loss = loss * models  # the sum of the models' mean losses: independent gradients
        opt.zero_grad()
        loss.backward()
        opt.step()
    return run_bmm, steps

  nets = [Net() for _ in range(models)]
  params, buffers = torch.func.stack_module_state(nets)  # pyright: ignore
  base = Net().to('meta')
  opt = torch.optim.Adam(list(params.values()), lr=lr)

  def one(p, bu, x, target):
    return loss_of(torch.func.functional_call(base, (p, bu), (x,)), target)  # pyright: ignore

  batched = torch.func.vmap(one, in_dims=(0, 0, None, None))  # pyright: ignore

  def run_stacked():
    for rows in new_starts():
      x, target = batch_of(rows)
      loss = batched(params, buffers, x, target).sum()  # the models' losses are independent
      opt.zero_grad()
      loss.backward()
      opt.step()
  return run_stacked, steps


# ---------------------------------------------------------------------------------------------
# Timing.


def interleaved(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
  """Seconds per call of each run: round-robin, the start moving one place per round."""
  names = list(runs)
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(rounds):
    for n in names[r % len(names):] + names[:r % len(names)]:
      start = time.perf_counter()
      runs[n]()
      times[n].append(time.perf_counter() - start)
  return times


def measure(setting: Setting, models: int, chunk_size: int, rounds: int, quick: bool,
            use_torch: bool, report: list[dict[str, Any]]) -> None:
  make = sysid_runner if setting.name == 'sysid' else main_runner
  variants: dict[str, tuple[Callable[[], Any], int]] = {}
  variants['initstate vmap'] = (lambda: make(models, None, 1, quick), models)
  if chunk_size < models:
    variants[f'initstate c={chunk_size}'] = (lambda: make(models, chunk_size, 1, quick), models)
  if models % 2 == 0 and jax.device_count() >= 2:
    if chunk_size < models // 2:
      variants['initstate d=2'] = (lambda: make(models, None, 2, quick), models)
    variants[f'initstate c={chunk_size} d=2'] = (lambda: make(models, chunk_size, 2, quick),
                                                 models)
  if use_torch and torch is not None:
    variants['torch loop'] = (lambda: torch_runner(setting, None, quick), 1)
    variants['torch.func vmap'] = (lambda: torch_runner(setting, models, quick), models)
    variants['torch stacked bmm'] = (lambda: torch_runner(setting, models, quick, True), models)
  runs, per_epoch_models, first = {}, {}, {}
  for name, (factory, count) in variants.items():
    try:
      run, _ = factory()
      start = time.perf_counter()
      run()  # compilation and one epoch
      first[name] = time.perf_counter() - start
      runs[name], per_epoch_models[name] = run, count
    except Exception as e:  # noqa: BLE001 - a route that does not run is reported, not fatal.
      print(f'  {setting.name} M={models} {name}: did not run: {type(e).__name__}: '
            f'{str(e).splitlines()[0][:160]}')
  times = interleaved(runs, rounds)
  base = statistics.median(times['torch loop']) if 'torch loop' in times else None
  for name, ts in times.items():
    per_model = [x / per_epoch_models[name] for x in ts]
    med = statistics.median(per_model)
    row = dict(setting=setting.name, models=models, variant=name,
               s_per_model_epoch=med, min=min(per_model), max=max(per_model),
               first_call_s=first[name], speedup_vs_torch_loop=base / med if base else None)
    report.append(row)
    speed = f'{base / med:7.2f}x' if base else '      -'
    print(f'  {setting.name:<6}M={models:<4}{name:<22}{med:9.4f} s/model-epoch '
          f'[{min(per_model):.4f}-{max(per_model):.4f}]  vs torch loop {speed}  '
          f'(first call {first[name]:.1f} s)', flush=True)


def targets(report: list[dict[str, Any]]) -> None:
  """The targets, stated before the numbers: at M=20 at least 10x less per model-epoch than
  the lean PyTorch loop; at M=1 no slower; cost per model falling as M grows to 64."""
  print('\n== targets ==')
  for setting in sorted({r['setting'] for r in report}):
    rows = [r for r in report if r['setting'] == setting and r['variant'].startswith('initstate')]
    best = {}
    for r in rows:
      if r['models'] not in best or r['s_per_model_epoch'] < best[r['models']]['s_per_model_epoch']:
        best[r['models']] = r
    for m, r in sorted(best.items()):
      speed = r['speedup_vs_torch_loop']
      verdict = ''
      if speed is not None and m == 20:
        verdict = 'MET' if speed >= 10 else 'NOT MET'
        verdict = f'  target >= 10x: {verdict}'
      elif speed is not None and m == 1:
        verdict = f'  target >= 1x: {"MET" if speed >= 1 else "NOT MET"}'
      sp = f'{speed:.2f}x' if speed is not None else '-'
      print(f'{setting}: M={m:<3} best {r["variant"]:<20} {r["s_per_model_epoch"]:.4f} '
            f's/model-epoch, {sp} vs torch loop{verdict}')
    costs = [best[m]['s_per_model_epoch'] for m in sorted(best)]
    falling = all(b <= a * 1.05 for a, b in zip(costs, costs[1:]))
    print(f'{setting}: best cost per model against M {sorted(best)}: '
          f'{", ".join(f"{c:.4f}" for c in costs)} -> falling (within 5%): '
          f'{"YES" if falling else "NO"}')


def profile(models: int, chunk_size: int | None, devices: int, quick: bool) -> None:
  """Traces one sysid epoch; prints the XLA kernels with the most time, per time step."""
  run, steps = sysid_runner(models, chunk_size, devices, quick)
  run()
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    run()
    jax.profiler.stop_trace()
    trace = json.load(gzip.open(sorted(glob.glob(f'{tmp}/**/*.json.gz', recursive=True))[-1]))
  total, count = collections.Counter(), collections.Counter()
  for e in trace['traceEvents']:
    name = e.get('name', '')
    if e.get('ph') == 'X' and not (' ' in name or '(' in name or name.startswith(
        ('while', 'ThunkExecutor', '$', 'cpp_', 'shard_args', 'Pjit'))):
      total[e['name']] += e['dur']
      count[e['name']] += 1
  # The tracer keeps a bounded number of events, so count time steps from what it kept: the
  # kernels of the recurrence run once per time step for every chunk of models on every device.
  # (lax.map runs full chunks in one loop and a remainder as its own, differently named, pass.)
  per_device = -(-models // devices)
  chunks = max(per_device // (chunk_size or per_device), 1) * devices
  kept_steps = max(count.values()) / chunks
  all_us = sum(total.values())
  print(f'\n== profile: sysid, M={models}, chunk_size={chunk_size}, devices={devices}: one '
        f'epoch traced; kernels of {kept_steps:.0f} time steps (forward or backward) kept ==')
  print(f'kernel time, summed over devices: {all_us / kept_steps:.1f} us per time step '
        f'(forward + backward, all {models} models), {all_us / kept_steps / models:.2f} us per '
        'model and time step')
  top = max(count.values())
  per_step = [n for n in count if count[n] >= 0.9 * top]
  loop_us = sum(total[n] for n in per_step)
  print(f'{len(per_step)} kernels run once per time step and chunk (forward and backward '
        f'loops), {100 * loop_us / all_us:.0f}% of the kernel time; their mean call '
        f'{loop_us / sum(count[n] for n in per_step):.1f} us')
  print(f'{"kernel":<46}{"calls":>9}{"us/call":>9}{"us/step":>9}{"share":>7}')
  for name, us in total.most_common(20):
    print(f'{name[:45]:<46}{count[name]:>9}{us / count[name]:>9.1f}{us / kept_steps:>9.2f}'
          f'{100 * us / all_us:>6.1f}%')


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--settings', default='sysid,main')
  p.add_argument('--models', default='1,4,16,20,64', help='comma-separated; empty: none')
  p.add_argument('--chunk-size', type=int, default=4)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--no-torch', action='store_true')
  p.add_argument('--profile', type=int, default=0, help='M for a profile of the sysid setting')
  p.add_argument('--quick', action='store_true', help='tiny sizes and one round (smoke test)')
  p.add_argument('--json', default='', help='write the rows here')
  args = p.parse_args()
  models = [int(m) for m in args.models.split(',') if m] if not args.quick else [1, 2]
  rounds = args.rounds if not args.quick else 1
  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; '
        f'jax {jax.__version__}, {jax.device_count()} CPU devices; '
        f'torch {torch.__version__ if torch else "absent"}; load {os.getloadavg()}')
  report: list[dict[str, Any]] = []
  settings = {'sysid': SYSID, 'main': MAIN}
  for name in args.settings.split(','):
    print(f'\n== {name} ==', flush=True)
    for m in models:
      measure(settings[name], m, args.chunk_size if not args.quick else 1, rounds, args.quick,
              not args.no_torch, report)
  if report:
    targets(report)
  if args.profile or args.quick:
    m = args.profile or 2
    profile(m, args.chunk_size if not args.quick else 1, 2 if m % 2 == 0 else 1, args.quick)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == '__main__':
  main()
