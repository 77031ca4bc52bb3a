"""A hidden Markov model task with an exact Bayes-optimal floor, for the strategy study.

Symbols x_t in [0, V) are emitted by hidden states z_t in [0, K):

  z_0 ~ pi,   z_{t+1} ~ A[z_t, :],   x_t ~ E[z_t, :].

A model reads x_0 .. x_{t-1} and predicts x_t. The best any predictor can do is the HMM's own
predictive distribution p(x_t | x_0 .. x_{t-1}), computed exactly (in log space) by the forward
algorithm; its per-step log loss is the floor against which the study reports excess loss.

Data come either as independent sequences (`sample`) or as rows of sentences of random
lengths laid back to back, each starting afresh from pi (`sample_sentences`, with the
`starts` that mark them). `fit_hmm` re-estimates an HMM from a finite sample (Baum-Welch):
the Bayes loss of the fitted model shows how much of a model's excess is due to finite data.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initstate._src import checks
from initstate._src.types import Array, PRNGKey


class HMM(NamedTuple):
  """A discrete hidden Markov model (probabilities; rows sum to one).

  Attributes:
    initial: `[K]` pi: `p(z_0)`.
    transition: `[K, K]` `A[i, j] = p(z_{t+1} = j | z_t = i)`.
    emission: `[K, V]` `E[i, v] = p(x_t = v | z_t = i)`.
  """
  initial: Array
  transition: Array
  emission: Array


def random_hmm(
    key: PRNGKey,
    num_states: int = 4,
    num_symbols: int = 8,
    *,
    stickiness: float = 0.8,
    initial_concentration: float = 0.5,
    emission_concentration: float = 0.3,
) -> HMM:
  """Draws an HMM with a non-uniform start, sticky transitions and peaked emissions.

  Args:
    key: PRNG key.
    num_states: K.
    num_symbols: V.
    stickiness: probability mass on staying in the same state (the diagonal of A); the rest is
      spread by a Dirichlet(1) draw per row over the other states.
    initial_concentration: Dirichlet concentration of pi (< 1: far from uniform).
    emission_concentration: Dirichlet concentration of each row of E (< 1: peaked rows).

  Returns:
    An `HMM`.
  """
  if num_states < 2 or num_symbols < 2:
    raise ValueError(f'need num_states >= 2 and num_symbols >= 2, got {num_states}, '
                     f'{num_symbols}.')
  if not 0.0 <= stickiness < 1.0:
    raise ValueError(f'`stickiness` must be in [0, 1), got {stickiness}.')
  k_init, k_trans, k_emit = jax.random.split(key, 3)
  initial = jax.random.dirichlet(k_init, jnp.full((num_states,), initial_concentration))
  off = jax.random.dirichlet(k_trans, jnp.ones((num_states, num_states - 1)))
  # Scatter the K-1 off-diagonal masses of each row around its diagonal entry.
  eye = jnp.eye(num_states, dtype=bool)
  rows = jnp.arange(num_states)[:, None]
  cols = jnp.arange(num_states - 1)[None, :]
  index = cols + (cols >= rows)  # [K, K-1]: column of each off-diagonal entry.
  transition = jnp.zeros((num_states, num_states)).at[
      jnp.broadcast_to(rows, index.shape), index].set((1.0 - stickiness) * off)
  transition = jnp.where(eye, stickiness, transition)
  emission = jax.random.dirichlet(
      k_emit, jnp.full((num_states, num_symbols), emission_concentration))
  return HMM(initial, transition, emission)


def sample(key: PRNGKey, hmm: HMM, num_sequences: int, length: int) -> Array:
  """Draws `num_sequences` independent sequences of `length` symbols: int32 [N, T]."""
  if not (checks.is_int(num_sequences) and checks.is_int(length)) or (
      num_sequences < 1 or length < 1):
    raise ValueError('need ints `num_sequences` >= 1 and `length` >= 1, got '
                     f'{num_sequences!r}, {length!r}.')
  checks.prng_key(key, 'key')
  k0, k_steps = jax.random.split(key)
  log_a, log_e = jnp.log(hmm.transition), jnp.log(hmm.emission)
  z0 = jax.random.categorical(k0, jnp.log(hmm.initial), shape=(num_sequences,))

  def step(z, key):
    k_emit, k_next = jax.random.split(key)
    x = jax.random.categorical(k_emit, log_e[z])
    return jax.random.categorical(k_next, log_a[z]), x

  _, xs = jax.lax.scan(step, z0, jax.random.split(k_steps, length))
  return jnp.swapaxes(xs, 0, 1).astype(jnp.int32)


class Sentences(NamedTuple):
  """Rows of sentences laid back to back, from `sample_sentences`.

  Attributes:
    symbols: int32 `[N, T]`.
    starts: bool `[N, T]`, True at the first symbol of each sentence (always at t = 0).
    position: int32 `[N, T]`, the index of each symbol within its sentence (0 at a start).
  """
  symbols: Array
  starts: Array
  position: Array


def _length_bound(value, name: str) -> int | None:
  """A sentence length bound: its int value when concrete (None when traced)."""
  if not checks.is_concrete(value):
    if jnp.ndim(value) != 0 or not jnp.issubdtype(value.dtype, jnp.integer):
      raise ValueError(f'`{name}` must be an int scalar, got a traced {value.dtype} '
                       f'{list(jnp.shape(value))}.')
    return None
  array = np.asarray(value)
  if array.ndim != 0 or array.dtype.kind not in 'iu':
    raise ValueError(f'`{name}` must be an int, got {value!r}.')
  return int(array)


def sample_sentences(key: PRNGKey, hmm: HMM, num: int, length: int, min_len: int | Array,
                     max_len: int | Array) -> Sentences:
  """Draws `num` rows of `length` symbols, each a run of sentences of random lengths.

  Each row holds sentences back to back from t = 0. A sentence's length is drawn uniformly from
  the integers in [`min_len`, `max_len`] and its hidden chain starts afresh from
  `hmm.initial`, independently of the sentence before; the last sentence of a row is cut at
  `length`. The noise is drawn up front and one scan over time lays out the sentences, so this
  is cheap inside a jitted step.

  Args:
    key: PRNG key; every random draw comes from it.
    hmm: the HMM.
    num: N, a Python int >= 1.
    length: T, a Python int >= 1.
    min_len: shortest sentence, an int >= 1 (or a traced int scalar, e.g. under `jax.vmap`).
    max_len: longest sentence, an int >= `min_len` (or a traced int scalar). Traced bounds are
      not checked: they are clipped to 1 <= `min_len` <= `max_len`.

  Returns:
    `Sentences(symbols, starts, position)`, each `[N, T]`.
  """
  if not (checks.is_int(num) and checks.is_int(length)) or num < 1 or length < 1:
    raise ValueError(f'need ints `num` >= 1 and `length` >= 1, got {num!r}, {length!r}.')
  lo, hi = _length_bound(min_len, 'min_len'), _length_bound(max_len, 'max_len')
  if (lo is not None and lo < 1) or (hi is not None and hi < 1) or (
      lo is not None and hi is not None and lo > hi):
    raise ValueError('`min_len` and `max_len` must satisfy 1 <= min_len <= max_len, got '
                     f'{min_len!r}, {max_len!r}.')
  checks.prng_key(key, 'key')
  min_len = jnp.maximum(jnp.asarray(min_len, jnp.int32), 1)
  max_len = jnp.maximum(jnp.asarray(max_len, jnp.int32), min_len)
  log_pi, log_a, log_e = jnp.log(hmm.initial), jnp.log(hmm.transition), jnp.log(hmm.emission)
  k0, k_len, k_emit, k_next = jax.random.split(key, 4)
  # All the noise up front (categorical draws as argmax of logits + Gumbel noise): the scan
  # itself draws nothing, which keeps it cheap to compile and to run.
  z0 = jax.random.categorical(k0, log_pi, shape=(num,))
  sentence_lens = jax.random.randint(k_len, (length, num), min_len, max_len + 1, jnp.int32)
  emit_noise = jax.random.gumbel(k_emit, (length, num, log_e.shape[1]), log_e.dtype)
  next_noise = jax.random.gumbel(k_next, (length, num, log_a.shape[1]), log_a.dtype)

  # State before step t: the hidden state z_t (drawn from pi if t starts a sentence), the
  # symbols left in the current sentence (0: t starts a new one) and the position of t - 1.
  def step(state, noise):
    z, remaining, position = state
    sentence_len, emit_noise, next_noise = noise
    start = remaining == 0
    remaining = jnp.where(start, sentence_len, remaining) - 1
    position = jnp.where(start, 0, position + 1)
    x = jnp.argmax(log_e[z] + emit_noise, axis=-1)
    next_logits = jnp.where((remaining == 0)[:, None], log_pi[None], log_a[z])
    z = jnp.argmax(next_logits + next_noise, axis=-1)
    return (z, remaining, position), (x, start, position)

  none_left = jnp.zeros((num,), jnp.int32)
  _, (xs, starts, position) = jax.lax.scan(
      step, (z0, none_left, none_left), (sentence_lens, emit_noise, next_noise))
  return Sentences(jnp.swapaxes(xs, 0, 1).astype(jnp.int32), jnp.swapaxes(starts, 0, 1),
                   jnp.swapaxes(position, 0, 1))


def _checked_symbols(hmm: HMM, symbols: Array) -> Array:
  symbols = jnp.asarray(symbols)
  if symbols.ndim != 2 or not jnp.issubdtype(symbols.dtype, jnp.integer):
    raise ValueError(f'`symbols` must be an int array [N, T], got {symbols.dtype} '
                     f'{symbols.shape}.')
  num_symbols = hmm.emission.shape[1]
  if checks.is_concrete(symbols):
    lo, hi = int(symbols.min(initial=0)), int(symbols.max(initial=0))
    if lo < 0 or hi >= num_symbols:
      raise ValueError(f'`symbols` must lie in [0, V) = [0, {num_symbols}), got values in '
                       f'[{lo}, {hi}].')
  return symbols


def _checked_starts(starts: Array | None, shape: tuple[int, ...]) -> Array:
  """`starts` as bool [N, T] with column 0 True (None: one sentence per row)."""
  if starts is None:
    return jnp.zeros(shape, bool).at[:, 0].set(True)
  starts = jnp.asarray(starts)
  if starts.shape != shape:
    raise ValueError(f'`starts` must have the shape of `symbols` {shape}, got {starts.shape}.')
  if starts.dtype != jnp.bool_ and not jnp.issubdtype(starts.dtype, jnp.integer):
    raise ValueError(f'`starts` must be bool (or 0/1 ints), got {starts.dtype}.')
  return starts.astype(jnp.bool_).at[:, 0].set(True)


def _log_matmul(log_x: Array, log_m: Array) -> Array:
  """log(exp(log_x) @ exp(log_m)) without leaving log space: [N, K] x [K, J] -> [N, J].

  A Python loop over the K rows of `log_m`: XLA on CPU adds K arrays [N, J] several times
  faster than it reduces the small middle axis of one [N, K, J] array.
  """
  terms = [log_x[:, i, None] + log_m[i][None] for i in range(log_m.shape[0])]
  top = functools.reduce(jnp.maximum, terms)
  top = jnp.where(jnp.isfinite(top), top, 0.0)   # All terms -inf: the result is -inf.
  return top + jnp.log(sum(jnp.exp(term - top) for term in terms))


def _forward(log_pi: Array, log_a: Array, log_emit: Array, starts: Array) -> tuple[Array, Array]:
  """The forward algorithm in log space, time-major.

  Args:
    log_pi, log_a: log initial [K] and log transition [K, K] probabilities.
    log_emit: [T, N, K], log p(x_t | z_t = k).
    starts: bool [T, N], True where a sentence starts (True at t = 0).

  Returns:
    `(beliefs, evidence)`: [T, N, K] the filtered log p(z_t | its sentence up to x_t), and
    [T, N] log p(x_t | its sentence before t).
  """

  def step(belief, inputs):
    log_e, start = inputs
    # A start ignores the previous belief (even a NaN one): the state is drawn from pi.
    predicted = jnp.where(start[:, None], log_pi[None], _log_matmul(belief, log_a))
    joint = predicted + log_e
    evidence = jax.nn.logsumexp(joint, axis=-1)
    # After an impossible symbol (evidence -inf) the belief is -inf, not NaN: the rest of its
    # sentence scores +inf, and the next start resets it.
    belief = joint - jnp.where(jnp.isfinite(evidence), evidence, 0.0)[:, None]
    return belief, (belief, evidence)

  init = jnp.broadcast_to(log_pi, log_emit.shape[1:])
  _, (beliefs, evidence) = jax.lax.scan(step, init, (log_emit, starts))
  return beliefs, evidence


def bayes_step_losses(hmm: HMM, symbols: Array, starts: Array | None = None) -> Array:
  """Exact per-step log loss of the Bayes-optimal predictor, by the forward algorithm.

  Computed in log space, so events of tiny probability (1e-50 and below) stay finite.

  Args:
    hmm: the HMM that generated `symbols`.
    symbols: int [N, T].
    starts: optional bool (or 0/1 int) [N, T], True where a sentence begins: its hidden state
      is drawn afresh from `hmm.initial`, independently of what came before. t = 0 always
      starts a sentence, whatever `starts[:, 0]` holds. None: one sentence per row.

  Returns:
    float32 [N, T]: entry t is -log p(x_t | the symbols of its sentence before t), the loss of
    predicting x_t after reading them; at a start (and at t = 0) it is
    -log sum_k pi_k E[k, x_t]. A symbol of probability zero under `hmm` scores +inf, as do the
    later steps of its sentence; the next sentence is unaffected.
  """
  symbols = _checked_symbols(hmm, symbols)
  starts = _checked_starts(starts, symbols.shape)
  log_emit = jnp.log(hmm.emission).T[symbols.T]  # [T, N, K]: log p(x_t | z_t = k).
  _, evidence = _forward(jnp.log(hmm.initial), jnp.log(hmm.transition), log_emit, starts.T)
  return -evidence.T


def fit_hmm(hmm: HMM, symbols: Array, starts: Array | None = None, *, iterations: int = 20,
            pseudocount: float = 1e-2) -> tuple[HMM, Array]:
  """Re-estimates an HMM from data by Baum-Welch (expectation-maximisation) in log space.

  Started from the true HMM, this converges to the maximum-likelihood estimate near it: the
  Bayes loss (`bayes_step_losses`) of the fitted model on held-out data is the loss of the best
  predictor learnable from this finite sample, a data-limited reference. Jittable and
  vmappable over the data.

  Args:
    hmm: the starting HMM. It must give `symbols` a positive probability (otherwise the
      log-likelihood is -inf and the fit NaN).
    symbols: int [N, T] windows of data. Each row's last symbol ends the data (a sentence cut
      there is fine).
    starts: optional bool (or 0/1 int) [N, T] sentence starts, as in `bayes_step_losses`: no
      transition is counted into a start, and the state at each start counts toward
      `initial`.
    iterations: number of EM steps, a Python int >= 1.
    pseudocount: added to every expected count before normalising (> 0), so that no
      probability becomes zero.

  Returns:
    `(fitted, log_likelihoods)`: the fitted `HMM`, and float32 [iterations] the total
    log-likelihood of the data under the model before each M-step (non-decreasing, up to
    float noise and the small effect of the pseudocount).
  """
  symbols = _checked_symbols(hmm, symbols)
  starts = _checked_starts(starts, symbols.shape)
  iterations = checks.positive_int(iterations, 'iterations')
  if checks.is_concrete(pseudocount):
    if not checks.is_finite_real(pseudocount) or pseudocount <= 0:
      raise ValueError(f'`pseudocount` must be a finite scalar > 0, got {pseudocount!r}.')
  elif jnp.ndim(pseudocount) != 0:
    raise ValueError(f'`pseudocount` must be a scalar, got shape {jnp.shape(pseudocount)}.')
  hmm = HMM(*(jnp.asarray(m) for m in hmm))
  xs, starts = symbols.T, starts.T                      # Time-major: [T, N].

  def em_step(model, _):
    log_pi, log_a, log_e = (jnp.log(m) for m in model)
    log_emit = log_e.T[xs]                              # [T, N, K]
    beliefs, evidence = _forward(log_pi, log_a, log_emit, starts)

    # Scaled backward pass, within each row: beta_t(k) = p(x_{t+1} .. x_{T-1} | z_t = k) /
    # p(x_{t+1} .. x_{T-1} | x_0 .. x_t); it sums the expected transitions xi_t(i, j) as it goes.
    def back(carry, inputs):
      beta_next, transitions = carry
      belief, log_e_next, start_next, evidence_next = inputs
      w = log_e_next + beta_next - evidence_next[:, None]               # [N, K]
      xi = jnp.exp(belief[:, :, None] + log_a[None] + w[:, None, :])   # [N, K, K]
      xi = jnp.where(start_next[:, None, None], 0.0, xi)               # None into a start.
      beta = jnp.where(start_next[:, None],
                       jax.nn.logsumexp(log_pi[None] + w, axis=-1, keepdims=True),
                       _log_matmul(w, log_a.T))
      return (beta, transitions + xi.sum(0)), beta

    last = jnp.zeros_like(beliefs[0])
    (_, transitions), betas = jax.lax.scan(
        back, (last, jnp.zeros_like(log_a)),
        (beliefs[:-1], log_emit[1:], starts[1:], evidence[1:]), reverse=True)
    gamma = jnp.exp(beliefs + jnp.concatenate([betas, last[None]]))  # p(z_t | its row)
    initial = jnp.einsum('tn,tnk->k', starts.astype(gamma.dtype), gamma)
    emission = jax.ops.segment_sum(gamma.reshape(-1, gamma.shape[-1]), xs.reshape(-1),
                                   model.emission.shape[1]).T

    def normalize(counts):
      counts = counts + pseudocount
      return counts / jnp.sum(counts, axis=-1, keepdims=True)

    fitted = HMM(normalize(initial), normalize(transitions), normalize(emission))
    fitted = HMM(*(new.astype(old.dtype) for new, old in zip(fitted, model)))
    return fitted, jnp.sum(evidence)

  return jax.lax.scan(em_step, hmm, None, length=iterations)
