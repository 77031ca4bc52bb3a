"""Where the time of an LSTM forward goes on CPU: the recurrence taken apart, piece by piece.

`rnn_speed.py` compares whole training steps; this script explains its LSTM rows. Every
variant is a 128-step `lax.scan` at the standard size (B=32, T=128, D=64, H=256) that keeps
one more piece of the fused LSTM forward than the one before, all timed interleaved in one
process (`rnn_speed.time_interleaved`), so the differences between rows are the pieces' costs:

  recurrent matmul        h @ W_h            [32, 256] @ [256, 1024] per step
  + input matmul          + x_t @ W_i        [32, 64] @ [64, 1024] per step
  + gate activations      + sigmoid / tanh over [32, 1024]
  + cell update           + c' = f c + i g, h' = o tanh(c')   (the fused path's primal)
  + saved gates           + writes of i, f, g, o for the backward pass (its training forward)
  initstate fused forward  the library's own op (`scan_rnn(cell.bind(params), ...,
                          implementation='fused')`)
  input matmul hoisted    the cell update with x @ W_i done for all steps before the loop

and, if torch imports, PyTorch's `nn.LSTM` forward (oneDNN) for scale. Each row prints the
median per call, per time step, the matmul rate it implies (for the matmul rows) and its
ratio to the full forward.

  python benchmarks/lstm_profile.py                 # about a minute on 2 cores
  python benchmarks/lstm_profile.py --repeats 40
"""

import argparse
import functools
import pathlib
import sys

_HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))             # rnn_speed's timing helper.
sys.path.insert(0, str(_HERE.parent))      # The initstate checkout this script lives in.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

import initstate  # pylint: disable=g-import-not-at-top,wrong-import-position
from rnn_speed import time_interleaved  # pylint: disable=g-import-not-at-top,wrong-import-position

B, T, D, H = 32, 128, 64, 256


def _scan(step, carry, xs):
  return jax.lax.scan(step, carry, xs)[1]


def variants(params, xs, h0):
  """name -> (jitted function of no arguments, matmul FLOPs per step or None)."""
  w_i, w_h, b = params['w_i'], params['w_h'], params['b'][None]

  def cell(a, c):
    i, f = jax.nn.sigmoid(a[:, :H]), jax.nn.sigmoid(a[:, H:2 * H])
    g, o = jnp.tanh(a[:, 2 * H:3 * H]), jax.nn.sigmoid(a[:, 3 * H:])
    new_c = f * c + i * g
    return o * jnp.tanh(new_c), new_c, (i, f, g, o)

  def recurrent(xs):
    return _scan(lambda h, x: ((h @ w_h)[:, :H],) * 2, h0, xs)

  def inputs_too(xs):
    return _scan(lambda h, x: ((h @ w_h + x @ w_i + b)[:, :H],) * 2, h0, xs)

  def activations(xs):
    def step(h, x):
      a = h @ w_h + x @ w_i + b
      s = jax.nn.sigmoid(a)
      return s[:, :H] * jnp.tanh(s[:, H:2 * H]), None
    return jax.lax.scan(step, h0, xs)[0]

  def cell_update(xs, save=False):
    def step(carry, x):
      h, c = carry
      new_h, new_c, gates = cell(h @ w_h + x @ w_i + b, c)
      return (new_h, new_c), (new_h, new_c) + (gates if save else ())
    return _scan(step, (h0, h0), xs)

  def hoisted(xs):
    proj = jnp.reshape(jnp.reshape(xs, (T * B, D)) @ w_i, (T, B, 4 * H)) + b

    def step(carry, p):
      h, c = carry
      new_h, new_c, gates = cell(h @ w_h + p, c)
      return (new_h, new_c), (new_h, new_c) + gates
    return _scan(step, (h0, h0), proj)

  lstm = initstate.lstm(H)
  carry = jax.tree.map(lambda t: jnp.zeros((B,) + t.shape, t.dtype), lstm.carry_template)

  def library(xs):
    return initstate.scan_rnn(lstm.bind(params), xs, carry, time_major=True,
                              implementation='fused').outputs

  def library_training_forward(xs):
    fn = lambda p: initstate.scan_rnn(lstm.bind(p), xs, carry, time_major=True,
                                      implementation='fused').outputs
    out, vjp = jax.vjp(fn, params)
    return out, vjp  # Returning the VJP keeps the saved gates alive.

  rec_flops, in_flops = 2 * B * H * 4 * H, 2 * B * D * 4 * H
  table = {
      'recurrent matmul': (recurrent, rec_flops),
      '+ input matmul': (inputs_too, rec_flops + in_flops),
      '+ gate activations': (activations, None),
      '+ cell update (primal)': (cell_update, None),
      '+ saved gates (training fwd)': (functools.partial(cell_update, save=True), None),
      'initstate fused, primal': (library, None),
      'initstate fused, training fwd': (library_training_forward, None),
      'input matmul hoisted + saves': (hoisted, None),
  }
  out = {}
  for name, (fn, flops) in table.items():
    jitted = jax.jit(fn)
    out[name] = (lambda f=jitted: jax.block_until_ready(f(xs)), flops)
  return out


def torch_variant(params, xs):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  model = torch.nn.LSTM(D, H)
  with torch.no_grad():   # initstate gates (i, f, g, o) are PyTorch's order.
    model.weight_ih_l0.copy_(torch.tensor(jax.device_get(params['w_i']).T.copy()))
    model.weight_hh_l0.copy_(torch.tensor(jax.device_get(params['w_h']).T.copy()))
    model.bias_ih_l0.copy_(torch.tensor(jax.device_get(params['b']).copy()))
    model.bias_hh_l0.zero_()
  x = torch.tensor(jax.device_get(xs).copy())

  def run():
    with torch.no_grad():
      return model(x)
  return run


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--min-sample-ms', type=float, default=50.0)
  args = parser.parse_args(argv)

  keys = jax.random.split(jax.random.key(0), 2)
  params = initstate.lstm(H).init(keys[0], D)
  xs = jax.random.normal(keys[1], (T, B, D))
  h0 = jnp.zeros((B, H))
  benches = variants(params, xs, h0)
  runs = {name: run for name, (run, _) in benches.items()}
  torch_run = torch_variant(params, xs)
  if torch_run is not None:
    runs['torch nn.LSTM forward'] = torch_run
  print(f'jax {jax.__version__}, B={B} T={T} D={D} H={H}, {args.repeats} interleaved rounds')
  timings = time_interleaved(runs, args.repeats, args.min_sample_ms / 1e3,
                             lambda name, exc: print(f'FAILED {name}: {exc!r}'))
  full = timings['+ saved gates (training fwd)'].median
  print(f'{"variant":32s} {"median ms":>10s} {"us/step":>8s} {"GFLOP/s":>8s} '
        f'{"/ training fwd":>14s}')
  for name, timing in timings.items():
    flops = benches[name][1] if name in benches else None
    rate = f'{flops * T / timing.median / 1e9:8.0f}' if flops else f'{"":8s}'
    print(f'{name:32s} {timing.median * 1e3:10.2f} {timing.median / T * 1e6:8.1f} {rate} '
          f'{timing.median / full:14.3f}')


if __name__ == '__main__':
  main()
