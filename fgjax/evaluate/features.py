"""Frozen-encoder feature extraction for evaluation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fgjax.data import augment


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
  params = {"params": model.params, "batch_stats": model.batch_stats}

  @jax.jit
  def forward(x):
    x = augment.normalize(x.astype(jnp.float32) / 255.0)
    out = {"features": model.encoder.apply(params, x, train=False)}
    if with_super_logits:
      out["super_logits"] = model.super_logits(x)
    return out

  if len(source) == 0:
    raise ValueError("no images to extract features from (empty split)")
  columns: dict[str, list[np.ndarray]] = {}
  for batch in pipeline.eval_batches(source, batch_size=batch_size, transform=transform):
    images = np.asarray(batch["image"])
    valid = images.shape[0]
    if valid < batch_size:
      images = np.concatenate([images, np.zeros((batch_size - valid, *images.shape[1:]), images.dtype)])
    out = jax.device_get(forward(jnp.asarray(images)))
    for key, value in out.items():
      columns.setdefault(key, []).append(np.asarray(value)[:valid])
    columns.setdefault("fine", []).append(np.asarray(batch["fine_label"]))
    if "super_label" in batch:
      columns.setdefault("super", []).append(np.asarray(batch["super_label"]))
  return {key: np.concatenate(parts) for key, parts in columns.items()}
