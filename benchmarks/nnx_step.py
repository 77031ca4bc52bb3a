"""The NNX layer's training step against the bare functional step, interleaved in one process.

Both steps compute the same thing: an LSTM (`initstate.lstm`) over [B, T, D] inputs from a
`noisy_learned` initial carry, a linear read-out H -> 1 at every step, the mean squared error,
its gradient with respect to every parameter (the learned carry included) and an optax Adam
update. The variants:

* `scan_rnn`: pure functions (`scan_rnn(cell.bind(params), ...)`) under `jax.jit`: the
  baseline.
* `nnx.jit`: `initstate.nnx.RNN` and `nnx.Linear` trained with `nnx.Optimizer`,
  `nnx.value_and_grad` and `nnx.jit` (the way the Flax NNX guides write a training step).
* `nnx split+jit`: the same modules, `nnx.split` once and merged inside a `jax.jit`-ed pure
  function (the pattern the Flax NNX performance guide recommends for small, fast steps).

Each round times every variant once (the order rotates each round); the report gives each
variant's median and min-max over the rounds and its ratio to `scan_rnn` (medians). The
forward losses of the three at the same weights are checked against each other first.

Usage:

  python benchmarks/nnx_step.py                 # standard and small sizes, 30 rounds
  python benchmarks/nnx_step.py --quick         # a smoke test: one tiny size, 3 rounds
"""

import argparse
import pathlib
import platform
import statistics
import sys
import time
from typing import NamedTuple

_REPO = pathlib.Path(__file__).resolve().parents[1]
if (_REPO / 'initstate' / '__init__.py').exists():
  sys.path.insert(0, str(_REPO))  # Benchmark the checkout this script lives in.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import initstate  # noqa: E402


class Size(NamedTuple):
  name: str
  batch: int
  steps: int
  features: int
  hidden: int


SIZES = (Size('standard', 32, 128, 64, 256), Size('small', 16, 64, 32, 64))
QUICK_SIZES = (Size('tiny', 4, 8, 4, 16),)
STDDEV = 0.1
LEARNING_RATE = 1e-3


def _modules(size: Size):
  model = initstate.nnx.RNN(initstate.lstm(size.hidden), carry=initstate.noisy_learned(STDDEV),
                            in_features=size.features, rngs=nnx.Rngs(params=0, carry=1))
  readout = nnx.Linear(size.hidden, 1, rngs=nnx.Rngs(2))
  both = nnx.List([model, readout])
  return both, nnx.Optimizer(both, optax.adam(LEARNING_RATE), wrt=nnx.Param)


def _values(tree):
  return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


def make_variants(size: Size, x: jax.Array, y: jax.Array):
  """{name: (step, forward_loss)}: `step()` runs one training step and blocks."""
  cell = initstate.lstm(size.hidden)
  strategy = initstate.noisy_learned(STDDEV)
  optimizer = optax.adam(LEARNING_RATE)

  # Functional baseline, starting from the NNX modules' weights.
  both, _ = _modules(size)
  params = {'cell': _values(both[0].cell), 'carry': _values(both[0].carry),
            'readout': {'kernel': both[1].kernel.get_value(), 'bias': both[1].bias.get_value()}}

  def loss_fn(params, key, train=True):
    out = initstate.scan_rnn(
        cell.bind(params['cell']), x,
        init_carry_fn=lambda k, b: strategy.init_carry(params['carry'], k, b, train=train),
        rng=key if train else None)
    pred = out.outputs @ params['readout']['kernel'] + params['readout']['bias']
    return jnp.mean((pred - y) ** 2)

  @jax.jit
  def functional_step(params, opt_state, key):
    key, sub = jax.random.split(key)
    loss, grads = jax.value_and_grad(loss_fn)(params, sub)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, key, loss

  fstate = [params, optimizer.init(params), jax.random.key(3)]

  def run_functional():
    fstate[:] = functional_step(*fstate)[:3]
    jax.block_until_ready(fstate[0])

  # NNX with nnx.jit.
  nnx_both, nnx_opt = _modules(size)

  def nnx_loss(both):
    return jnp.mean((both[1](both[0](x).outputs) - y) ** 2)

  @nnx.jit
  def nnx_step(both, opt):
    loss, grads = nnx.value_and_grad(nnx_loss)(both)
    opt.update(both, grads)
    return loss

  def run_nnx_jit():
    jax.block_until_ready(nnx_step(nnx_both, nnx_opt))

  # NNX split once, merged inside jax.jit.
  split_both, split_opt = _modules(size)
  graphdef, split_state = nnx.split((split_both, split_opt))

  @jax.jit
  def split_step(state):
    both, opt = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(nnx_loss)(both)
    opt.update(both, grads)
    return nnx.state((both, opt)), loss

  sstate = [split_state]

  def run_split():
    sstate[0], loss = split_step(sstate[0])
    jax.block_until_ready(loss)

  nnx_both[0].eval()
  check = (float(loss_fn(params, None, train=False)), float(nnx_loss(nnx_both)))
  nnx_both[0].train()
  return {'scan_rnn': run_functional, 'nnx.jit': run_nnx_jit, 'nnx split+jit': run_split}, check


def bench(size: Size, rounds: int) -> None:
  x = jax.random.normal(jax.random.key(10), (size.batch, size.steps, size.features))
  y = jnp.cumsum(x[..., :1], axis=1) / jnp.sqrt(size.steps)
  variants, check = make_variants(size, x, y)
  first = {}
  for name, run in variants.items():
    start = time.perf_counter()
    run()
    first[name] = time.perf_counter() - start
  times = {name: [] for name in variants}
  names = list(variants)
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      start = time.perf_counter()
      variants[name]()
      times[name].append(time.perf_counter() - start)
  base = statistics.median(times['scan_rnn'])
  print(f'\n{size.name}: B={size.batch} T={size.steps} D={size.features} H={size.hidden}, '
        f'{rounds} rounds; check: eval losses {check[0]:.6f} (scan_rnn) {check[1]:.6f} (nnx)')
  print(f'  {"variant":<14} {"median ms":>10} {"min-max ms":>16} {"first s":>8} '
        f'{"ratio":>7}')
  for name in names:
    t = times[name]
    med = statistics.median(t)
    print(f'  {name:<14} {med * 1e3:10.2f} {min(t) * 1e3:7.2f}-{max(t) * 1e3:<8.2f} '
          f'{first[name]:8.2f} {med / base:7.3f}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--rounds', type=int, default=30)
  parser.add_argument('--quick', action='store_true', help='one tiny size, 3 rounds')
  args = parser.parse_args()
  print(f'jax {jax.__version__}, flax {__import__("flax").__version__}, '
        f'{platform.processor() or platform.machine()}, {jax.devices()[0].platform}')
  for size in (QUICK_SIZES if args.quick else SIZES):
    bench(size, 3 if args.quick else args.rounds)


if __name__ == '__main__':
  main()
