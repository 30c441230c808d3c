"""Grad-CAM scores of feature dimensions (Perturb-SSL paper Sec. 3.3, Eq. 3).

``eta_i = ReLU(dL/dv_i * v_i)``: the gradient of the contrastive loss with
respect to the pooled feature vector ``v`` (not a convolutional feature map, as in
the original Grad-CAM), times the feature itself. High scores mark the
dimensions that the loss relies on; the perturbation (``fgjax.perturb``) puts
less noise on them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def gradcam_feature_scores(
    loss_fn: Callable[[jax.Array], jax.Array], features: jax.Array
) -> jax.Array:
  """Grad-CAM scores ``eta = ReLU(dL/dv * v)`` per example and dimension (Eq. 3).

  The gradient is that of ``sum_b loss_fn(features)_b`` with respect to
  ``features``. When each per-example loss depends only on its own feature row
  (MoCo InfoNCE against fixed keys and a fixed queue: the Perturb-SSL case),
  row ``b`` of that gradient is exactly ``dL_b/dv_b``. For a loss with
  in-batch negatives (NT-Xent) row ``b`` also collects the terms of the other
  examples' losses in which ``v_b`` appears as a negative. Using the sum or the
  mean only rescales ``eta`` by a positive factor, which the ReLU and the later
  min-max normalisation (Eq. 4) ignore.

  Typical use (MoCo base; the gradient runs through the projection head only,
  ``key`` and ``queue`` carry no gradient)::

      loss_fn = lambda v: infonce_with_queue(
          query=l2_normalize(head.apply(head_params, v)), key=keys,
          queue=queue, temperature=0.2)
      eta = gradcam_feature_scores(loss_fn, features)

  The scores are wrapped in ``stop_gradient``: they decide the noise scale and
  must not be a path for gradients to the encoder or the head. ``features`` is
  also detached before the inner gradient, so an enclosing ``jax.grad`` never
  differentiates through it (no second-order terms are traced).

  Args:
    loss_fn: maps features ``[B, n]`` (in at least float32) to per-example
      losses ``[B]``.
    features: ``[B, n]`` pooled encoder features ``v``.

  Returns:
    ``[B, n]`` non-negative scores, in at least float32, without gradient.
  """
  features = jnp.asarray(features)
  # Grad-CAM products are small numbers compared across dimensions; do them in
  # float32 even when the encoder runs in bfloat16.
  features = jax.lax.stop_gradient(
      features.astype(jnp.promote_types(features.dtype, jnp.float32)))
  total_loss = lambda v: jnp.sum(loss_fn(v).astype(v.dtype))
  grads = jax.grad(total_loss)(features)
  return jax.lax.stop_gradient(jax.nn.relu(grads * features))
