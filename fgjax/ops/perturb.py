"""Feature perturbation of Perturb-SSL (paper Sec. 3.3-3.5, Eq. 4-6).

Two noise terms are added to the pooled feature vector ``v`` [B, n]:

* Grad-CAM noise (Eq. 5): ``v~^g_i ~ N(0, sigma = eps_g * (1 - eta_bar_i))``,
  with ``eta_bar`` the min-max normalised Grad-CAM scores of the example
  (Eq. 4); dimensions that matter less to the SSL loss get more noise.
* Low-variance noise (Eq. 6): ``v~^var_i ~ N(0, sigma = eps_var * (1 - s_bar_i))``
  where ``s_i < kappa``, else 0; ``s`` is the per-dimension variance of the
  column-normalised memory bank, ``s_bar`` its min-max normalisation.

Then ``v_p = v + v~^g + v~^var`` (Sec. 3.5). The paper writes ``N(0, x)`` and
says that epsilon "controls the standard deviation" ("eps_var defines the
standard deviations"), so by default ``x`` is read as the standard deviation
(``noise_scale='std'``); the usual ``N(mu, sigma^2)`` notation reads it as the
variance (``noise_scale='variance'``: the standard deviation is ``sqrt(x)``,
3-5x larger for the paper's eps).

All arithmetic is in (at least) float32; the noise scales are detached, so no
gradient flows through the noise into the scores or the memory bank.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _at_least_float32(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def minmax_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """Min-max normalisation to ``[0, 1]`` along ``axis`` (paper Eq. 4).

  >>> import jax.numpy as jnp
  >>> minmax_normalize(jnp.array([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])).tolist()  # [B=2, n=3]; constant -> 0
  [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]

  ``(x - min) / (max - min)``. A vector that is constant along ``axis`` has no
  range; it maps to all zeros (so it receives the *full* noise scale
  ``eps * (1 - 0)``), never to NaN.

  Args:
    x: any shape, e.g. ``[B, n]`` Grad-CAM scores or ``[n]`` variances.
    axis: the axis to normalise over.

  Returns:
    An array of the shape of ``x``, in at least float32, values in ``[0, 1]``.
  """
  x = _at_least_float32(x)
  minimum = jnp.min(x, axis=axis, keepdims=True)
  value_range = jnp.max(x, axis=axis, keepdims=True) - minimum
  has_range = value_range > 0
  # Dividing by a placeholder 1 where the range is 0 keeps both branches of the
  # `where` finite, so neither the value nor its gradient is NaN.
  safe_range = jnp.where(has_range, value_range, 1.0)
  return jnp.where(has_range, (x - minimum) / safe_range, 0.0)


def feature_bank_variance(bank: jax.Array, *, num_valid_rows: jax.Array | int | None = None,
                          eps: float = 1e-12) -> jax.Array:
  """Per-dimension variance ``s`` of the column-normalised memory bank (Sec. 3.4).

  ``s_i = var(w_bar_i)`` with ``w_bar_i`` the L2-normalised ``i``-th column of
  ``M`` (over its ``D`` rows) and ``var`` the population variance (divide by D).
  A zero column stays zero (the norm is clamped at ``eps``) and has ``s_i = 0``;
  a constant column has ``s_i = 0`` exactly (the variance is computed on values
  shifted by the first row, so equal values give exact zeros).

  Scale note: because ``||w_bar_i|| = 1``, ``s_i = 1/D - mean(w_bar_i)^2 <= 1/D``.
  With the paper's ``D = 5632`` that is ``s_i <= 1.8e-4``, far below the paper's
  ``kappa = 0.02``, so under this literal reading *every* dimension counts as
  "low-variance" and the threshold in Eq. 6 never binds; only the min-max
  weighting of ``s`` differentiates dimensions. (A threshold that can bind
  needs ``kappa < 1/D``, or another normalisation of ``s``.)

  A bank that is still filling up passes ``num_valid_rows``: only its first
  rows enter the statistics (the ring buffer fills rows 0, 1, ... first).

  Args:
    bank: ``[D, n]`` memory bank ``M`` of the last ``D`` feature vectors.
    num_valid_rows: optional int32 scalar (traced or not), rows filled so far;
      None means all ``D``. With 0 rows the result is all zeros.
    eps: lower bound on each column norm.

  Returns:
    ``[n]`` variances ``s``, in at least float32, each in ``[0, 1/D]`` (in
    ``[0, 1/num_valid_rows]`` for a bank still filling up).
  """
  bank = _at_least_float32(bank)
  if num_valid_rows is None:
    valid = jnp.ones((bank.shape[0], 1), bank.dtype)
    count = jnp.asarray(bank.shape[0], bank.dtype)
  else:
    # Only the first num_valid_rows rows hold features (a bank still filling up).
    valid = (jnp.arange(bank.shape[0]) < num_valid_rows).astype(bank.dtype)[:, None]
    count = jnp.maximum(jnp.asarray(num_valid_rows, bank.dtype), 1.0)
  bank = bank * valid
  column_norm = jnp.sqrt(jnp.sum(jnp.square(bank), axis=0, keepdims=True))
  normalized = bank / jnp.maximum(column_norm, eps)  # [D, n]
  # Shifted two-pass variance: exact 0 for constant columns, never negative.
  shifted = (normalized - normalized[:1]) * valid
  centered = (shifted - jnp.sum(shifted, axis=0, keepdims=True) / count) * valid
  return jnp.sum(jnp.square(centered), axis=0) / count


NOISE_SCALES = ("std", "variance")


def _standard_deviation(second_argument: jax.Array, noise_scale: str) -> jax.Array:
  """The standard deviation of ``N(0, second_argument)`` under the reading ``noise_scale``."""
  if noise_scale == "std":
    return second_argument
  if noise_scale == "variance":
    return jnp.sqrt(second_argument)
  raise ValueError(f"noise_scale must be one of {NOISE_SCALES}, got {noise_scale!r}")


def gradcam_noise_std(gradcam_scores: jax.Array, *, eps_g: float, noise_scale: str = "std") -> jax.Array:
  """Standard deviation of the Grad-CAM noise ``N(0, eps_g * (1 - minmax(eta)))`` (Eq. 4-5).

  Min-max normalisation is per example, over the ``n`` dimensions.

  Args:
    gradcam_scores: ``[B, n]`` Grad-CAM scores ``eta`` (Eq. 3).
    eps_g: noise scale (paper: 0.1).
    noise_scale: ``'std'`` (the second argument of N is the standard deviation)
      or ``'variance'`` (its square root is).

  Returns:
    ``[B, n]`` standard deviations in ``[0, eps_g]`` (``[0, sqrt(eps_g)]`` for
    ``'variance'``); 0 at each example's highest-scoring dimension, the largest
    at its lowest.
  """
  return _standard_deviation(eps_g * (1.0 - minmax_normalize(gradcam_scores, axis=-1)), noise_scale)


def lowvar_noise_std(
    bank_variance: jax.Array, *, eps_var: float, kappa: float, noise_scale: str = "std"
) -> jax.Array:
  """Standard deviation of the low-variance noise (Eq. 6).

  ``eps_var * (1 - minmax(s))`` where ``s < kappa``, exactly 0 elsewhere. The
  min-max normalisation runs over all ``n`` dimensions (the paper normalises
  ``s`` before applying the threshold), not only over the low-variance ones.

  Args:
    bank_variance: ``[n]`` per-dimension variances ``s`` (see
      ``feature_bank_variance``).
    eps_var: noise scale (paper: 0.05).
    kappa: variance threshold (paper: 0.02; see the scale note in
      ``feature_bank_variance``).
    noise_scale: ``'std'`` or ``'variance'``, as in :func:`gradcam_noise_std`.

  Returns:
    ``[n]`` standard deviations in ``[0, eps_var]`` (``[0, sqrt(eps_var)]``).
  """
  bank_variance = _at_least_float32(bank_variance)
  std = _standard_deviation(eps_var * (1.0 - minmax_normalize(bank_variance, axis=-1)), noise_scale)
  return jnp.where(bank_variance < kappa, std, 0.0)


def perturb_features(
    rng: jax.Array,
    features: jax.Array,
    *,
    gradcam_scores: jax.Array,
    bank_variance: jax.Array,
    eps_g: float,
    eps_var: float,
    kappa: float,
    use_gradcam_noise: bool = True,
    use_lowvar_noise: bool = True,
    noise_scale: str = "std",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Perturbs non-discriminative feature dimensions: ``v_p = v + v~^g + v~^var``.

  Every entry of both noise terms is an independent zero-mean Gaussian draw,
  per example and per dimension (Eq. 5, Eq. 6); the two terms use independent
  keys split from ``rng``. The toggles implement the paper's ablations
  (Tab. 4): a disabled term is exactly zero.

  Gradients: ``v_p`` depends on ``features`` through the identity (the caller
  detaches ``features`` if it wants no gradient through ``v_p``); the noise
  scales are detached, so no gradient reaches ``gradcam_scores`` or
  ``bank_variance``.

  Args:
    rng: PRNG key.
    features: ``[B, n]`` clean feature vectors ``v``.
    gradcam_scores: ``[B, n]`` Grad-CAM scores ``eta`` (Eq. 3).
    bank_variance: ``[n]`` memory-bank variances ``s`` (Sec. 3.4).
    eps_g: Grad-CAM noise scale (standard deviation), paper 0.1.
    eps_var: low-variance noise scale (standard deviation), paper 0.05.
    kappa: low-variance threshold, paper 0.02.
    use_gradcam_noise: include ``v~^g`` (bool, Python or traced).
    use_lowvar_noise: include ``v~^var`` (bool, Python or traced).
    noise_scale: how ``N(0, x)`` is read: ``'std'`` (x is the standard
      deviation, the default) or ``'variance'``.

  Returns:
    ``(perturbed, aux)``: ``perturbed`` ``[B, n]`` in the dtype of ``features``
    (the sum is formed in float32); ``aux`` holds ``'gradcam_noise'`` ``[B, n]``,
    ``'lowvar_noise'`` ``[B, n]`` (float32, zero when disabled) and
    ``'lowvar_fraction'``, the scalar fraction of dimensions with
    ``s < kappa`` (reported whether or not that noise is enabled).

  Raises:
    ValueError: (at trace time) on inconsistent shapes.
  """
  features = jnp.asarray(features)
  if features.ndim != 2:
    raise ValueError(f"perturb_features: features must be [B, n], got {features.shape}.")
  if gradcam_scores.shape != features.shape:
    raise ValueError(
        f"perturb_features: gradcam_scores {gradcam_scores.shape} != features "
        f"{features.shape}.")
  if bank_variance.shape != features.shape[1:]:
    raise ValueError(
        f"perturb_features: bank_variance {bank_variance.shape} must be "
        f"[{features.shape[1]}].")
  compute_dtype = jnp.promote_types(features.dtype, jnp.float32)
  gradcam_rng, lowvar_rng = jax.random.split(rng)

  # The scales are statistics, not model outputs: detach them (see docstring).
  gradcam_std = jax.lax.stop_gradient(gradcam_noise_std(gradcam_scores, eps_g=eps_g, noise_scale=noise_scale))
  bank_variance = jax.lax.stop_gradient(_at_least_float32(bank_variance))
  lowvar_std = lowvar_noise_std(bank_variance, eps_var=eps_var, kappa=kappa, noise_scale=noise_scale)  # [n]

  # N(0, sigma) = sigma * N(0, 1), Eq. 5 and Eq. 6.
  gradcam_noise = gradcam_std.astype(compute_dtype) * jax.random.normal(
      gradcam_rng, features.shape, compute_dtype)
  lowvar_noise = lowvar_std.astype(compute_dtype)[None, :] * jax.random.normal(
      lowvar_rng, features.shape, compute_dtype)
  # `where` (not multiplication by the flag) gives exact zeros and accepts a
  # traced flag as well as a Python bool.
  gradcam_noise = jnp.where(use_gradcam_noise, gradcam_noise, 0.0)
  lowvar_noise = jnp.where(use_lowvar_noise, lowvar_noise, 0.0)

  perturbed = features.astype(compute_dtype) + gradcam_noise + lowvar_noise
  aux = {
      "gradcam_noise": gradcam_noise,
      "lowvar_noise": lowvar_noise,
      "lowvar_fraction": jnp.mean((bank_variance < kappa).astype(jnp.float32)),
  }
  return perturbed.astype(features.dtype), aux
