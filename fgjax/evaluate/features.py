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


def extract_logits(logits_fn: Callable[[jax.Array], jax.Array], images: np.ndarray, *,
                   batch_size: int = 256) -> np.ndarray:
  """``logits_fn`` (normalised float images -> [B, K]) over uint8 images [N, H, W, 3]."""
  forward = jax.jit(lambda x: logits_fn(augment.normalize(x.astype(jnp.float32) / 255.0)))
  return _batched(forward, images, batch_size)
