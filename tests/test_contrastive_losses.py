"""Tests of fgjax.ops.contrastive_losses (SupCon, HCL): loop references, hand values, gradients."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized
from jax import test_util as jtu
from jax.sharding import PartitionSpec as P

from fgjax.infra import parallel
from fgjax.ops import contrastive_losses as cl


# Jitted entry points (eager op-by-op dispatch compiles every primitive separately).
_supcon = jax.jit(cl.supcon_loss, static_argnames=(
    "temperature", "base_temperature", "contrast_mode"))
_hcl = jax.jit(cl.hcl_loss, static_argnames=(
    "soft_weight", "temperature", "base_temperature", "contrast_mode"))


def _np_logsumexp(values):
  values = np.asarray(values, np.float64)
  top = values.max()
  return top + math.log(np.sum(np.exp(values - top)))


def _np_weighted_supcon(features, weight_of, temperature, base_temperature, mode, valid=None):
  """Loop reference straight from the equations, float64.

  ``weight_of(i, j)`` is the positive weight of sample j for anchor sample i (1 for
  a SupCon positive). Anchors/contrast rows are (view, sample) pairs, view-major.
  Returns (per_anchor, has_positive) as lists in the documented anchor order.
  """
  features = np.asarray(features, np.float64)
  batch, views, _ = features.shape
  norm = np.linalg.norm(features, axis=-1, keepdims=True)
  z = features / np.where(norm > 0, norm, 1.0)  # zero rows only occur as padding
  valid = np.ones(batch, bool) if valid is None else np.asarray(valid)
  rows = [(v, b) for v in range(views) for b in range(batch)]
  anchors = rows if mode == "all" else [(0, b) for b in range(batch)]
  out, has = [], []
  for va, a in anchors:
    if not valid[a]:
      out.append(0.0)
      has.append(False)
      continue
    others = [(v, b) for v, b in rows if (v, b) != (va, a) and valid[b]]  # A(i)
    logit = {r: z[a, va] @ z[r[1], r[0]] / temperature for r in others}
    log_denominator = _np_logsumexp(list(logit.values())) if others else 0.0
    weighted, weight_sum = 0.0, 0.0
    for r in others:
      w = weight_of(a, r[1])
      weighted += w * (logit[r] - log_denominator)
      weight_sum += w
    if weight_sum == 0:
      out.append(0.0)
      has.append(False)
    else:
      out.append(-(temperature / base_temperature) * weighted / weight_sum)
      has.append(True)
  return np.array(out), np.array(has)


def _np_supcon(features, labels, temperature=0.07, base_temperature=0.07, mode="all",
               valid=None):
  return _np_weighted_supcon(features, lambda i, j: float(labels[i] == labels[j]),
                             temperature, base_temperature, mode, valid)


def _np_hcl(features, species, genus, soft_weight, temperature=0.07, base_temperature=0.07,
            mode="all", valid=None):
  def weight_of(i, j):
    if genus[i] != genus[j]:
      return 0.0
    return 1.0 if species[i] == species[j] else soft_weight
  return _np_weighted_supcon(features, weight_of, temperature, base_temperature, mode, valid)


def _features(rng, batch, views, dim=5):
  return rng.normal(size=(batch, views, dim))


# Labels with singletons (2 and 4 appear once) so that V = 1 leaves anchors without
# a positive, and a class of three.
_LABELS = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4], np.int32)


class SupConTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True)
  @parameterized.product(views=(1, 2, 3), mode=("all", "one"))
  def test_matches_loop_reference(self, views, mode):
    rng = np.random.default_rng(views)
    feats = _features(rng, len(_LABELS), views)
    fn = self.variant(lambda f, y: cl.supcon_loss(
        f, y, temperature=0.1, base_temperature=0.07, contrast_mode=mode))
    per_anchor, has_pos = fn(jnp.asarray(feats, jnp.float32), _LABELS)
    num_anchors = len(_LABELS) * (views if mode == "all" else 1)
    chex.assert_shape([per_anchor, has_pos], (num_anchors,))
    chex.assert_type([per_anchor, has_pos], [jnp.float32, jnp.bool_])
    ref, ref_has = _np_supcon(feats, _LABELS, 0.1, 0.07, mode)
    np.testing.assert_array_equal(has_pos, ref_has)
    np.testing.assert_allclose(per_anchor, ref, rtol=2e-5, atol=2e-5)
    if views == 1:  # the singleton classes 2 and 4 have no positive.
      self.assertEqual(int(np.sum(~np.asarray(has_pos))), 2)
    else:
      self.assertTrue(np.all(has_pos))

  def test_hand_computed_tiny_case(self):
    # z_0 = z_1 = e1 (class 0), z_2 = e2 (class 1), T = T_b = 1, one view.
    # Anchor 0: A = {1, 2}, P = {1}: -(1 - log(e^1 + e^0)) = log(e + 1) - 1; same
    # for anchor 1; anchor 2 has no positive.
    feats = jnp.array([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])
    per_anchor, has_pos = _supcon(feats, jnp.array([0, 0, 1]), temperature=1.0,
                                  base_temperature=1.0)
    expected = math.log(math.e + 1) - 1
    np.testing.assert_allclose(per_anchor, [expected, expected, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(has_pos, [True, True, False])
    np.testing.assert_allclose(cl.masked_mean(per_anchor, has_pos), expected, rtol=1e-6)
    # Eagerly (no jit) the same.
    eager, _ = cl.supcon_loss(feats, jnp.array([0, 0, 1]), temperature=1.0, base_temperature=1.0)
    np.testing.assert_allclose(eager, per_anchor, rtol=1e-6)

  def test_two_views_of_one_sample_are_positives(self):
    # SimCLR-like case: all labels distinct, V = 2: the only positive is the other view.
    # Views identical and orthogonal to the other sample's: T = T_b = 1 gives
    # log(e + 2) - 1 (denominator: the other view, both views of the other sample).
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    feats = jnp.array([[e1, e1], [e2, e2]])
    per_anchor, has_pos = _supcon(feats, jnp.array([0, 1]), temperature=1.0,
                                  base_temperature=1.0)
    np.testing.assert_allclose(per_anchor, [math.log(math.e + 2) - 1] * 4, rtol=1e-6)
    self.assertTrue(np.all(has_pos))

  def test_temperature_ratio_scales_the_loss(self):
    rng = np.random.default_rng(11)
    feats = jnp.asarray(_features(rng, 9, 2), jnp.float32)
    a, _ = _supcon(feats, _LABELS, temperature=0.1, base_temperature=0.1)
    b, _ = _supcon(feats, _LABELS, temperature=0.1, base_temperature=0.05)
    np.testing.assert_allclose(b, 2.0 * np.asarray(a), rtol=1e-6)

  @parameterized.parameters("all", "one")
  def test_valid_mask_equals_dropping_the_rows(self, mode):
    rng = np.random.default_rng(12)
    feats = _features(rng, 9, 2)
    valid = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1], bool)
    # Padding rows hold garbage that must change nothing, including a zero vector.
    feats[2] = 1e3
    feats[5] = 0.0
    per_anchor, has_pos = _supcon(jnp.asarray(feats, jnp.float32), _LABELS, contrast_mode=mode,
                                  valid=jnp.asarray(valid))
    kept, kept_has = _supcon(jnp.asarray(feats[valid], jnp.float32), _LABELS[valid],
                             contrast_mode=mode)
    anchor_valid = np.tile(valid, 2 if mode == "all" else 1)
    np.testing.assert_allclose(np.asarray(per_anchor)[anchor_valid], kept, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(has_pos)[anchor_valid], kept_has)
    self.assertFalse(np.any(np.asarray(has_pos)[~anchor_valid]))
    np.testing.assert_array_equal(np.asarray(per_anchor)[~anchor_valid], 0.0)
    ref, ref_has = _np_supcon(feats, _LABELS, mode=mode, valid=valid)
    np.testing.assert_allclose(per_anchor, ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(has_pos, ref_has)

  def test_no_nan_without_positives_values_and_gradients(self):
    rng = np.random.default_rng(13)
    loss = jax.jit(lambda f, y, v: cl.masked_mean(*cl.supcon_loss(f, y, valid=v)))
    grad = jax.jit(jax.grad(lambda f, y, v: cl.masked_mean(*cl.supcon_loss(f, y, valid=v))))
    cases = {
        # All labels distinct, one view: no anchor has a positive.
        "all_singletons": (_features(rng, 6, 1), np.arange(6), np.ones(6, bool)),
        # One sample, one view: not even a denominator.
        "single_sample": (_features(rng, 1, 1), np.zeros(1), np.ones(1, bool)),
        # Every row padding.
        "all_invalid": (_features(rng, 4, 2), np.zeros(4), np.zeros(4, bool)),
        # Mixed: some anchors with and some without positives.
        "mixed": (_features(rng, 9, 1), _LABELS, np.ones(9, bool)),
    }
    for name, (feats, labels, valid) in cases.items():
      args = (jnp.asarray(feats, jnp.float32), jnp.asarray(labels, jnp.int32), jnp.asarray(valid))
      per_anchor, has_pos = _supcon(*args[:2], valid=args[2])
      value, gradient = loss(*args), grad(*args)
      self.assertTrue(np.all(np.isfinite(per_anchor)), name)
      self.assertTrue(np.isfinite(value), name)
      self.assertTrue(np.all(np.isfinite(gradient)), name)
      if name != "mixed":
        self.assertFalse(np.any(has_pos), name)
        self.assertEqual(float(value), 0.0, name)
        np.testing.assert_array_equal(gradient, 0.0, err_msg=name)
      else:
        self.assertGreater(float(jnp.abs(gradient).max()), 0.0)

  def test_invariances_permutation_and_scale(self):
    rng = np.random.default_rng(14)
    feats = _features(rng, 9, 2)
    perm = rng.permutation(9)
    base, _ = _supcon(jnp.asarray(feats, jnp.float32), _LABELS)
    permuted, _ = _supcon(jnp.asarray(feats[perm], jnp.float32), _LABELS[perm])
    # Anchor (v, b) is row v*B + b: permuting samples permutes within each view block.
    np.testing.assert_allclose(np.asarray(permuted).reshape(2, 9),
                               np.asarray(base).reshape(2, 9)[:, perm], rtol=1e-5)
    # Normalised inside: a positive rescaling of each vector changes nothing.
    scaled, _ = _supcon(jnp.asarray(feats * rng.uniform(0.1, 10, size=(9, 2, 1)), jnp.float32),
                        _LABELS)
    np.testing.assert_allclose(scaled, base, rtol=1e-5)
    # Relabelling classes (a bijection) changes nothing.
    relabelled, _ = _supcon(jnp.asarray(feats, jnp.float32), (_LABELS * 7 + 3) % 100)
    np.testing.assert_allclose(relabelled, base, rtol=1e-6)

  def test_bfloat16_input_computed_in_float32(self):
    rng = np.random.default_rng(15)
    feats = jnp.asarray(_features(rng, 9, 2), jnp.bfloat16)
    per_anchor, _ = _supcon(feats, _LABELS)
    self.assertEqual(per_anchor.dtype, jnp.float32)
    ref, _ = _np_supcon(np.asarray(feats, np.float64), _LABELS)
    np.testing.assert_allclose(per_anchor, ref, rtol=1e-4, atol=1e-4)

  def test_jit_traces_once_per_shape(self):
    fn = jax.jit(chex.assert_max_traces(
        lambda f, y: cl.masked_mean(*cl.supcon_loss(f, y)), n=1))
    rng = np.random.default_rng(16)
    for _ in range(3):
      fn(jnp.asarray(_features(rng, 9, 2), jnp.float32), jnp.asarray(rng.permutation(_LABELS)))

  def test_gradient_check_float64(self):
    rng = np.random.default_rng(17)
    labels = jnp.asarray([0, 0, 1, 2, 2, 3])  # 1 and 3 are singletons

    @jax.jit
    def loss(f):
      return cl.masked_mean(*cl.supcon_loss(f, labels, temperature=0.5, base_temperature=0.5))

    with jax.enable_x64(True):
      for views in (1, 2):
        feats = jnp.asarray(_features(rng, 6, views, 4), jnp.float64)
        self.assertEqual(loss(feats).dtype, jnp.float64)
        jtu.check_grads(loss, (feats,), order=1, modes=["rev"])

  def test_bad_input_raises_naming_the_argument(self):
    feats = jnp.ones((4, 2, 3))
    labels = jnp.arange(4)
    bad = {
        "features": lambda: cl.supcon_loss(jnp.ones((4, 3)), labels),
        "labels": lambda: cl.supcon_loss(feats, jnp.arange(5)),
        "labels ": lambda: cl.supcon_loss(feats, jnp.arange(4.0)),
        "temperature": lambda: cl.supcon_loss(feats, labels, temperature=0.0),
        "temperature  ": lambda: cl.supcon_loss(feats, labels, temperature=-0.1),
        "base_temperature": lambda: cl.supcon_loss(feats, labels, base_temperature=0.0),
        "contrast_mode": lambda: cl.supcon_loss(feats, labels, contrast_mode="anchor"),
        "valid": lambda: cl.supcon_loss(feats, labels, valid=jnp.ones(3, bool)),
        "valid ": lambda: cl.supcon_loss(feats, labels, valid=jnp.ones(4)),
    }
    for argument, call in bad.items():
      with self.assertRaisesRegex(ValueError, argument.strip()):
        call()
    # A traced temperature is refused with a clear error, not a tracer error.
    with self.assertRaisesRegex(ValueError, "temperature"):
      jax.jit(lambda t: cl.supcon_loss(feats, labels, temperature=t))(0.1)


class MaskedMeanTest(absltest.TestCase):

  def test_values(self):
    np.testing.assert_allclose(
        cl.masked_mean(jnp.array([1.0, 2.0, 6.0]), jnp.array([True, False, True])), 3.5)
    self.assertEqual(float(cl.masked_mean(jnp.array([1.0, 2.0]), jnp.zeros(2, bool))), 0.0)
    # A masked-out inf/NaN does not leak into the mean.
    np.testing.assert_allclose(
        cl.masked_mean(jnp.array([jnp.inf, jnp.nan, 4.0]), jnp.array([False, False, True])), 4.0)
    with self.assertRaisesRegex(ValueError, "mask"):
      cl.masked_mean(jnp.ones(3), jnp.ones(2, bool))


# Species nested in genera (species -> genus: 0, 1 -> 0; 2, 3 -> 1; 4 -> 2; 5 -> 3).
# Species 1 and 5 are singletons; species 5 has no genus mate either.
_SPECIES = np.array([0, 0, 1, 2, 2, 3, 3, 4, 4, 5], np.int32)
_GENUS = np.array([0, 0, 1, 1, 2, 3], np.int32)[_SPECIES]


class HCLTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True)
  @parameterized.product(views=(1, 2), mode=("all", "one"))
  def test_matches_loop_reference(self, views, mode):
    rng = np.random.default_rng(20 + views)
    feats = _features(rng, len(_SPECIES), views)
    fn = self.variant(lambda f, s, g: cl.hcl_loss(
        f, s, g, soft_weight=0.3, temperature=0.2, base_temperature=0.07, contrast_mode=mode))
    per_anchor, has_pos = fn(jnp.asarray(feats, jnp.float32), _SPECIES, _GENUS)
    chex.assert_shape([per_anchor, has_pos], (len(_SPECIES) * (views if mode == "all" else 1),))
    ref, ref_has = _np_hcl(feats, _SPECIES, _GENUS, 0.3, 0.2, 0.07, mode)
    np.testing.assert_array_equal(has_pos, ref_has)
    np.testing.assert_allclose(per_anchor, ref, rtol=2e-5, atol=2e-5)
    if views == 1:
      # Species 1 (sample 2) has no species mate but genus mates: kept. Species 5
      # (sample 9) is alone in its genus: excluded.
      np.testing.assert_array_equal(np.flatnonzero(~np.asarray(has_pos)), [9])

  @parameterized.product(views=(1, 2), mode=("all", "one"))
  def test_reduces_to_supcon(self, views, mode):
    rng = np.random.default_rng(30 + views)
    feats = jnp.asarray(_features(rng, len(_SPECIES), views), jnp.float32)
    valid = jnp.asarray(rng.uniform(size=len(_SPECIES)) > 0.2)
    sup, sup_has = _supcon(feats, _SPECIES, temperature=0.1, contrast_mode=mode, valid=valid)
    # soft_weight = 0: soft positives carry no weight.
    zero, zero_has = _hcl(feats, _SPECIES, _GENUS, soft_weight=0.0, temperature=0.1,
                          contrast_mode=mode, valid=valid)
    # genus == species: there are no soft positives at all (any soft_weight).
    same, same_has = _hcl(feats, _SPECIES, _SPECIES, soft_weight=0.7, temperature=0.1,
                          contrast_mode=mode, valid=valid)
    for got, got_has in ((zero, zero_has), (same, same_has)):
      np.testing.assert_array_equal(got_has, sup_has)
      np.testing.assert_allclose(got, sup, rtol=1e-6, atol=0)

  def test_gradient_wrt_logits_is_p_minus_target(self):
    # HCL_i = (T / T_b) * H(q_i, p_i) with q_ij = w_ij / sum_k w_ik, so
    # d HCL_i / d l_ij = (T / T_b) * (p_ij - q_ij). Anchor e0, positive e1, soft
    # positive e2, five negatives e3..e7: all contrast orthogonal to the anchor, so
    # p_ij = 1/7 and q = (1, lambda, 0, ...) / (1 + lambda). Moving z_j along z_0
    # changes only l_0j = z_0 . z_j / T (the normalisation Jacobian at e_j keeps e0).
    lam, temperature, base_temperature = 0.25, 0.5, 0.2
    species = jnp.array([0, 0, 1, 2, 3, 4, 5, 6])
    genus = jnp.array([0, 0, 0, 1, 2, 3, 4, 5])
    feats = jnp.eye(8)[:, None]  # [8, 1, 8]
    anchor0 = lambda f: cl.hcl_loss(f, species, genus, soft_weight=lam, temperature=temperature,
                                    base_temperature=base_temperature)[0][0]
    g = jax.jit(jax.grad(anchor0))(feats)
    d_logits = np.asarray(g[1:, 0, 0]) * temperature  # dL/dz_j . e0 = (1/T) dL/dl_0j
    q = np.array([1.0, lam, 0, 0, 0, 0, 0]) / (1 + lam)
    np.testing.assert_allclose(d_logits, (temperature / base_temperature) * (1 / 7 - q),
                               rtol=1e-5, atol=1e-6)
    # The positive is pulled hardest, the soft positive less, the negatives pushed.
    self.assertLess(d_logits[0], d_logits[1])
    self.assertLess(d_logits[1], 0.0)
    self.assertTrue(np.all(d_logits[2:] > 0))

  def test_species_ids_per_genus_are_accepted(self):
    # Species given as an index within the genus (0, 1, ... in every genus) must give the
    # same loss as globally unique ids: positives need the same genus too.
    rng = np.random.default_rng(40)
    feats = jnp.asarray(_features(rng, len(_SPECIES), 2), jnp.float32)
    global_ids, _ = _hcl(feats, _SPECIES, _GENUS, soft_weight=0.4)
    # Index within the genus: species 0, 1 of genus 0 -> 0, 1; 2, 3 -> 0, 1; 4 -> 0; 5 -> 0.
    local_ids, _ = _hcl(feats, np.array([0, 1, 0, 1, 0, 0], np.int32)[_SPECIES], _GENUS,
                        soft_weight=0.4)
    np.testing.assert_allclose(local_ids, global_ids, rtol=1e-6)

  def test_no_nan_without_positives(self):
    rng = np.random.default_rng(41)
    feats = jnp.asarray(_features(rng, 4, 1), jnp.float32)
    species, genus = jnp.arange(4), jnp.arange(4)  # every sample alone in its genus
    per_anchor, has_pos = _hcl(feats, species, genus, soft_weight=0.5)
    self.assertFalse(np.any(has_pos))
    np.testing.assert_array_equal(per_anchor, 0.0)
    gradient = jax.jit(jax.grad(lambda f: cl.masked_mean(
        *cl.hcl_loss(f, species, genus, soft_weight=0.5))))(feats)
    np.testing.assert_array_equal(gradient, 0.0)

  def test_gradient_check_float64(self):
    rng = np.random.default_rng(42)

    @jax.jit
    def loss(f):
      return cl.masked_mean(*cl.hcl_loss(f, _SPECIES, _GENUS, soft_weight=0.3, temperature=0.5,
                                         base_temperature=0.5))

    with jax.enable_x64(True):
      feats = jnp.asarray(_features(rng, len(_SPECIES), 2, 4), jnp.float64)
      jtu.check_grads(loss, (feats,), order=1, modes=["rev"])

  def test_bad_input_raises_naming_the_argument(self):
    feats, ids = jnp.ones((4, 1, 3)), jnp.arange(4)
    for weight in (-0.1, 1.0, 1.5, float("nan")):
      with self.assertRaisesRegex(ValueError, "soft_weight"):
        cl.hcl_loss(feats, ids, ids, soft_weight=weight)
    with self.assertRaisesRegex(ValueError, "genus"):
      cl.hcl_loss(feats, ids, jnp.arange(3), soft_weight=0.5)
    with self.assertRaisesRegex(ValueError, "species"):
      cl.hcl_loss(feats, jnp.ones(4), ids, soft_weight=0.5)
    with self.assertRaisesRegex(ValueError, "temperature"):
      cl.hcl_loss(feats, ids, ids, soft_weight=0.5, temperature=0.0)


class ShardedTest(absltest.TestCase):

  def test_all_gathered_loss_matches_single_device(self):
    # The recipe of the module docstring, under shard_map as fgjax.infra.parallel runs a step
    # (check_vma=False): every device computes the global loss on the all-gathered
    # batch; pmean of the gradients must equal the single-device gradient.
    num_devices = 4
    if jax.device_count() < num_devices:
      self.skipTest(f"needs {num_devices} devices (tests/conftest.py sets 4 CPU devices)")
    rng = np.random.default_rng(50)
    x = rng.normal(size=(8, 2, 6)).astype(np.float32)
    species = np.array([0, 0, 1, 2, 2, 3, 4, 4], np.int32)
    genus = species // 2
    valid = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    weights = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)

    def global_loss(w, x, s, g, v):
      return cl.masked_mean(*cl.hcl_loss(x @ w, s, g, soft_weight=0.5, valid=v))

    def per_device(w, batch):
      gather = lambda a: jax.lax.all_gather(a, parallel.DATA_AXIS, axis=0, tiled=True)

      def loss_fn(w):
        # Local features first (the encoder runs per device), then the gather: the
        # gradient reaches the other devices' features through its transpose.
        z_all = gather(batch["x"] @ w)
        return cl.masked_mean(*cl.hcl_loss(z_all, gather(batch["s"]), gather(batch["g"]),
                                           soft_weight=0.5, valid=gather(batch["v"])))

      loss, grads = jax.value_and_grad(loss_fn)(w)
      return loss, jax.lax.pmean(grads, parallel.DATA_AXIS)

    mesh = parallel.make_mesh(jax.devices()[:num_devices])
    step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                                 out_specs=(P(), P()), check_vma=False))
    batch = parallel.shard_batch(mesh, {"x": x, "s": species, "g": genus, "v": valid})
    loss, grads = step(parallel.replicate(mesh, weights), batch)
    want_loss, want_grads = jax.jit(jax.value_and_grad(global_loss))(
        weights, x, species, genus, valid)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grads, want_grads, rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
