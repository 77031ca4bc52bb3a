"""The strategy study's figures: validation curves, excess by position, gain against length."""

import pathlib

import numpy as np
# Figures without pyplot: no backend switch, so a notebook's inline plots stay on.
from matplotlib.figure import Figure

STYLES = ('-', '--', ':', '-.')   # Overlapping curves stay visible.


def _save_two_panels(fig: Figure, ylabel: str, path: pathlib.Path) -> None:
  """Labels the shared y axis of a two-panel figure, adds the legend and saves it."""
  fig.axes[0].set_ylabel(ylabel)
  fig.axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_all(config, metrics, curves, profiles, eval_steps, out_dir: pathlib.Path) -> None:
  """Writes validation_curves.png, excess_by_position.png and gain_vs_length.png."""
  regimes = ('online', 'fixed')
  main = config.mean_len

  fig = Figure(figsize=(11, 4.5))
  for ax, regime in zip(fig.subplots(1, 2, sharey=True), regimes):
    for i, name in enumerate(metrics):
      curve = curves[name][(regime, main)]
      mean, std = curve.mean(0), curve.std(0)
      ax.plot(eval_steps, mean, label=name, linestyle=STYLES[i % len(STYLES)])
      ax.fill_between(eval_steps, np.maximum(mean - std, 1e-5), mean + std, alpha=0.15)
    ax.set_yscale('log')
    ax.set_xlabel('training step')
    ax.set_title(f'{regime}: validation excess, mean ± std over {config.seeds} seeds')
  _save_two_panels(fig, 'excess loss over Bayes (nats, log scale)',
                   out_dir / 'validation_curves.png')

  fig = Figure(figsize=(11, 4.5))
  for ax, regime in zip(fig.subplots(1, 2, sharey=True), regimes):
    for i, name in enumerate(metrics):
      profile = profiles[name][(regime, main)]           # [S, P]
      positions = np.flatnonzero(~np.all(np.isnan(profile), 0))  # positions that occur
      profile = profile[:, positions]
      ax.errorbar(positions + 0.06 * (i - len(metrics) / 2), np.nanmean(profile, 0),
                  yerr=np.nanstd(profile, 0), label=name, marker='o', ms=3, capsize=2,
                  linestyle=STYLES[i % len(STYLES)])
    ax.axhline(0.0, color='k', lw=0.8)
    ax.set_xlabel('position in the sentence (0: first symbol, read from the carry)')
    ax.set_title(f'{regime}: test excess by position (early-stopped)')
  _save_two_panels(fig, 'excess loss over Bayes (nats)', out_dir / 'excess_by_position.png')

  columns = max(len(config.sweep_regimes), 1)
  fig = Figure(figsize=(5.5 * columns, 8))
  axes = fig.subplots(2, columns, squeeze=False)
  swept = [s for s in ('learned', 'noisy(0.3)') if s in metrics and s in config.sweep_strategies]
  lengths = sorted(config.lengths)
  for col, regime in enumerate(config.sweep_regimes):
    for row, (metric, label) in enumerate((('test_excess', 'test excess'),
                                           ('speed', 'speed (early validation excess)'))):
      ax = axes[row, col]
      if 'zeros' not in metrics or not swept or len(lengths) < 2:
        ax.set_title('no length sweep in this run')
        continue
      for i, name in enumerate(swept):
        share, mean, se = [], [], []
        for n in lengths:
          z, m = metrics['zeros'][(regime, n)], metrics[name][(regime, n)]
          gain = z[metric] - m[metric]
          share.append(np.mean(z['near_reset_share']))
          mean.append(gain.mean())
          se.append(gain.std(ddof=1) / np.sqrt(len(gain)))
        ax.errorbar(share, mean, yerr=se, marker='o', capsize=3, label=f'zeros − {name}',
                    linestyle=STYLES[i % len(STYLES)])
        if i == 0:
          for x, y, n in zip(share, mean, lengths):
            ax.annotate(f'L={n}', (x, y), textcoords='offset points', xytext=(4, 6),
                        fontsize=8)
      ax.axhline(0.0, color='k', lw=0.8)
      ax.set_xlabel('share of predictions within 3 steps of a reset')
      ax.set_ylabel(f'gain over zeros in {label} (nats; ± s.e.)')
      ax.set_title(f'{regime}: when does a carry matter? ({label.split(" (")[0]})')
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_dir / 'gain_vs_length.png', dpi=110)
