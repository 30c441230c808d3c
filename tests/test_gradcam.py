"""Tests of fgjax.ops.gradcam: closed-form scores (Eq. 3) and the absence of a gradient path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from fgjax.ops import gradcam
from fgjax.ops import losses


class GradCamTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_linear_head_closed_form(self):
    # L_b(v) = -(v_b . w)  =>  dL/dv_b = -w  =>  eta = relu(-w * v).
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
    scores = self.variant(
        lambda v: gradcam.gradcam_feature_scores(lambda u: -(u @ w), v))(features)
    chex.assert_shape(scores, (4, 6))
    np.testing.assert_allclose(scores, np.maximum(-np.asarray(w) * np.asarray(features), 0.0),
                               rtol=1e-6)
    self.assertTrue(np.all(np.asarray(scores) >= 0.0))
    self.assertTrue(np.any(np.asarray(scores) == 0.0))  # the ReLU did clip something

  @chex.variants(with_jit=True, without_jit=True)
  def test_quadratic_closed_form(self):
    # L_b(v) = 0.5 * sum_i a_i v_bi^2  =>  dL/dv = a * v  =>  eta = relu(a * v^2).
    a = jnp.array([2.0, -1.0, 0.5])
    features = jnp.array([[1.0, 2.0, -3.0], [-0.5, 0.0, 4.0]])
    scores = self.variant(lambda v: gradcam.gradcam_feature_scores(
        lambda u: 0.5 * jnp.sum(a * u**2, axis=-1), v))(features)
    expected = np.maximum(np.asarray(a) * np.asarray(features) ** 2, 0.0)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    np.testing.assert_allclose(expected, [[2.0, 0.0, 4.5], [0.5, 0.0, 8.0]])

  def test_infonce_rows_are_per_example_gradients(self):
    # With fixed keys and queue, row b of the batched scores equals the score
    # of example b computed alone.
    rng = np.random.default_rng(1)
    head = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    keys = losses.l2_normalize(jnp.asarray(rng.normal(size=(4, 3)), jnp.float32))
    queue = losses.l2_normalize(jnp.asarray(rng.normal(size=(7, 3)), jnp.float32))
    features = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)

    def loss_fn(v, k):
      return losses.infonce_with_queue(
          query=losses.l2_normalize(v @ head), key=k, queue=queue, temperature=0.2)

    batched = jax.jit(lambda v: gradcam.gradcam_feature_scores(lambda u: loss_fn(u, keys), v))(
        features)
    alone_grad = jax.jit(jax.grad(lambda u, k: loss_fn(u[None], k[None])[0]))
    for b in range(4):
      alone = alone_grad(features[b], keys[b])
      np.testing.assert_allclose(
          batched[b], np.maximum(np.asarray(alone) * np.asarray(features[b]), 0.0),
          rtol=1e-5, atol=1e-7)

  def test_no_gradient_through_scores(self):
    # Neither the head parameter closed over by loss_fn nor the encoder
    # parameter that produced the features receives gradient from the scores.
    rng = np.random.default_rng(2)
    inputs = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4,)), jnp.float32)

    def total_score(head_scale, encoder_scale):
      features = encoder_scale * inputs
      scores = gradcam.gradcam_feature_scores(lambda u: -(u @ (head_scale * w)), features)
      return jnp.sum(scores)

    self.assertGreater(float(total_score(1.5, 2.0)), 0.0)  # non-trivial scores
    grads = jax.grad(total_score, argnums=(0, 1))(1.5, 2.0)
    self.assertEqual(float(grads[0]), 0.0)
    self.assertEqual(float(grads[1]), 0.0)
    # Control: without the stop-gradient the same expression has a gradient.
    ungated = lambda s: jnp.sum(jax.nn.relu(-(s * w) * (2.0 * inputs)))
    self.assertNotEqual(float(jax.grad(ungated)(1.5)), 0.0)

  def test_bfloat16_features_give_float32_scores(self):
    features = jnp.array([[1.0, -2.0]], jnp.bfloat16)
    seen = []

    def loss_fn(u):
      seen.append(u.dtype)
      return -(u @ jnp.array([1.0, 1.0]))

    scores = gradcam.gradcam_feature_scores(loss_fn, features)
    self.assertEqual(scores.dtype, jnp.float32)
    self.assertEqual(seen[0], jnp.float32)
    np.testing.assert_array_equal(scores, [[0.0, 2.0]])


if __name__ == "__main__":
  absltest.main()
