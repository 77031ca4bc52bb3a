"""Conditional initial carries: the carry computed from context.

* `from_context`: an initializer network, an MLP from context features [*B, F] to a full carry
  (every layer, h and c). Mohajerin and Waslander (IJCNN 2017; TNNLS 2019) run such a network
  over the first observed steps of a system-identification window; image captioning
  (Show-and-Tell, Vinyals et al. 2015) feeds image features.
* `bridge`: the decoder's initial carry from the encoder's final carry (sequence to sequence,
  Sutskever et al. 2014; Cho et al. 2014), per layer, through a learned projection where the
  sizes or cell types differ and unchanged where they match.

Both are `CarryMap`s, `init` / `apply` pairs of pure functions; their params go wherever the
caller keeps params (the same tree as the cell's). A carry from a random latent z is a strategy
(`initstate.latent`), since it needs no context.

Squashing: every produced leaf goes through `squash` (default `jnp.tanh`) so that a carry
starts where the cell's own states live: LSTM and GRU hidden states lie in (-1, 1), and an
LSTM cell state of magnitude below 1 is well inside its usual range. Pass `squash=None` for a
linear map.

Layers: a stack's carry is a plain `tuple` with one entry per layer (`initstate.stack`);
anything else (an `LSTMCarry`, an array, a dict) is one layer.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initstate._src import checks
from initstate._src import linear as linear_lib
from initstate._src import strategies as strategies_lib
from initstate._src.types import Array, Carry, Params, PRNGKey


class CarryMap(NamedTuple):
  """A learned map to a carry: `params = init(rng, ...)`, `carry = apply(params, x)`.

  Attributes:
    init: `(rng, ...) -> params`.
    apply: `(params, x) -> carry`.
  """
  init: Callable[..., Params]
  apply: Callable[[Params, Any], Carry]


def _layers(carry: Carry) -> list[Carry]:
  """A stack's carry (a plain tuple) as its layers; anything else as one layer."""
  return list(carry) if type(carry) is tuple else [carry]  # pylint: disable=unidiomatic-typecheck


