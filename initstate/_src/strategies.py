"""Initial-carry strategies: how a recurrent network's carry is set before its first step.

Each strategy is a factory returning a `CarryStrategy`, a NamedTuple of pure functions in the
style of optax:

  params = strategy.init(rng, template)        # template: a carry pytree of [H]-shaped leaves
  state = strategy.init_state(template)        # EmptyState() unless the strategy keeps state
  carry = strategy.init_carry(params, rng, batch, train=True, state=state)  # leaves [*batch, H]
  state = strategy.update_state(state, carry_grads)   # after the backward pass

`template` is any pytree whose leaves have `.shape` and `.dtype` (arrays or
`jax.ShapeDtypeStruct`, e.g. `cell.carry_template`), so LSTM pairs and stacks of layers work.
Strategies without trainable values (`zeros`, `noisy`) return a `CarrySpec`: a pytree with no
leaves that only records the carry's structure, so it adds nothing to a param tree or to an
optimiser state and passes through `jax.jit` as static data.

State is what a strategy keeps across training steps that is not trained by the optimiser:
cleaning noise keeps a buffer of recent gradients at the initial carry. Every other strategy
keeps none: its state is `EmptyState()` and `update_state` returns it unchanged.

Sources: learned carry (Hinton's RNN lecture; Gers, Schraudolph and Schmidhuber, JMLR 2002);
noisy and noisy-learned carries (R2RT, "Non-Zero Initial States for Recurrent Neural Networks",
2016): noise is on in training only, off at evaluation (`train=False`); a latent carry
(Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from initstate._src import checks
from initstate._src import linear as linear_lib
from initstate._src.types import (Array, Batch, Carry, Initializer, Params, PRNGKey,
                                  normalize_batch)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class CarrySpec:
  """The structure of a carry (tree and per-leaf unit shape and dtype), with no array leaves.

  Attributes:
    treedef: the carry's tree structure.
    shapes: each leaf's unit shape (without batch dims), in leaf order.
    dtypes: each leaf's dtype, in leaf order.
  """
  treedef: Any
  shapes: tuple[tuple[int, ...], ...]
  dtypes: tuple[Any, ...]

  @classmethod
  def from_template(cls, template: Carry) -> 'CarrySpec':
    """The spec of `template`, a carry pytree whose leaves have `.shape` and `.dtype`."""
    leaves, treedef = jax.tree.flatten(template)
    if not leaves:
      raise ValueError('the carry template has no leaves.')
    for leaf in leaves:
      if not hasattr(leaf, 'shape') or not hasattr(leaf, 'dtype'):
        raise TypeError('carry template leaves must have .shape and .dtype (arrays or '
                        f'jax.ShapeDtypeStruct), got {type(leaf).__name__}.')
    return cls(treedef, tuple(tuple(l.shape) for l in leaves),
               tuple(jnp.dtype(l.dtype) for l in leaves))

  def zeros(self, batch: tuple[int, ...]) -> Carry:
    """A carry of zeros with leading dims `batch`."""
    return jax.tree.unflatten(
        self.treedef, [jnp.zeros(batch + s, d) for s, d in zip(self.shapes, self.dtypes)])

  def normal(self, rng: PRNGKey, batch: tuple[int, ...]) -> Carry:
    """Standard normal draws, independent per leaf, batch element and unit."""
    keys = jax.random.split(rng, len(self.shapes))
    return jax.tree.unflatten(self.treedef, [
        jax.random.normal(k, batch + s, d) for k, s, d in zip(keys, self.shapes, self.dtypes)])


class EmptyState(NamedTuple):
  """The state of a strategy that keeps none (as optax's `EmptyState`)."""


def _init_empty_state(template: Carry) -> EmptyState:
  del template
  return EmptyState()


def _update_empty_state(state: Any, carry_grads: Carry, *, axis_name: Any = None) -> Any:
  del carry_grads, axis_name
  return state


class CarryStrategy(NamedTuple):
  """An initial-carry strategy.

  Attributes:
    init: `(rng, template) -> params`; `rng` may be None where nothing is drawn.
    init_carry: `(params, rng, batch, *, train, state=None) -> carry` with leaves
      `[*batch, *unit_shape]`; `state` is what `init_state` / `update_state` keep (needed in
      training by stateful strategies; ignored by the others).
    needs_rng: whether `init_carry` draws random numbers when `train=True` (and so needs a key).
    init_state: `(template) -> state`; `EmptyState()` by default.
    update_state: `(state, carry_grads, *, axis_name=None) -> state`, from the gradient of the
      loss at the initial carry (leaves `[n, *unit]`, one row per sequence); the identity by
      default. `axis_name` names the data axis under `pmap` / `shard_map`.
  """
  init: Callable[[PRNGKey | None, Carry], Params]
  init_carry: Callable[..., Carry]
  needs_rng: bool
  init_state: Callable[[Carry], Any] = _init_empty_state
  update_state: Callable[..., Any] = _update_empty_state

  def is_stateful(self, template: Carry) -> bool:
    """Whether the strategy keeps a state (with array leaves) for a carry like `template`."""
    return bool(jax.tree.leaves(jax.eval_shape(self.init_state, template)))


def _check_train(train: Any) -> None:
  checks.flag(train, 'train')




def _spec_of(params: Params, name: str) -> 'CarrySpec':
  if not isinstance(params, CarrySpec):
    raise TypeError(f'`{name}` expects the params made by its own `init` (a CarrySpec), '
                    f'got {type(params).__name__}.')
  return params


def _learned_params(params: Params, name: str) -> Params:
  """`params` of a learned carry: a pytree of [*unit] arrays (what its `init` returns)."""
  leaves = jax.tree.leaves(params)
  if isinstance(params, CarrySpec) or not leaves or not all(hasattr(l, 'shape') for l in leaves):
    raise TypeError(f'`{name}` expects the params made by its own `init` (the learned carry: '
                    f'arrays [*unit] in the carry\'s structure), got {type(params).__name__}.')
  return params


def _check_initial_value(initial_value: Any, name: str) -> None:
  if not callable(initial_value) and not checks.is_finite_real(initial_value):
    raise ValueError(f'`{name}`: `initial_value` must be a finite number or an initializer '
                     f'(key, shape, dtype) -> array, got {initial_value!r}.')


def _broadcast(params: Params, batch: tuple[int, ...]) -> Carry:
  return jax.tree.map(lambda p: jnp.broadcast_to(p, batch + p.shape), params)


def _learned_init(initial_value: float | Initializer, name: str):
  _check_initial_value(initial_value, name)

  def init(rng: PRNGKey | None, template: Carry) -> Params:
    spec = CarrySpec.from_template(template)
    if callable(initial_value):
      if rng is None:
        raise ValueError(f'`{name}` with a random initializer needs a PRNG key in `init`.')
      checks.prng_key(rng, 'rng')
      keys = jax.random.split(rng, len(spec.shapes))
      leaves = [initial_value(k, s, d) for k, s, d in zip(keys, spec.shapes, spec.dtypes)]
    else:
      leaves = [jnp.full(s, initial_value, d) for s, d in zip(spec.shapes, spec.dtypes)]
    return jax.tree.unflatten(spec.treedef, leaves)
  return init


def zeros() -> CarryStrategy:
  """The usual zero carry; no parameters; `rng` may be None.

  Example:
    >>> import jax, initstate
    >>> cell = initstate.lstm(4)
    >>> strategy = initstate.zeros()
    >>> params = strategy.init(None, cell.carry_template)   # nothing to train
    >>> carry = strategy.init_carry(params, None, 2, train=True)
    >>> carry.h.shape, float(abs(carry.c).sum())
    ((2, 4), 0.0)
  """

  def init(rng: PRNGKey | None, template: Carry) -> Params:
    del rng
    return CarrySpec.from_template(template)

  def init_carry(params: Params, rng: PRNGKey | None, batch: Batch, *, train: bool,
                 state: Any = None) -> Carry:
    del rng, state
    _check_train(train)
    return _spec_of(params, 'zeros').zeros(normalize_batch(batch))

  return CarryStrategy(init, init_carry, needs_rng=False)


def learned(initial_value: float | Initializer = 0.0) -> CarryStrategy:
  """A trainable carry, one value per unit of every leaf (per layer, h and c apart).

  The same learned carry is broadcast over the batch; it is trained by back-propagation like
  a bias. `rng` may be None in `init_carry`, and in `init` unless `initial_value` is a random
  initializer.

  Args:
    initial_value: a constant (zeros by default) or an initializer `(key, shape, dtype)`.

  Example:
    >>> import jax, initstate
    >>> cell = initstate.lstm(4)
    >>> strategy = initstate.learned(0.5)
    >>> params = strategy.init(None, cell.carry_template)   # LSTMCarry(h [4], c [4])
    >>> carry = strategy.init_carry(params, None, 3, train=True)   # broadcast over B = 3
    >>> carry.h.shape, float(carry.h[0, 0])
    ((3, 4), 0.5)
    >>> grad = jax.grad(lambda p: strategy.init_carry(p, None, 3, train=True).h.sum())(params)
    >>> grad.h.tolist()   # trained by back-propagation, like a bias
    [3.0, 3.0, 3.0, 3.0]
  """

  def init_carry(params: Params, rng: PRNGKey | None, batch: Batch, *, train: bool,
                 state: Any = None) -> Carry:
    del rng, state
    _check_train(train)
    return _broadcast(_learned_params(params, 'learned'), normalize_batch(batch))

  return CarryStrategy(_learned_init(initial_value, 'learned'), init_carry, needs_rng=False)


def noisy(stddev: float) -> CarryStrategy:
  """Zero-mean Gaussian noise in training, exactly zeros at evaluation (R2RT 2016).

  carry = stddev * N(0, I) drawn independently per batch element and unit when `train=True`;
  zeros when `train=False`. A missing key in training is an error.

  Args:
    stddev: the noise's standard deviation (>= 0; 0 gives exactly `zeros`).
  """
  checks.non_negative_scalar(stddev, 'stddev')

  def init(rng: PRNGKey | None, template: Carry) -> Params:
    del rng
    return CarrySpec.from_template(template)

  def init_carry(params: Params, rng: PRNGKey | None, batch: Batch, *, train: bool,
                 state: Any = None) -> Carry:
    del state
    _check_train(train)
    spec = _spec_of(params, 'noisy')
    batch = normalize_batch(batch)
    if not train:
      return spec.zeros(batch)
    rng = checks.required_prng_key(rng, 'noisy')
    return jax.tree.map(lambda n: stddev * n, spec.normal(rng, batch))

  return CarryStrategy(init, init_carry, needs_rng=True)


def noisy_learned(stddev: float, initial_value: float | Initializer = 0.0) -> CarryStrategy:
  """A learned carry plus zero-mean Gaussian noise in training; exactly the learned carry at eval.

  Args:
    stddev: the noise's standard deviation (>= 0; 0 gives exactly `learned`).
    initial_value: the learned carry's initial value, as in `learned`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> cell = initstate.gru(4)
    >>> strategy = initstate.noisy_learned(0.1)
    >>> params = strategy.init(None, cell.carry_template)
    >>> noisy = strategy.init_carry(params, jax.random.key(0), 2, train=True)
    >>> clean = strategy.init_carry(params, None, 2, train=False)   # no key needed
    >>> bool(jnp.any(noisy != 0)), bool(jnp.all(clean[0] == params))
    (True, True)
  """
  checks.non_negative_scalar(stddev, 'stddev')

  def init_carry(params: Params, rng: PRNGKey | None, batch: Batch, *, train: bool,
                 state: Any = None) -> Carry:
    del state
    _check_train(train)
    batch = normalize_batch(batch)
    carry = _broadcast(_learned_params(params, 'noisy_learned'), batch)
    if not train:
      return carry
    rng = checks.required_prng_key(rng, 'noisy_learned')
    noise = CarrySpec.from_template(params).normal(rng, batch)
    return jax.tree.map(lambda c, n: c + stddev * n, carry, noise)

  return CarryStrategy(_learned_init(initial_value, 'noisy_learned'), init_carry, needs_rng=True)


def latent(latent_size: int, *, squash: linear_lib.Squash = jnp.tanh) -> CarryStrategy:
  """A latent carry: `z ~ N(0, I)` `[*batch, Z]` mapped by a learned projection to the carry.

  `init(rng, template)` makes a carry-shaped tree of linear heads (`LinearParams`: kernel
  `[Z, *unit]`, bias `[*unit]`); `init_carry(params, rng, batch, *, train, z=None)` returns
  `squash(z @ kernel + bias)` per leaf, with z drawn from `rng` when `train=True`, the prior
  mean z = 0 when `train=False` (deterministic: the carry is `squash(bias)`), or the given `z`
  (`[*batch, Z]`) in either mode, e.g. a fixed z to generate from (Bowman et al. 2016).

  Args:
    latent_size: Z, the latent dimension.
    squash: applied to every produced leaf (default tanh); None for linear.

  Example:
    >>> import jax, initstate
    >>> strategy = initstate.latent(2)
    >>> params = strategy.init(jax.random.key(0), initstate.gru(4).carry_template)
    >>> carry = strategy.init_carry(params, jax.random.key(1), 3, train=True)   # z ~ N(0, I)
    >>> carry.shape
    (3, 4)
  """
  latent_size = checks.positive_int(latent_size, 'latent_size')
  linear_lib.check_squash(squash)

  def init(rng: PRNGKey | None, template: Carry) -> Params:
    CarrySpec.from_template(template)
    if rng is None:
      raise ValueError('`latent` draws its projection at init and needs a PRNG key.')
    checks.prng_key(rng, 'rng')
    return linear_lib.heads_init(rng, latent_size, template)

  def init_carry(params: Params, rng: PRNGKey | None, batch: Batch, *, train: bool,
                 state: Any = None, z: Array | None = None) -> Carry:
    del state
    _check_train(train)
    batch = normalize_batch(batch)
    dtype = linear_lib.heads_dtype(params)
    if z is not None:
      z = jnp.asarray(z)
      if z.shape != batch + (latent_size,):
        raise ValueError(f'`z` must be [*batch, Z] = {batch + (latent_size,)}, got {z.shape}.')
    elif train:
      rng = checks.required_prng_key(rng, 'latent')
      z = jax.random.normal(rng, batch + (latent_size,), dtype)
    else:
      z = jnp.zeros(batch + (latent_size,), dtype)
    return linear_lib.heads_apply(params, z, squash)

  return CarryStrategy(init, init_carry, needs_rng=True)
