"""Tests of fgjax.ops.losses: NumPy references, hand-computed values, gradients, invariances."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized
from jax import test_util as jtu

from fgjax.ops import losses


# Jitted entry points for tests that are not chex variants: eager op-by-op
# dispatch compiles every primitive separately and is slow on a busy CPU.
_nt_xent = jax.jit(losses.nt_xent, static_argnames=("include_positive_in_denominator",))
_infonce = jax.jit(losses.infonce_with_queue)
_simsiam = jax.jit(losses.simsiam_loss)

def _unit_rows(rng, shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_logsumexp(values):
  values = np.asarray(values, np.float64)
  top = values.max()
  return top + math.log(np.sum(np.exp(values - top)))


def _np_infonce(query, key, queue, temperature):
  """Explicit per-example loop, float64."""
  out = []
  for q, k in zip(query, key):
    logits = [float(q @ k) / temperature]
    logits += [float(q @ neg) / temperature for neg in queue]
    out.append(_np_logsumexp(logits) - logits[0])
  return np.array(out)


def _np_nt_xent(z_a, z_b, temperature, include_positive):
  """Explicit loops over anchors, float64."""
  batch = len(z_a)
  emb = np.concatenate([z_a, z_b]).astype(np.float64)
  per_anchor = []
  for i in range(2 * batch):
    pos = (i + batch) % (2 * batch)
    denom_terms = []
    for j in range(2 * batch):
      if j == i or (j == pos and not include_positive):
        continue
      denom_terms.append(emb[i] @ emb[j] / temperature)
    per_anchor.append(_np_logsumexp(denom_terms) - emb[i] @ emb[pos] / temperature)
  per_anchor = np.array(per_anchor)
  return 0.5 * (per_anchor[:batch] + per_anchor[batch:])


def _np_simsiam(p1, z2, p2, z1):
  def neg_cos(p, z):
    return -np.sum(p * z, -1) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(z, axis=-1))
  return 0.5 * (neg_cos(p1, z2) + neg_cos(p2, z1))


class L2NormalizeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_unit_norm_and_zero_vector(self):
    x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    y = self.variant(losses.l2_normalize)(x)
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    grad = jax.grad(lambda v: jnp.sum(losses.l2_normalize(v)))(x)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_bfloat16_input_gives_float32(self):
    y = losses.l2_normalize(jnp.ones((2, 3), jnp.bfloat16))
    self.assertEqual(y.dtype, jnp.float32)


class InfoNCETest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    rng = np.random.default_rng(0)
    query, key = _unit_rows(rng, (4, 8)), _unit_rows(rng, (4, 8))
    queue = _unit_rows(rng, (16, 8))
    fn = self.variant(lambda q, k, qu: losses.infonce_with_queue(
        query=q, key=k, queue=qu, temperature=0.2))
    got = fn(jnp.asarray(query, jnp.float32), jnp.asarray(key, jnp.float32),
             jnp.asarray(queue, jnp.float32))
    chex.assert_shape(got, (4,))
    np.testing.assert_allclose(got, _np_infonce(query, key, queue, 0.2), rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_computed_tiny_case(self):
    # q = (1, 0), k = (0.6, 0.8), one negative n = (0, 1), tau = 0.5:
    # q.k = 0.6, q.n = 0 -> loss = log(e^{1.2} + e^0) - 1.2.
    fn = self.variant(lambda q, k, qu: losses.infonce_with_queue(
        query=q, key=k, queue=qu, temperature=0.5))
    got = fn(jnp.array([[1.0, 0.0]]), jnp.array([[0.6, 0.8]]), jnp.array([[0.0, 1.0]]))
    expected = math.log(math.exp(1.2) + math.exp(0.0)) - 1.2
    np.testing.assert_allclose(got, [expected], rtol=1e-6)

  def test_bfloat16_inputs_computed_in_float32(self):
    rng = np.random.default_rng(1)
    query, key, queue = (_unit_rows(rng, s) for s in ((3, 4), (3, 4), (5, 4)))
    as_bf16 = lambda x: jnp.asarray(x, jnp.bfloat16)
    got = _infonce(
        query=as_bf16(query), key=as_bf16(key), queue=as_bf16(queue), temperature=0.2)
    self.assertEqual(got.dtype, jnp.float32)
    # Reference on the same bf16-rounded inputs, in float64.
    rounded = [np.asarray(as_bf16(x), np.float64) for x in (query, key, queue)]
    np.testing.assert_allclose(got, _np_infonce(*rounded, 0.2), rtol=1e-5, atol=1e-5)

  def test_gradients_on_normalised_inputs(self):
    rng = np.random.default_rng(2)

    @jax.jit
    def loss(q, k, qu):
      return jnp.sum(losses.infonce_with_queue(
          query=losses.l2_normalize(q), key=losses.l2_normalize(k),
          queue=losses.l2_normalize(qu), temperature=0.3))

    with jax.enable_x64(True):
      args = tuple(jnp.asarray(rng.normal(size=s), jnp.float64)
                   for s in ((3, 5), (3, 5), (6, 5)))
      jtu.check_grads(loss, args, order=1, modes=["rev"])

  @chex.variants(with_jit=True, without_jit=True)
  def test_invariant_to_queue_row_permutation(self):
    rng = np.random.default_rng(3)
    query, key = _unit_rows(rng, (4, 8)), _unit_rows(rng, (4, 8))
    queue = _unit_rows(rng, (10, 8))
    fn = self.variant(lambda qu: losses.infonce_with_queue(
        query=query, key=key, queue=qu, temperature=0.2))
    np.testing.assert_allclose(fn(queue), fn(queue[rng.permutation(10)]), rtol=1e-6)

  def test_positive_in_denominator(self):
    # With an empty queue the only logit is the positive: loss = 0 exactly.
    got = _infonce(
        query=jnp.array([[1.0, 0.0]]), key=jnp.array([[0.0, 1.0]]),
        queue=jnp.zeros((0, 2)), temperature=0.2)
    np.testing.assert_allclose(got, [0.0], atol=1e-7)


class NTXentTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(True, False)
  def test_matches_numpy_reference(self, include_positive):
    rng = np.random.default_rng(4)
    z_a, z_b = _unit_rows(rng, (5, 6)), _unit_rows(rng, (5, 6))
    fn = self.variant(lambda a, b: losses.nt_xent(
        z_a=a, z_b=b, temperature=0.5, include_positive_in_denominator=include_positive))
    got = fn(jnp.asarray(z_a, jnp.float32), jnp.asarray(z_b, jnp.float32))
    chex.assert_shape(got, (5,))
    np.testing.assert_allclose(
        got, _np_nt_xent(z_a, z_b, 0.5, include_positive), rtol=1e-5, atol=1e-5)

  def test_hand_computed_two_pairs(self):
    # a_1 = b_1 = e1, a_2 = b_2 = e2, tau = 1. Anchor a_1: positive logit 1,
    # negatives a_2, b_2 with logit 0. SimCLR: log(e + 2) - 1; decoupled: log 2 - 1.
    z = jnp.eye(2)
    with_pos = _nt_xent(z_a=z, z_b=z, temperature=1.0)
    without_pos = _nt_xent(
        z_a=z, z_b=z, temperature=1.0, include_positive_in_denominator=False)
    np.testing.assert_allclose(with_pos, [math.log(math.e + 2) - 1] * 2, rtol=1e-6)
    np.testing.assert_allclose(without_pos, [math.log(2) - 1] * 2, rtol=1e-6)

  @parameterized.parameters(True, False)
  def test_symmetric_in_views(self, include_positive):
    rng = np.random.default_rng(5)
    z_a, z_b = _unit_rows(rng, (4, 3)), _unit_rows(rng, (4, 3))
    fn = jax.jit(lambda a, b: losses.nt_xent(
        z_a=a, z_b=b, temperature=0.2, include_positive_in_denominator=include_positive))
    np.testing.assert_allclose(fn(z_a, z_b), fn(z_b, z_a), rtol=1e-6)

  @parameterized.parameters(True, False)
  def test_batch_permutation_permutes_losses(self, include_positive):
    rng = np.random.default_rng(6)
    z_a, z_b = _unit_rows(rng, (6, 4)), _unit_rows(rng, (6, 4))
    perm = rng.permutation(6)
    fn = jax.jit(lambda a, b: losses.nt_xent(
        z_a=a, z_b=b, temperature=0.3, include_positive_in_denominator=include_positive))
    np.testing.assert_allclose(fn(z_a[perm], z_b[perm]), np.asarray(fn(z_a, z_b))[perm],
                               rtol=1e-6)

  def test_decoupled_needs_two_pairs(self):
    z = jnp.ones((1, 3)) / math.sqrt(3)
    with self.assertRaises(ValueError):
      _nt_xent(z_a=z, z_b=z, temperature=0.2, include_positive_in_denominator=False)
    # The SimCLR form is defined (and 0) for a single pair.
    np.testing.assert_allclose(_nt_xent(z_a=z, z_b=z, temperature=0.2), [0.0], atol=1e-6)

  def test_gradients_finite_and_correct(self):
    rng = np.random.default_rng(7)

    @jax.jit
    def loss(a, b):
      return jnp.sum(losses.nt_xent(
          z_a=losses.l2_normalize(a), z_b=losses.l2_normalize(b), temperature=0.5,
          include_positive_in_denominator=False))

    with jax.enable_x64(True):
      args = tuple(jnp.asarray(rng.normal(size=(3, 4)), jnp.float64) for _ in range(2))
      jtu.check_grads(loss, args, order=1, modes=["rev"])


class SimSiamTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    rng = np.random.default_rng(8)
    p1, z2, p2, z1 = (rng.normal(size=(4, 6)) for _ in range(4))
    fn = self.variant(lambda *a: losses.simsiam_loss(p1=a[0], z2=a[1], p2=a[2], z1=a[3]))
    got = fn(*(jnp.asarray(x, jnp.float32) for x in (p1, z2, p2, z1)))
    chex.assert_shape(got, (4,))
    np.testing.assert_allclose(got, _np_simsiam(p1, z2, p2, z1), rtol=1e-5, atol=1e-6)

  def test_stop_gradient_on_projections(self):
    rng = np.random.default_rng(9)
    args = tuple(jnp.asarray(rng.normal(size=(3, 5)), jnp.float32) for _ in range(4))
    total = lambda p1, z2, p2, z1: jnp.sum(losses.simsiam_loss(p1=p1, z2=z2, p2=p2, z1=z1))
    grad_p1, grad_z2, grad_p2, grad_z1 = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(*args)
    np.testing.assert_array_equal(grad_z1, 0.0)
    np.testing.assert_array_equal(grad_z2, 0.0)
    self.assertGreater(float(jnp.abs(grad_p1).max()), 1e-3)
    self.assertGreater(float(jnp.abs(grad_p2).max()), 1e-3)

  def test_minimum_is_minus_one(self):
    rng = np.random.default_rng(10)
    z1, z2 = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    # p parallel to the other view's z (any positive scale) gives -1 exactly.
    got = _simsiam(p1=2.0 * z2, z2=z2, p2=0.5 * z1, z1=z1)
    np.testing.assert_allclose(got, -1.0, rtol=1e-6)
    anti = _simsiam(p1=-z2, z2=z2, p2=-z1, z1=z1)
    np.testing.assert_allclose(anti, 1.0, rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
