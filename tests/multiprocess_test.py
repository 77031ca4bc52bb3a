"""Multi-process data parallelism for real: two local JAX processes over loopback (gloo)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

from absl.testing import absltest
import numpy as np
import pytest

_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    proc_id, port, nproc = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if nproc > 1:
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
      jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                                 num_processes=nproc, process_id=proc_id)
    import jax.numpy as jnp, numpy as np, optax
    from jax.experimental import multihost_utils
    import initstate
    B, T, D, H = 8, 5, 3, 8
    cell, strategy = initstate.lstm(H), initstate.noisy_learned(0.5)
    optimizer = optax.adam(1e-2)
    params = {'cell': cell.init(jax.random.key(1), D),
              'carry': strategy.init(None, cell.carry_template)}
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    y = jnp.cumsum(x[..., :1], axis=1)

    def loss_fn(params, batch, rng, initial_carry):
      keys = initstate.training.example_keys(rng, batch['x'].shape[0])
      carry = initial_carry(params['carry'], keys)
      out = initstate.scan_rnn(cell.bind(params['cell']), batch['x'], carry)
      return jnp.mean((out.outputs[..., :1] - batch['y']) ** 2)

    mesh = jax.make_mesh((jax.device_count(),), ('data',),
                         axis_types=(jax.sharding.AxisType.Auto,))
    state = initstate.training.replicate(
        initstate.training.TrainState.create(params, optimizer, jax.random.key(3)), mesh)
    part = B // jax.process_count()            # this process's slice of the global batch
    local = {'x': x[proc_id * part:(proc_id + 1) * part],
             'y': y[proc_id * part:(proc_id + 1) * part]}
    batch = initstate.training.shard_batch(local, mesh)
    step = jax.jit(initstate.training.train_step(loss_fn, optimizer, strategy=strategy))
    for _ in range(5):
      state, loss = step(state, batch)
    gather = ((lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)))
              if nproc > 1 else np.asarray)
    print(json.dumps({'devices': jax.device_count(), 'processes': jax.process_count(),
                      'params': [gather(l).ravel().tolist()
                                 for l in jax.tree.leaves(state.params)]}))
    if nproc > 1:
      jax.distributed.shutdown()
''')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
class MultiProcessTest(absltest.TestCase):

  def test_two_processes_match_one(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)  # one CPU device per process
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, '-c', _SCRIPT, str(i), port, '2'], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    for p in procs:
      try:
        stdout, stderr = p.communicate(timeout=300)
      except subprocess.TimeoutExpired:
        for q in procs:
          q.kill()
        self.fail('the two-process run timed out')
      self.assertEqual(p.returncode, 0, stderr[-3000:])
      outs.append(json.loads(stdout.strip().splitlines()[-1]))
    single = subprocess.run([sys.executable, '-c', _SCRIPT, '0', '0', '1'], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(single.returncode, 0, single.stderr[-3000:])
    reference = json.loads(single.stdout.strip().splitlines()[-1])
    self.assertEqual([o['processes'] for o in outs], [2, 2])
    self.assertEqual([o['devices'] for o in outs], [2, 2])
    self.assertEqual(reference['devices'], 1)
    self.assertEqual(outs[0]['params'], outs[1]['params'])   # both processes agree exactly
    for a, b in zip(outs[0]['params'], reference['params']):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # and equal one process


if __name__ == '__main__':
  absltest.main()
