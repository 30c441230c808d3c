"""Perturb-SimSiam (seed method P on the SimSiam base): the joint per-device step.

The same eight steps as ``perturb_moco`` (docs/perturb_ssl.md, "what exactly is
computed"), with the SimSiam loss wherever Perturb-MoCo uses InfoNCE:

* L_C: the symmetric SimSiam loss of the two aug+ views;
* Grad-CAM (Eq. 3): ``eta = ReLU(dL/dv * v)`` of ``L(v) = D(h(g(v)), sg(z2))``,
  the clean image's prediction against the stop-gradient projection of view 2
  (the symmetric term ``D(p2, sg(g(v)))`` has no gradient in v);
* L_Cp (Eq. 7 in SimSiam form): the symmetric SimSiam loss between
  ``f(x_hat)`` and ``f(x_hat_p)`` (SimSiam has no negatives, so no NT-Xent),
  their BatchNorm groups shuffled as for Perturb-MoCo (``perturb_ssl.pair_features``).

Steps 5-7 (bank, v_p, decoder, L_R) are ``perturb_ssl.perturb_and_reconstruct``;
decoder pre-training is ``perturb_ssl.decoder_pretrain_step`` (base-independent).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from fgjax.data import augment
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import perturb_ssl
from fgjax.methods import simsiam
from fgjax.methods import ssl_common as common
from fgjax.ops import losses


def gradcam_scores(nets: common.Networks, params, v: jax.Array, z2: jax.Array, sign: str) -> jax.Array:
  """Eq. 3 on the SimSiam base (``perturb_ssl.gradcam_scores``) of ``D(h(g(v)), sg(z2))``, no gradient.

  Projector and predictor run in float32 here whatever ``model.dtype`` (same
  parameters; ``common.float32_heads``), so the gradient is float32.
  """
  nets = common.float32_heads(nets)
  params = lax.stop_gradient(params)
  target = lax.stop_gradient(z2)

  def per_example_loss(features):
    _, p = simsiam.project_and_predict(nets, params, features)
    return losses.simsiam_loss(p1=p, z2=target, p2=p, z1=target)  # = D(p, sg(z2)) per example

  return perturb_ssl.gradcam_scores(per_example_loss, lax.stop_gradient(v), sign=sign)


def pair_loss(nets: common.Networks, params, f_hat: jax.Array, f_hat_p: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
  """Step 8 in SimSiam form: the symmetric SimSiam loss between ``f(x_hat)`` and ``f(x_hat_p)``.

  Returns ``(this device's mean L_Cp, the global pair top-1 of the projections)``; SimSiam has no
  negatives, so the top-1 only reports how recognisable the pairs are.
  """
  per_example, z_a, z_b = simsiam.pair_loss(nets, params, f_hat, f_hat_p)
  loss_cp = jnp.mean(per_example)
  top1 = losses.pair_top1_accuracy(lax.all_gather(z_a, DATA_AXIS, tiled=True),
                                   lax.all_gather(z_b, DATA_AXIS, tiled=True))
  return loss_cp, top1


def perturb_simsiam_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                         nets: common.Networks, hp: common.SSLHParams,
                         tx: optax.GradientTransformation
                         ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """One joint Perturb-SimSiam step, per device: ``L = L_C + alpha L_R + nu L_Cp`` (Eq. 8).

  The views are SimSiam's own at the same joint step (``perturb_ssl.step_keys``).
  """
  base_key, noise_rng, pair_shuffle_rng, pair_augment_rng = perturb_ssl.step_keys(rng, state, hp)
  x01 = common.to_float_images(batch["image"])
  x = augment.normalize(common.clean_view(x01, hp.image_size))
  x1, x2 = common.augmented_views(base_key, x01, hp.image_size, hp.views)  # as simsiam_step
  groups = hp.local_bn_groups
  ph = hp.perturb
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
    eta = gradcam_scores(nets, params, v, z2, ph.gradcam_sign)
    # Steps 5-7: bank, v_p, one decoder pass, L_R.
    x_hat, x_hat_p, loss_r, bank_state, aux = perturb_ssl.perturb_and_reconstruct(
        state, params, v, eta, x, noise_keys, nets=nets, hp=hp)
    # Step 8: L_Cp, SimSiam between the encodings of x_hat and x_hat_p (BatchNorm groups shuffled).
    if ph.pair_loss:
      f_hat, f_hat_p = perturb_ssl.pair_features(nets.encoder, params["encoder"], stats, x_hat, x_hat_p,
                                                 pair_shuffle_rng, pair_augment_rng, hp=hp)
      loss_cp, pair_top1 = pair_loss(nets, params, f_hat, f_hat_p)
    else:
      loss_cp = pair_top1 = jnp.zeros((), jnp.float32)
    total = loss_c + ph.alpha * loss_r + ph.nu * loss_cp
    return total, (stats, bank_state, perturb_ssl.loss_terms(total, loss_c, loss_r, loss_cp, pair_top1, aux))

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
  return gradcam_scores(common.without_sync_bn(nets), state.params, v, z_pos, cfg.perturb.gradcam_sign)
