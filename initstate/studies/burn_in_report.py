"""The burn-in study's report: m* selection, seed medians and ranges, the paper's table, plots.

Works on the rows `burn_in.run_one` returns (one per dataset, N, variant, m and seed, with
`{split}_{metric}` MSEs on the scaled outputs; metrics `all`, `after_m`, `after_offset`).

Verdict rule for the paper's table (fixed before any run): a published figure is REPRODUCED
when it lies inside the range [min, max] of our seeds at the same setting and metric (all
steps, the paper's); otherwise NOT REPRODUCED, with ours above or below.
"""

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from initstate.studies import sysid

SELECTIONS = ('paper', 'val')
SILVERBOX_CAP = 95   # The paper chose Silverbox's m* among m <= 95.
RULE = ('Verdict rule: REPRODUCED if the paper\'s figure lies inside [min, max] of our seeds '
        '(same setting, MSE over every step of the split); otherwise NOT REPRODUCED.')

Row = dict[str, Any]


def _group(rows: Iterable[Row], *keys: str) -> dict[tuple[Any, ...], list[Row]]:
  out: dict[tuple[Any, ...], list[Row]] = {}
  for r in rows:
    out.setdefault(tuple(r[k] for k in keys), []).append(r)
  return out


def spread(values: Sequence[float]) -> tuple[float, float, float]:
  """(median, min, max) over seeds."""
  return statistics.median(values), min(values), max(values)


def _fmt(values: Sequence[float]) -> str:
  med, lo, hi = spread(values)
  return f'{med:.5f}' if len(values) == 1 else f'{med:.5f} [{lo:.5f}, {hi:.5f}]'


def selection_score(row: Row, select: str) -> float:
  """What m* minimises: 0.7 train + 0.3 val over every step (paper) or val over t >= m."""
  if select == 'paper':
    return 0.7 * row['train_all'] + 0.3 * row['val_all']
  if select == 'val':
    return row['val_after_m']
  raise ValueError(f'select must be one of {SELECTIONS}, got {select!r}.')


def select_m(rows: Iterable[Row], select: str) -> dict[tuple[Any, ...], Row]:
  """(dataset, window, variant, seed) -> the row at that seed's m*.

  With `select='paper'`, Silverbox's m* is chosen among m <= 95, as in the paper.
  """
  chosen = {}
  for key, rs in _group(rows, 'dataset', 'window', 'variant', 'seed').items():
    candidates = rs
    if select == 'paper' and key[0] == 'silverbox':
      candidates = [r for r in rs if r['burn_in'] <= SILVERBOX_CAP] or rs
    chosen[key] = min(candidates, key=lambda r: (selection_score(r, select), r['burn_in']))
  return chosen


def report(rows: Sequence[Row], select: str = 'paper') -> str:
  """One (dataset, N): every (variant, m) over seeds, each variant's m*, and beyond-paper
  answers."""
  r0 = rows[0]
  seeds = sorted({r['seed'] for r in rows})
  timing = '; '.join(
      f'{variant}: {seconds:.0f} s for {models} models' + (
          f' (resumed at epoch {resumed})' if resumed else '')
      for variant, seconds, models, resumed in _trained_groups(rows))
  lines = [
      f'== {r0["dataset"]}, N={r0["window"]}: {r0["epochs"]} epochs ({r0["adam_steps"]} Adam '
      f'steps), lr {r0["learning_rate"]:g}, {r0["parametrization"]} parametrization, '
      f'{len(seeds)} seed(s). MSE on scaled outputs, median [min, max] over seeds; all = every '
      f'step (the paper\'s metric), after m = steps t >= m, after {r0["offset"]} = steps '
      f't >= {r0["offset"]} (the same steps for every m), windows = windows of N steps from the '
      f'initial carry, t >= m of each (median). Wall-clock: {timing}.',
      f'{"variant":<14}{"m":>4}  {"train all":>9}  {"val all":>9}  {"test all":<27}'
      f'{"test after m":<27}{"test after " + str(r0["offset"]):<27}{"test windows":>12}']
  for (variant, m), rs in _group(rows, 'variant', 'burn_in').items():
    col = lambda k, rs=rs: [r[k] for r in rs]
    lines.append(
        f'{variant:<14}{m:>4}  {statistics.median(col("train_all")):>9.5f}  '
        f'{statistics.median(col("val_all")):>9.5f}  {_fmt(col("test_all")):<27}'
        f'{_fmt(col("test_after_m")):<27}{_fmt(col("test_after_offset")):<27}'
        f'{statistics.median(col("test_windows")):>12.5f}')
  chosen = select_m(rows, select)
  rule = ('0.7 train + 0.3 val over every step' + (
      f', m <= {SILVERBOX_CAP}' if r0['dataset'] == 'silverbox' else '')
          if select == 'paper' else 'val over t >= m')
  for variant in dict.fromkeys(r['variant'] for r in rows):
    picks = [chosen[(r0['dataset'], r0['window'], variant, s)] for s in seeds]
    lines.append(f'm* of {variant} ({rule}), per seed: {[r["burn_in"] for r in picks]}; '
                 f'test all at m*: {_fmt([r["test_all"] for r in picks])}')
  lines += beyond_paper(rows)
  return '\n'.join(lines + [''])


