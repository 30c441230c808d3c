"""MoCo v2 (He et al. 2020; Chen et al. 2020): state creation and the per-device step.

The step follows the official code's order: momentum update of the key network
from the current online network, keys with shuffle-BN, InfoNCE against the
queue, optimizer update, then enqueue of the all-gathered keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fgjax.config import ssl as ssl_config
from fgjax.config.fields import require
from fgjax.config.fields import require_positive
from fgjax.methods import ssl_common as common
from fgjax.ops import losses
from fgjax.ops import queue as queue_lib


PyTree = Any


@dataclasses.dataclass(frozen=True)
class MocoHParams:
  """Static hyper-parameters of MoCo's contrastive loss and key network (hashable): the ``moco`` block's
  values (:func:`_moco_block` holds the defaults)."""

  temperature: float  # tau
  momentum: float  # EMA coefficient at the first joint step
  shuffle_bn: bool
  # Cosine increase of the EMA coefficient to final_momentum over momentum_steps
  # joint steps (equal to momentum: MoCo v2's constant coefficient).
  final_momentum: float
  momentum_steps: int

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict, joint_steps: int) -> "MocoHParams":
    """``joint_steps``: the schedule's length (the momentum schedule spans it)."""
    mo = cfg.moco
    return cls(temperature=float(mo.temperature), momentum=float(mo.momentum),
               final_momentum=float(mo.final_momentum), momentum_steps=int(joint_steps),
               shuffle_bn=bool(mo.shuffle_bn))


def _moco_block() -> ml_collections.ConfigDict:
  mo = ml_collections.ConfigDict()
  # K below the training-set size (2048 images): a larger queue holds stale keys
  # of the query's own image as negatives (checked: K=4096 gave lower kNN).
  mo.queue_size = 1024  # K
  mo.momentum = 0.99  # m (0.999 in the paper preset: long runs)
  # m rises along a cosine to final_momentum by the end of training (BYOL,
  # solo-learn's small-image recipe); equal to momentum: constant (MoCo v2).
  mo.final_momentum = 0.999
  mo.temperature = 0.2  # tau
  mo.shuffle_bn = True
  return mo


def _head_sizes(c: ml_collections.ConfigDict) -> None:
  c.model.head_hidden_dim = 0  # 0: same as the encoder's feature dim (MoCo v2).
  c.model.proj_dim = 128


def _cub200(c: ml_collections.ConfigDict) -> None:
  c.model.head_hidden_dim = 2048
  c.model.proj_dim = 128
  c.moco.queue_size = 65536
  c.moco.momentum = 0.999
  c.moco.final_momentum = 0.999
  c.moco.temperature = 0.2


def _runlocal(c: ml_collections.ConfigDict) -> None:
  c.model.head_hidden_dim = 16
  c.model.proj_dim = 8
  c.moco.queue_size = 32


def _fullwidth(c: ml_collections.ConfigDict) -> None:
  c.model.head_hidden_dim = 0


def _validate(cfg: ml_collections.ConfigDict) -> None:
  mo, gb = cfg.moco, cfg.data.global_batch_size
  require(cfg.model.proj_dim >= 1, "model.proj_dim", f"must be >= 1, got {cfg.model.proj_dim}")
  require(cfg.model.head_hidden_dim >= 0, "model.head_hidden_dim",
          f"must be >= 0 (0: the encoder's width), got {cfg.model.head_hidden_dim}")
  require_positive(mo.temperature, "moco.temperature")
  require(0.0 <= mo.momentum <= 1.0, "moco.momentum", f"must be in [0, 1], got {mo.momentum}")
  require(0.0 <= mo.final_momentum <= 1.0, "moco.final_momentum",
          f"must be in [0, 1], got {mo.final_momentum}")
  require(mo.queue_size >= gb and mo.queue_size % gb == 0, "moco.queue_size",
          f"K={mo.queue_size} must be a positive multiple of the global batch {gb}")


# The ``moco`` block: queue, key network and InfoNCE; the projection head's sizes in ``model``.
BLOCK = ssl_config.Block(name="moco", fields=_moco_block, defaults=_head_sizes, validate=_validate,
                         presets={"cub200": _cub200, "runlocal": _runlocal, "fullwidth": _fullwidth})


def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> common.SSLHParams:
  """The step's static settings: the shared ones and the ``moco`` block's (momentum over the schedule)."""
  return dataclasses.replace(common.base_hparams(cfg, num_devices),
                             moco=MocoHParams.from_config(cfg, setup.joint_steps))


