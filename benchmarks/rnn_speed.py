"""RNN speed and memory benchmarks: initstate's `scan_rnn` against Flax and PyTorch.

Everything runs in ONE process and every comparison is INTERLEAVED: the variants of a group are
timed round-robin (the starting variant rotates every round), repeated `--repeats` times, so
that machine noise hits all of them alike. Compare ratios within one run, not absolute times
across runs (the same variant has varied by up to 30% between processes).

Sections (`--sections`, comma-separated):

* speed: LSTM forward and training step at three sizes (standard B32 T128 D64 H256, small B16
  T64 D32 H64, sysid B100 T100 D1 H8) for initstate (`scan_rnn(cell.bind(params), ...)` on the
  fused and the generic path, when `scan_rnn` has an `implementation` keyword),
  `flax.linen.RNN(OptimizedLSTMCell)` and PyTorch `nn.LSTM` (if torch imports). `--gru` adds a
  GRU group at the standard size.
* strategies: the training-step cost of each initial-carry strategy (and of burn-in and resets)
  as a ratio to the zero carry.
* memory: XLA's scratch (temp) memory of the jitted training step for growing T, with and
  without `checkpoint_every` (when `scan_rnn` has it), and one timed training step at the
  largest T.

A training step is forward + backward + an optax Adam update (PyTorch: `torch.optim.Adam`);
the loss is the mean squared error of a linear read-out H -> 1 at every step, from a zero
carry. A forward is the same loss without the gradient (PyTorch: under `torch.no_grad()`). All
variants start from the same weights (initstate's, converted), and their forward losses are
checked against each other (the `check:` line). Time per call is reported as the median and the
min-max over the samples, tokens per second as B * T / median, and the first call (tracing and
compilation for JAX) separately.

Usage:

  python benchmarks/rnn_speed.py                                  # everything (minutes)
  python benchmarks/rnn_speed.py --sections speed --repeats 30 --json speed.json
  python benchmarks/rnn_speed.py --quick                          # smoke test (~40 s)
  MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4000000000 \\
      python benchmarks/rnn_speed.py --print-env                  # the allocator effect
"""

import argparse
import dataclasses
import gc
import inspect
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

_REPO = pathlib.Path(__file__).resolve().parents[1]
if (_REPO / 'initstate' / '__init__.py').exists():
  sys.path.insert(0, str(_REPO))  # Benchmark the checkout this script lives in.

import flax  # pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position

import initstate  # pylint: disable=g-import-not-at-top,wrong-import-position

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # PyTorch is optional: its variants are skipped.
  torch = None

SECTIONS = ('speed', 'strategies', 'memory')
_SCAN_PARAMS = inspect.signature(initstate.scan_rnn).parameters
HAS_IMPLEMENTATION = 'implementation' in _SCAN_PARAMS
HAS_CHECKPOINT = 'checkpoint_every' in _SCAN_PARAMS
_MIB = 2.0 ** 20


class Size(NamedTuple):
  """A problem size: batch B, time T, input features D, hidden units H."""
  name: str
  batch: int
  time: int
  features: int
  hidden: int

  @property
  def tokens(self) -> int:
    return self.batch * self.time

  def describe(self) -> str:
    return (f'{self.name} (B={self.batch} T={self.time} D={self.features} '
            f'H={self.hidden})')


FULL_SIZES = {
    'standard': Size('standard', 32, 128, 64, 256),
    'small': Size('small', 16, 64, 32, 64),
    'sysid': Size('sysid', 100, 100, 1, 8),
}
QUICK_SIZES = {
    'standard': Size('standard', 4, 16, 8, 32),
    'small': Size('small', 4, 8, 4, 16),
    'sysid': Size('sysid', 10, 10, 1, 8),
}
FULL_MEMORY = dict(batch=32, features=64, hidden=256, lengths=(128, 256, 512, 1024, 2048))
QUICK_MEMORY = dict(batch=4, features=8, hidden=32, lengths=(128, 256))


# ------------------------------------------------------------------------------------------
# Timing and reporting.


@dataclasses.dataclass
class Timing:
  """The timings of one benchmarked function, in seconds per call.

  Attributes:
    first_call: the first call (JAX: tracing, compilation and one run), not in `samples`.
    samples: one time per call for each interleaved round.
    calls_per_sample: calls averaged into each sample (see `--min-sample-ms`).
  """
  first_call: float
  samples: list[float]
  calls_per_sample: int

  @property
  def median(self) -> float:
    return statistics.median(self.samples)


def time_interleaved(benches: dict[str, Callable[[], Any]], repeats: int, min_sample_s: float,
                     on_error: Callable[[str, BaseException], None]) -> dict[str, Timing]:
  """Times functions round-robin: every round calls each once, starting one further along.

  Each function must run one complete, blocking call (results ready, e.g. via
  `jax.block_until_ready`). The first call of each is timed on its own as `first_call`; then one
  untimed warm-up round, after all first calls (so that no function's samples start cold
  behind the others' compilations), sets how many calls make one sample (enough to last
  `min_sample_s`, at least one).

  Args:
    benches: name -> function of no arguments.
    repeats: rounds, i.e. samples per function.
    min_sample_s: minimum duration of one sample (0: one call per sample).
    on_error: called with (name, exception) for a function whose first or warm-up call
      fails; it is then left out.

  Returns:
    name -> `Timing`, for every function that ran.
  """
  first, calls, ok = {}, {}, {}
  for name, run in benches.items():
    try:
      start = time.perf_counter()
      run()
      first[name] = time.perf_counter() - start
    except Exception as exc:  # pylint: disable=broad-except
      on_error(name, exc)
      continue
    ok[name] = run
  for name, run in list(ok.items()):
    try:
      start = time.perf_counter()
      run()
      steady = time.perf_counter() - start
    except Exception as exc:  # pylint: disable=broad-except
      on_error(name, exc)
      del ok[name]
      continue
    calls[name] = max(1, math.ceil(min_sample_s / max(steady, 1e-9))) if min_sample_s > 0 else 1
  samples = {name: [] for name in ok}
  names = list(ok)
  gc.collect()
  gc_was_enabled = gc.isenabled()
  gc.disable()  # As `timeit` does: no collector pauses inside a sample.
  try:
    for r in range(repeats):
      shift = r % max(len(names), 1)
      for name in names[shift:] + names[:shift]:
        run, n = ok[name], calls[name]
        start = time.perf_counter()
        for _ in range(n):
          run()
        samples[name].append((time.perf_counter() - start) / n)
  finally:
    if gc_was_enabled:
      gc.enable()
  return {name: Timing(first[name], samples[name], calls[name]) for name in names}


