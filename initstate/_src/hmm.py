"""A hidden Markov model task with an exact Bayes-optimal floor, for the strategy study.

Symbols x_t in [0, V) are emitted by hidden states z_t in [0, K):

  z_0 ~ pi,   z_{t+1} ~ A[z_t, :],   x_t ~ E[z_t, :].

A model reads x_0 .. x_t and predicts x_{t+1}. The best any predictor can do is the HMM's own
predictive distribution p(x_{t+1} | x_0 .. x_t), computed exactly by the forward algorithm;
its per-step log loss is the floor against which the study reports excess loss.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

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


def bayes_step_losses(hmm: HMM, symbols: Array) -> Array:
  """Exact per-step log loss of the Bayes-optimal predictor, by the forward algorithm.

  Args:
    hmm: the HMM that generated `symbols`.
    symbols: int [N, T], sequences that each start from `hmm.initial`.

  Returns:
    [N, T - 1]: entry t is -log p(x_{t+1} | x_0 .. x_t), the loss of predicting x_{t+1}
    after reading x_0 .. x_t (the model's target at step t).
  """
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
  emit = hmm.emission.T[symbols]  # [N, T, K]: p(x_t | z_t = k).

  def normalize(p):
    total = jnp.sum(p, axis=-1, keepdims=True)
    return p / total, total[..., 0]

  # Filtered posterior p(z_0 | x_0).
  belief, _ = normalize(hmm.initial[None, :] * emit[:, 0])

  def step(belief, emit_next):
    predicted = belief @ hmm.transition                  # p(z_{t+1} | x_0..x_t)
    joint = predicted * emit_next                        # p(z_{t+1}, x_{t+1} | x_0..x_t)
    belief, evidence = normalize(joint)                  # evidence = p(x_{t+1} | x_0..x_t)
    return belief, -jnp.log(evidence)

  _, losses = jax.lax.scan(step, belief, jnp.swapaxes(emit[:, 1:], 0, 1))
  return jnp.swapaxes(losses, 0, 1)
