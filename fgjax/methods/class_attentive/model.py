"""The Flax modules of method A: the MLP embedding f, the class-attentive module g, the net.

``z = f(x)`` is an MLP 200 -> 64 (Sec. 4.2); ``g`` gives a weight vector ``w_c`` in
R^d per class (Sec. 3.3). The paper does not say how ``w_c`` is parameterised,
only (Theorem 1) that the weights are bounded: ``w_c = sigmoid(a_c)`` with a
learnable table ``a`` in R^{C x d}, initialised at 0 (every ``w_c = 0.5``).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections


class MLPEmbedding(nn.Module):
  """z = f(x): Dense-ReLU layers, then a linear layer to ``embed_dim`` (Sec. 4.2).

  ``x: [B, 200] -> z: [B, embed_dim]``. The last layer has no ReLU: a ReLU output
  is non-negative, so every pair's cosine would be >= 0 and negatives could not
  be pushed past orthogonal.

  ``bias_init_std``: the hidden layers' biases start ~ N(0, std^2) instead of 0.
  Why it matters here: the circle classes differ only in *scale* (radius), and a
  ReLU MLP with zero biases is positively homogeneous, ``f(a x) = a f(x)`` for
  a > 0, so at initialisation the direction of z does not depend on the radius
  at all and a cosine loss -- scale-invariant -- gets no signal about the class
  (measured: cos(f(x), f(1.3 x)) = 1.0 at init; the 20-epoch runs then stay at
  pos cos = neg cos). Biases on the scale of the pre-activations (~0.8 with
  lecun-normal weights and |coordinate| ~ 0.8) make the ReLU pattern depend on
  the scale. Applied alike to every variant (docs/class_attentive.md).
  """
  hidden_dims: Sequence[int] = (256, 256)
  embed_dim: int = 64
  bias_init_std: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bias_init = (nn.initializers.normal(self.bias_init_std) if self.bias_init_std > 0
                 else nn.initializers.zeros)
    for width in self.hidden_dims:
      x = nn.relu(nn.Dense(width, bias_init=bias_init)(x))
    return nn.Dense(self.embed_dim)(x)


class ClassAttention(nn.Module):
  """The class-attentive module g: per-class weights ``w_c = sigmoid(a_c)`` (Sec. 3.3).

  Returns the table ``w: [num_classes, dim]`` with entries in (0, 1) (bounded, as
  Theorem 1 assumes); ``a`` starts at 0 so every class starts with the same
  weights (0.5).
  """
  num_classes: int
  dim: int

  @nn.compact
  def __call__(self) -> jax.Array:
    logits = self.param("logits", nn.initializers.zeros, (self.num_classes, self.dim))
    return jax.nn.sigmoid(logits)


class ClassAttentiveNet(nn.Module):
  """The embedding, optionally the class-attentive module, optionally a classifier head.

  ``__call__(x [B, D_in]) -> {'z': [B, d], 'class_weights': [C, d], 'logits': [B, C]}``;
  ``class_weights`` is all ones without attention (then ``z' = z``: the Siamese
  baseline), ``logits`` only with ``classifier=True`` (the supervised baseline).
  """
  num_classes: int
  hidden_dims: Sequence[int] = (256, 256)
  embed_dim: int = 64
  attention: bool = True
  classifier: bool = False
  bias_init_std: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    z = MLPEmbedding(tuple(self.hidden_dims), self.embed_dim, self.bias_init_std, name="embedding")(x)
    if self.attention:
      weights = ClassAttention(self.num_classes, self.embed_dim, name="attention")()
    else:
      weights = jnp.ones((self.num_classes, self.embed_dim), z.dtype)
    out = {"z": z, "class_weights": weights}
    if self.classifier:
      out["logits"] = nn.Dense(self.num_classes, name="head")(z)
    return out


def build_net(cfg: ml_collections.ConfigDict) -> ClassAttentiveNet:
  """The net of ``cfg.model`` (a classifier head only for ``objective='supervised'``)."""
  return ClassAttentiveNet(num_classes=cfg.data.num_classes, hidden_dims=tuple(cfg.model.hidden_dims),
                           embed_dim=cfg.model.embed_dim, attention=bool(cfg.model.attention),
                           classifier=cfg.objective == "supervised",
                           bias_init_std=float(cfg.model.bias_init_std))


def init_params(cfg: ml_collections.ConfigDict, net: ClassAttentiveNet, input_dim: int):
  """Initial parameters from ``fold_in(PRNGKey(seed), 0)`` (1 is the training loop's key)."""
  return net.init(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0), jnp.zeros((1, input_dim), jnp.float32))