def _ms(seconds: float) -> str:
  """Milliseconds with about three significant digits."""
  ms = seconds * 1e3
  if ms >= 100:
    return f'{ms:.0f}'
  if ms >= 10:
    return f'{ms:.1f}'
  if ms >= 1:
    return f'{ms:.2f}'
  return f'{ms:.3f}'


@dataclasses.dataclass
class Report:
  """Everything measured, printed as it comes and kept for `--json`."""
  env: dict[str, Any] = dataclasses.field(default_factory=dict)
  args: dict[str, Any] = dataclasses.field(default_factory=dict)
  timings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  memory: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  ratios: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  failures: list[dict[str, str]] = dataclasses.field(default_factory=list)

  def note(self, text: str) -> None:
    print(f'note: {text}')
    self.notes.append(text)

  def fail(self, where: str, exc: BaseException) -> None:
    message = f'{type(exc).__name__}: {exc}'.splitlines()[0][:300]
    print(f'FAILED {where}: {message}')
    self.failures.append({'where': where, 'error': message})

  def timing_table(self, section: str, group: str, tokens: int,
                   rows: Sequence[tuple[str, str, Timing]]) -> None:
    """Prints and records rows of (mode, variant, timing)."""
    print(f'{"mode":<8} {"variant":<36} {"median ms":>10} {"min-max ms":>17} '
          f'{"tokens/s":>12} {"first call s":>12} {"calls/sample":>12}')
    for mode, variant, t in rows:
      lo, hi = min(t.samples), max(t.samples)
      print(f'{mode:<8} {variant:<36} {_ms(t.median):>10} {_ms(lo) + "-" + _ms(hi):>17} '
            f'{tokens / t.median:>12,.0f} {t.first_call:>12.2f} {t.calls_per_sample:>12}')
      self.timings.append({
          'section': section, 'group': group, 'mode': mode, 'variant': variant,
          'tokens': tokens, 'median_s': t.median, 'min_s': lo, 'max_s': hi,
          'tokens_per_s': tokens / t.median, 'first_call_s': t.first_call,
          'calls_per_sample': t.calls_per_sample, 'samples_s': t.samples})

  def ratio(self, section: str, label: str, num_name: str, num: float, den_name: str,
            den: float, unit: str = 'time') -> None:
    """Prints `ratio <section> <label>: <num_name> / <den_name> = value`."""
    value = num / den if den else float('nan')
    print(f'ratio {section} {label}: {num_name} / {den_name} = {value:.3f}')
    self.ratios.append({'section': section, 'label': label, 'numerator': num_name,
                        'denominator': den_name, 'value': value, 'of': unit})


def _heading(text: str) -> None:
  print(f'\n== {text} ==')


# ------------------------------------------------------------------------------------------
# Environment.


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def _git_describe() -> str:
  try:
    out = subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=_REPO, timeout=10,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return 'unknown'


def collect_env() -> dict[str, Any]:
  """Versions, CPU, thread counts, allocator-related variables and the load average."""
  return {
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jaxlib': _jaxlib_version(),
      'flax': flax.__version__,
      'optax': optax.__version__,
      'numpy': np.__version__,
      'torch': None if torch is None else torch.__version__,
      'torch_threads': None if torch is None else torch.get_num_threads(),
      'initstate': getattr(initstate, '__version__', None),
      'initstate_path': str(pathlib.Path(initstate.__file__).parent),
      'git': _git_describe(),
      'jax_backend': jax.default_backend(),
      'jax_disable_most_optimizations': _jax_flag('jax_disable_most_optimizations'),
      'cpu_model': _cpu_model(),
      'cpu_count': os.cpu_count(),
      'cpu_affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
      'glibc': os.confstr('CS_GNU_LIBC_VERSION') if hasattr(os, 'confstr') else None,
      'malloc_env': {k: v for k, v in sorted(os.environ.items()) if k.startswith('MALLOC_')},
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES'),
      'ld_preload': os.environ.get('LD_PRELOAD'),
      'xla_flags': os.environ.get('XLA_FLAGS'),
      'loadavg_start': os.getloadavg() if hasattr(os, 'getloadavg') else None,
      'scan_rnn_implementation_kw': HAS_IMPLEMENTATION,
      'scan_rnn_checkpoint_every_kw': HAS_CHECKPOINT,
  }


def _jax_flag(name: str) -> Any:
  """A JAX config value, or None where this JAX version does not have it."""
  try:
    return jax.config.read(name)
  except (AttributeError, KeyError):
    return getattr(jax.config, 'values', {}).get(name)


def _jaxlib_version() -> str | None:
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


def _loadavg(values: Sequence[float] | None) -> str:
  return 'n/a' if values is None else ' '.join(f'{v:.2f}' for v in values)


