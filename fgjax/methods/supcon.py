"""SupCon, HCL and the cross-entropy baseline (seed H), one step for all three.

* ``ce``:     softmax cross-entropy on species labels (one augmented view);
* ``supcon``: SupCon on species labels (Khosla et al. 2020, Eq. 2), two views,
              2-layer MLP head (n-n-128; 2048-2048-128 at full width), L2-normalised;
* ``hcl``:    SupCon with genus soft positives (``fgjax.ops.contrastive_losses.hcl_loss``).

All three use the same backbone (ResNet or ViT, ``model.encoder``), data and
augmentation (SupCon's: RandomResizedCrop(0.2-1), flip, colour jitter
(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2 -- MoCo v2's aug+ without blur),
so the loss is the only difference. Evaluation uses the encoder's pooled
features f(x) (the head is dropped, as in SupCon's linear evaluation).

Multi-device: each device embeds its slice; the embeddings are all-gathered so
every anchor sees the whole global batch as contrast, and every device computes
the same global loss (``fgjax.ops.contrastive_losses`` explains why the ``pmean`` of
the gradients is then exactly the single-device gradient).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fgjax.data import augment
from fgjax.methods import base_indi
from fgjax.methods import ssl_common as common
from fgjax.models import heads as heads_lib
from fgjax.models import encoders
from fgjax.ops import contrastive_losses as cl
from fgjax.ops import instance_losses


PyTree = Any
State = base_indi.State  # step, params, batch_stats, opt_state


@dataclasses.dataclass(frozen=True)
class Networks:
  """``head`` (SupCon/HCL projection) or ``fine_head`` (CE), the other None."""
  encoder: nn.Module
  head: nn.Module | None
  fine_head: nn.Module | None


@dataclasses.dataclass(frozen=True)
class HParams:
  image_size: int
  local_bn_groups: int
  crop_scale: tuple[float, float]
  # The ``supcon`` block's (None for CE, which has no such block and no temperature).
  temperature: float | None = None
  base_temperature: float | None = None
  contrast_mode: str | None = None
  soft_weight: float | None = None


def build_networks(cfg: ml_collections.ConfigDict, train_source: Any) -> Networks:
  m = cfg.model
  encoder = encoders.build(m)
  head = fine_head = None
  if cfg.method == "ce":
    fine_head = nn.Dense(len(train_source.fine_names), name="fine_head")
  else:
    n = encoders.feature_dim(m)
    head = heads_lib.ProjectionHead(hidden_dims=(m.head_hidden_dim or n,), out_dim=m.proj_dim,
                                    dtype=jnp.dtype(m.dtype))
  return Networks(encoder=encoder, head=head, fine_head=fine_head)


def hparams_from_config(cfg: ml_collections.ConfigDict, nets: Networks, num_devices: int) -> HParams:
  """The step's settings; CE has no ``supcon`` block (its loss has no temperature)."""
  del nets
  s = cfg.get("supcon")
  loss = {} if s is None else dict(temperature=float(s.temperature), base_temperature=float(s.base_temperature),
                                   contrast_mode=s.contrast_mode, soft_weight=float(s.soft_weight))
  return HParams(image_size=int(cfg.data.image_size),
                 local_bn_groups=max(1, cfg.model.bn_groups // num_devices),
                 crop_scale=(float(cfg.augment.scale[0]), float(cfg.augment.scale[1])), **loss)


def create_state(cfg: ml_collections.ConfigDict, nets: Networks, rng: jax.Array, *,
                 tx: optax.GradientTransformation, decoder_tx: Any = None) -> State:
  del decoder_tx
  s = cfg.data.image_size
  enc_rng, head_rng = jax.random.split(rng)
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  v = nets.encoder.apply(enc_vars, dummy, train=False)
  params = {"encoder": enc_vars["params"]}
  if nets.head is not None:
    params["head"] = nets.head.init(head_rng, v)["params"]
  else:
    params["fine_head"] = nets.fine_head.init(head_rng, v)["params"]
  # A ViT has no BatchNorm: an empty collection keeps one state structure.
  return State(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=enc_vars.get("batch_stats", {}), opt_state=tx.init(params))


def _views(rng: jax.Array, images01: jax.Array, hp: HParams, num_views: int) -> jax.Array:
  """``[V, b, S, S, 3]`` normalised views (SupCon's augmentation), keyed per example."""
  size = None if images01.shape[1] == hp.image_size else hp.image_size

  def one_view(key):
    keys = common.example_keys(key, images01.shape[0])
    views = jax.vmap(lambda k, im: augment.mocov2_augment(
        k, im[None], crop_scale=hp.crop_scale, blur_prob=0.0, out_size=size)[0])(keys, images01)
    return augment.normalize(views)

  return jnp.stack([one_view(k) for k in jax.random.split(rng, num_views)])


def _encode(nets: Networks, params: PyTree, batch_stats: PyTree, x: jax.Array, groups: int):
  return common.encode(nets.encoder, params["encoder"], batch_stats, x, groups=groups)


def cross_entropy_objective(params: PyTree, batch_stats: PyTree, views: jax.Array, batch: dict[str, jax.Array], *,
                            nets: Networks, hp: HParams) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree]]:
  """CE on the species (the SupCon paper's cross-entropy baseline), one view ``[1, b, S, S, 3]``.

  Returns ``(loss, (metrics, new_batch_stats))``; the loss is this device's mean.
  """
  v, stats = _encode(nets, params, batch_stats, views[0], hp.local_bn_groups)
  logits = nets.fine_head.apply({"params": params["fine_head"]}, v)
  loss = jnp.mean(instance_losses.cross_entropy(logits, batch["fine_label"]))
  return loss, ({"loss": loss, "train_top1_fine": jnp.mean(jnp.argmax(logits, -1) == batch["fine_label"])},
                stats)


