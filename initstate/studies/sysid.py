"""System-identification benchmark data: loading, scaling and windows.

The data (Silverbox, Wiener-Hammerstein, RLC) ship with initstate in `studies/data/sysid/`
(see its README for provenance and licence), as published with Schiller, Heinrich, Lopez and
Müller, "Tuning the burn-in phase in training recurrent neural networks improves their
performance" (ICLR 2026). Scaling follows their code: a standard scaler (zero mean, unit
variance, population std) fitted on the training split, for u and y separately.
"""

import csv
import importlib.resources
import io
from typing import NamedTuple

import numpy as np

DATASETS = {
    # name: (file stem, lengths of train / val / test, rows of u, rows of y)
    'silverbox': ('data_silverbox', (20000, 10000, 10000), [0], [1]),
    'wienerhammerstein': ('data_WienerHammerBenchmark', (20000, 10000, 10000), [0], [1]),
    'rlc': ('data_rlc', (6667, 3333, 3333), [1], [2, 3]),
}
SPLITS = ('train', 'val', 'test')


class Signal(NamedTuple):
  """One split of a dataset: input u [T, Du] and output y [T, Dy], float32."""
  u: np.ndarray
  y: np.ndarray


class Scaler(NamedTuple):
  """Per-channel standardisation fitted on the training split."""
  u_mean: np.ndarray
  u_std: np.ndarray
  y_mean: np.ndarray
  y_std: np.ndarray

  def apply(self, s: Signal) -> Signal:
    return Signal(((s.u - self.u_mean) / self.u_std).astype(np.float32),
                  ((s.y - self.y_mean) / self.y_std).astype(np.float32))


def fit_scaler(train: Signal) -> Scaler:
  """Mean and population std per channel (as sklearn's StandardScaler); std 0 becomes 1."""
  std = lambda a: np.where(a.std(0) > 0, a.std(0), 1.0)
  return Scaler(train.u.mean(0), std(train.u), train.y.mean(0), std(train.y))


def read_split(name: str, split: str) -> Signal:
  """Reads one raw (unscaled) split of a shipped dataset."""
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; choose from {sorted(DATASETS)}.')
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; choose from {SPLITS}.')
  stem, lengths, u_rows, y_rows = DATASETS[name]
  length = lengths[SPLITS.index(split)]
  path = importlib.resources.files('initstate.studies') / 'data' / 'sysid' / (
      f'{stem}_{split}_{length}.csv')
  with importlib.resources.as_file(path) as p:
    rows = np.loadtxt(p, delimiter=',', ndmin=2)
  if rows.shape[1] != length:
    raise ValueError(f'{p}: expected {length} time steps, got {rows.shape[1]}.')
  return Signal(rows[u_rows].T.astype(np.float64), rows[y_rows].T.astype(np.float64))


def load(name: str) -> tuple[dict[str, Signal], Scaler]:
  """All three splits of a dataset, scaled with a scaler fitted on the training split."""
  raw = {split: read_split(name, split) for split in SPLITS}
  scaler = fit_scaler(raw['train'])
  return {split: scaler.apply(s) for split, s in raw.items()}, scaler


def window_starts(length: int, window: int) -> np.ndarray:
  """Start indices of every window of `window` steps, shifted by one: length - window + 1."""
  if not 1 <= window <= length:
    raise ValueError(f'window length N must be in [1, {length}], got {window}.')
  return np.arange(length - window + 1)


def gather_windows(x, starts, window: int):
  """Windows x[s : s + window] for each start s: [T, D], [B] -> [B, window, D] (numpy or jax)."""
  index = starts[:, None] + np.arange(window)[None, :]
  return x[index]


PUBLISHED_FOLDER = ('data', 'sysid', 'published_models')


def published_table(name: str) -> list[dict[str, float]]:
  """The burn-in paper's result rows for N <= 200 (MSE x 100 on standardised outputs).

  Columns: `N`, `m_star` (their chosen burn-in), `m0 train`, `m_star train`, `m0 test`,
  `m_star test`, ... (see `published_models/README.md`).
  """
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; choose from {sorted(DATASETS)}.')
  path = importlib.resources.files('initstate.studies').joinpath(
      *PUBLISHED_FOLDER, f'table_{name}.csv')
  rows = csv.DictReader(io.StringIO(path.read_text()))
  return [{k: float(v) for k, v in row.items()} for row in rows]