class MocoState(common.OnlineState):
  """MoCo v2's state: the online network's (``common.OnlineState``), the key network and the queue.

  Attributes:
    momentum_params: ``{'encoder', 'head'}`` key network (f_k, g_k), EMA of ``params``.
    momentum_batch_stats: BatchNorm running statistics of the key encoder.
    queue: ``[K, proj_dim]`` L2-normalised keys (the negatives), a ring buffer.
    queue_ptr: int32 scalar, next row of ``queue`` to write.
  """

  momentum_params: PyTree
  momentum_batch_stats: PyTree
  queue: jax.Array
  queue_ptr: jax.Array

  LEGACY_FIELDS: ClassVar[dict[str, str]] = {
      **common.OnlineState.LEGACY_FIELDS, "momentum_params": "momentum_params",
      "momentum_batch_stats": "momentum_batch_stats", "queue": "queue", "queue_ptr": "queue_ptr"}

  def with_encoder(self, place: Any) -> "MocoState":
    """The online encoder from ``place()``, and the key encoder starts as a copy of it (its own buffers)."""
    state = common.OnlineState.with_encoder(self, place)
    params, batch_stats = place()
    return state.replace(momentum_params={**state.momentum_params, "encoder": params},
                         momentum_batch_stats=batch_stats)


def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                 tx: optax.GradientTransformation) -> MocoState:
  """Initial state: online = key network at step 0, a random normalised queue (as the official code)."""
  s = cfg.data.image_size
  enc_rng, head_rng, _, queue_rng = jax.random.split(rng, 4)  # the third: Perturb-MoCo's decoder
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  feats = nets.encoder.apply(enc_vars, dummy, train=False)
  head_params = nets.head.init(head_rng, feats)["params"]
  params = {"encoder": enc_vars["params"], "head": head_params}
  queue = losses.l2_normalize(jax.random.normal(queue_rng, (cfg.moco.queue_size, cfg.model.proj_dim)))
  momentum_params = {"encoder": params["encoder"], "head": params["head"]}
  return MocoState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=enc_vars.get("batch_stats", {}),
      opt_state=tx.init(params), momentum_params=jax.tree.map(jnp.copy, momentum_params),
      momentum_batch_stats=jax.tree.map(jnp.copy, enc_vars.get("batch_stats", {})), queue=queue,
      queue_ptr=jnp.zeros((), jnp.int32))


def key_network_forward(state: MocoState, views: jax.Array, rng: jax.Array, *,
                        nets: common.Networks, hp: common.SSLHParams):
  """Steps 1-2 of the method: EMA update of (f_k, g_k), then shuffled-BN keys.

  Returns:
    ``(momentum_params, momentum_batch_stats, local_keys [b,k], global_keys [B,k])``.
  """
  online = {"encoder": state.params["encoder"], "head": state.params["head"]}
  mo = hp.moco
  momentum = mo.momentum
  if mo.final_momentum != mo.momentum:
    momentum = queue_lib.cosine_momentum(state.step - hp.joint_start_step, base=mo.momentum,
                                         final=mo.final_momentum, total_steps=mo.momentum_steps)
  momentum_params = queue_lib.momentum_update(online=online, target=state.momentum_params,
                                              momentum=momentum)
  local_keys, global_keys, momentum_stats = common.shuffled_keys(
      nets, momentum_params, state.momentum_batch_stats, views, rng,
      groups=hp.local_bn_groups, shuffle_bn=mo.shuffle_bn)
  return momentum_params, momentum_stats, local_keys, global_keys


def query_infonce(params: PyTree, batch_stats: PyTree, views: jax.Array, keys: jax.Array,
                  queue: jax.Array, *, nets: common.Networks, hp: common.SSLHParams):
  """L_C: InfoNCE of ``q = normalize(g(f(x')))`` against ``keys`` and the queue.

  Returns:
    ``(mean loss, new_batch_stats)``.
  """
  feats, new_stats = common.encode(nets.encoder, params["encoder"], batch_stats, views,
                                   groups=hp.local_bn_groups)
  q = losses.l2_normalize(nets.head.apply({"params": params["head"]}, feats))
  loss = losses.infonce_with_queue(query=q, key=keys, queue=queue, temperature=hp.moco.temperature)
  return jnp.mean(loss), new_stats


