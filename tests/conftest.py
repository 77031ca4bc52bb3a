"""Test configuration: strict shape checks, as in equinox's test suite."""

import jax

# A [B, T] mask silently broadcasting against [B, T, 1] is a classic bug: make it an error.
jax.config.update('jax_numpy_rank_promotion', 'raise')
