"""Supervised contrastive losses of method H: SupCon and HCL (species + genus labels).

Both losses are pure, jit-able and return *per-anchor* losses plus a boolean mask
``has_positive`` of the anchors that have at least one positive; the caller
reduces with `masked_mean`. An anchor without a positive (its label occurs once
in the batch and there is one view) has no defined loss: it is excluded from the
mean and counted (``valid_anchor & ~has_positive``), never NaN.

Anchor layout (as ``SupConLoss`` of github.com/HobbitLong/SupContrast): the
``[B, V, D]`` features are unrolled *view-major* into ``V * B`` contrast rows,
row ``v * B + b`` being view ``v`` of sample ``b``. With ``contrast_mode='all'``
every row is an anchor (``A = V * B`` anchors, same order); with ``'one'`` only
view 0 is (``A = B`` anchors, anchor ``b`` = sample ``b``).

Features are L2-normalised *inside* the losses (with `fgjax.ops.losses.l2_normalize`).
The official code expects normalised input and normalises in the model; doing it
here as well is idempotent on normalised input (also for the gradient: the
Jacobian of a second normalisation at a unit vector is the same projection), and
it makes an unnormalised head output an impossible mistake rather than a silent
one (at T = 0.07 unnormalised logits ``|z|^2 / T`` saturate the softmax).

Inputs are cast to at least float32 and the logits use ``Precision.HIGHEST``
(``fgjax.ops.losses``): dividing cosines by T = 0.07 and exponentiating would lose
most of the signal in bfloat16. float64 stays float64 (gradient checks).

Multi-device (``jax.shard_map`` over a ``'data'`` axis): the loss needs the whole
global batch as contrast, so the caller all-gathers and passes the gathered
batch; nothing in the loss is per-device::

    z_all = jax.lax.all_gather(z, 'data', axis=0, tiled=True)        # [B_global, V, D]
    y_all = jax.lax.all_gather(labels, 'data', axis=0, tiled=True)
    per_anchor, has_pos = supcon_loss(z_all, y_all, valid=valid_all)
    loss = masked_mean(per_anchor, has_pos)    # the same value on every device
    # ... jax.grad of loss, then grads = jax.lax.pmean(grads, 'data').

Every device then computes the same global loss. The transpose of ``all_gather``
is a ``psum_scatter``, so device ``d``'s gradient w.r.t. its local features is
``N * dL/dz_d``, and the ``pmean`` of the parameter gradients over the ``N``
devices gives exactly ``dL/dtheta`` of the single-device loss on the global batch
(tested in ``tests/test_contrastive_losses.py``). The cost is ``B_global^2``
logits per device instead of ``B_local * B_global``: negligible next to the
encoder at the papers' batch sizes.

References:
  * SupCon: Khosla et al. 2020, "Supervised Contrastive Learning", Eq. 2
    (L^sup_out), and ``losses.py:SupConLoss`` of github.com/HobbitLong/SupContrast.
  * HCL: Chamidullin, "Contrastive Learning for Fine-grained Visual Recognition"
    (seed paper of method H). The paper names the loss and its idea (two label
    levels, same-genus/other-species pairs as "soft positive pairs") but gives
    no equation; the form used here is stated and argued in `hcl_loss`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fgjax.ops.losses import _PRECISION
from fgjax.ops.losses import _at_least_float32
from fgjax.ops.losses import l2_normalize


__all__ = ["supcon_loss", "hcl_loss", "masked_mean", "CONTRAST_MODES"]

CONTRAST_MODES = ("all", "one")


def masked_mean(per_anchor: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``per_anchor`` over the entries where ``mask`` is True; 0 if none.

  Args:
    per_anchor: ``[A]`` per-anchor losses.
    mask: ``[A]`` bool, e.g. ``has_positive`` of `supcon_loss`.

  Returns:
    A scalar in the dtype of ``per_anchor``: ``sum(per_anchor[mask]) /
    max(sum(mask), 1)``. With no True entry it is exactly 0 and its gradient is 0
    (a batch without any positive pair contributes nothing, rather than NaN).
  """
  per_anchor = jnp.asarray(per_anchor)
  mask = jnp.asarray(mask)
  if per_anchor.shape != mask.shape:
    raise ValueError(f"masked_mean: per_anchor {per_anchor.shape} and mask {mask.shape} "
                     "must have the same shape")
  # where (not multiply): a masked-out entry that were inf/NaN must not leak in.
  total = jnp.sum(jnp.where(mask, per_anchor, 0))
  count = jnp.sum(mask.astype(per_anchor.dtype))
  return total / jnp.maximum(count, 1)


