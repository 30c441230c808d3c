"""Activation attention maps of a ResNet stage (fgjax.ops.spatial_attention; Base-Indi's Fig. 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.data import pipeline
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.ops import spatial_attention as sa


def test_spatial_attention_is_the_channel_mean_of_squares():
  a = np.random.default_rng(6).normal(size=(2, 3, 4, 5)).astype(np.float32)
  raw = np.asarray(sa.spatial_attention(jnp.asarray(a), normalize=None))
  np.testing.assert_allclose(raw, np.mean(a ** 2, axis=-1), rtol=1e-6)
  mm = np.asarray(sa.spatial_attention(jnp.asarray(a)))
  assert mm.min() == 0.0 and np.allclose(mm.reshape(2, -1).max(axis=1), 1.0)
  assert np.all(np.asarray(sa.spatial_attention(jnp.ones((1, 2, 2, 3)))) == 0.0)  # constant map
  with pytest.raises(ValueError, match="feature_map"):
    sa.spatial_attention(jnp.ones((2, 3, 4)))


def test_attention_maps_of_a_stage_follow_the_bright_region():
  """A random ResNet's stage-1 activations are larger where the input has energy."""
  cfg = registry.config("base", "runlocal")
  data = pipeline.load_splits(cfg)
  s = registry.setup(cfg, train_source=data["train"])
  state = spec.initial_state(s, jax.random.PRNGKey(0))
  model = registry.frozen_model(cfg, s.nets, state)
  images = np.zeros((2, 16, 16, 3), np.float32)
  images[0, :8, :8] = 3.0  # top-left quadrant
  images[1, 8:, 8:] = 3.0  # bottom-right quadrant
  maps = np.asarray(sa.attention_maps(model, jnp.asarray(images), stage=1, out_size=16))
  assert maps.shape == (2, 16, 16)
  assert maps[0, :8, :8].mean() > maps[0, 8:, 8:].mean()
  assert maps[1, 8:, 8:].mean() > maps[1, :8, :8].mean()
  with pytest.raises(ValueError, match="stage"):
    sa.attention_maps(model, jnp.asarray(images), stage=5)