def beyond_paper(rows: Sequence[Row]) -> list[str]:
  """Does a carry reach the best burn-in's test MSE with less burn-in? Medians over seeds of
  the MSE over t >= offset (the same steps for every m and variant), with their [min, max].
  The cost is the recorded wall-clock, which depends on what else the machine ran."""
  values = {k: [r['test_after_offset'] for r in rs]
            for k, rs in _group(rows, 'variant', 'burn_in').items()}
  med = {k: statistics.median(v) for k, v in values.items()}
  zeros = {m: v for (variant, m), v in med.items() if variant == 'zeros'}
  if not zeros:
    return []
  best_m = min(zeros, key=lambda m: zeros[m])
  target, offset = zeros[best_m], rows[0]['offset']
  goal = (f'the best burn-in (zeros, m={best_m}: median test MSE over t >= {offset} '
          f'{_fmt(values["zeros", best_m])})')
  lines = []
  for variant in ('learned', 'noisy_learned', 'conditional', 'stateful'):
    own = {m: v for (vr, m), v in med.items() if vr == variant}
    if not own:
      continue
    at = lambda m, v=variant: f'm={m} ({_fmt(values[v, m])})'
    reach = sorted(m for m, v in own.items() if v <= target)
    if not reach:
      m = min(own, key=lambda k: own[k])
      verdict = f'NO: its best median, at {at(m)}, stays above {goal}'
    elif reach[0] < best_m:
      verdict = f'YES: it reaches {goal} already at {at(reach[0])}'
    else:
      verdict = (f'{"WITH THE SAME" if reach[0] == best_m else "ONLY WITH MORE"} burn-in: it '
                 f'first reaches {goal} at {at(reach[0])}')
    lines.append(f'does {variant} reach the best burn-in with less burn-in? {verdict}; '
                 f'cost: {_cost(rows, variant)} (zeros: {_cost(rows, "zeros")})')
  return lines


def _trained_groups(rows: Sequence[Row]) -> list[tuple[str, float, int, int]]:
  """(variant, seconds, models, resumed at epoch) of each group (sweep) the rows came from."""
  return list(dict.fromkeys((r['variant'], r['group_seconds'], r['group_models'],
                             r.get('resumed_at_epoch', 0)) for r in rows))


def _cost(rows: Sequence[Row], variant: str) -> str:
  """Trained parameters and wall-clock seconds per model of a variant (over its groups)."""
  mine = [r for r in rows if r['variant'] == variant]
  counted = [r for r in mine if 'num_params' in r]
  params = f'{counted[0]["num_params"]} parameters, ' if counted else ''
  groups = _trained_groups(mine)
  per_model = sum(g[1] for g in groups) / sum(g[2] for g in groups)
  return f'{params}{per_model:.0f} s wall-clock per model'


