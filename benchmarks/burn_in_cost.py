"""What each carry of the burn-in study costs to train: seconds per model-epoch, against zeros.

For each setting (dataset, N, m values, seeds), every variant's group is built by the study's
own code (`burn_in.make_group`, all models of the group vectorised together, as the recorded
runs with `--chunk-size 0`) and trained epoch by epoch, the variants interleaved round by round
in one process (the order rotates every round). Each sample is one epoch of the whole group;
the first epoch (with compilation) is timed separately and left out. The report gives, per
variant: trained parameters per model, the median [min, max] seconds per epoch of the group,
seconds per model-epoch, its ratio to `zeros` (the cost of the carry, like for like), and the
time the group's published budget would take at that rate (an estimate).

The wall-clock times saved with a study's rows depend on what else the machine ran at the time;
this benchmark is the like-for-like comparison.

Usage:

  python benchmarks/burn_in_cost.py                  # Silverbox N=100 and RLC N=200, 3 seeds
  python benchmarks/burn_in_cost.py --settings silverbox --rounds 5
  python benchmarks/burn_in_cost.py --quick          # a smoke test: tiny sizes, 1 round
"""

import argparse
import statistics
import time

import jax

from initstate.studies import burn_in
from initstate.studies import sysid

# (dataset, N, m values): the settings of the beyond-paper runs (m* is the paper's).
SETTINGS = (('silverbox', 100, (0, 20, 94)), ('rlc', 200, (0, 110)))


def measure(config: burn_in.Config, data: dict[str, sysid.Signal], rounds: int) -> list[dict]:
  """One row per variant of `config.variants`: its seconds per epoch over `rounds` rounds."""
  groups = {}
  for variant in config.variants:
    _, mc = burn_in.model_configs(config, (variant,))
    init, epoch, _, steps = burn_in.make_group(config, data, (variant,))
    state = init(jax.random.key(config.seed), mc)
    start = time.perf_counter()
    state, loss = epoch(state, mc, jax.random.key(1))
    jax.block_until_ready(loss)
    groups[variant] = dict(epoch=epoch, mc=mc, state=state, steps=steps, samples=[],
                           first=time.perf_counter() - start, models=len(mc.seed),
                           params=burn_in.num_params(state[0], variant))
  names = list(config.variants)
  for r in range(rounds):
    for variant in names[r % len(names):] + names[:r % len(names)]:
      g = groups[variant]
      start = time.perf_counter()
      g['state'], loss = g['epoch'](g['state'], g['mc'], jax.random.key(2 + r))
      jax.block_until_ready(loss)
      g['samples'].append(time.perf_counter() - start)
  return [dict(variant=v, models=g['models'], params=g['params'], steps=g['steps'],
               first=g['first'], median=statistics.median(g['samples']),
               low=min(g['samples']), high=max(g['samples'])) for v, g in groups.items()]


def report(config: burn_in.Config, rows: list[dict]) -> str:
  zeros = next((r for r in rows if r['variant'] == 'zeros'), None)
  base = zeros['median'] / zeros['models'] if zeros else None
  lines = [f'== {config.dataset} N={config.window}, m in {list(config.burn_ins)}, '
           f'{config.seeds} seed(s): one group per variant; {config.epochs} epochs published',
           f'{"variant":<15}{"models":>7}{"params":>8}{"steps":>7}{"first s":>9}'
           f'{"s/epoch median [min, max]":>28}{"s/model-epoch":>15}{"vs zeros":>10}'
           f'{"budget h (est.)":>17}']
  for r in rows:
    per_model = r['median'] / r['models']
    ratio = f'{per_model / base:.2f}x' if base else 'n/a'
    spread = f'{r["median"]:.3f} [{r["low"]:.3f}, {r["high"]:.3f}]'
    hours = r['median'] * config.epochs / 3600
    lines.append(f'{r["variant"]:<15}{r["models"]:>7}{r["params"]:>8}{r["steps"]:>7}'
                 f'{r["first"]:>9.1f}{spread:>28}{per_model:>15.4f}{ratio:>10}{hours:>17.2f}')
  return '\n'.join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--rounds', type=int, default=3, help='timed epochs per variant')
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--variants', default=','.join(burn_in.VARIANTS))
  p.add_argument('--settings', default=','.join(s[0] for s in SETTINGS),
                 help='datasets of SETTINGS to time')
  p.add_argument('--quick', action='store_true',
                 help='a smoke test: RLC cut to 300 steps, N=20, H=4, 1 seed, 1 round')
  args = p.parse_args(argv)
  variants = tuple(args.variants.split(','))
  unknown = set(variants) - set(burn_in.VARIANTS)
  if unknown:
    p.error(f'unknown variants {sorted(unknown)}; choose from {burn_in.VARIANTS}')
  settings = [s for s in SETTINGS if s[0] in args.settings.split(',')]
  if len(settings) != len(args.settings.split(',')):
    p.error(f'--settings takes datasets of {[s[0] for s in SETTINGS]}, got {args.settings!r}')
  print(f'jax {jax.__version__} on {jax.devices()}')
  if args.quick:
    data, _ = sysid.load('rlc')
    data = {k: sysid.Signal(v.u[:300], v.y[:300]) for k, v in data.items()}
    config = burn_in.Config(dataset='rlc', window=20, burn_ins=(0, 5), hidden_size=4,
                            batch_size=50, variants=variants, seeds=1, chunk_size=None,
                            stateful_windows=2).resolved()
    print(report(config, measure(config, data, 1)))
    return
  for dataset, window, burn_ins in settings:
    config = burn_in.Config(dataset=dataset, window=window, burn_ins=burn_ins,
                            variants=variants, seeds=args.seeds, chunk_size=None).resolved()
    data, _ = sysid.load(dataset)
    print(report(config, measure(config, data, args.rounds)), flush=True)


if __name__ == '__main__':
  main()
