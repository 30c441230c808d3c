"""Grad-CAM: scores of feature dimensions (Perturb-SSL Sec. 3.3, Eq. 3) and spatial maps (Fig. 3).

``eta_i = ReLU(dL/dv_i * v_i)``: the gradient of the contrastive loss with
respect to the pooled feature vector ``v`` (not a convolutional feature map, as in
the original Grad-CAM), times the feature itself. High scores mark the
dimensions that the loss relies on; the perturbation (``fgjax.ops.perturb``) puts
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

  >>> import jax.numpy as jnp
  >>> v = jnp.array([[1.0, -2.0, 0.5]])  # [B=1, n=3]; L(v) = sum(v), so dL/dv = 1 and eta = ReLU(v)
  >>> gradcam_feature_scores(lambda f: jnp.sum(f, axis=-1), v).tolist()
  [[1.0, 0.0, 0.5]]

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


def spatial_gradcam(score_fn: Callable[[jax.Array], jax.Array], feature_map: jax.Array, *,
                    weighting: str = "elementwise", normalize: bool = True) -> jax.Array:
  """Spatial Grad-CAM of a score over a conv feature map (the maps of Perturb-SSL's Fig. 3).

  With ``G = d score / d A`` (``[N, h, w, C]``):

  - ``'pooled'``: the original Grad-CAM (Selvaraju et al. 2017),
    ``map = ReLU(sum_c mean_{h,w}(G_c) * A_c)``;
  - ``'elementwise'`` (default): ``map = ReLU(sum_c G_c * A_c)`` per location
    (HiResCAM, Draelos & Carin 2020) -- Eq. 3's ``ReLU(dL/dv * v)`` applied at
    each location. A score that depends on one location only lights up that
    location, which the pooled form does not guarantee.

  For fgjax's encoders, whose features are the spatial mean of the last map
  followed by any head, ``G`` is the same at every location, so both forms give
  the same map. The paper computes the maps "to highlight the regions that
  contribute to minimizing the loss": pass ``score_fn = -loss``.

  Args:
    score_fn: maps ``feature_map [N, h, w, C]`` to per-example scores ``[N]``
      (the gradient of their sum is taken).
    feature_map: ``[N, h, w, C]`` activations (used in at least float32).
    weighting: ``'elementwise'`` or ``'pooled'``.
    normalize: min-max normalise each map to [0, 1] (a constant map becomes 0).

  Returns:
    ``[N, h, w]`` non-negative maps, float32, without gradient.
  """
  if feature_map.ndim != 4:
    raise ValueError(f"feature_map must be [N, h, w, C], got shape {feature_map.shape}")
  if weighting not in ("elementwise", "pooled"):
    raise ValueError(f"weighting must be 'elementwise' or 'pooled', got {weighting!r}")
  a = jax.lax.stop_gradient(feature_map.astype(jnp.promote_types(feature_map.dtype, jnp.float32)))
  grads = jax.grad(lambda fm: jnp.sum(score_fn(fm)))(a)
  if weighting == "pooled":
    grads = jnp.mean(grads, axis=(1, 2), keepdims=True)  # alpha_c, [N, 1, 1, C]
  cam = jax.nn.relu(jnp.sum(grads * a, axis=-1))  # [N, h, w]
  if normalize:
    lo = jnp.min(cam, axis=(1, 2), keepdims=True)
    hi = jnp.max(cam, axis=(1, 2), keepdims=True)
    cam = jnp.where(hi > lo, (cam - lo) / jnp.maximum(hi - lo, 1e-12), 0.0)
  return jax.lax.stop_gradient(cam)