def paper_table(rows: Sequence[Row], select: str = 'paper',
                settings: Sequence[tuple[str, int]] = ()) -> str:
  """Our zero-carry models beside the paper's table: m = 0, the paper's m*, and our m*.

  `settings` lists the (dataset, N) the run was asked for; those without finished zero-carry
  rows are printed as not run, so that a partial table never reads as complete.
  """
  zeros = [r for r in rows if r['variant'] == 'zeros']
  if not zeros and not settings:
    return ''
  chosen = select_m(zeros, select)
  lines = ['== The paper\'s table (Schiller et al., ICLR 2026; MSE on scaled outputs, every '
           'step; theirs one run, ours median [min, max] over seeds)', RULE,
           f'{"dataset":<18}{"N":>4}  {"m":<22}{"split":<6}{"paper":>9}  {"ours":<28}verdict']
  by_setting = _group(zeros, 'dataset', 'window')
  for key in settings:
    by_setting.setdefault(tuple(key), [])
  for (dataset, window), rs in by_setting.items():
    published = [t for t in sysid.published_table(dataset) if t['N'] == window]
    if not published:
      lines.append(f'{dataset:<18}{window:>4}  the paper publishes no row for this N')
      continue
    if not rs:
      lines.append(f'{dataset:<18}{window:>4}  NOT RUN (no finished zero-carry models): '
                   f'the paper\'s m0 test {published[0]["m0 test"] / 100:.5f}, m* = '
                   f'{int(published[0]["m_star"])} test {published[0]["m_star test"] / 100:.5f}')
      continue
    t = published[0]
    m_star = int(t['m_star'])
    by_m = _group(rs, 'burn_in')
    seeds = sorted({r['seed'] for r in rs})
    ours_star = [chosen[(dataset, window, 'zeros', s)] for s in seeds]
    cases = [('m=0', by_m.get((0,)), 'm0'),
             (f'paper\'s m*={m_star}', by_m.get((m_star,)), 'm_star'),
             (f'our m* ({select})', ours_star, 'm_star')]
    for label, picked, column in cases:
      for split in ('train', 'test'):
        paper = t[f'{column} {split}'] / 100.0
        if not picked:
          lines.append(f'{dataset:<18}{window:>4}  {label:<22}{split:<6}{paper:>9.5f}  '
                       f'{"not run":<28}n/a')
          continue
        values = [r[f'{split}_all'] for r in picked]
        _, lo, hi = spread(values)
        verdict = ('REPRODUCED' if lo <= paper <= hi else
                   f'NOT REPRODUCED (ours {"above" if lo > paper else "below"})')
        ms = (f' m*={sorted({r["burn_in"] for r in picked})}' if label.startswith('our')
              and split == 'test' else '')
        lines.append(f'{dataset:<18}{window:>4}  {label:<22}{split:<6}{paper:>9.5f}  '
                     f'{_fmt(values):<28}{verdict}{ms}')
  return '\n'.join(lines + [''])


def draw(ax: Any, rows: Sequence[Row]) -> None:
  """Test MSE (every step) against m on a Matplotlib axis: seed median and [min, max] band per
  variant, and the paper's two published points for this (dataset, N)."""
  for i, variant in enumerate(dict.fromkeys(r['variant'] for r in rows)):
    by_m = sorted(_group([r for r in rows if r['variant'] == variant], 'burn_in').items())
    ms = [m for (m,), _ in by_m]
    stats = [spread([r['test_all'] for r in rs]) for _, rs in by_m]
    line, = ax.plot(ms, [s[0] for s in stats], marker='o', markersize=3,
                    linestyle=['-', '--', ':', '-.'][i % 4], label=f'{variant} (median)')
    ax.fill_between(ms, [s[1] for s in stats], [s[2] for s in stats], alpha=0.2,
                    color=line.get_color())
  r0 = rows[0]
  published = [t for t in sysid.published_table(r0['dataset']) if t['N'] == r0['window']]
  if published:
    t = published[0]
    ax.plot([0, t['m_star']], [t['m0 test'] / 100, t['m_star test'] / 100], 'k*',
            markersize=11, linestyle='none', label='paper (one run)')
  seeds = len({r['seed'] for r in rows})
  ax.set_yscale('log')
  ax.set_xlabel('burn-in m (steps left out of the loss)')
  ax.set_ylabel('test MSE (scaled outputs, every step)')
  ax.set_title(f'{r0["dataset"]}, N={r0["window"]}, {r0["epochs"]} epochs, '
               f'{seeds} seed(s): band = min to max')
  ax.legend(fontsize=8)


def plot(rows: Sequence[Row], path) -> None:
  """`draw` into a PNG file."""
  # Figures without pyplot: no backend switch, so a notebook's inline plots stay on.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(7, 4.5))
  draw(fig.subplots(), rows)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