def forward(state: MocoState, images01: jax.Array, key: jax.Array, *, nets: common.Networks,
            hp: common.SSLHParams) -> dict[str, Any]:
  """The gradient-free part of a MoCo v2 step: two views, the EMA update of the key network, the keys.

  Args:
    images01: ``[b, H, W, 3]`` this device's images in [0, 1].
    key: the step's key (split as MoCo v2 always has: views, then the key shuffle).

  Returns:
    ``{'x1', 'keys' [b, k], 'global_keys' [B, k], 'queue', 'momentum_params', 'momentum_stats'}``.
  """
  aug_rng, shuffle_rng = jax.random.split(key)
  x1, x2 = common.augmented_views(aug_rng, images01, hp.image_size, hp.views)
  momentum_params, momentum_stats, keys, global_keys = key_network_forward(
      state, x2, shuffle_rng, nets=nets, hp=hp)
  return {"x1": x1, "keys": keys, "global_keys": global_keys, "queue": state.queue,
          "momentum_params": momentum_params, "momentum_stats": momentum_stats}


def ssl_loss(params: PyTree, batch_stats: PyTree, ctx: dict[str, Any], *, nets: common.Networks,
             hp: common.SSLHParams) -> common.SSLLoss:
  """L_C: InfoNCE of the queries of view 1 against their keys and the queue (:func:`query_infonce`)."""
  loss_c, stats = query_infonce(params, batch_stats, ctx["x1"], ctx["keys"], ctx["queue"], nets=nets, hp=hp)
  return common.SSLLoss(loss=loss_c, batch_stats=stats)


def finish(new_state: MocoState, old_state: MocoState, ctx: dict[str, Any]
           ) -> MocoState:
  """After the optimizer step: the key network of this step, and the keys enqueued (the official order)."""
  queue, queue_ptr = queue_lib.enqueue(old_state.queue, ctx["global_keys"], old_state.queue_ptr)
  return new_state.replace(momentum_params=ctx["momentum_params"],
                           momentum_batch_stats=common.mean_over_devices(ctx["momentum_stats"]),
                           queue=queue, queue_ptr=queue_ptr)


def gradcam_loss(params: PyTree, ctx: dict[str, Any], outputs: dict[str, jax.Array], *,
                 nets: common.Networks, hp: common.SSLHParams):
  """Perturb-SSL's hook: per-example InfoNCE of ``normalize(g(v))`` against this step's keys and the queue.

  Through the head only, in float32 whatever ``model.dtype`` (same parameters,
  no gradient into them): ``v [b, n] -> [b]``.
  """
  del outputs
  head = nets.head.clone(dtype=jnp.float32)
  head_params = jax.lax.stop_gradient(params["head"])

  def per_example_loss(v):
    z = losses.l2_normalize(head.apply({"params": head_params}, v))
    return losses.infonce_with_queue(query=z, key=ctx["keys"], queue=ctx["queue"],
                                     temperature=hp.moco.temperature)
  return per_example_loss


def features_loss(nets: common.Networks, state: MocoState, cfg: ml_collections.ConfigDict,
                  x_pos: jax.Array):
  """``(loss(v) [N, n] -> [N], keys [N, k])``: MoCo's per-example L_C as a function of pooled features.

  For Grad-CAM pictures: InfoNCE of ``normalize(g(v))`` against the key
  ``normalize(g_k(f_k(x_pos)))`` of the momentum network (eval-mode BN) and the
  queue; float32.
  """
  m = state.momentum_params
  feats = nets.encoder.apply({"params": m["encoder"], "batch_stats": state.momentum_batch_stats},
                             x_pos, train=False)
  keys = losses.l2_normalize(nets.head.apply({"params": m["head"]}, feats))

  def loss(v):
    q = losses.l2_normalize(nets.head.apply({"params": state.params["head"]}, v))
    return losses.infonce_with_queue(query=q, key=keys, queue=state.queue, temperature=cfg.moco.temperature)
  return loss, keys


# MoCo v2 as hooks: its step (``common.ssl_step``) and Perturb-MoCo's (``perturb_ssl.wrap``) are built from them.
BASE = common.Base(name="moco", blocks=(BLOCK,), networks=common.contrastive_networks, create_state=create_state,
                   hparams=hparams, forward=forward, ssl_loss=ssl_loss, finish=finish, gradcam_loss=gradcam_loss,
                   pair_loss=common.head_pair_loss, features_loss=features_loss,
                   decoder_key=lambda rng: jax.random.split(rng, 4)[2])
moco_step = common.ssl_step(BASE)
