"""Test configuration: strict shape checks (as in equinox's test suite) and quick compiles."""

import os

# The tests compile many small programs and run each once or twice, so XLA's backend
# optimisations cost more time than they save (about a third of a compile on CPU). The flag is
# for this process only: the CPU client reads XLA_FLAGS when it starts, and the variable is
# restored afterwards, so subprocesses (simulated devices, benchmarks, notebooks) get the
# caller's flags.
_QUICK_COMPILE = '--xla_backend_optimization_level=0'
_saved_flags = os.environ.get('XLA_FLAGS')
os.environ['XLA_FLAGS'] = f'{_saved_flags or ""} {_QUICK_COMPILE}'.strip()

import jax  # noqa: E402  (after XLA_FLAGS is set)

try:
  jax.devices()   # Starts the client with the flag.
finally:
  if _saved_flags is None:
    del os.environ['XLA_FLAGS']
  else:
    os.environ['XLA_FLAGS'] = _saved_flags

# A [B, T] mask silently broadcasting against [B, T, 1] is a classic bug: make it an error.
jax.config.update('jax_numpy_rank_promotion', 'raise')
