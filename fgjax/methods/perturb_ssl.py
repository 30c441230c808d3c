"""Perturb-SSL (seed method P), the parts both SSL bases share: config block, memory bank,
perturbation and reconstruction (steps 5-7), the reconstructions' encodings, decoder pre-training.

Step and equation numbers are those of docs/perturb_ssl.md ("what exactly is
computed": eight steps) and of the paper (Wang et al., "On Learning
Discriminative Features from Synthesized Data for Self-Supervised Fine-Grained
Visual Recognition"). The bases add steps 1-4 and 8: ``perturb_moco``,
``perturb_simsiam``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from fgjax.config import ssl as ssl_config
from fgjax.config.fields import require
from fgjax.config.fields import require_nonnegative
from fgjax.config.fields import require_positive
from fgjax.data import augment
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import ssl_common as common
from fgjax.ops import losses
from fgjax.ops import perturb as perturb_lib
from fgjax.ops import queue as queue_lib


PyTree = Any


@dataclasses.dataclass(frozen=True)
class PerturbHParams:
  """Static hyper-parameters of the perturbation, the decoder and the pair loss (hashable)."""

  alpha: float = 1.0  # weight of L_R (Eq. 8)
  nu: float = 0.5  # weight of L_Cp (Eq. 8)
  eps_g: float = 0.1  # Eq. 5
  eps_var: float = 0.05  # Eq. 6
  kappa: float = 0.02  # Eq. 6
  gradcam_noise: bool = True
  lowvar_noise: bool = True
  pair_loss: bool = True
  pair_temperature: float = 0.2
  pair_positive_in_denominator: bool = True
  recon_grad_to_encoder: bool = True
  pair_grad_through_reconstruction: bool = False

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> "PerturbHParams":
    p = cfg.perturb
    return cls(alpha=float(p.alpha), nu=float(p.nu), eps_g=float(p.eps_g), eps_var=float(p.eps_var),
               kappa=float(p.kappa), gradcam_noise=bool(p.gradcam_noise), lowvar_noise=bool(p.lowvar_noise),
               pair_loss=bool(p.pair_loss), pair_temperature=float(p.pair_temperature),
               pair_positive_in_denominator=bool(p.pair_positive_in_denominator),
               recon_grad_to_encoder=bool(p.recon_grad_to_encoder),
               pair_grad_through_reconstruction=bool(p.pair_grad_through_reconstruction))


def _perturb_block() -> ml_collections.ConfigDict:
  p = ml_collections.ConfigDict()
  p.bank_size = 1024  # D (5632 in the paper preset)
  p.alpha = 1.0  # weight of L_R (Eq. 8)
  p.nu = 0.5  # weight of L_Cp (Eq. 8)
  p.eps_g = 0.1  # Grad-CAM noise std scale (Eq. 5)
  p.eps_var = 0.05  # low-variance noise std scale (Eq. 6)
  p.kappa = 0.02  # low-variance threshold (Eq. 6)
  p.gradcam_noise = True  # ablation: False -> no v^g
  p.lowvar_noise = True  # ablation: False -> no v^var
  p.pair_loss = True  # ablation: False -> L_C + alpha * L_R only
  p.pair_temperature = 0.2
  # NT-Xent with the positive in the denominator (SimCLR); False is the paper's
  # literal Eq. 7 (positive excluded).
  p.pair_positive_in_denominator = True
  # Silent points of the paper, as fields (docs/perturb_ssl.md, "our defaults"):
  p.recon_grad_to_encoder = True  # L_R trains f through v = f(x)
  p.pair_grad_through_reconstruction = False  # x_hat, x_hat_p are data for L_Cp
  p.decoder_pretrain_steps = 40  # encoder frozen, L_R only (Adam)
  p.decoder_lr = 2e-3  # Adam, decoder pre-training and joint phase
  return p


def _decoder_sizes(c: ml_collections.ConfigDict) -> None:
  c.model.decoder_channels = 128
  c.model.decoder_upsamples = 3


def _cub200(c: ml_collections.ConfigDict) -> None:
  c.model.decoder_upsamples = 5  # 224 = 7 * 2**5
  c.model.decoder_channels = 512
  c.perturb.bank_size = 5632
  c.perturb.alpha = 1.0
  c.perturb.nu = 0.5
  c.perturb.eps_g = 0.1
  c.perturb.eps_var = 0.05
  c.perturb.kappa = 0.02
  c.perturb.decoder_pretrain_steps = 2000


def _runlocal(c: ml_collections.ConfigDict) -> None:
  c.model.decoder_channels = 8
  c.model.decoder_upsamples = 2
  c.perturb.bank_size = 16
  c.perturb.decoder_pretrain_steps = 2


def _gradcam_only(c: ml_collections.ConfigDict) -> None:
  """Ablation: v_p = v + v^g (Grad-CAM noise only)."""
  c.perturb.lowvar_noise = False


def _lowvar_only(c: ml_collections.ConfigDict) -> None:
  """Ablation: v_p = v + v^var (low-variance noise only)."""
  c.perturb.gradcam_noise = False


def _no_pairs(c: ml_collections.ConfigDict) -> None:
  """Ablation: L_C + alpha L_R only (decoder, no perturbed pairs); sweep perturb.alpha."""
  c.perturb.pair_loss = False
  c.perturb.nu = 0.0


def _validate(cfg: ml_collections.ConfigDict) -> None:
  p, gb, size = cfg.perturb, cfg.data.global_batch_size, cfg.data.image_size
  require(size % (2 ** cfg.model.decoder_upsamples) == 0, "model.decoder_upsamples",
          f"image_size {size} is not divisible by 2**{cfg.model.decoder_upsamples}")
  # Ablation switches that contradict each other are errors, not silent choices.
  require(p.pair_loss or p.nu == 0, "perturb.nu",
          f"perturb.pair_loss=False (no perturbed pairs) needs nu=0, got nu={p.nu}; use the no_pairs preset")
  require(not p.pair_loss or p.gradcam_noise or p.lowvar_noise, "perturb.pair_loss",
          "both noises are off (gradcam_noise=lowvar_noise=False), so v_p = v and the pairs "
          "are identical; turn one on or use the no_pairs preset")
  require(p.bank_size >= gb and p.bank_size % gb == 0, "perturb.bank_size",
          f"D={p.bank_size} must be a positive multiple of the global batch {gb}")
  for field in ("alpha", "nu", "eps_g", "eps_var", "kappa"):
    require_nonnegative(p[field], f"perturb.{field}")
  require_positive(p.pair_temperature, "perturb.pair_temperature")
  require(p.decoder_pretrain_steps >= 0, "perturb.decoder_pretrain_steps", "must be >= 0")
  require_positive(p.decoder_lr, "perturb.decoder_lr")


# The ``perturb`` block: memory bank, noise, loss weights, decoder pre-training; the decoder's sizes in ``model``.
BLOCK = ssl_config.Block(name="perturb", fields=_perturb_block, defaults=_decoder_sizes, validate=_validate,
                         presets={"cub200": _cub200, "runlocal": _runlocal, "gradcam_only": _gradcam_only,
                                  "lowvar_only": _lowvar_only, "no_pairs": _no_pairs})


def pretrain_steps(cfg: ml_collections.ConfigDict) -> int:
  """Decoder pre-training steps before the joint phase."""
  return int(cfg.perturb.decoder_pretrain_steps)


def with_perturbation(base_hparams):
  """The ``hparams`` of a Perturb-SSL method from its base's: the perturb block, the joint phase's start."""
  def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> common.SSLHParams:
    return dataclasses.replace(base_hparams(cfg, setup, num_devices), joint_start_step=pretrain_steps(cfg),
                               perturb=PerturbHParams.from_config(cfg))
  return hparams


def push_to_bank(state: common.TrainState, local_features: jax.Array):
  """Step 5a: all-gathers this step's features ``[b, n]`` and writes them into M.

  Returns:
    ``(bank [D, n], bank_ptr, bank_count)``; identical on every device.
  """
  global_features = lax.all_gather(lax.stop_gradient(local_features), DATA_AXIS, tiled=True)
  bank, ptr = queue_lib.enqueue(state.feature_bank, global_features, state.bank_ptr)
  count = jnp.minimum(state.bank_count + global_features.shape[0], bank.shape[0])
  return bank, ptr, count


def encode_pairs(encoder, params, batch_stats, a: jax.Array, b: jax.Array, *, groups: int):
  """Online features of the reconstructions ``a = x_hat`` and ``b = x_hat_p``, ``[n, ...]`` each.

  Two encoder passes of ``n`` images, as ``g(f(x_hat))`` and ``g(f(x_hat_p))`` are
  written in Eq. 7: each batch is normalised with its own BatchNorm statistics
  (per group). One concatenated 2n-image pass would cost the same FLOPs but runs
  ~20 % slower on CPU at full width (measured: ResNet-18 fwd+bwd, 128 images
  8.1 s vs 256 images 19.8 s). Running BN statistics are NOT updated from these
  passes: evaluation uses them, and they should describe real images.

  Returns:
    ``(features_a [n, d], features_b [n, d])``.
  """
  feats_a, _ = common.encode(encoder, params, batch_stats, a, groups=groups)
  feats_b, _ = common.encode(encoder, params, batch_stats, b, groups=groups)
  return feats_a, feats_b


def perturb_and_reconstruct(state: common.TrainState, params: PyTree, v: jax.Array, eta: jax.Array,
                            x: jax.Array, noise_keys: jax.Array, *, nets: common.Networks,
                            hp: common.SSLHParams):
  """Steps 5-7, the same on either SSL base: bank, perturbed features, decoder, L_R.

  Args:
    v: ``[b, n]`` pooled features f(x) of the clean images (with gradient).
    eta: ``[b, n]`` Grad-CAM scores of the base's SSL loss (no gradient).
    x: ``[b, H, W, 3]`` normalised clean images (the L_R target).
    noise_keys: ``[b]`` per-example keys (global positions).

  Returns:
    ``(x_hat, x_hat_p, loss_r, (bank, bank_ptr, bank_count), aux)``: the
    reconstructions of v and v_p, Eq. 2's L_R, the bank after this batch, and
    the perturbation statistics of ``perturb_lib.perturb_features``.
  """
  b = v.shape[0]
  # Step 5: bank after pushing this batch, per-dimension variance s (filled rows only).
  bank, bank_ptr, bank_count = push_to_bank(state, v)
  s = perturb_lib.feature_bank_variance(bank, num_valid_rows=bank_count)
  # Step 6: v_p = v + v^g + v^var (Eqs. 4-6), per-example keys (device-count independent).
  v_p, aux = jax.vmap(
      lambda key, vi, ei: perturb_lib.perturb_features(
          key, vi[None], gradcam_scores=ei[None], bank_variance=s, eps_g=hp.perturb.eps_g,
          eps_var=hp.perturb.eps_var, kappa=hp.perturb.kappa, use_gradcam_noise=hp.perturb.gradcam_noise,
          use_lowvar_noise=hp.perturb.lowvar_noise))(noise_keys, v, eta)
  v_p = v_p[:, 0]
  # Step 7: one decoder pass on [v; v_p]; L_R (Eq. 2) on the clean reconstruction.
  v_dec = v if hp.perturb.recon_grad_to_encoder else lax.stop_gradient(v)
  v_p_dec = v_p if hp.perturb.recon_grad_to_encoder else lax.stop_gradient(v_p)
  recon = nets.decoder.apply({"params": params["decoder"]}, jnp.concatenate([v_dec, v_p_dec]))
  x_hat, x_hat_p = recon[:b], recon[b:]
  loss_r = losses.reconstruction_loss(x, x_hat)
  return x_hat, x_hat_p, loss_r, (bank, bank_ptr, bank_count), aux


def loss_terms(total, loss_c, loss_r, loss_cp, aux) -> dict[str, jax.Array]:
  """The logged metrics of a joint Perturb-SSL step."""
  return {
      "loss": total, "loss_c": loss_c, "loss_r": loss_r, "loss_cp": loss_cp,
      "lowvar_fraction": aux["lowvar_fraction"].mean(),
      "gradcam_noise_abs": jnp.mean(jnp.abs(aux["gradcam_noise"])),
      "lowvar_noise_abs": jnp.mean(jnp.abs(aux["lowvar_noise"])),
  }


def decoder_pretrain_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                          nets: common.Networks, hp: common.SSLHParams,
                          decoder_tx: optax.GradientTransformation
                          ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """Decoder pre-training (paper Sec. 4.1): encoder frozen, ``L_R`` only, per device.

  The frozen encoder runs with batch statistics (as in the joint step, whose
  v = f(x) is computed in training mode) but its running statistics are left
  untouched. The features also fill the memory bank, so that joint training
  starts with a warm bank.
  """
  del rng  # deterministic: no augmentation of x for L_R (paper Sec. 3.2)
  x = augment.normalize(common.clean_view(common.to_float_images(batch["image"]), hp.image_size))
  v, _ = common.encode(nets.encoder, state.params["encoder"], state.batch_stats, x,
                       groups=hp.local_bn_groups)
  v = lax.stop_gradient(v)

  def loss_fn(decoder_params):
    x_hat = nets.decoder.apply({"params": decoder_params}, v)
    return losses.reconstruction_loss(x, x_hat)

  loss_r, grads = jax.value_and_grad(loss_fn)(state.params["decoder"])
  grads = common.mean_over_devices(grads)
  updates, dec_opt_state = decoder_tx.update(grads, state.decoder_opt_state, state.params["decoder"])
  params = dict(state.params, decoder=optax.apply_updates(state.params["decoder"], updates))
  bank, bank_ptr, bank_count = push_to_bank(state, v)
  new_state = state.replace(step=state.step + 1, params=params, decoder_opt_state=dec_opt_state,
                            feature_bank=bank, bank_ptr=bank_ptr, bank_count=bank_count)
  return new_state, common.mean_over_devices({"loss": loss_r, "loss_r": loss_r})
