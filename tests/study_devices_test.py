"""The studies' device set-up: one CPU device per core when asked before JAX starts, and the
devices already there once it has."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import pytest

_SCRIPT = textwrap.dedent('''
    import jax
    from initstate.studies import devices
    print('made', devices.setup({requested}), jax.device_count())
    print('again', devices.setup(3), jax.device_count())  # the backend is up now
    try:
      devices.setup(-1)
    except ValueError as e:
      print('error', e)
''')

_PLACE_SCRIPT = textwrap.dedent('''
    import jax
    import jax.numpy as jnp
    from initstate.studies import devices
    n = devices.setup(2)
    make = devices.sweeper(None, n)
    init = make(lambda k: {'w': jax.random.normal(k, (3,))}, 0, one_device=True)
    step = make(lambda s, x: {'w': s['w'] * x}, (0, None))
    state = devices.place(init(jax.vmap(jax.random.key)(jnp.arange(4))), n)
    for _ in range(3):
      state = step(state, 2.0)
    print('devices', n, 'compiled', step._cache_size(),
          'shards', len(state['w'].sharding.device_set))
    # Three models on two devices: left unplaced, padded by the sweep, and still right.
    start = init(jax.vmap(jax.random.key)(jnp.arange(3)))
    odd = devices.place(start, n)
    for _ in range(3):
      odd = step(odd, 2.0)
    print('odd models equal', bool(jnp.allclose(odd['w'], 8.0 * start['w'])), odd['w'].shape)
''')


@pytest.mark.slow   # Subprocesses that start JAX.
class SetupTest(absltest.TestCase):

  def _run(self, requested):
    proc = subprocess.run([sys.executable, '-c', _SCRIPT.format(requested=requested)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    return proc.stdout

  def test_requested_devices_before_jax_starts(self):
    out = self._run(3)
    self.assertIn('made 3 3', out)
    self.assertIn('again 3 3', out)
    self.assertIn('error --devices must be >= 0', out)

  def test_a_placed_state_compiles_the_sweep_once(self):
    proc = subprocess.run([sys.executable, '-c', _PLACE_SCRIPT], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    # Without `place`, the second call recompiles for the split placement (2 entries).
    self.assertIn('devices 2 compiled 1 shards 2', proc.stdout)
    self.assertIn('odd models equal True (3, 3)', proc.stdout)

  def test_zero_means_one_per_core(self):
    cores = os.cpu_count() or 1
    self.assertIn(f'made {cores} {cores}', self._run(0))


if __name__ == '__main__':
  absltest.main()