def _static_positive(name: str, value, *, allow_zero: bool = False, below_one: bool = False):
  """Checks a hyper-parameter that must be a concrete number; returns it as float."""
  try:
    value = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise ValueError(f"{name} must be a concrete number (a Python float, not a traced "
                     f"value), got {value!r}") from e
  ok = (value >= 0.0 if allow_zero else value > 0.0) and (value < 1.0 if below_one else True)
  ok = ok and value == value and value != float("inf")  # rejects NaN and inf
  if not ok:
    bound = ("in [0, 1)" if below_one else ">= 0") if allow_zero else "> 0"
    raise ValueError(f"{name} must be {bound}, got {value}")
  return value


def _check_inputs(fn: str, features, label_arrays: dict, valid, temperature,
                  base_temperature, contrast_mode) -> tuple[int, int]:
  """Shape/argument checks shared by both losses (at trace time). Returns (B, V)."""
  if features.ndim != 3:
    raise ValueError(f"{fn}: features must be [B, V, D] (V views; use features[:, None] for "
                     f"a single view), got shape {features.shape}")
  batch, views = features.shape[0], features.shape[1]
  if views < 1 or batch < 1:
    raise ValueError(f"{fn}: features needs B >= 1 and V >= 1, got shape {features.shape}")
  if not jnp.issubdtype(features.dtype, jnp.floating):
    raise ValueError(f"{fn}: features must be floating point, got {features.dtype}")
  for name, labels in label_arrays.items():
    if labels.shape != (batch,):
      raise ValueError(f"{fn}: {name} must be [B] = ({batch},) to match features "
                       f"{features.shape}, got shape {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f"{fn}: {name} must be integer class ids, got dtype {labels.dtype}")
  if valid is not None and (valid.shape != (batch,) or valid.dtype != jnp.bool_):
    raise ValueError(f"{fn}: valid must be a bool [B] = ({batch},) mask, got "
                     f"{valid.dtype}{list(valid.shape)}")
  _static_positive("temperature", temperature)
  _static_positive("base_temperature", base_temperature)
  if contrast_mode not in CONTRAST_MODES:
    raise ValueError(f"{fn}: contrast_mode must be one of {CONTRAST_MODES}, got "
                     f"{contrast_mode!r}")
  return batch, views


def _weighted_supcon(features: jax.Array, pair_weight: jax.Array, *, temperature: float,
                     base_temperature: float, contrast_mode: str,
                     valid: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """The shared core: SupCon with a per-pair positive weight.

  ``loss_a = -(T / T_b) * sum_c w_ac log p_ac / sum_c w_ac`` over contrast rows
  ``c != a`` (``p_ac`` the softmax of ``z_a . z_c / T`` over all valid ``c != a``),
  for the anchors with ``sum_c w_ac > 0``; 0 for the others.

  Args:
    features: ``[B, V, D]``, any float dtype (checked by the caller).
    pair_weight: ``[B, B]`` weight of sample ``j`` as a positive of sample ``i``
      (same for every view pair; the diagonal is the other views of ``i``).
    temperature, base_temperature, contrast_mode, valid: see `supcon_loss`.

  Returns:
    ``(per_anchor [A], has_positive [A] bool)``.
  """
  batch, views, _ = features.shape
  features = l2_normalize(_at_least_float32(features), axis=-1)
  dtype = features.dtype
  # View-major unrolling, as torch.cat(torch.unbind(features, dim=1)): row v*B + b.
  contrast = jnp.swapaxes(features, 0, 1).reshape(views * batch, -1)  # [V*B, D]
  if contrast_mode == "all":
    anchors, anchor_views = contrast, views  # [V*B, D]
  else:  # 'one': view 0 only, which is rows 0..B-1 of `contrast`.
    anchors, anchor_views = features[:, 0], 1  # [B, D]
  num_anchors, num_contrast = anchor_views * batch, views * batch

  logits = jnp.matmul(anchors, contrast.T, precision=_PRECISION) / temperature  # [A, V*B]

  # Row a of `anchors` is row a of `contrast` in both modes, so the self pair is
  # the diagonal; it is neither a positive nor in the denominator (SupCon Eq. 2:
  # sums over A(i) = all indices but i).
  not_self = jnp.arange(num_anchors)[:, None] != jnp.arange(num_contrast)[None, :]
  valid = jnp.ones((batch,), jnp.bool_) if valid is None else valid
  contrast_valid = jnp.tile(valid, views)  # [V*B]
  anchor_valid = jnp.tile(valid, anchor_views)  # [A]
  in_denominator = not_self & contrast_valid[None, :] & anchor_valid[:, None]
  weight = jnp.tile(pair_weight.astype(dtype), (anchor_views, views))  # [A, V*B]
  weight = jnp.where(in_denominator, weight, 0)

  # log p_ac = l_ac - logsumexp_{c' != a} l_ac'. logsumexp subtracts the row max
  # (the official code's `logits - logits_max`). A row with an empty denominator
  # (an invalid anchor, or B = V = 1) gets finite dummy logits so that neither
  # the value nor the gradient can become NaN; its loss is zeroed below.
  row_has_denominator = jnp.any(in_denominator, axis=1)  # [A]
  denominator_logits = jnp.where(in_denominator, logits, -jnp.inf)
  denominator_logits = jnp.where(row_has_denominator[:, None], denominator_logits, 0)
  log_normaliser = jax.nn.logsumexp(denominator_logits, axis=1, keepdims=True)  # [A, 1]
  log_prob = logits - log_normaliser  # finite everywhere

  weight_sum = jnp.sum(weight, axis=1)  # [A]
  has_positive = weight_sum > 0
  mean_log_prob_pos = (jnp.sum(weight * log_prob, axis=1)
                       / jnp.where(has_positive, weight_sum, 1))
  per_anchor = -(temperature / base_temperature) * mean_log_prob_pos
  # Official code: anchors without a positive get loss 0 but still count in the
  # mean; here they get 0 AND are flagged so that `masked_mean` excludes them.
  return jnp.where(has_positive, per_anchor, 0), has_positive


def supcon_loss(features: jax.Array, labels: jax.Array, *, temperature: float = 0.07,
                base_temperature: float = 0.07, contrast_mode: str = "all",
                valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-anchor supervised contrastive loss (SupCon, Khosla et al. 2020, Eq. 2).

  For anchor ``i`` with positives ``P(i) = {p != i : y_p = y_i}`` (other views of
  the same sample included) and ``A(i)`` = all contrast rows but ``i``::

    L_i = -(T / T_b) * 1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / T)
                                                      / sum_{a in A(i)} exp(z_i.z_a / T) )

  ``L^sup_out`` of Eq. 2 (the mean over positives outside the log), exactly as
  ``SupConLoss`` of the official code: logits with the row max subtracted
  (logsumexp), self-contrast out of the denominator, scaled by ``T / T_b``.
  Differences from the official code, both about undefined cases: anchors with
  ``|P(i)| = 0`` are excluded from the mean via ``has_positive`` (the official
  code gives them 0 and averages them in), and padded rows can be masked out.

  Args:
    features: ``[B, V, D]`` embeddings of ``V >= 1`` views of ``B`` samples, any
      float dtype; L2-normalised inside (see the module docstring).
    labels: ``[B]`` integer class ids (species).
    temperature: T > 0 (0.07 in the paper and the official code).
    base_temperature: T_b > 0; the loss is scaled by ``T / T_b`` (0.07).
    contrast_mode: ``'all'`` (every view of every sample is an anchor) or
      ``'one'`` (only view 0 is an anchor; all views remain contrast). Static.
    valid: optional bool ``[B]``; False rows (padding) are neither anchors nor
      contrast, so they change nothing for the valid rows. None: all valid.

  Returns:
    ``(per_anchor, has_positive)``, both ``[A]`` with ``A = V * B`` for ``'all'``
    (row ``v * B + b`` = view ``v`` of sample ``b``) or ``A = B`` for ``'one'``.
    ``per_anchor`` is at least float32, 0 where ``has_positive`` is False;
    ``has_positive`` is False for anchors without a positive and for invalid
    rows. The batch loss is ``masked_mean(per_anchor, has_positive)``; the number
    of excluded valid anchors is ``sum(anchor_valid & ~has_positive)`` with
    ``anchor_valid = jnp.tile(valid, A // B)``.

  Raises:
    ValueError: (at trace time) naming the argument, for wrong shapes or
      dtypes, a temperature <= 0, or an unknown contrast_mode.
  """
  features, labels = jnp.asarray(features), jnp.asarray(labels)
  valid = None if valid is None else jnp.asarray(valid)
  _check_inputs("supcon_loss", features, {"labels": labels}, valid, temperature,
                base_temperature, contrast_mode)
  same_label = labels[:, None] == labels[None, :]  # [B, B]
  return _weighted_supcon(features, same_label, temperature=float(temperature),
                          base_temperature=float(base_temperature),
                          contrast_mode=contrast_mode, valid=valid)


def hcl_loss(features: jax.Array, species: jax.Array, genus: jax.Array, *, soft_weight: float,
             temperature: float = 0.07, base_temperature: float = 0.07,
             contrast_mode: str = "all",
             valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-anchor hierarchical contrastive loss (HCL): SupCon with genus soft positives.

  Pair weights (``lambda = soft_weight``)::

    w_ij = 1       if genus_j == genus_i and species_j == species_i  (positive)
           lambda  if genus_j == genus_i and species_j != species_i  (soft positive)
           0       otherwise (another genus: negative)

  and, with ``p_ij`` the SupCon softmax over all contrast rows ``j != i``,
  ``p_ij = exp(z_i.z_j / T) / sum_{k != i} exp(z_i.z_k / T)``::

    L_i = -(T / T_b) * sum_{j != i} w_ij log p_ij / sum_{j != i} w_ij

  for anchors with ``sum_j w_ij > 0`` (others: excluded, as in `supcon_loss`).

  Why this form (the paper gives none; it says HCL "includes 2 levels of labels
  (species and genus) and compares additional soft positive pairs - samples from
  different species but the same genus"):

  * It is SupCon Eq. 2 with the uniform average over positives replaced by a
    weighted one. Equivalently ``L_i = (T / T_b) * H(q_i, p_i)``, the
    cross-entropy between the softmax ``p_i`` and the target distribution
    ``q_ij = w_ij / sum_k w_ik``: the optimum puts probability mass on same-genus
    samples of other species, ``lambda`` times less per sample than on
    same-species samples, and none on other genera. So soft positives are
    pulled towards the anchor, weighted less than positives, and species stay
    separable within a genus (for ``lambda < 1``).
  * ``lambda`` weighs each soft *pair*, so the total target mass on soft
    positives, ``lambda * n_soft / (n_pos + lambda * n_soft)``, grows with the
    number of species per genus in the batch: with 36 species in 6 genera, batch
    128 and two views an anchor has ~6 positives and ~36 soft positives, and
    ``lambda = 0.2`` already puts ~55% of the target on soft positives. Choose
    ``lambda`` with the batch composition in mind (smaller for many species per
    genus, as DF20-Mini's ~30).
  * Soft positives stay in the denominator, as SupCon keeps its positives there:
    every ``j != i`` is in the denominator and the weights only choose the
    targets, so ``lambda = 0`` is exactly SupCon on species.
  * Normalising by ``sum_j w_ij`` (not by the number of positives) keeps ``q_i``
    a distribution, so the loss scale does not grow with the number of genus
    mates in the batch, and ``lambda = 0`` or ``genus == species`` (no soft
    pairs) reduce exactly to `supcon_loss` (both tested).
  * An anchor whose species occurs once (one view) but whose genus mates are in
    the batch has only soft positives; with ``lambda > 0`` it keeps a loss (it is
    pulled towards its genus), with ``lambda = 0`` it is excluded as in SupCon.
    Note that ``lambda`` cancels in ``q_i`` for such an anchor: it is pulled to its
    genus mates as hard as SupCon pulls positives. With ``V >= 2`` views (the
    usual setting) every anchor has its other views as positives and this case
    does not arise.

  Positive pairs require the same genus AND the same species, so species ids
  may be global (nested: every species in one genus) or per-genus indices.

  Args:
    features: ``[B, V, D]`` embeddings, any float dtype; L2-normalised inside.
    species: ``[B]`` integer species ids (fine labels).
    genus: ``[B]`` integer genus ids (super labels).
    soft_weight: lambda in ``[0, 1)``, the weight of a soft positive relative
      to a positive. A static Python float.
    temperature: T > 0.
    base_temperature: T_b > 0.
    contrast_mode: ``'all'`` or ``'one'``, as in `supcon_loss`.
    valid: optional bool ``[B]`` mask of real (non-padding) rows.

  Returns:
    ``(per_anchor, has_positive)``, both ``[A]``, laid out as in `supcon_loss`;
    ``has_positive`` means ``sum_j w_ij > 0`` (a positive or, with
    ``lambda > 0``, a soft positive).

  Raises:
    ValueError: (at trace time) naming the argument, for wrong shapes or
      dtypes, ``soft_weight`` outside ``[0, 1)``, a temperature <= 0, or an
      unknown contrast_mode.
  """
  features, species, genus = jnp.asarray(features), jnp.asarray(species), jnp.asarray(genus)
  valid = None if valid is None else jnp.asarray(valid)
  _check_inputs("hcl_loss", features, {"species": species, "genus": genus}, valid,
                temperature, base_temperature, contrast_mode)
  soft_weight = _static_positive("soft_weight", soft_weight, allow_zero=True, below_one=True)
  same_genus = genus[:, None] == genus[None, :]  # [B, B]
  positive = same_genus & (species[:, None] == species[None, :])
  soft_positive = same_genus & ~positive
  dtype = _at_least_float32(features).dtype
  pair_weight = positive.astype(dtype) + soft_weight * soft_positive.astype(dtype)
  return _weighted_supcon(features, pair_weight, temperature=float(temperature),
                          base_temperature=float(base_temperature),
                          contrast_mode=contrast_mode, valid=valid)
