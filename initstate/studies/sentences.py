"""The strategy study's data: windows of HMM sentences, each read from a begin-of-sentence token.

A window holds `width` scored symbols of sentences laid back to back (each sentence's length
drawn uniformly from [min_len, max_len], the last one cut at the window's end). At step t the
model reads `inputs[:, t]` and predicts `targets[:, t] = x_t`:

* at the first symbol of a sentence the input is the begin-of-sentence token `BOS = V` and the
  carry is reset (`resets`), so the first prediction of a sentence, p(x_0), comes from the
  carry (and the constant BOS input) alone;
* elsewhere the input is the previous symbol x_{t-1}.

Every symbol is scored, x_0 included; `bayes` is its exact Bayes-optimal loss (log-space forward
algorithm over the sentence so far) and `position` its index within its sentence (0 = the first
prediction after a reset).

Two layouts:

* `lead=0` ('sentences' task): every window starts at a sentence start; its first step uses
  the strategy's initial carry.
* `lead>0` ('stream' task): the window is the last `width` symbols of a longer row, so it may
  start inside a sentence; `context` then holds, one-hot and most recent first, the up to
  `context_steps` symbols before the window that belong to the same sentence (the conditional
  carry's input). The Bayes floor still conditions on the whole sentence.
"""

from typing import Any

import jax
import jax.numpy as jnp

from initstate import tasks


def length_range(mean_len: int) -> tuple[int, int]:
  """Sentence lengths for a mean length L: uniform on [round(L/2), round(3L/2)] (>= 1)."""
  if mean_len < 1:
    raise ValueError(f'a mean sentence length must be >= 1, got {mean_len}.')
  return max(1, round(mean_len / 2)), max(1, round(3 * mean_len / 2))


def windows(key: jax.Array, hmm: tasks.HMM, num: int, width: int, min_len: Any, max_len: Any,
            *, lead: int = 0, context_steps: int = 0) -> dict[str, jax.Array]:
  """`num` windows [N, W]: inputs, targets, resets, position, bayes; context [N, C, V].

  `min_len` and `max_len` may be traced (per-model lengths under `jax.vmap`).
  """
  num_symbols = hmm.emission.shape[1]
  rows = tasks.sample_sentences(key, hmm, num, lead + width, min_len, max_len)
  bayes = tasks.bayes_step_losses(hmm, rows.symbols, rows.starts)
  previous = jnp.pad(rows.symbols[:, :-1], ((0, 0), (1, 0)), constant_values=num_symbols)
  inputs = jnp.where(rows.starts, num_symbols, previous)
  window = lambda a: a[:, lead:]
  # Step 0 starts from the strategy's initial carry: no reset there.
  resets = window(rows.starts).at[:, 0].set(False)
  context = jnp.zeros((num, context_steps, num_symbols), jnp.float32)
  for j in range(1, min(context_steps, lead) + 1):  # j symbols back, same sentence iff j <= pos.
    same = rows.position[:, lead] >= j
    context = context.at[:, j - 1].set(
        jax.nn.one_hot(rows.symbols[:, lead - j], num_symbols) * same[:, None])
  return dict(inputs=window(inputs), targets=window(rows.symbols), resets=resets,
              position=window(rows.position), bayes=window(bayes), context=context)


def near_reset_share(position: Any, within: int = 3) -> Any:
  """The share of predictions made within `within` steps of a reset (position < within)."""
  return jnp.mean(jnp.asarray(position) < within)
