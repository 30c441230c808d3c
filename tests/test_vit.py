"""Tests for fgjax.models.vit (tiny sizes at 16-32 px; ViT-S/16 by shapes only)."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.models import vit


# 'rbg' keys and jitted inits: threefry inits compile slowly op by op on this CPU.
RNG = jax.random.key(0, impl="rbg")
# A small ViT for the functional tests: 4 x 4 patches of 4 px at 16 px.
SMALL = dict(patch_size=4, hidden_dim=32, depth=2, num_heads=4, mlp_dim=64)


def _images(b, s, seed=1):
  return jnp.asarray(np.random.RandomState(seed).normal(size=(b, s, s, 3)), jnp.float32)


@functools.cache
def _small(pool="cls", dtype=jnp.float32, dropout=0.0):
  model = vit.ViT(**SMALL, pool=pool, dtype=dtype, dropout=dropout)
  variables = jax.jit(functools.partial(model.init, train=False))(RNG, jnp.zeros((1, 16, 16, 3)))
  return model, variables


def _param_count(model, x_shape):
  """Parameter count from shapes only (jax.eval_shape: no real init)."""
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), RNG, x)
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"])), variables


def _vit_formula(patch, d, depth, mlp, tokens, cls=True):
  """Parameters of a timm-layout ViT trunk, counted by hand from its layers."""
  embed = patch * patch * 3 * d + d
  block = (2 * 2 * d  # two LayerNorms
           + 3 * (d * d + d) + (d * d + d)  # q, k, v, out projections
           + (d * mlp + mlp) + (mlp * d + d))  # MLP
  return embed + (d if cls else 0) + tokens * d + depth * block + 2 * d


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_output_shape_dtype_and_feature_map(pool):
  model, variables = _small(pool)
  assert set(variables) == {"params"}  # no batch_stats: there is no BatchNorm
  x = _images(3, 16)
  v, fmap = jax.jit(lambda var, x: model.apply(var, x, train=False,
                                               return_feature_map=True))(variables, x)
  chex.assert_shape(v, (3, 32))
  chex.assert_shape(fmap, (3, 4, 4, 32))
  chex.assert_type([v, fmap], jnp.float32)
  chex.assert_tree_all_finite((v, fmap))
  assert model.num_features == 32
  if pool == "gap":
    np.testing.assert_allclose(v, fmap.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  assert ("cls_token" in variables["params"]) == (pool == "cls")


def test_examples_are_independent():
  # No BatchNorm, so an example's features do not depend on the rest of the batch.
  model, variables = _small()
  apply = jax.jit(lambda var, x: model.apply(var, x, train=True))
  a, b = _images(2, 16, seed=2), _images(2, 16, seed=3)
  v1 = apply(variables, a)
  v2 = apply(variables, jnp.concatenate([a[:1], b[1:]]))
  np.testing.assert_allclose(v1[0], v2[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(v1[1], v2[1])


def test_every_patch_reaches_the_class_token():
  # Attention mixes tokens: the pooled vector depends on every patch of the image.
  model, variables = _small()
  grad = jax.jit(jax.grad(lambda x: jnp.sum(model.apply(variables, x, train=False) ** 2)))(
      _images(1, 16))
  per_patch = jnp.abs(grad[0]).reshape(4, 4, 4, 4, 3).sum(axis=(1, 3, 4))
  assert np.all(np.asarray(per_patch) > 0)


def test_jit_and_grad_of_params():
  model, variables = _small()
  x = _images(2, 16)

  @jax.jit
  def loss_and_grad(params):
    return jax.value_and_grad(
        lambda p: jnp.mean(model.apply({"params": p}, x, train=False) ** 2))(params)

  loss, grads = loss_and_grad(variables["params"])
  assert np.isfinite(loss)
  chex.assert_trees_all_equal_shapes(grads, variables["params"])
  chex.assert_tree_all_finite(grads)
  # Every parameter gets gradient (none is disconnected), the class token included.
  nonzero = jax.tree.map(lambda g: bool(jnp.any(g != 0)), grads)
  assert all(jax.tree.leaves(nonzero)), nonzero


def test_bfloat16_compute_gives_float32_output():
  model, variables = _small(dtype=jnp.bfloat16)
  chex.assert_trees_all_equal_dtypes(
      variables["params"], jax.tree.map(lambda p: p.astype(jnp.float32), variables["params"]))
  x = _images(2, 16)
  v16 = jax.jit(lambda var, x: model.apply(var, x, train=False))(variables, x)
  assert v16.dtype == jnp.float32
  # The same parameters in float32 give nearly the same features (final LayerNorm:
  # unit scale), so the bf16 path computes the same function.
  model32 = vit.ViT(**SMALL)
  v32 = jax.jit(lambda var, x: model32.apply(var, x, train=False))(variables, x)
  np.testing.assert_allclose(v16, v32, atol=0.1)
  assert float(jnp.abs(v16 - v32).mean()) < 0.03


def test_dropout_only_in_training():
  model, variables = _small(dropout=0.5)
  x = _images(2, 16)
  apply = jax.jit(lambda var, x, rng, train: model.apply(var, x, train=train,
                                                         rngs={"dropout": rng}),
                  static_argnums=3)
  a = apply(variables, x, jax.random.key(1, impl="rbg"), True)
  b = apply(variables, x, jax.random.key(2, impl="rbg"), True)
  assert not np.allclose(a, b)
  c = apply(variables, x, jax.random.key(1, impl="rbg"), False)
  d = jax.jit(lambda var, x: model.apply(var, x, train=False))(variables, x)
  np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_vit_s16_parameter_count(pool):
  model = vit.build_vit("vit_s16", pool=pool)
  count, variables = _param_count(model, (1, 224, 224, 3))
  assert set(variables) == {"params"}
  # Hand count of the timm layout; with 'cls' it is timm's vit_small_patch16_224
  # (22,050,664) without its 1000-way head (384 * 1000 + 1000).
  expected = _vit_formula(16, 384, 12, 1536, tokens=197 if pool == "cls" else 196,
                          cls=pool == "cls")
  assert count == expected
  if pool == "cls":
    assert count == 22_050_664 - 385_000
  assert vit.feature_dim("vit_s16") == model.num_features == 384


@pytest.mark.parametrize("name,size,tokens", [("vit_tiny", 32, 65), ("vit_ti16", 224, 197),
                                               ("vit_b16", 224, 197)])
def test_named_sizes(name, size, tokens):
  model = vit.build_vit(name)
  count, _ = _param_count(model, (1, size, size, 3))
  assert count == _vit_formula(model.patch_size, model.hidden_dim, model.depth, model.mlp_dim,
                               tokens)
  assert vit.feature_dim(name) == model.num_features
  if name == "vit_b16":  # timm vit_base_patch16_224: 86,567,656 with a 768 x 1000 head.
    assert count == 86_567_656 - 769_000


def test_vit_tiny_runs_at_32px():
  model = vit.build_vit("vit_tiny")
  x = _images(2, 32)
  v, fmap = jax.jit(lambda x: model.apply(model.init(RNG, x, train=False), x, train=False,
                                          return_feature_map=True))(x)
  chex.assert_shape(v, (2, vit.feature_dim("vit_tiny")))
  chex.assert_shape(fmap, (2, 8, 8, vit.feature_dim("vit_tiny")))


def test_bad_configuration_raises():
  x = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(ValueError, match="unknown ViT"):
    vit.build_vit("vit_huge")
  with pytest.raises(ValueError, match="unknown ViT"):
    vit.feature_dim("resnet18")
  with pytest.raises(ValueError, match="patch_size"):
    vit.ViT(**{**SMALL, "patch_size": 5}).init(RNG, x, train=False)
  with pytest.raises(ValueError, match="pool"):
    vit.ViT(**SMALL, pool="max").init(RNG, x, train=False)
  with pytest.raises(ValueError, match="num_heads"):
    vit.ViT(**{**SMALL, "num_heads": 3}).init(RNG, x, train=False)
  with pytest.raises(ValueError, match="dropout"):
    vit.ViT(**SMALL, dropout=1.0).init(RNG, x, train=False)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    vit.ViT(**SMALL).init(RNG, jnp.zeros((16, 16, 3)), train=False)
