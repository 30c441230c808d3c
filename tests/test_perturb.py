"""Tests of fgjax.ops.perturb: min-max (Eq. 4), bank variance (Sec. 3.4), noise (Eq. 5-6)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from fgjax.ops import perturb


# Jitted entry point for tests that are not chex variants (eager dispatch is
# slow on a busy CPU); every argument but the key is traced or checked at trace time.
_perturb = jax.jit(perturb.perturb_features)

class MinMaxTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_known_values_and_constant_rows(self):
    x = jnp.array([[1.0, 3.0, 2.0, 5.0], [7.0, 7.0, 7.0, 7.0], [0.0, 0.0, 0.0, 0.0]])
    got = self.variant(perturb.minmax_normalize)(x)
    np.testing.assert_allclose(got[0], [0.0, 0.5, 0.25, 1.0], rtol=1e-7)
    np.testing.assert_array_equal(got[1:], 0.0)  # constant -> exactly 0
    self.assertTrue(np.all(np.isfinite(got)))

  def test_axis_and_gradient_finite(self):
    x = jnp.array([[1.0, 4.0], [3.0, 4.0]])
    np.testing.assert_allclose(jax.jit(perturb.minmax_normalize, static_argnames="axis")(x, axis=0),
                               [[0.0, 0.0], [1.0, 0.0]])
    grad = jax.jit(jax.grad(lambda v: jnp.sum(perturb.minmax_normalize(v) ** 2)))(
        jnp.array([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]]))
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_bfloat16_in_float32_out(self):
    self.assertEqual(perturb.minmax_normalize(jnp.ones((3,), jnp.bfloat16)).dtype, jnp.float32)


class FeatureBankVarianceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    rng = np.random.default_rng(0)
    bank = rng.normal(loc=1.0, size=(64, 6))
    got = self.variant(perturb.feature_bank_variance)(jnp.asarray(bank, jnp.float32))
    chex.assert_shape(got, (6,))
    normalised = bank / np.linalg.norm(bank, axis=0, keepdims=True)
    expected = np.var(normalised, axis=0)  # population variance (ddof = 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # s_i = 1/D - mean^2 <= 1/D.
    self.assertTrue(np.all(np.asarray(got) <= 1.0 / 64 + 1e-9))

  def test_constant_and_zero_columns(self):
    bank = np.random.default_rng(1).normal(size=(37, 4)).astype(np.float32)
    bank[:, 1] = 0.3  # constant column
    bank[:, 2] = 0.0  # zero column
    bank[:, 3] = -1234.5  # constant, large, negative
    got = np.asarray(perturb.feature_bank_variance(jnp.asarray(bank)))
    self.assertTrue(np.all(np.isfinite(got)))
    self.assertGreater(got[0], 0.0)
    np.testing.assert_array_equal(got[1:], 0.0)

  def test_num_valid_rows_uses_only_filled_rows(self):
    rng = np.random.default_rng(3)
    bank = rng.normal(loc=0.5, size=(16, 5)).astype(np.float32)
    bank[10:] = 1e3  # rows not written yet: must not enter the statistics
    normalised = bank[:10] / np.linalg.norm(bank[:10], axis=0, keepdims=True)
    variance = jax.jit(perturb.feature_bank_variance)
    np.testing.assert_allclose(variance(jnp.asarray(bank), num_valid_rows=jnp.int32(10)),
                               np.var(normalised, axis=0), rtol=1e-5)
    np.testing.assert_allclose(variance(jnp.asarray(bank), num_valid_rows=jnp.int32(16)),
                               variance(jnp.asarray(bank)), rtol=1e-6)
    np.testing.assert_array_equal(variance(jnp.asarray(bank), num_valid_rows=jnp.int32(0)), 0.0)

  def test_scale_invariance_per_column(self):
    # Column normalisation makes s invariant to a positive rescaling of a column.
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(20, 3)).astype(np.float32)
    scaled = bank * np.array([1.0, 100.0, 0.01], np.float32)
    np.testing.assert_allclose(perturb.feature_bank_variance(jnp.asarray(bank)),
                               perturb.feature_bank_variance(jnp.asarray(scaled)), rtol=1e-5)


class NoiseStdTest(chex.TestCase):

  def test_gradcam_noise_std_values(self):
    scores = jnp.array([[0.0, 1.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    got = perturb.gradcam_noise_std(scores, eps_g=0.1)
    np.testing.assert_allclose(got[0], [0.1, 0.075, 0.025, 0.0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got[1], 0.1, rtol=1e-7)  # constant scores: full noise

  def test_lowvar_noise_std_values(self):
    s = jnp.array([0.0, 0.01, 0.02, 0.04])
    got = np.asarray(perturb.lowvar_noise_std(s, eps_var=0.05, kappa=0.02))
    # minmax(s) = [0, .25, .5, 1]; s >= kappa at indices 2, 3 -> exactly 0.
    np.testing.assert_allclose(got[:2], [0.05, 0.0375], rtol=1e-6)
    np.testing.assert_array_equal(got[2:], 0.0)


def _setting(n=6):
  features = jnp.linspace(-1.0, 1.0, n)[None, :]
  scores = jnp.array([[0.0, 0.5, 1.0, 2.0, 3.0, 4.0]])[:, :n]
  bank_variance = jnp.array([0.0, 0.002, 0.004, 0.008, 0.012, 0.016])[:n]
  return features, scores, bank_variance


class PerturbFeaturesTest(chex.TestCase, parameterized.TestCase):

  def test_empirical_std_matches_eq5_and_eq6(self):
    features, scores, bank_variance = _setting()
    samples = 20000
    tiled = jnp.tile(features, (samples, 1))
    eps_g, eps_var, kappa = 0.5, 0.3, 0.01  # s >= kappa for the last two dims
    perturbed, aux = jax.jit(lambda r: perturb.perturb_features(
        r, tiled, gradcam_scores=jnp.tile(scores, (samples, 1)), bank_variance=bank_variance,
        eps_g=eps_g, eps_var=eps_var, kappa=kappa))(jax.random.key(0))
    chex.assert_shape([perturbed, aux["gradcam_noise"], aux["lowvar_noise"]], (samples, 6))

    minmax_eta = np.array([0.0, 0.125, 0.25, 0.5, 0.75, 1.0])
    minmax_s = np.array([0.0, 0.125, 0.25, 0.5, 0.75, 1.0])
    expected_g = eps_g * (1 - minmax_eta)
    expected_var = np.where(np.asarray(bank_variance) < kappa, eps_var * (1 - minmax_s), 0.0)

    for name, expected in (("gradcam_noise", expected_g), ("lowvar_noise", expected_var)):
      noise = np.asarray(aux[name], np.float64)
      std = noise.std(axis=0)
      active = expected > 0
      # Relative standard error of a std estimate is 1/sqrt(2N) = 0.5%; allow 3%.
      np.testing.assert_allclose(std[active], expected[active], rtol=0.03, err_msg=name)
      np.testing.assert_array_equal(noise[:, ~active], 0.0, err_msg=name)
      mean_bound = 5 * expected[active] / np.sqrt(samples)
      self.assertTrue(np.all(np.abs(noise.mean(axis=0)[active]) < mean_bound), name)

    # v_p = v + both noises, and the two noises are independent.
    np.testing.assert_allclose(perturbed, tiled + aux["gradcam_noise"] + aux["lowvar_noise"],
                               rtol=1e-6, atol=1e-7)
    corr = np.corrcoef(np.asarray(aux["gradcam_noise"])[:, 0],
                       np.asarray(aux["lowvar_noise"])[:, 0])[0, 1]
    self.assertLess(abs(corr), 0.05)
    self.assertAlmostEqual(float(aux["lowvar_fraction"]), 4 / 6, places=6)

  def test_lowvar_noise_zero_where_variance_above_threshold(self):
    features, scores, _ = _setting()
    bank_variance = jnp.array([0.1, 0.0, 0.5, 0.01, 0.2, 0.03])
    _, aux = _perturb(
        jax.random.key(1), jnp.tile(features, (50, 1)), gradcam_scores=jnp.tile(scores, (50, 1)),
        bank_variance=bank_variance, eps_g=0.1, eps_var=0.05, kappa=0.05)
    noise = np.asarray(aux["lowvar_noise"])
    np.testing.assert_array_equal(noise[:, [0, 2, 4]], 0.0)
    self.assertTrue(np.all(noise[:, [1, 3, 5]] != 0.0))
    self.assertAlmostEqual(float(aux["lowvar_fraction"]), 0.5, places=6)

  @parameterized.parameters((True, False), (False, True), (False, False))
  def test_toggles_zero_the_disabled_term(self, use_g, use_var):
    features, scores, bank_variance = _setting()
    run = jax.jit(lambda r, flag_g, flag_var: perturb.perturb_features(
        r, features, gradcam_scores=scores, bank_variance=bank_variance, eps_g=0.1,
        eps_var=0.05, kappa=0.02, use_gradcam_noise=flag_g, use_lowvar_noise=flag_var))
    perturbed, aux = run(jax.random.key(2), use_g, use_var)
    full, full_aux = run(jax.random.key(2), True, True)
    for name, used in (("gradcam_noise", use_g), ("lowvar_noise", use_var)):
      if used:  # the enabled term is the same draw as with both enabled
        np.testing.assert_array_equal(aux[name], full_aux[name])
      else:
        np.testing.assert_array_equal(aux[name], 0.0)
    np.testing.assert_allclose(perturbed, features + aux["gradcam_noise"] + aux["lowvar_noise"],
                               atol=1e-7)
    if not (use_g or use_var):
      np.testing.assert_array_equal(perturbed, features)
    self.assertFalse(np.array_equal(full, features))

  def test_reproducible_and_key_dependent(self):
    features, scores, bank_variance = _setting()
    kw = dict(gradcam_scores=scores, bank_variance=bank_variance, eps_g=0.1, eps_var=0.05,
              kappa=0.02)
    first, _ = perturb.perturb_features(jax.random.key(3), features, **kw)  # eager
    again, _ = jax.jit(lambda r: _perturb(r, features, **kw))(jax.random.key(3))
    other, _ = _perturb(jax.random.key(4), features, **kw)
    np.testing.assert_allclose(first, again, rtol=1e-6)
    self.assertFalse(np.allclose(first, other))

  def test_gradients(self):
    # d v_p / d v = identity; no gradient reaches the scores or the bank variance.
    features, scores, bank_variance = _setting()

    def total(v, eta, s):
      perturbed, aux = perturb.perturb_features(
          jax.random.key(5), v, gradcam_scores=eta, bank_variance=s, eps_g=0.1, eps_var=0.05,
          kappa=0.02)
      return jnp.sum(perturbed) + jnp.sum(aux["gradcam_noise"] ** 2) + jnp.sum(
          aux["lowvar_noise"] ** 2)

    grad_v, grad_eta, grad_s = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(
        features, scores, bank_variance)
    np.testing.assert_array_equal(grad_v, 1.0)
    np.testing.assert_array_equal(grad_eta, 0.0)
    np.testing.assert_array_equal(grad_s, 0.0)

  def test_dtypes_and_shape_errors(self):
    features, scores, bank_variance = _setting()
    perturbed, aux = _perturb(
        jax.random.key(6), features.astype(jnp.bfloat16), gradcam_scores=scores,
        bank_variance=bank_variance, eps_g=0.1, eps_var=0.05, kappa=0.02)
    self.assertEqual(perturbed.dtype, jnp.bfloat16)
    self.assertEqual(aux["gradcam_noise"].dtype, jnp.float32)
    self.assertEqual(aux["lowvar_noise"].dtype, jnp.float32)
    with self.assertRaises(ValueError):
      _perturb(jax.random.key(0), features, gradcam_scores=scores[:, :3],
                               bank_variance=bank_variance, eps_g=0.1, eps_var=0.05, kappa=0.02)
    with self.assertRaises(ValueError):
      _perturb(jax.random.key(0), features, gradcam_scores=scores,
                               bank_variance=bank_variance[:3], eps_g=0.1, eps_var=0.05,
                               kappa=0.02)


if __name__ == "__main__":
  absltest.main()
