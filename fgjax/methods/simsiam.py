"""SimSiam (Chen & He, CVPR 2021) as the second base of Perturb-SSL: state and the per-device step.

``L = 0.5 D(h(z1), sg(z2)) + 0.5 D(h(z2), sg(z1))`` with ``z = g(f(x))``, ``D``
the negative cosine, ``g`` the 3-layer projector with BN, ``h`` the bottleneck
predictor (``losses.simsiam_loss``). Projector and predictor BatchNorms are
synchronised over the data axis (SimSiam's SyncBN); their running statistics
are never used (evaluation reads the encoder), so they are not kept in the
state. No momentum network and no queue: those TrainState fields hold empty
placeholders, so one state structure serves every SSL method.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fgjax.ops import losses
from fgjax.methods import moco
from fgjax.methods import ssl_common as common

PyTree = Any


def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                 tx: optax.GradientTransformation,
                 decoder_tx: optax.GradientTransformation | None = None) -> common.TrainState:
  """Initial state: ``params = {'encoder', 'head' (projector), 'predictor'[, 'decoder']}``."""
  s = cfg.data.image_size
  enc_rng, head_rng, pred_rng, dec_rng = jax.random.split(rng, 4)
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  feats = nets.encoder.apply(enc_vars, dummy, train=False)
  # Initialised outside shard_map: the same modules without the BN axis name.
  head = nets.head.clone(bn_axis_name=None)
  predictor = nets.predictor.clone(bn_axis_name=None)
  head_params = head.init(head_rng, feats, train=False)["params"]
  z = head.apply({"params": head_params}, feats, train=True, mutable=["batch_stats"])[0]
  params = {"encoder": enc_vars["params"], "head": head_params,
            "predictor": predictor.init(pred_rng, z, train=False)["params"]}
  if nets.decoder is not None:
    params["decoder"] = nets.decoder.init(dec_rng, feats)["params"]
    bank = jnp.zeros((cfg.perturb.bank_size, feats.shape[-1]), jnp.float32)
    decoder_opt_state = decoder_tx.init(params["decoder"]) if decoder_tx is not None else ()
  else:
    bank = jnp.zeros((1, 1), jnp.float32)  # unused placeholder (orbax saves no zero-size arrays)
    decoder_opt_state = ()
  zero = jnp.zeros((), jnp.int32)
  return common.TrainState(
      step=zero, params=params, batch_stats=enc_vars["batch_stats"], momentum_params={},
      momentum_batch_stats={}, opt_state=tx.init(params), decoder_opt_state=decoder_opt_state,
      queue=jnp.zeros((1, 1), jnp.float32), queue_ptr=zero, feature_bank=bank, bank_ptr=zero,
      bank_count=zero)


def project_and_predict(nets: common.Networks, params: PyTree, features: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
  """``(z, p) = (g(v), h(g(v)))`` in training mode (batch statistics, synchronised), ``[b, d]`` each."""
  z, _ = nets.head.apply({"params": params["head"]}, features, train=True, mutable=["batch_stats"])
  p, _ = nets.predictor.apply({"params": params["predictor"]}, z, train=True, mutable=["batch_stats"])
  return z, p


def pair_loss(nets: common.Networks, params: PyTree, features_a: jax.Array, features_b: jax.Array
              ) -> jax.Array:
  """Per-example symmetric SimSiam loss between two batches of features ``[b, n]`` -> ``[b]``."""
  z_a, p_a = project_and_predict(nets, params, features_a)
  z_b, p_b = project_and_predict(nets, params, features_b)
  return losses.simsiam_loss(p1=p_a, z2=z_b, p2=p_b, z1=z_a)


def simsiam_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                 nets: common.Networks, hp: moco.MocoHParams, tx: optax.GradientTransformation
                 ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """One SimSiam step, per device: two aug+ views, the symmetric loss, SGD.

  Both views pass the encoder as separate batches (per-group BN statistics, as
  two forward calls in the official code).
  """
  rng = jax.random.fold_in(rng, state.step)
  x1, x2 = common.augmented_views(rng, common.to_float_images(batch["image"]), hp.image_size,
                                  hp.views)
  groups = hp.local_bn_groups

  def loss_fn(params):
    f1, stats = common.encode(nets.encoder, params["encoder"], state.batch_stats, x1, groups=groups)
    f2, stats = common.encode(nets.encoder, params["encoder"], stats, x2, groups=groups)
    return jnp.mean(pair_loss(nets, params, f1, f2)), stats

  (loss_c, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = moco.apply_gradients(state, grads, tx)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            batch_stats=common.mean_over_devices(new_stats))
  return new_state, common.mean_over_devices({"loss": loss_c, "loss_c": loss_c})