def supcon_anchors(z_all: jax.Array, batch_all: dict[str, jax.Array], hp: HParams):
  """SupCon (Khosla et al. Eq. 2) on the species: ``(per-anchor loss, has a positive)``."""
  return cl.supcon_loss(z_all, batch_all["fine_label"], temperature=hp.temperature,
                        base_temperature=hp.base_temperature, contrast_mode=hp.contrast_mode)


def hcl_anchors(z_all: jax.Array, batch_all: dict[str, jax.Array], hp: HParams):
  """HCL: SupCon on the species with the genus's other species as soft positives (``soft_weight``)."""
  return cl.hcl_loss(z_all, batch_all["fine_label"], batch_all["super_label"], soft_weight=hp.soft_weight,
                     temperature=hp.temperature, base_temperature=hp.base_temperature,
                     contrast_mode=hp.contrast_mode)


def contrastive_objective(anchors):
  """The objective of a supervised contrastive loss ``anchors(z_all [B, V, k], labels of the global batch,
  hp) -> (per-anchor loss, has a positive)`` on two views ``[2, b, S, S, 3]``, over the global batch."""
  def objective(params: PyTree, batch_stats: PyTree, views: jax.Array, batch: dict[str, jax.Array], *,
                nets: Networks, hp: HParams) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree]]:
    num_views, b = views.shape[:2]
    # Each view is one BN pass (as the official code's torch.cat([x1, x2]) at batch 2b
    # would mix the views' statistics; per view keeps the groups' size fixed).
    encoded = [_encode(nets, params, batch_stats, views[i], hp.local_bn_groups) for i in range(num_views)]
    v = jnp.stack([e[0] for e in encoded], axis=1)  # [b, V, n]
    stats = jax.tree.map(lambda *s: sum(s) / num_views, *[e[1] for e in encoded])
    z = nets.head.apply({"params": params["head"]}, v.reshape(b * num_views, -1)).reshape(b, num_views, -1)
    gather = lambda x: jax.lax.all_gather(x, common.DATA_AXIS, axis=0, tiled=True)  # noqa: E731
    labels = {name: gather(batch[name]) for name in ("fine_label", "super_label")}
    per_anchor, has_positive = anchors(gather(z), labels, hp)
    loss = cl.masked_mean(per_anchor, has_positive)
    metrics = {"loss": loss, "anchors_without_positive": jnp.sum(~has_positive).astype(jnp.float32)}
    return loss, (metrics, stats)
  return objective


def make_step(objective, num_views: int):
  """The per-device step (under ``shard_map``) of ``objective`` on ``num_views`` augmented views:
  ``(state, batch, rng, *, nets, hp, tx) -> (state, metrics)``."""
  def step(state: State, batch: dict[str, jax.Array], rng: jax.Array, *,
           nets: Networks, hp: HParams, tx: optax.GradientTransformation) -> tuple[State, dict[str, jax.Array]]:
    step_rng = jax.random.fold_in(rng, state.step)
    views = _views(step_rng, common.to_float_images(batch["image"]), hp, num_views)
    grads, (metrics, new_stats) = jax.grad(objective, has_aux=True)(
        state.params, state.batch_stats, views, batch, nets=nets, hp=hp)
    grads, metrics, new_stats = common.mean_over_devices((grads, metrics, new_stats))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         batch_stats=new_stats, opt_state=opt_state), metrics
  return step


# Each seed-H method's step, chosen by the methods' table (``registry``), never by its name inside the step.
STEPS = {"ce": make_step(cross_entropy_objective, num_views=1),
         "supcon": make_step(contrastive_objective(supcon_anchors), num_views=2),
         "hcl": make_step(contrastive_objective(hcl_anchors), num_views=2)}


def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> HParams:
  return hparams_from_config(cfg, setup.nets, num_devices)
