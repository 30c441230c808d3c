"""The pure losses of class-attentive contrastive learning (fgjax.ops.class_attentive_losses) against NumPy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.ops import class_attentive_losses as ca_losses


def _unit_np(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------
# Losses against NumPy references


def test_cosine_loss_matches_numpy():
  rng = np.random.default_rng(0)
  z_i, z_j, w = rng.normal(size=(3, 8, 5)).astype(np.float32)
  w = np.abs(w)
  got = jax.jit(ca_losses.class_attentive_cosine_loss)(z_i, z_j, w)
  a, b = z_i * w, z_j * w  # z' = z (.) w_y, then l_mod = 1 - cos(z'_i, z'_j)
  want = 1.0 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
  chex.assert_shape(got, (8,))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Invariant to a positive scale of either side; identical pairs cost 0.
  np.testing.assert_allclose(ca_losses.class_attentive_cosine_loss(3.0 * z_i, z_j, w), got, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ca_losses.class_attentive_cosine_loss(z_i, z_i, w), 0.0, atol=1e-6)


def test_cosine_loss_gradient_is_finite_at_zero():
  z = jnp.zeros((2, 4))
  grad = jax.grad(lambda z_i: ca_losses.class_attentive_cosine_loss(z_i, z + 1.0, jnp.ones((2, 4))).sum())(z)
  assert np.all(np.isfinite(grad))


def _pair_sim_np(z, labels, w, mode):
  n = len(labels)
  out = np.zeros((n, n))
  for v in range(n):
    for u in range(n):
      wu = w[labels[v]] if mode == "anchor" else w[labels[u]]
      out[v, u] = _unit_np(z[v] * w[labels[v]]) @ _unit_np(z[u] * wu)
  return out


@pytest.mark.parametrize("mode", ["anchor", "own"])
def test_pair_similarities_match_numpy(mode):
  rng = np.random.default_rng(1)
  z = rng.normal(size=(6, 4)).astype(np.float32)
  w = rng.uniform(0.1, 1.0, size=(3, 4)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 1])
  got = ca_losses.pair_similarities(z, labels, w, mode)
  np.testing.assert_allclose(got, _pair_sim_np(z, labels, w, mode), rtol=1e-5, atol=1e-6)


def test_margin_and_infonce_match_numpy():
  rng = np.random.default_rng(2)
  labels = np.array([0, 1, 0, 2, 0, 1, 0, 2])
  partner = np.array([4, 5, 6, 7, 0, 1, 2, 3])
  sim = np.tanh(rng.normal(size=(8, 8))).astype(np.float32)
  margin, lam, tau = 0.1, 0.7, 0.2
  want_margin, want_nce = [], []
  for v in range(8):
    neg = [u for u in range(8) if labels[u] != labels[v]]
    hinge = np.mean([max(0.0, sim[v, u] - margin) for u in neg])
    want_margin.append(1.0 - sim[v, partner[v]] + lam * hinge)
    logits = np.array([sim[v, partner[v]]] + [sim[v, u] for u in neg]) / tau
    want_nce.append(np.log(np.exp(logits).sum()) - logits[0])
  got_margin = jax.jit(lambda s: ca_losses.margin_contrastive_loss(s, partner, labels, margin=margin,
                                                            negative_weight=lam))(sim)
  got_nce = jax.jit(lambda s: ca_losses.info_nce_loss(s, partner, labels, temperature=tau))(sim)
  np.testing.assert_allclose(got_margin, want_margin, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_nce, want_nce, rtol=1e-5, atol=1e-5)


def test_no_negatives_in_batch_is_finite():
  labels = np.zeros(4, np.int32)
  partner = np.array([2, 3, 0, 1])
  sim = jnp.full((4, 4), 0.5)
  assert np.all(np.isfinite(ca_losses.margin_contrastive_loss(sim, partner, labels)))
  np.testing.assert_allclose(ca_losses.info_nce_loss(sim, partner, labels), 0.0, atol=1e-6)


def test_own_class_weights_admit_a_label_only_solution():
  """Why negatives are viewed through the anchor's weights: with 'own' weights a
  constant z and disjoint w_c reach loss 0 (the label does all the work)."""
  z = jnp.ones((8, 4))  # every sample embedded identically: z knows nothing
  labels = jnp.array([0, 1, 2, 3, 0, 1, 2, 3])
  partner = jnp.array([4, 5, 6, 7, 0, 1, 2, 3])
  w = jnp.eye(4)  # disjoint supports
  own = ca_losses.margin_contrastive_loss(ca_losses.pair_similarities(z, labels, w, "own"), partner, labels)
  anchor = ca_losses.margin_contrastive_loss(ca_losses.pair_similarities(z, labels, w, "anchor"), partner, labels)
  np.testing.assert_allclose(own, 0.0, atol=1e-6)
  np.testing.assert_allclose(anchor, 1.0, atol=1e-6)


def test_attend_broadcasts_per_class():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(5, 3)).astype(np.float32)
  w = rng.uniform(size=(4, 3)).astype(np.float32)
  labels = np.array([3, 0, 3, 1, 2])
  got = np.asarray(ca_losses.attend(z, w, labels))
  for b, y in enumerate(labels):
    np.testing.assert_allclose(got[b], z[b] * w[y])
