"""Perturb-SimSiam (seed method P on the SimSiam base): the joint per-device step.

The same eight steps as ``perturb_moco`` (docs/perturb_ssl.md, "what exactly is
computed"), with the SimSiam loss wherever Perturb-MoCo uses InfoNCE:

* L_C: the symmetric SimSiam loss of the two aug+ views;
* Grad-CAM (Eq. 3): ``eta = ReLU(dL/dv * v)`` of ``L(v) = D(h(g(v)), sg(z2))``,
  the clean image's prediction against the stop-gradient projection of view 2
  (the symmetric term ``D(p2, sg(g(v)))`` has no gradient in v);
* L_Cp (Eq. 7 in SimSiam form): the symmetric SimSiam loss between
  ``f(x_hat)`` and ``f(x_hat_p)`` (SimSiam has no negatives, so no NT-Xent).

Steps 5-7 (bank, v_p, decoder, L_R) are ``perturb_ssl.perturb_and_reconstruct``;
decoder pre-training is ``perturb_ssl.decoder_pretrain_step`` (base-independent).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from fgjax.data import augment
from fgjax.methods import perturb_ssl
from fgjax.methods import simsiam
from fgjax.methods import ssl_common as common
from fgjax.ops import gradcam as gradcam_lib
from fgjax.ops import losses


def gradcam_scores(nets: common.Networks, params, v: jax.Array, z2: jax.Array) -> jax.Array:
  """Eq. 3 on the SimSiam base: ``ReLU(dD(h(g(v)), sg(z2))/dv * v)``, no gradient to anything.

  Projector and predictor run in float32 here whatever ``model.dtype`` (same
  parameters; ``common.float32_heads``), so the gradient is float32.
  """
  nets = common.float32_heads(nets)
  params = lax.stop_gradient(params)
  target = lax.stop_gradient(z2)

  def per_example_loss(features):
    _, p = simsiam.project_and_predict(nets, params, features)
    return losses.simsiam_loss(p1=p, z2=target, p2=p, z1=target)  # = D(p, sg(z2)) per example

  return gradcam_lib.gradcam_feature_scores(per_example_loss, lax.stop_gradient(v))


def perturb_simsiam_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                         nets: common.Networks, hp: common.SSLHParams,
                         tx: optax.GradientTransformation
                         ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """One joint Perturb-SimSiam step, per device: ``L = L_C + alpha L_R + nu L_Cp`` (Eq. 8)."""
  rng = jax.random.fold_in(rng, state.step)
  aug_rng, noise_rng = jax.random.split(rng)
  x01 = common.to_float_images(batch["image"])
  x = augment.normalize(common.clean_view(x01, hp.image_size))
  x1, x2 = common.augmented_views(aug_rng, x01, hp.image_size, hp.views)
  groups = hp.local_bn_groups
  noise_keys = common.example_keys(noise_rng, x.shape[0])

  def loss_fn(params):
    # Step 3: L_C, SimSiam on the two views.
    f1, stats = common.encode(nets.encoder, params["encoder"], state.batch_stats, x1, groups=groups)
    f2, stats = common.encode(nets.encoder, params["encoder"], stats, x2, groups=groups)
    z1, p1 = simsiam.project_and_predict(nets, params, f1)
    z2, p2 = simsiam.project_and_predict(nets, params, f2)
    loss_c = jnp.mean(losses.simsiam_loss(p1=p1, z2=z2, p2=p2, z1=z1))
    # Step 4: v = f(x), Grad-CAM of the SimSiam loss.
    v, stats = common.encode(nets.encoder, params["encoder"], stats, x, groups=groups)
    eta = gradcam_scores(nets, params, v, z2)
    # Steps 5-7: bank, v_p, one decoder pass, L_R.
    x_hat, x_hat_p, loss_r, bank_state, aux = perturb_ssl.perturb_and_reconstruct(
        state, params, v, eta, x, noise_keys, nets=nets, hp=hp)
    # Step 8: L_Cp, SimSiam between the encodings of x_hat and x_hat_p.
    if hp.perturb.pair_loss:
      if not hp.perturb.pair_grad_through_reconstruction:
        x_hat, x_hat_p = lax.stop_gradient(x_hat), lax.stop_gradient(x_hat_p)
      f_hat, f_hat_p = perturb_ssl.encode_pairs(nets.encoder, params["encoder"], stats, x_hat,
                                                 x_hat_p, groups=groups)
      loss_cp = jnp.mean(simsiam.pair_loss(nets, params, f_hat, f_hat_p))
    else:
      loss_cp = jnp.zeros((), jnp.float32)
    total = loss_c + hp.perturb.alpha * loss_r + hp.perturb.nu * loss_cp
    return total, (stats, bank_state, perturb_ssl.loss_terms(total, loss_c, loss_r, loss_cp, aux))

  (_, (new_stats, bank_state, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = common.apply_gradients(state, grads, tx)
  bank, bank_ptr, bank_count = bank_state
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      batch_stats=common.mean_over_devices(new_stats), feature_bank=bank, bank_ptr=bank_ptr,
      bank_count=bank_count)
  return new_state, common.mean_over_devices(terms)


def picture_scores(nets: common.Networks, state: common.TrainState, cfg, v: jax.Array, z_pos: jax.Array
                   ) -> jax.Array:
  """Eq. 3's scores ``[N, n]`` of a trained state outside training (the generated-pairs picture)."""
  del cfg
  return gradcam_scores(common.without_sync_bn(nets), state.params, v, z_pos)