def from_context(
    hidden_sizes: Sequence[int] = (),
    *,
    activation: Callable[[Array], Array] = jnp.tanh,
    squash: linear_lib.Squash = jnp.tanh,
) -> CarryMap:
  """An initializer network: context features `[*B, F]` -> a full carry, leaves `[*B, *unit]`.

  An MLP with `hidden_sizes` (none: linear) and one linear head per carry leaf (every layer of
  a stack, h and c of an LSTM), each head followed by `squash`.

  For a warm-up window, flatten it into `context` ([B, W * D]), or run the cell over it with
  `scan_rnn` and start from its `final_carry` (the burn-in way).

  Args:
    hidden_sizes: widths of the hidden layers.
    activation: the hidden layers' nonlinearity.
    squash: applied to every produced leaf (default tanh); None for none.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> cell = initstate.stack([initstate.lstm(8), initstate.lstm(8)])
    >>> init_net = initstate.from_context(hidden_sizes=(16,))
    >>> params = init_net.init(jax.random.key(0), 5, cell.carry_template)   # F = 5
    >>> carry = init_net.apply(params, jnp.ones((3, 5)))   # context [B, F]
    >>> jax.tree.map(jnp.shape, carry)                    # every layer, h and c
    (LSTMCarry(h=(3, 8), c=(3, 8)), LSTMCarry(h=(3, 8), c=(3, 8)))
  """
  hidden_sizes = tuple(checks.positive_int(h, 'hidden_sizes') for h in hidden_sizes)
  linear_lib.check_squash(squash)

  def init(rng: PRNGKey, context_size: int, template: Carry) -> Params:
    """Params {'hidden': [LinearParams], 'heads': carry-shaped tree of LinearParams}."""
    checks.prng_key(rng, 'rng')
    context_size = checks.positive_int(context_size, 'context_size')
    dtype = strategies_lib.CarrySpec.from_template(template).dtypes[0]
    k_hidden, k_heads = jax.random.split(rng)
    sizes = (context_size,) + hidden_sizes
    keys = jax.random.split(k_hidden, max(len(hidden_sizes), 1))
    hidden = [linear_lib.linear_init(k, a, (b,), dtype)
              for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    return {'hidden': hidden, 'heads': linear_lib.heads_init(k_heads, sizes[-1], template)}

  def apply(params: Params, context: Array) -> Carry:
    """context [*B, F] -> carry leaves [*B, *unit]."""
    fan_in = params['hidden'][0].kernel.shape[0] if params['hidden'] else linear_lib.heads_fan_in(
        params['heads'])
    x = jnp.asarray(context)
    if x.ndim < 1 or x.shape[-1] != fan_in:
      raise ValueError(f'`context` must be [*B, F] with F = {fan_in} (as at init), got shape '
                       f'{x.shape}.')
    for layer in params['hidden']:
      x = activation(linear_lib.linear(layer, x.astype(layer.kernel.dtype)))
    return linear_lib.heads_apply(params['heads'], x, squash)

  return CarryMap(init, apply)


def bridge(encoder_template: Carry, decoder_template: Carry, *, project: str = 'auto',
           squash: linear_lib.Squash = jnp.tanh) -> CarryMap:
  """The decoder's initial carry from the encoder's final carry, layer by layer.

  Layers pair up one to one when both sides have the same number; a single-layer side pairs
  with every layer of the other (one encoder layer feeds every decoder layer; a single decoder
  layer reads the encoder's last layer). Within a pair, an encoder layer whose carry has the
  decoder layer's structure, shapes and dtypes passes through unchanged (`project='auto'`);
  otherwise all of its leaves are concatenated and mapped by one learned linear head per
  decoder leaf, then passed through `squash`. A Flax LSTM cell's `(c, h)` carry is a plain
  tuple, so it reads as two layers.

  Args:
    encoder_template: the encoder's carry template (e.g. `encoder.carry_template`).
    decoder_template: the decoder's carry template.
    project: 'auto' (project only where needed), 'always' (a learned map for every layer) or
      'never' (pass through; a mismatch is an error).
    squash: applied after a projection (default tanh); None for linear.

  Returns:
    A `CarryMap`: `init(rng) -> params` (a tuple with one entry per decoder layer: `()` for a
    pass-through, else the heads) and `apply(params, encoder_carry) -> decoder_carry`.

  Example:
    >>> import jax, jax.numpy as jnp, initstate
    >>> encoder = initstate.stack([initstate.gru(6), initstate.gru(6)])
    >>> decoder = initstate.stack([initstate.lstm(8), initstate.lstm(8)])
    >>> enc_to_dec = initstate.bridge(encoder.carry_template, decoder.carry_template)
    >>> params = enc_to_dec.init(jax.random.key(0))
    >>> final = (jnp.ones((3, 6)), jnp.ones((3, 6)))   # the encoder's final carry, B = 3
    >>> jax.tree.map(jnp.shape, enc_to_dec.apply(params, final))
    (LSTMCarry(h=(3, 8), c=(3, 8)), LSTMCarry(h=(3, 8), c=(3, 8)))
  """
  if project not in ('auto', 'always', 'never'):
    raise ValueError(f"`project` must be 'auto', 'always' or 'never', got {project!r}.")
  linear_lib.check_squash(squash)
  spec = strategies_lib.CarrySpec.from_template
  enc_layers, dec_layers = _layers(encoder_template), _layers(decoder_template)
  enc_specs = [spec(l) for l in enc_layers]
  dec_specs = [spec(l) for l in dec_layers]
  num_enc, num_dec = len(enc_layers), len(dec_layers)
  if num_enc == num_dec:
    source = list(range(num_dec))
  elif num_enc == 1:
    source = [0] * num_dec
  elif num_dec == 1:
    source = [num_enc - 1]
  else:
    raise ValueError(f'cannot pair an encoder of {num_enc} layers with a decoder of {num_dec} '
                     'layers: use equal counts, or one layer on either side.')
  passthrough = []
  for d, e in enumerate(source):
    same = enc_specs[e] == dec_specs[d]
    if project == 'never' and not same:
      raise ValueError(f'decoder layer {d} has carry shapes {dec_specs[d].shapes} '
                       f'{dec_specs[d].dtypes}, encoder layer {e} has {enc_specs[e].shapes} '
                       f"{enc_specs[e].dtypes}; use project='auto' for a learned map.")
    passthrough.append(same and project != 'always')
  decoder_is_stack = type(decoder_template) is tuple  # pylint: disable=unidiomatic-typecheck

  def init(rng: PRNGKey) -> Params:
    checks.prng_key(rng, 'rng')
    keys = jax.random.split(rng, num_dec)
    params = []
    for d, e in enumerate(source):
      if passthrough[d]:
        params.append(())
      else:
        fan_in = sum(int(np.prod(s, dtype=int)) for s in enc_specs[e].shapes)
        params.append(linear_lib.heads_init(keys[d], fan_in, dec_layers[d]))
    return tuple(params)

  def apply(params: Params, encoder_carry: Carry) -> Carry:
    """Encoder carry leaves [B, ...] -> decoder carry leaves [B, ...]."""
    layers = _layers(encoder_carry)
    if len(layers) != num_enc or len(params) != num_dec:
      raise ValueError(f'this bridge maps {num_enc} encoder layers to {num_dec} decoder layers; '
                       f'got a carry of {len(layers)} layers and params for {len(params)}.')
    out = []
    for d, e in enumerate(source):
      layer = layers[e]
      leaves = jax.tree.leaves(layer)
      if jax.tree.structure(layer) != enc_specs[e].treedef or any(
          jnp.ndim(l) != len(s) + 1 or tuple(jnp.shape(l)[1:]) != s
          for l, s in zip(leaves, enc_specs[e].shapes)):
        raise ValueError(f'encoder layer {e} must have leaves [B, *unit] with unit shapes '
                         f'{enc_specs[e].shapes}, got {[l.shape for l in leaves]}.')
      if passthrough[d]:
        out.append(layer)
      else:
        features = jnp.concatenate(
            [jnp.reshape(l, (l.shape[0], -1)) for l in leaves], axis=-1)   # [B, sum(unit)]
        out.append(linear_lib.heads_apply(params[d], features, squash))
    return tuple(out) if decoder_is_stack else out[0]

  return CarryMap(init, apply)


def check_context(context: Any, initial_carry: Carry | None, batch: int,
                  has_map: bool) -> Array | None:
  """A layer's `context` argument: [B, F] when the layer has a context map, else None.

  Raises a clear error for a context without a map, a map without a context, a context and an
  explicit `initial_carry` together, or a context whose shape is not [B, F].
  """
  if not has_map:
    if context is not None:
      raise ValueError('`context` needs a `context_carry` (e.g. initstate.from_context()).')
    return None
  if context is None or initial_carry is not None:
    raise ValueError('with `context_carry`, pass `context` ([B, F]) and no `initial_carry`.')
  context = jnp.asarray(context)
  if context.ndim != 2 or context.shape[0] != batch:
    raise ValueError(f'`context` must be [B, F] with the batch B = {batch} of `inputs`, got '
                     f'shape {context.shape}.')
  return context

