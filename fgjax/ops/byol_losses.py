"""BYOL's loss (Grill et al. 2020, "Bootstrap Your Own Latent", Eq. 2): pure, config-free."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fgjax.ops import losses


def normalized_mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """``||q/|q| - z/|z|||^2 = 2 - 2 cos(q, z)`` per row (BYOL Eq. 2), the target under stop-gradient.

  >>> import jax.numpy as jnp
  >>> normalized_mse(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([[3.0, 0.0], [1.0, 0.0]])).tolist()
  [0.0, 2.0]

  Args:
    prediction: ``[B, K]`` online predictions ``q_theta(z_theta)``.
    target: ``[B, K]`` target projections ``z'_xi`` (no gradient flows into them).

  Returns:
    ``[B]`` losses in [0, 4], in at least float32.
  """
  q = losses.l2_normalize(prediction.astype(jnp.promote_types(prediction.dtype, jnp.float32)))
  z = losses.l2_normalize(jax.lax.stop_gradient(target).astype(q.dtype))
  return 2.0 - 2.0 * jnp.sum(q * z, axis=-1)


def symmetric_byol_loss(*, p1: jax.Array, z2: jax.Array, p2: jax.Array, z1: jax.Array) -> jax.Array:
  """BYOL's symmetrised loss per example: ``nmse(p1, sg(z2)) + nmse(p2, sg(z1))`` (Sec. 3.1, L + L~), ``[B]``."""
  return normalized_mse(p1, z2) + normalized_mse(p2, z1)
