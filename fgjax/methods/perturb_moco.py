"""Perturb-MoCo (seed method P on the MoCo v2 base): the per-device steps.

Step numbers below are those of the README's "Perturb-MoCo: what exactly is
computed" (eight steps); equation numbers are the paper's (Wang et al., "On Learning Discriminative Features from
Synthesized Data for Self-Supervised Fine-Grained Visual Recognition").

Forward passes per joint step (shared wherever the math allows):
  key encoder on x'' (no grad) | online encoder on x' (L_C) | online encoder on
  x (v, for L_R, Grad-CAM, the bank) | head only for Grad-CAM (no encoder pass) |
  ONE decoder pass on [v; v_p] | online encoder on x_hat and on x_hat_p.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from fgjax.ops import gradcam as gradcam_lib
from fgjax.ops import losses
from fgjax.ops import perturb as perturb_lib
from fgjax.ops import queue as queue_lib
from fgjax.data import augment
from fgjax.methods import moco
from fgjax.methods import ssl_common as common
from fgjax.infra.parallel import DATA_AXIS

PyTree = Any


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


def gradcam_scores(head, head_params, features, keys, queue, temperature):
  """Step 4 / Eq. 3: ``eta = ReLU(dL_C(g(v), k)/dv * v)``, through the head only, no gradient.

  The head runs in float32 here whatever ``model.dtype`` (same parameters), so
  the gradient, like ``v``, the loss and the scores, is float32.
  """
  head = head.clone(dtype=jnp.float32)
  head_params = lax.stop_gradient(head_params)

  def per_example_loss(v):
    z = common.l2n(head.apply({"params": head_params}, v))
    return losses.infonce_with_queue(query=z, key=keys, queue=queue, temperature=temperature)

  return gradcam_lib.gradcam_feature_scores(per_example_loss, lax.stop_gradient(features))


def perturb_and_reconstruct(state: common.TrainState, params: PyTree, v: jax.Array, eta: jax.Array,
                            x: jax.Array, noise_keys: jax.Array, *, nets: common.Networks,
                            hp: moco.MocoHParams):
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
          key, vi[None], gradcam_scores=ei[None], bank_variance=s, eps_g=hp.eps_g,
          eps_var=hp.eps_var, kappa=hp.kappa, use_gradcam_noise=hp.gradcam_noise,
          use_lowvar_noise=hp.lowvar_noise))(noise_keys, v, eta)
  v_p = v_p[:, 0]
  # Step 7: one decoder pass on [v; v_p]; L_R (Eq. 2) on the clean reconstruction.
  v_dec = v if hp.recon_grad_to_encoder else lax.stop_gradient(v)
  v_p_dec = v_p if hp.recon_grad_to_encoder else lax.stop_gradient(v_p)
  recon = nets.decoder.apply({"params": params["decoder"]}, jnp.concatenate([v_dec, v_p_dec]))
  x_hat, x_hat_p = recon[:b], recon[b:]
  loss_r = jnp.mean(jnp.square(x - x_hat))
  return x_hat, x_hat_p, loss_r, (bank, bank_ptr, bank_count), aux


def loss_terms(total, loss_c, loss_r, loss_cp, aux) -> dict[str, jax.Array]:
  """The logged metrics of a joint Perturb-SSL step."""
  return {
      "loss": total, "loss_c": loss_c, "loss_r": loss_r, "loss_cp": loss_cp,
      "lowvar_fraction": aux["lowvar_fraction"].mean(),
      "gradcam_noise_abs": jnp.mean(jnp.abs(aux["gradcam_noise"])),
      "lowvar_noise_abs": jnp.mean(jnp.abs(aux["lowvar_noise"])),
  }


def perturb_moco_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                      nets: common.Networks, hp: moco.MocoHParams, tx: optax.GradientTransformation
                      ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """One joint Perturb-MoCo step, per device: ``L = L_C + alpha L_R + nu L_Cp`` (Eq. 8).

  Args:
    state: replicated TrainState (with decoder params and the memory bank).
    batch: ``{'image': uint8 [b, H, W, 3], ...}``, this device's slice.
    rng: replicated base key; the step folds in ``state.step``.

  Returns:
    ``(new_state, metrics)``; metrics are device means of each loss term and
    of the perturbation statistics.
  """
  rng = jax.random.fold_in(rng, state.step)
  aug_rng, shuffle_rng, noise_rng = jax.random.split(rng, 3)
  x01 = common.to_float_images(batch["image"])
  x = augment.normalize(common.clean_view(x01, hp.image_size))  # non-augmented (L_R target, Grad-CAM, bank)
  x1, x2 = common.augmented_views(aug_rng, x01, hp.image_size, hp.views)
  b = x.shape[0]
  groups = hp.local_bn_groups

  # Steps 1-2: momentum update, keys (no gradient, shuffle-BN).
  momentum_params, momentum_stats, keys, global_keys = moco.key_network_forward(
      state, x2, shuffle_rng, nets=nets, hp=hp)
  noise_keys = common.example_keys(noise_rng, b)

  def loss_fn(params):
    # Step 3: L_C, MoCo v2 InfoNCE on x'.
    loss_c, stats = moco.query_infonce(params, state.batch_stats, x1, keys, state.queue,
                                       nets=nets, hp=hp)
    # Step 4: v = f(x), Grad-CAM scores through the head only.
    v, stats = common.encode(nets.encoder, params["encoder"], stats, x, groups=groups)
    eta = gradcam_scores(nets.head, params["head"], v, keys, state.queue, hp.temperature)
    # Steps 5-7: bank, v_p, one decoder pass, L_R.
    x_hat, x_hat_p, loss_r, bank_state, aux = perturb_and_reconstruct(
        state, params, v, eta, x, noise_keys, nets=nets, hp=hp)
    # Step 8: L_Cp (Eq. 7), NT-Xent between g(f(x_hat)) and g(f(x_hat_p)), the other
    # reconstructions of the whole (all-gathered) batch as negatives.
    if hp.pair_loss:
      if not hp.pair_grad_through_reconstruction:
        x_hat, x_hat_p = lax.stop_gradient(x_hat), lax.stop_gradient(x_hat_p)
      f_hat, f_hat_p = encode_pairs(nets.encoder, params["encoder"], stats, x_hat, x_hat_p,
                                    groups=groups)
      z = common.l2n(nets.head.apply({"params": params["head"]}, jnp.concatenate([f_hat, f_hat_p])))
      z_all = lax.all_gather(z[:b], DATA_AXIS, tiled=True)
      z_p_all = lax.all_gather(z[b:], DATA_AXIS, tiled=True)
      pair_losses = losses.nt_xent(z_a=z_all, z_b=z_p_all, temperature=hp.pair_temperature,
                                   include_positive_in_denominator=hp.pair_positive_in_denominator)
      loss_cp = jnp.mean(lax.dynamic_slice_in_dim(pair_losses, lax.axis_index(DATA_AXIS) * b, b))
    else:
      loss_cp = jnp.zeros((), jnp.float32)
    total = loss_c + hp.alpha * loss_r + hp.nu * loss_cp
    terms = loss_terms(total, loss_c, loss_r, loss_cp, aux)
    return total, (stats, bank_state, terms)

  (_, (new_stats, bank_state, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = moco.apply_gradients(state, grads, tx)
  queue, queue_ptr = queue_lib.enqueue(state.queue, global_keys, state.queue_ptr)
  bank, bank_ptr, bank_count = bank_state
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      batch_stats=common.mean_over_devices(new_stats), momentum_params=momentum_params,
      momentum_batch_stats=common.mean_over_devices(momentum_stats),
      queue=queue, queue_ptr=queue_ptr, feature_bank=bank, bank_ptr=bank_ptr, bank_count=bank_count)
  return new_state, common.mean_over_devices(terms)


def decoder_pretrain_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                          nets: common.Networks, hp: moco.MocoHParams,
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
    return jnp.mean(jnp.square(x - x_hat))

  loss_r, grads = jax.value_and_grad(loss_fn)(state.params["decoder"])
  grads = common.mean_over_devices(grads)
  updates, dec_opt_state = decoder_tx.update(grads, state.decoder_opt_state, state.params["decoder"])
  params = dict(state.params, decoder=optax.apply_updates(state.params["decoder"], updates))
  bank, bank_ptr, bank_count = push_to_bank(state, v)
  new_state = state.replace(step=state.step + 1, params=params, decoder_opt_state=dec_opt_state,
                            feature_bank=bank, bank_ptr=bank_ptr, bank_count=bank_count)
  return new_state, common.mean_over_devices({"loss": loss_r, "loss_r": loss_r})
