"""MoCo v2 (He et al. 2020; Chen et al. 2020): state creation and the per-device step.

The step follows the official code's order: momentum update of the key network
from the current online network, keys with shuffle-BN, InfoNCE against the
queue, optimizer update, then enqueue of the all-gathered keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fgjax.ops import losses
from fgjax.ops import queue as queue_lib
from fgjax.methods import ssl_common as common

PyTree = Any


@dataclasses.dataclass(frozen=True)
class MocoHParams:
  """Static hyper-parameters of the MoCo / Perturb-MoCo steps (hashable)."""

  local_bn_groups: int  # BatchNorm groups per device (model.bn_groups / devices)
  temperature: float
  momentum: float  # EMA coefficient at the first joint step
  shuffle_bn: bool
  # Cosine increase of the EMA coefficient to final_momentum over momentum_steps
  # joint steps (equal to momentum: MoCo v2's constant coefficient).
  final_momentum: float | None = None
  momentum_steps: int = 1
  # Steps before the joint phase (decoder pre-training), not counted by the schedule.
  joint_start_step: int = 0
  # Perturb-SSL (ignored by plain MoCo)
  alpha: float = 1.0
  nu: float = 0.5
  eps_g: float = 0.1
  eps_var: float = 0.05
  kappa: float = 0.02
  gradcam_noise: bool = True
  lowvar_noise: bool = True
  pair_loss: bool = True
  pair_temperature: float = 0.2
  pair_positive_in_denominator: bool = True
  recon_grad_to_encoder: bool = True
  pair_grad_through_reconstruction: bool = False
  # Training image side S; the host's base images may be larger (data.base_size).
  image_size: int | None = None
  views: common.ViewAugmentation = common.ViewAugmentation()


def hparams_from_config(cfg: ml_collections.ConfigDict, num_devices: int, *,
                        joint_steps: int = 1, pretrain_steps: int = 0) -> MocoHParams:
  """``joint_steps``: the schedule's length (the momentum schedule spans it)."""
  p = cfg.perturb
  return MocoHParams(
      image_size=int(cfg.data.image_size), views=common.ViewAugmentation.from_config(cfg.augment),
      local_bn_groups=cfg.model.bn_groups // num_devices,
      temperature=float(cfg.moco.temperature), momentum=float(cfg.moco.momentum),
      final_momentum=float(cfg.moco.final_momentum), momentum_steps=int(joint_steps),
      joint_start_step=int(pretrain_steps),
      shuffle_bn=bool(cfg.moco.shuffle_bn), alpha=float(p.alpha), nu=float(p.nu),
      eps_g=float(p.eps_g), eps_var=float(p.eps_var), kappa=float(p.kappa),
      gradcam_noise=bool(p.gradcam_noise), lowvar_noise=bool(p.lowvar_noise),
      pair_loss=bool(p.pair_loss), pair_temperature=float(p.pair_temperature),
      pair_positive_in_denominator=bool(p.pair_positive_in_denominator),
      recon_grad_to_encoder=bool(p.recon_grad_to_encoder),
      pair_grad_through_reconstruction=bool(p.pair_grad_through_reconstruction))


def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                 tx: optax.GradientTransformation,
                 decoder_tx: optax.GradientTransformation | None = None) -> common.TrainState:
  """Initial state: online = key network at step 0, a random normalised queue.

  The queue starts as random unit vectors, as in the official code.
  """
  s = cfg.data.image_size
  enc_rng, head_rng, dec_rng, queue_rng = jax.random.split(rng, 4)
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  feats = nets.encoder.apply(enc_vars, dummy, train=False)
  head_params = nets.head.init(head_rng, feats)["params"]
  params = {"encoder": enc_vars["params"], "head": head_params}
  n = feats.shape[-1]
  if nets.decoder is not None:
    params["decoder"] = nets.decoder.init(dec_rng, feats)["params"]
    bank = jnp.zeros((cfg.perturb.bank_size, n), jnp.float32)
    decoder_opt_state = (decoder_tx.init(params["decoder"]) if decoder_tx is not None else ())
  else:
    # Plain MoCo has no memory bank; a 1x1 placeholder keeps one state structure
    # (orbax cannot save zero-size arrays).
    bank = jnp.zeros((1, 1), jnp.float32)
    decoder_opt_state = ()
  queue = losses.l2_normalize(jax.random.normal(queue_rng, (cfg.moco.queue_size, cfg.model.proj_dim)))
  momentum_params = {"encoder": params["encoder"], "head": params["head"]}
  return common.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=enc_vars["batch_stats"],
      momentum_params=jax.tree.map(jnp.copy, momentum_params),
      momentum_batch_stats=jax.tree.map(jnp.copy, enc_vars["batch_stats"]),
      opt_state=tx.init(params), decoder_opt_state=decoder_opt_state, queue=queue,
      queue_ptr=jnp.zeros((), jnp.int32), feature_bank=bank,
      bank_ptr=jnp.zeros((), jnp.int32), bank_count=jnp.zeros((), jnp.int32))