def print_env(env: dict[str, Any]) -> None:
  """The `--print-env` block: allocator settings, CPU and versions."""
  _heading('environment')
  malloc = env['malloc_env']
  if malloc:
    for k, v in malloc.items():
      print(f'{k}={v}')
  else:
    print('MALLOC_*: none set (glibc defaults; see benchmarks/README.md, How to run)')
  print(f'GLIBC_TUNABLES={env["glibc_tunables"] or "(unset)"}')
  print(f'LD_PRELOAD={env["ld_preload"] or "(unset)"}')
  print(f'XLA_FLAGS={env["xla_flags"] or "(unset)"}')
  print(f'glibc: {env["glibc"]}')
  print(f'cpu: {env["cpu_model"]}; os.cpu_count() = {env["cpu_count"]}; '
        f'usable (affinity) = {env["cpu_affinity"]}')
  print(f'python {env["python"]}; jax {env["jax"]} (jaxlib {env["jaxlib"]}, backend '
        f'{env["jax_backend"]}); flax {env["flax"]}; optax {env["optax"]}; numpy {env["numpy"]}')
  print(f'torch: {env["torch"] or "not installed"}' +
        (f' (threads: {env["torch_threads"]})' if env['torch'] else ''))
  print(f'initstate {env["initstate"]} from {env["initstate_path"]} (git {env["git"]})')
  print(f'load average (1, 5, 15 min) at the start: {_loadavg(env["loadavg_start"])}')


# ------------------------------------------------------------------------------------------
# Shared model pieces: data, read-out, loss, training steps.


