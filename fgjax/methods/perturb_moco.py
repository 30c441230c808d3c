"""Perturb-MoCo (seed method P on the MoCo v2 base): the per-device steps.

Step numbers below are those of docs/perturb_ssl.md ("what exactly is
computed": eight steps); equation numbers are the paper's (Wang et al., "On Learning Discriminative Features from
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

from fgjax.data import augment
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import moco
from fgjax.methods import perturb_ssl
from fgjax.methods import ssl_common as common
from fgjax.ops import losses
from fgjax.ops import queue as queue_lib


PyTree = Any


def gradcam_scores(head, head_params, features, keys, queue, temperature, sign):
  """Step 4 / Eq. 3: Grad-CAM scores of InfoNCE (``perturb_ssl.gradcam_scores``), through the head only.

  The head runs in float32 here whatever ``model.dtype`` (same parameters), so
  the gradient, like ``v``, the loss and the scores, is float32.
  """
  head = head.clone(dtype=jnp.float32)
  head_params = lax.stop_gradient(head_params)

  def per_example_loss(v):
    z = losses.l2_normalize(head.apply({"params": head_params}, v))
    return losses.infonce_with_queue(query=z, key=keys, queue=queue, temperature=temperature)

  return perturb_ssl.gradcam_scores(per_example_loss, lax.stop_gradient(features), sign=sign)


def pair_loss(head, head_params, f_hat: jax.Array, f_hat_p: jax.Array, ph: perturb_ssl.PerturbHParams
              ) -> tuple[jax.Array, jax.Array]:
  """Step 8 / Eq. 7: NT-Xent between ``g(f(x_hat))`` and ``g(f(x_hat_p))``, every other reconstruction of the
  global batch a negative. Returns ``(this device's mean L_Cp, the global pair top-1)``."""
  b = f_hat.shape[0]
  z = losses.l2_normalize(head.apply({"params": head_params}, jnp.concatenate([f_hat, f_hat_p])))
  z_all = lax.all_gather(z[:b], DATA_AXIS, tiled=True)
  z_p_all = lax.all_gather(z[b:], DATA_AXIS, tiled=True)
  pair_losses = losses.nt_xent(z_a=z_all, z_b=z_p_all, temperature=ph.pair_temperature,
                               include_positive_in_denominator=ph.pair_positive_in_denominator)
  return jnp.mean(common.local_slice(pair_losses, b)), losses.pair_top1_accuracy(z_all, z_p_all)


def perturb_moco_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                      nets: common.Networks, hp: common.SSLHParams, tx: optax.GradientTransformation
                      ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """One joint Perturb-MoCo step, per device: ``L = L_C + alpha L_R + nu L_Cp`` (Eq. 8).

  Args:
    state: replicated TrainState (with decoder params and the memory bank).
    batch: ``{'image': uint8 [b, H, W, 3], ...}``, this device's slice.
    rng: replicated base key; the step folds in the joint step (``perturb_ssl.step_keys``), so
      the views and the key shuffle are MoCo's own at the same joint step.

  Returns:
    ``(new_state, metrics)``; metrics are device means of each loss term, the
    pair task's top-1 and the perturbation statistics.
  """
  base_key, noise_rng, pair_shuffle_rng, pair_augment_rng = perturb_ssl.step_keys(rng, state, hp)
  aug_rng, shuffle_rng = jax.random.split(base_key)  # as moco_step splits its key
  x01 = common.to_float_images(batch["image"])
  x = augment.normalize(common.clean_view(x01, hp.image_size))  # non-augmented (L_R target, Grad-CAM, bank)
  x1, x2 = common.augmented_views(aug_rng, x01, hp.image_size, hp.views)
  b = x.shape[0]
  groups = hp.local_bn_groups
  ph = hp.perturb

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
    eta = gradcam_scores(nets.head, params["head"], v, keys, state.queue, hp.moco.temperature,
                         ph.gradcam_sign)
    # Steps 5-7: bank, v_p, one decoder pass, L_R.
    x_hat, x_hat_p, loss_r, bank_state, aux = perturb_ssl.perturb_and_reconstruct(
        state, params, v, eta, x, noise_keys, nets=nets, hp=hp)
    # Step 8: L_Cp (Eq. 7) on the generated pairs, their BatchNorm groups shuffled.
    if ph.pair_loss:
      f_hat, f_hat_p = perturb_ssl.pair_features(nets.encoder, params["encoder"], stats, x_hat, x_hat_p,
                                                 pair_shuffle_rng, pair_augment_rng, hp=hp)
      loss_cp, pair_top1 = pair_loss(nets.head, params["head"], f_hat, f_hat_p, ph)
    else:
      loss_cp = pair_top1 = jnp.zeros((), jnp.float32)
    total = loss_c + ph.alpha * loss_r + ph.nu * loss_cp
    terms = perturb_ssl.loss_terms(total, loss_c, loss_r, loss_cp, pair_top1, aux)
    return total, (stats, bank_state, terms)

  (_, (new_stats, bank_state, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = common.apply_gradients(state, grads, tx)
  queue, queue_ptr = queue_lib.enqueue(state.queue, global_keys, state.queue_ptr)
  bank, bank_ptr, bank_count = bank_state
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      batch_stats=common.mean_over_devices(new_stats), momentum_params=momentum_params,
      momentum_batch_stats=common.mean_over_devices(momentum_stats),
      queue=queue, queue_ptr=queue_ptr, feature_bank=bank, bank_ptr=bank_ptr, bank_count=bank_count)
  return new_state, common.mean_over_devices(terms)


def picture_scores(nets: common.Networks, state: common.TrainState, cfg, v: jax.Array, keys: jax.Array
                   ) -> jax.Array:
  """Eq. 3's scores ``[N, n]`` of a trained state outside training (the generated-pairs picture)."""
  return gradcam_scores(nets.head, state.params["head"], v, keys, state.queue, cfg.moco.temperature,
                        cfg.perturb.gradcam_sign)