def key_network_forward(state: common.TrainState, views: jax.Array, rng: jax.Array, *,
                        nets: common.Networks, hp: MocoHParams):
  """Steps 1-2 of the method: EMA update of (f_k, g_k), then shuffled-BN keys.

  Returns:
    ``(momentum_params, momentum_batch_stats, local_keys [b,k], global_keys [B,k])``.
  """
  online = {"encoder": state.params["encoder"], "head": state.params["head"]}
  momentum = hp.momentum
  if hp.final_momentum is not None and hp.final_momentum != hp.momentum:
    momentum = queue_lib.cosine_momentum(state.step - hp.joint_start_step, base=hp.momentum,
                                         final=hp.final_momentum, total_steps=hp.momentum_steps)
  momentum_params = queue_lib.momentum_update(online=online, target=state.momentum_params,
                                              momentum=momentum)
  local_keys, global_keys, momentum_stats = common.shuffled_keys(
      nets, momentum_params, state.momentum_batch_stats, views, rng,
      groups=hp.local_bn_groups, shuffle_bn=hp.shuffle_bn)
  return momentum_params, momentum_stats, local_keys, global_keys


def query_infonce(params: PyTree, batch_stats: PyTree, views: jax.Array, keys: jax.Array,
                  queue: jax.Array, *, nets: common.Networks, hp: MocoHParams):
  """L_C: InfoNCE of ``q = normalize(g(f(x')))`` against ``keys`` and the queue.

  Returns:
    ``(mean loss, new_batch_stats)``.
  """
  feats, new_stats = common.encode(nets.encoder, params["encoder"], batch_stats, views,
                                   groups=hp.local_bn_groups)
  q = common.l2n(nets.head.apply({"params": params["head"]}, feats))
  loss = losses.infonce_with_queue(query=q, key=keys, queue=queue, temperature=hp.temperature)
  return jnp.mean(loss), new_stats


def apply_gradients(state: common.TrainState, grads: PyTree, tx: optax.GradientTransformation
                    ) -> tuple[PyTree, PyTree]:
  """Averages per-device gradients over the data axis and takes one optimizer step."""
  grads = common.mean_over_devices(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), opt_state


def moco_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
              nets: common.Networks, hp: MocoHParams, tx: optax.GradientTransformation
              ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """One MoCo v2 step, per device.

  Args:
    state: replicated TrainState.
    batch: ``{'image': uint8 [b, H, W, 3], ...}``, this device's slice.
    rng: replicated base key; the step folds in ``state.step``.

  Returns:
    ``(new_state, metrics)`` with metrics averaged over devices.
  """
  rng = jax.random.fold_in(rng, state.step)
  aug_rng, shuffle_rng = jax.random.split(rng)
  x1, x2 = common.augmented_views(aug_rng, common.to_float_images(batch["image"]), hp.image_size,
                                  hp.views)
  momentum_params, momentum_stats, keys, global_keys = key_network_forward(
      state, x2, shuffle_rng, nets=nets, hp=hp)

  def loss_fn(params):
    loss_c, new_stats = query_infonce(params, state.batch_stats, x1, keys, state.queue, nets=nets, hp=hp)
    return loss_c, new_stats

  (loss_c, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = apply_gradients(state, grads, tx)
  queue, queue_ptr = queue_lib.enqueue(state.queue, global_keys, state.queue_ptr)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      batch_stats=common.mean_over_devices(new_stats), momentum_params=momentum_params,
      momentum_batch_stats=common.mean_over_devices(momentum_stats),
      queue=queue, queue_ptr=queue_ptr)
  metrics = common.mean_over_devices({"loss": loss_c, "loss_c": loss_c})
  return new_state, metrics