def make_data(size: Size, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Inputs x [B, T, D] and targets y [B, T, 1], standard normal."""
  k_x, k_y = jax.random.split(key)
  x = jax.random.normal(k_x, (size.batch, size.time, size.features), jnp.float32)
  y = jax.random.normal(k_y, (size.batch, size.time, 1), jnp.float32)
  return x, y


def init_readout(key: jax.Array, hidden: int) -> dict[str, jax.Array]:
  """A linear read-out H -> 1: w [H, 1], b [1]."""
  return {'w': jax.random.normal(key, (hidden, 1), jnp.float32) / math.sqrt(hidden),
          'b': jnp.zeros((1,), jnp.float32)}


def readout(params: dict[str, jax.Array], hs: jax.Array) -> jax.Array:
  """hs [B, T, H] -> predictions [B, T, 1]."""
  return hs @ params['w'] + jnp.reshape(params['b'], (1, 1, 1))


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(pred - y))


def zero_carry(cell: initstate.RecurrentCell, batch: int) -> Any:
  spec = initstate.zeros().init(None, cell.carry_template)
  return initstate.zeros().init_carry(spec, None, batch, train=False)


def _scan_kwargs(implementation: str | None = None,
                 checkpoint_every: int | None = None) -> dict[str, Any]:
  """Keywords for `scan_rnn`, only those it has (checked with `inspect`)."""
  kwargs = {}
  if implementation is not None:
    if not HAS_IMPLEMENTATION:
      raise ValueError('scan_rnn has no `implementation` keyword in this checkout.')
    kwargs['implementation'] = implementation
  if checkpoint_every is not None:
    if not HAS_CHECKPOINT:
      raise ValueError('scan_rnn has no `checkpoint_every` keyword in this checkout.')
    kwargs['checkpoint_every'] = checkpoint_every
  return kwargs


def initstate_loss_fn(cell: initstate.RecurrentCell, batch: int, **scan_kwargs) -> Callable:
  """`loss(params, x, y)` of initstate's `scan_rnn` from a zero carry; params {cell, readout}."""
  def loss(params, x, y):
    out = initstate.scan_rnn(cell.bind(params['cell']), x, zero_carry(cell, batch),
                             **scan_kwargs)
    return mse(readout(params['readout'], out.outputs), y)
  return loss


def flax_loss_fn(model: nn.Module) -> Callable:
  """`loss(params, x, y)` of a `flax.linen.RNN` (zero carry); params {rnn, readout}."""
  def loss(params, x, y):
    hs = model.apply({'params': params['rnn']}, x)
    return mse(readout(params['readout'], hs), y)
  return loss


def adam_train_step(loss_fn: Callable, learning_rate: float) -> tuple[Callable, Callable]:
  """(init, step): `step(params, opt_state, x, y) -> (params, opt_state, loss)`, not jitted."""
  optimizer = optax.adam(learning_rate)

  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return optimizer.init, step


def jax_forward_runner(loss_fn: Callable, params: Any, x: jax.Array,
                       y: jax.Array) -> Callable[[], Any]:
  fn = jax.jit(loss_fn)
  return lambda: jax.block_until_ready(fn(params, x, y))


def jax_train_runner(loss_fn: Callable, params: Any, x: jax.Array, y: jax.Array,
                     learning_rate: float, compiled: Any = None) -> Callable[[], Any]:
  """One blocking training step per call; the updated params and Adam state are fed back."""
  opt_init, step = adam_train_step(loss_fn, learning_rate)
  fn = compiled if compiled is not None else jax.jit(step)
  state = [params, opt_init(params)]

  def run():
    out = jax.block_until_ready(fn(state[0], state[1], x, y))
    state[0], state[1] = out[0], out[1]
    return out[2]

  return run


# ------------------------------------------------------------------------------------------
# PyTorch.


def _to_torch(a: Any) -> 'torch.Tensor':
  return torch.from_numpy(np.array(a, dtype=np.float32))


def make_torch_model(kind: str, size: Size, cell_params: dict[str, Any],
                     readout_params: dict[str, Any]) -> 'torch.nn.Module':
  """`torch.nn.LSTM` / `nn.GRU` (batch_first) + `nn.Linear(H, 1)` with initstate's weights."""
  rnn_cls = {'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU}[kind]

  class Model(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.rnn = rnn_cls(size.features, size.hidden, batch_first=True)
      self.readout = torch.nn.Linear(size.hidden, 1)

    def forward(self, x):
      hs, _ = self.rnn(x)
      return self.readout(hs)

  model = Model()
  p = cell_params
  with torch.no_grad():  # Same gate orders: LSTM (i, f, g, o), GRU (r, z, n).
    model.rnn.weight_ih_l0.copy_(_to_torch(p['w_i']).T)
    model.rnn.weight_hh_l0.copy_(_to_torch(p['w_h']).T)
    if kind == 'lstm':
      model.rnn.bias_ih_l0.copy_(_to_torch(p['b']))
      model.rnn.bias_hh_l0.zero_()
    else:
      model.rnn.bias_ih_l0.copy_(_to_torch(p['b_i']))
      model.rnn.bias_hh_l0.copy_(_to_torch(p['b_h']))
    model.readout.weight.copy_(_to_torch(readout_params['w']).T)
    model.readout.bias.copy_(_to_torch(readout_params['b']))
  return model


def torch_runners(make_model: Callable[[], 'torch.nn.Module'], x: jax.Array, y: jax.Array,
                  learning_rate: float) -> tuple[Callable, Callable, float]:
  """(forward runner, train runner, initial forward loss) for a PyTorch model.

  The forward and the training step get separate copies of the model, so that the forward
  keeps the initial weights (as the JAX forward runners do).
  """
  tx, ty = _to_torch(x), _to_torch(y)
  forward_model, train_model = make_model(), make_model()
  optimizer = torch.optim.Adam(train_model.parameters(), lr=learning_rate)
  loss_fn = torch.nn.functional.mse_loss

  def forward():
    with torch.no_grad():
      return loss_fn(forward_model(tx), ty)

  def train():
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(train_model(tx), ty)
    loss.backward()
    optimizer.step()
    return loss

  return forward, train, float(forward())


# ------------------------------------------------------------------------------------------
# Section 1: speed against Flax and PyTorch.


def _jax_speed_variants(report: Report, kind: str, size: Size, cell: initstate.RecurrentCell,
                        params: dict[str, Any], x: jax.Array,
                        key: jax.Array) -> dict[str, tuple[Callable, Any]]:
  """name -> (loss_fn, params) of the JAX variants, all with initstate's initial weights."""
  variants = {}
  if HAS_IMPLEMENTATION:
    variants['initstate'] = (initstate_loss_fn(cell, size.batch, implementation='fused'), params)
    variants['initstate-generic'] = (
        initstate_loss_fn(cell, size.batch, implementation='generic'), params)
  else:
    variants['initstate'] = (initstate_loss_fn(cell, size.batch), params)
  flax_cell = nn.OptimizedLSTMCell(size.hidden) if kind == 'lstm' else nn.GRUCell(size.hidden)
  name = f'flax-{type(flax_cell).__name__}'
  model = nn.RNN(flax_cell)
  try:
    flax_params = model.init(key, x)['params']
  except Exception as exc:  # pylint: disable=broad-except
    report.fail(f'{kind} {size.name} {name} init', exc)
    return variants
  to_flax = {'lstm': initstate.convert.lstm_params_to_flax,
             'gru': initstate.convert.gru_params_to_flax}[kind]
  converted = {'cell': to_flax(params['cell'])}
  if jax.tree.structure(converted) == jax.tree.structure(flax_params):
    flax_params = converted  # The same weights as initstate's, so the losses must agree.
  else:
    report.note(f'{kind} {size.name}: the Flax param tree differs from the converted one; Flax '
                'keeps its own initial weights (the loss check will differ).')
  variants[name] = (flax_loss_fn(model), {'rnn': flax_params, 'readout': params['readout']})
  return variants


def _check_losses(report: Report, group: str, losses: dict[str, float]) -> None:
  """Prints and records whether all variants computed the same forward loss."""
  if 'initstate' not in losses:
    return
  base = losses['initstate']
  diffs = {k: abs(v - base) for k, v in losses.items() if k != 'initstate'}
  agree = all(d <= 1e-4 * max(1.0, abs(base)) for d in diffs.values())
  print(f'check: forward loss {base:.6f}; |difference| to initstate: ' +
        ', '.join(f'{k} {d:.1e}' for k, d in diffs.items()) +
        (' (agree)' if agree else ' (DIFFER: the variants do not compute the same loss)'))
  report.checks.append({'group': group, 'losses': losses, 'agree': agree})


def _speed_group(report: Report, kind: str, size: Size, key: jax.Array,
                 args: argparse.Namespace) -> None:
  """Forward and training step of one cell kind at one size: all variants interleaved."""
  _heading(f'{kind.upper()} speed: {size.describe()}')
  group = f'{kind} {size.name}'
  k_cell, k_ro, k_data, k_flax = jax.random.split(key, 4)
  cell = {'lstm': initstate.lstm, 'gru': initstate.gru}[kind](size.hidden)
  params = {'cell': cell.init(k_cell, size.features), 'readout': init_readout(k_ro, size.hidden)}
  x, y = make_data(size, k_data)
  variants = _jax_speed_variants(report, kind, size, cell, params, x, k_flax)

  benches: dict[str, Callable] = {}
  losses = {}
  for name, (loss, p) in variants.items():
    benches[f'forward/{name}'] = jax_forward_runner(loss, p, x, y)
    benches[f'train/{name}'] = jax_train_runner(loss, p, x, y, args.learning_rate)
  torch_name = f'torch-nn.{kind.upper()}'
  if torch is not None and not args.no_torch:
    try:
      forward, train, losses[torch_name] = torch_runners(
          lambda: make_torch_model(kind, size, params['cell'], params['readout']), x, y,
          args.learning_rate)
      benches[f'forward/{torch_name}'] = forward
      benches[f'train/{torch_name}'] = train
    except Exception as exc:  # pylint: disable=broad-except
      report.fail(f'{group} {torch_name} init', exc)

  timings = time_interleaved(benches, args.repeats, args.min_sample_s,
                             lambda n, e: report.fail(f'{group} {n}', e))
  # Same function everywhere? Forward losses at the shared initial weights (the forward
  # runners never update their params and are compiled already: no extra compile time).
  for name in variants:
    if f'forward/{name}' in timings:
      losses[name] = float(benches[f'forward/{name}']())
  _check_losses(report, group, losses)

  order = list(benches)
  rows = sorted((tuple(name.split('/', 1)) + (t,) for name, t in timings.items()),
                key=lambda r: (r[0] != 'forward', order.index(f'{r[0]}/{r[1]}')))
  report.timing_table('speed', group, size.tokens, rows)
  flax_name = next((n for n in variants if n.startswith('flax')), 'flax')
  pairs = [('initstate', flax_name), ('initstate', torch_name),
           ('initstate-generic', flax_name), ('initstate-generic', torch_name),
           ('initstate', 'initstate-generic')]
  for mode in ('forward', 'train'):
    for num, den in pairs:
      a, b = timings.get(f'{mode}/{num}'), timings.get(f'{mode}/{den}')
      if a is not None and b is not None:
        report.ratio('speed', f'{group} {mode}', num, a.median, den, b.median)


def run_speed(report: Report, sizes: dict[str, Size], key: jax.Array,
              args: argparse.Namespace) -> None:
  if torch is None:
    report.note('PyTorch is not installed: its variants are skipped.')
  elif args.no_torch:
    report.note('--no-torch: PyTorch variants skipped.')
  if not HAS_IMPLEMENTATION:
    report.note('scan_rnn has no `implementation` keyword: one initstate variant (its default).')
  for i, name in enumerate(args.sizes):
    _speed_group(report, 'lstm', sizes[name], jax.random.fold_in(key, i), args)
  if args.gru:
    _speed_group(report, 'gru', sizes['standard'], jax.random.fold_in(key, 100), args)


# ------------------------------------------------------------------------------------------
# Section 2: initial-carry strategies, burn-in and resets.


def strategy_variants(size: Size, key: jax.Array, args: argparse.Namespace,
                   ) -> dict[str, Callable[[], tuple[Callable, Any]]]:
  """name -> builder of (jitted step, initial state) for every variant; `step(state, x, y)`.

  The state is a dict with 'params' ({cell, carry, readout}), 'opt' (Adam state) and 'key' (the
  PRNG key, split once per step so every step draws fresh noise), plus 'buffer' for cleaning
  noise (the strategy's state, a `GradientBuffer`). Every variant uses the same cell weights,
  read-out and optimizer.
  """
  k_cell, k_ro, k_carry, k_resets, k_state = jax.random.split(key, 5)
  batch, steps = size.batch, size.time
  cell = initstate.lstm(size.hidden)
  template = cell.carry_template
  cell_params = cell.init(k_cell, size.features)
  ro = init_readout(k_ro, size.hidden)
  optimizer = optax.adam(args.learning_rate)
  scan_kw = _scan_kwargs(args.implementation)
  resets = jax.random.bernoulli(k_resets, args.reset_prob, (batch, steps))
  burn = steps // 4

  def per_step_loss(params, out, y):
    pred = readout(params['readout'], out.outputs)
    return initstate.masked_mean(initstate.squared_error(pred, y), out.mask)

  def with_strategy(strategy, *, burn_in=0, stop_gradient=False, with_resets=False):
    params = {'cell': cell_params, 'carry': strategy.init(k_carry, template), 'readout': ro}

    def loss_fn(params, key, x, y):
      k_init, k_scan = jax.random.split(key)
      init_carry_fn = lambda k, b: strategy.init_carry(params['carry'], k, b, train=True)
      carry = init_carry_fn(k_init if strategy.needs_rng else None, batch)
      extra = {}
      if with_resets:
        extra = dict(resets=resets, init_carry_fn=init_carry_fn,
                     rng=k_scan if strategy.needs_rng else None)
      out = initstate.scan_rnn(cell.bind(params['cell']), x, carry, burn_in=burn_in,
                               stop_gradient_burn_in=stop_gradient, **extra, **scan_kw)
      return per_step_loss(params, out, y)

    def step(state, x, y):
      key, sub = jax.random.split(state['key'])
      loss, grads = jax.value_and_grad(loss_fn)(state['params'], sub, x, y)
      updates, opt = optimizer.update(grads, state['opt'], state['params'])
      return {'params': optax.apply_updates(state['params'], updates), 'opt': opt,
              'key': key}, loss

    return jax.jit(step), {'params': params, 'opt': optimizer.init(params), 'key': k_state}

  def cleaning():
    """Cleaning noise: the zero-probe gradient at the carry and the buffer update in the step."""
    noise = initstate.cleaning_noise(buffer_size=256, scale=1.0)
    params = {'cell': cell_params, 'carry': noise.init(None, template), 'readout': ro}
    buffer = noise.init_state(template)

    def loss_fn(params, probe, buffer, key, x, y):
      carry = noise.init_carry(params['carry'], key, batch, train=True, state=buffer)
      carry = jax.tree.map(jnp.add, carry, probe)   # Its gradient is dL/dcarry.
      out = initstate.scan_rnn(cell.bind(params['cell']), x, carry, **scan_kw)
      return per_step_loss(params, out, y)

    def step(state, x, y):
      key, sub = jax.random.split(state['key'])
      probe = jax.tree.map(lambda t: jnp.zeros((batch,) + t.shape, t.dtype), template)
      loss, (grads, carry_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
          state['params'], probe, state['buffer'], sub, x, y)
      updates, opt = optimizer.update(grads, state['opt'], state['params'])
      return {'params': optax.apply_updates(state['params'], updates), 'opt': opt, 'key': key,
              'buffer': noise.update_state(state['buffer'], carry_grads)}, loss

    state = {'params': params, 'opt': optimizer.init(params), 'key': k_state, 'buffer': buffer}
    return jax.jit(step), state

  p = args.reset_prob
  builders = {
      'zeros': lambda: with_strategy(initstate.zeros()),
      'learned': lambda: with_strategy(initstate.learned()),
      'noisy_learned(0.3)': lambda: with_strategy(initstate.noisy_learned(0.3)),
      'latent(8)': lambda: with_strategy(initstate.latent(8)),
      'cleaning_noise': cleaning,
      f'burn_in={burn}': lambda: with_strategy(initstate.zeros(), burn_in=burn),
      f'burn_in={burn}+stop_gradient': lambda: with_strategy(initstate.zeros(), burn_in=burn,
                                                     stop_gradient=True),
      f'resets(p={p:g})+noisy_learned(0.3)': lambda: with_strategy(initstate.noisy_learned(0.3),
                                                           with_resets=True),
  }
  return builders


def _strategy_group(report: Report, size: Size, key: jax.Array,
                    args: argparse.Namespace) -> None:
  _heading(f'carry-strategy overhead, training step: {size.describe()}')
  group = f'strategies {size.name}'
  k_vars, k_data = jax.random.split(key)
  x, y = make_data(size, k_data)
  benches = {}
  for name, build in strategy_variants(size, k_vars, args).items():
    try:
      step, state = build()
    except Exception as exc:  # pylint: disable=broad-except
      report.fail(f'{group} {name}', exc)
      continue
    holder = [state]

    def run(step=step, holder=holder):
      new_state, loss = jax.block_until_ready(step(holder[0], x, y))
      holder[0] = new_state
      return loss

    benches[name] = run
  timings = time_interleaved(benches, args.repeats, args.min_sample_s,
                             lambda n, e: report.fail(f'{group} {n}', e))
  report.timing_table('strategies', group, size.tokens,
                      [('train', name, t) for name, t in timings.items()])
  if 'zeros' in timings:
    for name, t in timings.items():
      if name != 'zeros':
        report.ratio('strategies', f'{size.name} train', name, t.median, 'zeros',
                     timings['zeros'].median)


def run_strategies(report: Report, sizes: dict[str, Size], key: jax.Array,
                   args: argparse.Namespace) -> None:
  impl = args.implementation or ("scan_rnn's default" if HAS_IMPLEMENTATION else None)
  if impl:
    report.note(f'strategies use implementation={impl}.')
  for i, name in enumerate(args.strategy_sizes):
    _strategy_group(report, sizes[name], jax.random.fold_in(key, i), args)


# ------------------------------------------------------------------------------------------
# Section 3: memory against T, with and without checkpointing.


def _nearest_sqrt_divisor(n: int) -> int:
  """The divisor of n closest to sqrt(n) (the smaller one on a tie)."""
  divisors = [d for d in range(1, n + 1) if n % d == 0]
  return min(divisors, key=lambda d: (abs(d - math.sqrt(n)), d))


def _checkpoint_values(spec: Sequence[str], steps: int) -> list[int]:
  values = []
  for item in spec:
    value = _nearest_sqrt_divisor(steps) if item == 'sqrt' else int(item)
    if value not in values:
      values.append(value)
  return values


def _memory_stats(compiled: Any) -> dict[str, float | None]:
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  out = {}
  for field in ('temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
                'alias_size_in_bytes', 'generated_code_size_in_bytes', 'peak_memory_in_bytes'):
    value = getattr(stats, field, None)
    out[field.replace('_size_in_bytes', '').replace('_in_bytes', '') + '_mib'] = (
        None if value is None else value / _MIB)
  return out


def _memory_variants(cell: initstate.RecurrentCell, params: Any, flax_params: Any, batch: int,
                     steps: int, args: argparse.Namespace) -> dict[str, tuple[Callable, Any]]:
  """name -> (loss_fn, params) for the memory section at sequence length `steps`."""
  impl_kw = {} if args.implementation is None else {'implementation': args.implementation}
  out = {'initstate': (initstate_loss_fn(cell, batch, **impl_kw), params)}
  if HAS_IMPLEMENTATION and args.implementation != 'generic':
    out['initstate-generic'] = (initstate_loss_fn(cell, batch, implementation='generic'), params)
  if HAS_CHECKPOINT:
    for every in _checkpoint_values(args.checkpoint_every, steps):
      out[f'initstate+checkpoint_every={every}'] = (
          initstate_loss_fn(cell, batch, checkpoint_every=every, **impl_kw), params)
  out['flax-OptimizedLSTMCell'] = (flax_loss_fn(nn.RNN(nn.OptimizedLSTMCell(cell.output_size))),
                                   flax_params)
  return out


def compile_train_step(loss_fn: Callable, params: Any, x: jax.Array, y: jax.Array,
                       learning_rate: float) -> tuple[Any, float, dict[str, float | None]]:
  """AOT-compiles the training step: (compiled, compile seconds, memory stats in MiB)."""
  opt_init, step = adam_train_step(loss_fn, learning_rate)
  start = time.perf_counter()
  compiled = jax.jit(step).lower(params, opt_init(params), x, y).compile()
  return compiled, time.perf_counter() - start, _memory_stats(compiled)


def _memory_at_length(report: Report, variants: dict[str, tuple[Callable, Any]], size: Size,
                      x: jax.Array, y: jax.Array, args: argparse.Namespace) -> dict[str, Any]:
  """Compiles every variant at one T, prints and records its memory; returns name -> compiled."""
  fmt = lambda v: 'n/a' if v is None else f'{v:.2f}'
  compiled_by_name, temps = {}, {}
  for name, (loss, params) in variants.items():
    try:
      compiled, compile_s, stats = compile_train_step(loss, params, x, y, args.learning_rate)
    except Exception as exc:  # pylint: disable=broad-except
      report.fail(f'memory T={size.time} {name}', exc)
      continue
    print(f'{size.time:>6} {name:<36} {fmt(stats.get("temp_mib")):>10} '
          f'{fmt(stats.get("argument_mib")):>9} {fmt(stats.get("output_mib")):>8} '
          f'{fmt(stats.get("alias_mib")):>9} {compile_s:>9.2f}')
    report.memory.append({'T': size.time, 'batch': size.batch, 'features': size.features,
                          'hidden': size.hidden, 'variant': name, 'compile_s': compile_s,
                          **stats})
    temps[name] = stats.get('temp_mib')
    compiled_by_name[name] = compiled
  base = temps.get('initstate')
  for name, value in temps.items():
    if name != 'initstate' and base and value is not None:
      report.ratio('memory', f'T={size.time} temp', name, value, 'initstate', base, unit='temp')
  return compiled_by_name


def _time_long_step(report: Report, variants: dict[str, tuple[Callable, Any]],
                    compiled: dict[str, Any], size: Size, x: jax.Array, y: jax.Array,
                    args: argparse.Namespace) -> None:
  """Times the training step at the largest T: initstate with and without checkpointing, Flax."""
  _heading(f'training step at T={size.time}: B={size.batch} D={size.features} H={size.hidden} '
           '(first call: compiled beforehand, see the memory table)')
  benches = {}
  for name, (loss, params) in variants.items():
    if name in compiled and name != 'initstate-generic':
      benches[name] = jax_train_runner(loss, params, x, y, args.learning_rate,
                                       compiled=compiled[name])
  timings = time_interleaved(benches, args.long_repeats, args.min_sample_s,
                             lambda n, e: report.fail(f'memory T={size.time} {n}', e))
  report.timing_table('memory', f'T{size.time}', size.tokens,
                      [('train', name, t) for name, t in timings.items()])
  if 'initstate' in timings:
    for name, t in timings.items():
      if name != 'initstate':
        report.ratio('memory', f'T={size.time} train', name, t.median, 'initstate',
                     timings['initstate'].median)


def run_memory(report: Report, memory: dict[str, Any], key: jax.Array,
               args: argparse.Namespace) -> None:
  batch, features, hidden = memory['batch'], memory['features'], memory['hidden']
  lengths = sorted(args.memory_lengths or memory['lengths'])
  if not HAS_CHECKPOINT:
    report.note('scan_rnn has no `checkpoint_every` keyword in this checkout: memory and the '
                'long-T timing without checkpointing only (Flax for reference).')
  k_cell, k_ro, k_data = jax.random.split(key, 3)
  cell = initstate.lstm(hidden)
  cell_params = cell.init(k_cell, features)
  ro = init_readout(k_ro, hidden)
  params = {'cell': cell_params, 'readout': ro}
  flax_params = {'rnn': {'cell': initstate.convert.lstm_params_to_flax(cell_params)},
                 'readout': ro}
  impl = args.implementation or ("scan_rnn's default" if HAS_IMPLEMENTATION else None)
  _heading(f'memory of the jitted training step: B={batch} D={features} H={hidden}' +
           (f' (initstate: implementation={impl})' if impl else ''))
  print(f'{"T":>6} {"variant":<36} {"temp MiB":>10} {"args MiB":>9} {"out MiB":>8} '
        f'{"alias MiB":>9} {"compile s":>9}')
  for steps in lengths:
    size = Size(f'T{steps}', batch, steps, features, hidden)
    x, y = make_data(size, jax.random.fold_in(k_data, steps))
    variants = _memory_variants(cell, params, flax_params, batch, steps, args)
    compiled = _memory_at_length(report, variants, size, x, y, args)
    if steps == lengths[-1]:
      _time_long_step(report, variants, compiled, size, x, y, args)


# ------------------------------------------------------------------------------------------
# Command line.


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
  def parse(text: str) -> list[Any]:
    return [kind(item.strip()) for item in text.split(',') if item.strip()]
  return parse


def _checkpoint_item(text: str) -> str:
  if text != 'sqrt' and not (text.isdigit() and int(text) >= 1):
    raise argparse.ArgumentTypeError(f"expected positive ints or 'sqrt', got {text!r}")
  return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description='Speed and memory of initstate.scan_rnn against Flax and PyTorch (CPU), all '
                  'variants of a comparison interleaved in one process. Prints medians, '
                  'min-max, tokens/s and ratios (median A / median B: below 1 means A is '
                  'faster or smaller). See benchmarks/README.md.')
  parser.add_argument('--sections', type=_csv(str), default=','.join(SECTIONS),
                      help='comma-separated sections to run (default: %(default)s)')
  parser.add_argument('--repeats', type=int, default=None,
                      help='interleaved rounds (samples per variant); default 20, 2 with '
                           '--quick')
  parser.add_argument('--quick', action='store_true',
                      help='smoke test: tiny sizes, 2 repeats, T up to 256, one call per '
                           'sample; the numbers mean nothing')
  parser.add_argument('--json', metavar='PATH', default=None,
                      help='also write every number (and the environment) to this JSON file')
  parser.add_argument('--print-env', action='store_true',
                      help='print MALLOC_* variables, GLIBC_TUNABLES, LD_PRELOAD, XLA_FLAGS, '
                           'CPU model, os.cpu_count() and library versions first (to record the '
                           'allocator settings of a run; see benchmarks/README.md)')
  parser.add_argument('--sizes', type=_csv(str), default='standard,small,sysid',
                      help='speed section: sizes to run, from standard (B32 T128 D64 H256), '
                           'small (B16 T64 D32 H64), sysid (B100 T100 D1 H8) '
                           '(default: %(default)s)')
  parser.add_argument('--strategy-sizes', type=_csv(str), default=None,
                      help='strategies section: sizes to run, from standard,small,sysid; '
                           'default standard,small (standard with --quick)')
  parser.add_argument('--gru', action='store_true',
                      help='speed section: also compare GRUs (initstate.gru, Flax GRUCell, '
                           'torch nn.GRU) at the standard size')
  parser.add_argument('--no-torch', action='store_true',
                      help='skip the PyTorch variants even if torch is installed')
  parser.add_argument('--torch-threads', type=int, default=None,
                      help='torch.set_num_threads; default os.cpu_count(), 1 with --quick '
                           "(PyTorch's OpenMP threads stall badly when another process holds "
                           'a core, and a smoke test often runs beside other work)')
  parser.add_argument('--implementation', choices=('auto', 'fused', 'generic'), default=None,
                      help="scan_rnn's implementation in the strategies and memory sections "
                           '(default: leave it to scan_rnn); the speed section always runs '
                           'fused and generic')
  parser.add_argument('--memory-lengths', type=_csv(int), default=None,
                      help='memory section: sequence lengths T; default '
                           f'{",".join(map(str, FULL_MEMORY["lengths"]))} '
                           f'({",".join(map(str, QUICK_MEMORY["lengths"]))} with --quick)')
  parser.add_argument('--checkpoint-every', type=_csv(_checkpoint_item), default='16,64',
                      help="memory section: values of scan_rnn's checkpoint_every to try, if it "
                           "has that keyword; 'sqrt' means the divisor of T nearest sqrt(T) "
                           '(default: %(default)s)')
  parser.add_argument('--long-repeats', type=int, default=None,
                      help='memory section: interleaved rounds for the training step at the '
                           'largest T; default 5, 2 with --quick')
  parser.add_argument('--min-sample-ms', type=float, default=None,
                      help='each sample repeats a call until it lasts this long and reports '
                           'the time per call (evens out timer noise for the tiny sizes); '
                           'default 50, 0 with --quick')
  parser.add_argument('--reset-prob', type=float, default=0.05,
                      help='strategies section: probability of a reset per step and sequence '
                           'in the random [B, T] reset mask (default: %(default)s)')
  parser.add_argument('--learning-rate', type=float, default=1e-3,
                      help='Adam learning rate (default: %(default)s)')
  parser.add_argument('--seed', type=int, default=0,
                      help='seed of the root PRNG key (default: %(default)s)')
  args = parser.parse_args(argv)

  bad = [s for s in args.sections if s not in SECTIONS]
  if bad or not args.sections:
    parser.error(f'--sections: unknown {bad}; choose from {",".join(SECTIONS)}')
  if args.strategy_sizes is None:
    args.strategy_sizes = ['standard'] if args.quick else ['standard', 'small']
  for flag, names in (('--sizes', args.sizes), ('--strategy-sizes', args.strategy_sizes)):
    bad = [s for s in names if s not in FULL_SIZES]
    if bad:
      parser.error(f'{flag}: unknown {bad}; choose from {",".join(FULL_SIZES)}')
  if args.implementation is not None and not HAS_IMPLEMENTATION:
    parser.error('--implementation: scan_rnn has no `implementation` keyword in this checkout')
  if args.memory_lengths and min(args.memory_lengths) < 1:
    parser.error('--memory-lengths must be positive')
  if not 0.0 <= args.reset_prob <= 1.0:
    parser.error('--reset-prob must be in [0, 1]')
  if args.repeats is None:
    args.repeats = 2 if args.quick else 20
  if args.long_repeats is None:
    args.long_repeats = 2 if args.quick else 5
  if args.torch_threads is None:
    args.torch_threads = 1 if args.quick else (os.cpu_count() or 1)
  if args.torch_threads < 1:
    parser.error('--torch-threads must be at least 1')
  if args.min_sample_ms is None:
    args.min_sample_ms = 0.0 if args.quick else 50.0
  if args.repeats < 1 or args.long_repeats < 1:
    parser.error('--repeats and --long-repeats must be at least 1')
  args.min_sample_s = args.min_sample_ms / 1e3
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if hasattr(sys.stdout, 'reconfigure'):
    sys.stdout.reconfigure(line_buffering=True)  # Progress shows through `| tee`.
  if torch is not None:
    torch.set_num_threads(args.torch_threads)
  report = Report(env=collect_env(), args=dict(vars(args)))
  sizes = QUICK_SIZES if args.quick else FULL_SIZES
  memory = QUICK_MEMORY if args.quick else FULL_MEMORY
  if args.print_env:
    print_env(report.env)
  env = report.env
  quick = '; QUICK smoke test: the numbers mean nothing' if args.quick else ''
  print(f'\ninitstate RNN benchmark: sections {",".join(args.sections)}; {args.repeats} '
        f'interleaved rounds (rotating order){quick}')
  torch_text = f'{env["torch"]} (threads: {env["torch_threads"]})' if env['torch'] else '-'
  print(f'jax {env["jax"]}, flax {env["flax"]}, optax {env["optax"]}, torch '
        f'{torch_text}; {env["cpu_count"]} CPUs ({env["cpu_model"]}); '
        f'MALLOC_* {"set" if env["malloc_env"] else "unset"}; load average '
        f'{_loadavg(env["loadavg_start"])}')
  print('times are per call: median and min-max over the rounds; tokens/s = B*T / median; '
        'first call = tracing + compilation + one run (excluded from the samples)')
  print('ratio A / B = median of A / median of B (below 1: A is faster, or smaller)')
  if env['jax_disable_most_optimizations']:
    report.note('jax_disable_most_optimizations is on (JAX_DISABLE_MOST_OPTIMIZATIONS): XLA '
                'optimizes little, so times and memory are not representative.')
  root = jax.random.key(args.seed)
  start = time.perf_counter()
  if 'speed' in args.sections:
    run_speed(report, sizes, jax.random.fold_in(root, 1), args)
  if 'strategies' in args.sections:
    run_strategies(report, sizes, jax.random.fold_in(root, 2), args)
  if 'memory' in args.sections:
    run_memory(report, memory, jax.random.fold_in(root, 3), args)
  report.env['loadavg_end'] = os.getloadavg() if hasattr(os, 'getloadavg') else None
  report.env['wall_s'] = time.perf_counter() - start
  print(f'\ndone in {report.env["wall_s"]:.1f} s; load average at the end '
        f'{_loadavg(report.env["loadavg_end"])}; {len(report.failures)} failure(s)')
  if args.json:
    path = pathlib.Path(args.json)
    if path.parent != pathlib.Path(''):
      path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(report), indent=1, default=str))
    print(f'wrote {path}')
  return 1 if report.failures else 0


if __name__ == '__main__':
  sys.exit(main())
