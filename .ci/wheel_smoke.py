"""Smoke test of the installed wheel, run by .ci/run with the wheel's own environment from a
folder outside the checkout: the package imports from site-packages, the main job's command
line answers, a tiny model runs and trains, and a short study reads the shipped data and the
shipped released models."""

import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp

import initstate
from initstate.studies import published


def run(*args: str) -> str:
  done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
  if done.returncode:
    sys.exit(f'python {" ".join(args)} failed:\n{done.stdout}\n{done.stderr}')
  return done.stdout


def main() -> None:
  where = pathlib.Path(initstate.__file__)
  assert 'site-packages' in where.parts, f'initstate imported from {where}, not the wheel'
  assert 'usage' in run('-m', 'initstate', '--help')

  cell = initstate.lstm(4)
  params = cell.init(jax.random.key(0), 3)
  x = jax.random.normal(jax.random.key(1), (2, 5, 3))
  strategy = initstate.learned()
  carry_params = strategy.init(None, cell.carry_template)

  def loss(p):
    carry = strategy.init_carry(p, None, 2, train=True)
    out = initstate.scan_rnn(cell.bind(params), x, carry)
    return jnp.mean(out.outputs ** 2)

  value, grads = jax.jit(jax.value_and_grad(loss))(carry_params)
  assert jnp.isfinite(value) and jax.tree.leaves(grads)[0].shape == (4,), (value, grads)

  with tempfile.TemporaryDirectory() as out:
    text = run('-m', 'initstate.studies.burn_in', '--dataset', 'rlc', '--window', '20',
               '--burn-in', '0,5', '--epochs', '1', '--hidden-size', '4', '--variants',
               'zeros', '--out', out, '--no-progress')
    assert "The paper's table" in text and (pathlib.Path(out) / 'results.json').exists(), text
  mse = published.evaluate('rlc', 200, 110)   # A released model, shipped in the wheel.
  assert f'{mse:.3g}' == '0.307', mse
  print(f'wheel smoke test passed: initstate {initstate.__version__} from {where.parent}')


if __name__ == '__main__':
  main()
