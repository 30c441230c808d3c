"""Frozen-encoder feature extraction for evaluation."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fgjax.data import augment


@functools.partial(jax.jit, static_argnums=0)
def pooled_features(encoder: Any, variables: Any, images: jax.Array) -> jax.Array:
  """The frozen encoder's pooled features [B, n] of uint8 images [B, H, W, 3] (eval-mode BatchNorm).

  The weights are an argument, not constants closed over: one compiled program
  serves every evaluation of an encoder of that shape (each monitor step,
  each split, and, through the persistent compilation cache, other runs), and
  XLA cannot fold the weights into the program.
  """
  return encoder.apply(variables, augment.normalize_uint8(images), train=False)


def extract_split(model: Any, source: Any, *, batch_size: int, transform: Any = None,
                  with_super_logits: bool = False) -> dict[str, np.ndarray]:
  """One pass over a record source: pooled features, labels and (optionally) head logits.

  Args:
    model: a ``registry.FrozenModel``.
    source: a record source (``fgjax.data.records``); read in order, in
      batches of ``batch_size`` (the last padded, so each function compiles once).
    transform: the evaluation transform (resize + centre crop), or None.
    with_super_logits: also run ``model.super_logits``.

  Returns:
    {'features': float32 [N, n], 'fine': int32 [N], 'super': int32 [N] (when the
     source has super labels), 'super_logits': [N, K] (when asked)}.
  """
  from fgjax.data import pipeline  # (data imports stay out of the feature module's import time)
  variables = jax.device_put({"params": model.params, "batch_stats": model.batch_stats})  # once, not per batch
  super_logits = None
  if with_super_logits:
    super_logits = jax.jit(lambda images: model.super_logits(augment.normalize_uint8(images)))

  if len(source) == 0:
    raise ValueError("no images to extract features from (empty split)")
  columns: dict[str, list[np.ndarray]] = {}
  for batch in pipeline.eval_batches(source, batch_size=batch_size, transform=transform):
    images = np.asarray(batch["image"])
    valid = images.shape[0]
    if valid < batch_size:
      images = np.concatenate([images, np.zeros((batch_size - valid, *images.shape[1:]), images.dtype)])
    images = jnp.asarray(images)
    out = {"features": pooled_features(model.encoder, variables, images)}
    if super_logits is not None:
      out["super_logits"] = super_logits(images)
    out = jax.device_get(out)
    for key, value in out.items():
      columns.setdefault(key, []).append(np.asarray(value)[:valid])
    columns.setdefault("fine", []).append(np.asarray(batch["fine_label"]))
    if "super_label" in batch:
      columns.setdefault("super", []).append(np.asarray(batch["super_label"]))
  return {key: np.concatenate(parts) for key, parts in columns.items()}
