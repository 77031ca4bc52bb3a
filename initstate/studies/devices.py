"""How the studies spread a sweep's models over devices: one CPU device per core by default."""

import os

import jax


def setup(requested: int = 0) -> int:
  """Makes `requested` CPU devices (0: one per core) if no JAX computation has run yet.

  Returns how many devices the study's models can be split across: the CPU devices made here,
  or, when the backend was already up (in a notebook, say) or is an accelerator, the devices
  it has, at most `requested` (if given).
  """
  if requested < 0:
    raise ValueError(f'--devices must be >= 0 (0: one per CPU core), got {requested}.')
  want = requested or os.cpu_count() or 1
  try:
    jax.config.update('jax_num_cpu_devices', want)
  except RuntimeError:
    pass  # The backend is already initialised: use the devices it has.
  return max(1, min(want, jax.device_count()))
