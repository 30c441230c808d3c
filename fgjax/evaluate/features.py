"""Frozen-encoder feature extraction for evaluation."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fgjax.data import augment


def _batched(fn: Callable[[jax.Array], jax.Array], images: np.ndarray, batch_size: int) -> np.ndarray:
  """``fn`` over fixed-size batches of uint8 images (last one padded: one compile)."""
  if images.shape[0] == 0:
    raise ValueError("no images to extract features from (empty split)")
  n = images.shape[0]
  out = []
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    valid = chunk.shape[0]
    if valid < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - valid, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(fn(jnp.asarray(chunk)))[:valid])
  return np.concatenate(out, axis=0)


def extract_features(encoder: nn.Module, params: Any, batch_stats: Any, images: np.ndarray, *,
                     batch_size: int = 256) -> np.ndarray:
  """Pooled features of the frozen encoder (eval-mode BatchNorm, no augmentation).

  Args:
    images: uint8 ``[N, H, W, 3]``.

  Returns:
    float32 ``[N, n]``. The last batch is padded to ``batch_size`` so the
    forward pass compiles once.
  """

  @jax.jit
  def forward(x):
    x = augment.normalize(x.astype(jnp.float32) / 255.0)
    return encoder.apply({"params": params, "batch_stats": batch_stats}, x, train=False)

  return _batched(forward, images, batch_size)


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


def extract_logits(logits_fn: Callable[[jax.Array], jax.Array], images: np.ndarray, *,
                   batch_size: int = 256) -> np.ndarray:
  """``logits_fn`` (normalised float images -> [B, K]) over uint8 images [N, H, W, 3]."""
  forward = jax.jit(lambda x: logits_fn(augment.normalize(x.astype(jnp.float32) / 255.0)))
  return _batched(forward, images, batch_size)
