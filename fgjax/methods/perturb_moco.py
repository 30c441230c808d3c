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
from fgjax.ops import gradcam as gradcam_lib
from fgjax.ops import losses
from fgjax.ops import queue as queue_lib


PyTree = Any


def gradcam_scores(head, head_params, features, keys, queue, temperature):
  """Step 4 / Eq. 3: ``eta = ReLU(dL_C(g(v), k)/dv * v)``, through the head only, no gradient.

  The head runs in float32 here whatever ``model.dtype`` (same parameters), so
  the gradient, like ``v``, the loss and the scores, is float32.
  """
  head = head.clone(dtype=jnp.float32)
  head_params = lax.stop_gradient(head_params)

  def per_example_loss(v):
    z = losses.l2_normalize(head.apply({"params": head_params}, v))
    return losses.infonce_with_queue(query=z, key=keys, queue=queue, temperature=temperature)

  return gradcam_lib.gradcam_feature_scores(per_example_loss, lax.stop_gradient(features))


def perturb_moco_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                      nets: common.Networks, hp: common.SSLHParams, tx: optax.GradientTransformation
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
    eta = gradcam_scores(nets.head, params["head"], v, keys, state.queue, hp.moco.temperature)
    # Steps 5-7: bank, v_p, one decoder pass, L_R.
    x_hat, x_hat_p, loss_r, bank_state, aux = perturb_ssl.perturb_and_reconstruct(
        state, params, v, eta, x, noise_keys, nets=nets, hp=hp)
    # Step 8: L_Cp (Eq. 7), NT-Xent between g(f(x_hat)) and g(f(x_hat_p)), the other
    # reconstructions of the whole (all-gathered) batch as negatives.
    if hp.perturb.pair_loss:
      if not hp.perturb.pair_grad_through_reconstruction:
        x_hat, x_hat_p = lax.stop_gradient(x_hat), lax.stop_gradient(x_hat_p)
      f_hat, f_hat_p = perturb_ssl.encode_pairs(nets.encoder, params["encoder"], stats, x_hat, x_hat_p,
                                    groups=groups)
      z = losses.l2_normalize(nets.head.apply({"params": params["head"]}, jnp.concatenate([f_hat, f_hat_p])))
      z_all = lax.all_gather(z[:b], DATA_AXIS, tiled=True)
      z_p_all = lax.all_gather(z[b:], DATA_AXIS, tiled=True)
      pair_losses = losses.nt_xent(z_a=z_all, z_b=z_p_all, temperature=hp.perturb.pair_temperature,
                                   include_positive_in_denominator=hp.perturb.pair_positive_in_denominator)
      loss_cp = jnp.mean(lax.dynamic_slice_in_dim(pair_losses, lax.axis_index(DATA_AXIS) * b, b))
    else:
      loss_cp = jnp.zeros((), jnp.float32)
    total = loss_c + hp.perturb.alpha * loss_r + hp.perturb.nu * loss_cp
    terms = perturb_ssl.loss_terms(total, loss_c, loss_r, loss_cp, aux)
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
  return gradcam_scores(nets.head, state.params["head"], v, keys, state.queue, cfg.moco.temperature)
