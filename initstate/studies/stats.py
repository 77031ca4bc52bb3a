"""Paired comparisons over seeds with a minimum effect size and Holm's correction.

A study compares strategies on the same seeds (same data, same initial weights), so each
comparison is a paired one: per seed, gain = metric(baseline) - metric(candidate) for a
lower-is-better metric. A comparison is decided in two steps:

1. a two-sided paired t-test of mean gain = 0 gives a p-value; the p-values of every
   comparison in one family are adjusted by Holm's step-down method (Holm 1979, "A simple
   sequentially rejective multiple test procedure"), which keeps the family-wise error rate at
   `alpha` however many comparisons there are;
2. a comparison is 'better' (or 'worse') only if its adjusted p-value is below `alpha` *and*
   its mean gain is above `min_effect` (or below `-min_effect`): a consistent but negligible
   difference is a 'tie'.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One decided comparison: gains are per seed, baseline minus candidate."""
  name: str
  mean: float          # mean gain over seeds (positive: the candidate is better)
  se: float            # standard error of the mean gain
  p: float             # two-sided paired t-test p-value, unadjusted
  p_holm: float        # Holm-adjusted p-value within its family
  verdict: str         # 'better', 'worse' or 'tie'

  def describe(self, unit: str = '') -> str:
    return (f'{self.verdict} ({self.mean:+.4f}±{self.se:.4f}{unit}, p={self.p:.2g}, '
            f'Holm p={self.p_holm:.2g})')


def paired_p_value(gain: np.ndarray) -> float:
  """Two-sided p-value of a paired t-test that the mean of `gain` [S] is zero."""
  gain = np.asarray(gain, float)
  if gain.ndim != 1 or len(gain) < 2:
    raise ValueError(f'need one gain per seed for at least 2 seeds, got shape {gain.shape}.')
  if np.any(~np.isfinite(gain)):
    return float('nan')
  sd = float(np.std(gain, ddof=1))
  mean = float(np.mean(gain))
  if sd == 0.0:
    return 0.0 if mean != 0.0 else 1.0
  t = mean / (sd / math.sqrt(len(gain)))
  return float(2.0 * scipy_stats.t.sf(abs(t), df=len(gain) - 1))


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjusted p-values (NaN stays NaN and is not counted)."""
  p = np.asarray(p_values, float)
  out = np.full_like(p, np.nan)
  finite = np.flatnonzero(np.isfinite(p))
  order = finite[np.argsort(p[finite], kind='stable')]
  m = len(order)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out


def compare_family(gains: Mapping[str, np.ndarray], *, min_effect: float,
                   alpha: float = 0.05) -> dict[str, Comparison]:
  """Decides every comparison of one family: name -> per-seed gains [S]."""
  if min_effect < 0 or not 0 < alpha < 1:
    raise ValueError(f'need min_effect >= 0 and alpha in (0, 1), got {min_effect}, {alpha}.')
  names = list(gains)
  p = [paired_p_value(gains[n]) for n in names]
  adjusted = holm(p)
  out = {}
  for name, p_raw, p_adj in zip(names, p, adjusted):
    g = np.asarray(gains[name], float)
    mean = float(np.mean(g))
    se = float(np.std(g, ddof=1) / math.sqrt(len(g)))
    significant = bool(np.isfinite(p_adj) and p_adj < alpha)
    if significant and mean > min_effect:
      verdict = 'better'
    elif significant and mean < -min_effect:
      verdict = 'worse'
    else:
      verdict = 'tie'
    out[name] = Comparison(name, mean, se, p_raw, float(p_adj), verdict)
  return out
