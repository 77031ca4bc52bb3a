"""A small built-in demo: learned vs zero initial carry on a synthetic task with a non-zero start.

The task: short sequences (T steps) of a noisy linear system that always starts from the same
non-zero state s0,

  s_{-1} = s0,   s_t = a * s_{t-1} + x_t,   x_t ~ N(0, sigma^2),   target y_t = s_t.

The model reads x_t and predicts y_t from its hidden state. A zero initial carry must learn to
produce the start transient a^(t+1) * s0 from nothing; a learned carry can simply hold s0, so its
error in the first steps after a reset should be lower. Run `python -m initstate.studies.demo`.
"""

import argparse
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import initstate


class TaskConfig(NamedTuple):
  num_steps: int = 8
  start: float = 2.0
  decay: float = 0.8
  input_stddev: float = 0.5


DEFAULT_TASK = TaskConfig()


def make_batch(key: jax.Array, batch: int,
               config: TaskConfig = DEFAULT_TASK) -> tuple[jax.Array, jax.Array]:
  """Draws inputs x [B, T, 1] and targets y [B, T, 1] of the synthetic task."""
  x = config.input_stddev * jax.random.normal(key, (batch, config.num_steps, 1))

  def step(s, x_t):
    s = config.decay * s + x_t
    return s, s

  _, y = jax.lax.scan(step, jnp.full((batch, 1), config.start), jnp.swapaxes(x, 0, 1))
  return x, jnp.swapaxes(y, 0, 1)


class Regressor(nn.Module):
  """An RNN with a linear read-out at every step: [B, T, D] -> [B, T, 1]."""
  hidden_size: int
  carry: initstate.CarryStrategy

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    out = initstate.nn.RNN(initstate.lstm(self.hidden_size), carry=self.carry,
                           name='rnn')(x, train=train)
    return nn.Dense(1, name='readout')(out.outputs)


class DemoResult(NamedTuple):
  train_loss: jax.Array           # [steps] training loss per step.
  eval_loss_by_step: jax.Array    # [T] evaluation MSE at each position after the reset.
  learned_carry_norm: jax.Array   # scalar: L2 norm of the learned carry (0 without one).


@functools.partial(jax.jit, static_argnames=('strategy', 'steps', 'batch', 'hidden_size',
                                             'config', 'learning_rate'))
def train(
    key: jax.Array,
    strategy: initstate.CarryStrategy,
    *,
    steps: int = 300,
    batch: int = 32,
    hidden_size: int = 16,
    learning_rate: float = 1e-2,
    config: TaskConfig = DEFAULT_TASK,
) -> DemoResult:
  """Trains a `Regressor` with `strategy` using Adam on fresh batches; all in one compiled call.

  The model's weights start from the same values for every strategy (same `key`).
  """
  model = Regressor(hidden_size, strategy)
  init_key, data_key, noise_key, eval_key = jax.random.split(key, 4)
  x0, _ = make_batch(data_key, batch, config)
  params = model.init(init_key, x0, train=False)['params']
  optimizer = optax.adam(learning_rate)

  def loss_fn(params, x, y, rng):
    pred = cast(jax.Array, model.apply({'params': params}, x, train=True, rngs={'carry': rng}))
    return initstate.masked_mean(initstate.squared_error(pred, y))

  def update(state, i):
    params, opt_state = state
    x, y = make_batch(jax.random.fold_in(data_key, i), batch, config)
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, jax.random.fold_in(noise_key, i))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, _), train_loss = jax.lax.scan(
      update, (params, optimizer.init(params)), jnp.arange(steps))
  x, y = make_batch(eval_key, 1024, config)
  pred = cast(jax.Array, model.apply({'params': cast(Any, params)}, x, train=False))
  eval_loss = jnp.mean(initstate.squared_error(pred, y), axis=0)
  carry = cast(dict[str, Any], params)['rnn'].get('carry', jnp.zeros(()))
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(c)) for c in jax.tree.leaves(carry)))
  return DemoResult(train_loss, eval_loss, norm)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m initstate.studies.demo',
      description='Trains LSTMs with a zero, learned and noisy-learned initial carry on a '
                  'synthetic task that starts from a non-zero state; prints evaluation errors.')
  parser.add_argument('--steps', type=int, default=400, help='Adam steps per model.')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error('--steps must be positive')
  key = jax.random.key(args.seed)
  config = TaskConfig()
  runs = {
      'zeros': initstate.zeros(),
      'learned': initstate.learned(),
      'noisy_learned(0.1)': initstate.noisy_learned(0.1),
  }
  print(f'task: T={config.num_steps}, s0={config.start}, a={config.decay}; LSTM H=16, Adam 1e-2, '
        f'{args.steps} steps of batch 32, seed {args.seed}. Evaluation MSE on 1024 fresh '
        'sequences (noise off).')
  print(f'{"carry":<20} {"MSE all steps":>14} {"MSE step 0":>11} {"MSE step 1":>11} '
        f'{"|carry|":>8}')
  for name, strategy in runs.items():
    result = train(key, strategy, steps=args.steps, config=config)
    by_step = result.eval_loss_by_step
    print(f'{name:<20} {float(jnp.mean(by_step)):>14.4f} {float(by_step[0]):>11.4f} '
          f'{float(by_step[1]):>11.4f} {float(result.learned_carry_norm):>8.3f}')


if __name__ == '__main__':
  main()
