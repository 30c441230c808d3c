"""Base-Indi and its baselines (seed B): a ResNet with linear heads, trained by CE.

One training step for every objective of ``fgjax.config.supervised``
(Base, Fine, Indi, Base-Indi, Base-Indi_eff): augment (crop + flip, on
device, seeded per example), encode, the objective's heads and losses, SGD.
The step is written per device for ``jax.shard_map`` (gradients and BN
statistics are averaged over the ``'data'`` axis), like the SSL steps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fgjax import optim
from fgjax.config import blocks as config_blocks
from fgjax.config import supervised as supervised_config
from fgjax.data import augment
from fgjax.methods import instance_head as ih
from fgjax.methods import spec
from fgjax.methods import ssl_common as common
from fgjax.models import encoders
from fgjax.ops import instance_losses


PyTree = Any


@dataclasses.dataclass(frozen=True)
class Networks:
  """The modules of a seed-B objective; a head is None when the objective has none.

  ``layout`` maps training-instance ids to rows of the instance head (None
  without one); the number of rows grows with the training split.
  """
  encoder: nn.Module
  super_head: nn.Module | None
  fine_head: nn.Module | None
  instance_head: ih.InstanceHead | None
  layout: ih.InstanceLayout | None


@dataclasses.dataclass(frozen=True)
class HParams:
  """Static settings of the step (hashable); the objective is the networks' heads and these fields."""
  image_size: int
  local_bn_groups: int
  crop: str
  pad: int
  scale: tuple[float, float]
  flip: bool
  instance_weight: float  # lambda_I (1 without the base_indi block: Indi's plain instance CE)
  instance_within_super: bool  # Base-Indi_eff: instance CE over the same super-class's images only
  group_capacity: int  # base_indi_eff: images per super-class and device (grouped path)


@flax.struct.dataclass
class State:
  """Everything a run needs to continue exactly (checkpointed whole).

  Attributes:
    step: int32 scalar, optimizer steps taken.
    params: ``{'encoder', 'super_head'?, 'fine_head'?, 'instance_head'?}``.
    batch_stats: the encoder's BatchNorm statistics.
    opt_state: optax state over ``params``.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree


def build_networks(cfg: ml_collections.ConfigDict, train_source: Any) -> Networks:
  """Encoder and heads sized by the opened training split (classes, instances)."""
  m, method = cfg.model, cfg.method
  encoder = encoders.build(m)
  super_head = fine_head = instance = layout = None
  if method in supervised_config.SUPER_HEAD_METHODS:
    super_head = nn.Dense(len(train_source.super_names), name="super_head")
  if method == "fine":
    fine_head = nn.Dense(len(train_source.fine_names), name="fine_head")
  if method in supervised_config.INSTANCE_METHODS:
    if train_source.super_names is not None:
      layout = ih.InstanceLayout.from_super_labels(train_source.super_labels, len(train_source.super_names))
    else:
      layout = ih.InstanceLayout.single_group(len(train_source))
    instance = ih.InstanceHead(num_groups=layout.num_groups, group_size=layout.group_size)
  return Networks(encoder=encoder, super_head=super_head, fine_head=fine_head,
                  instance_head=instance, layout=layout)


def hparams_from_config(cfg: ml_collections.ConfigDict, nets: Networks, num_devices: int) -> HParams:
  local_batch = cfg.data.global_batch_size // num_devices
  # base, fine and indi have no base_indi block: lambda_I = 1 (indi's CE weight), auto capacity.
  bi = cfg.get("base_indi")
  capacity = bi.group_capacity if bi is not None else 0
  if not capacity and nets.layout is not None:
    capacity = nets.layout.auto_capacity(local_batch)
  a = cfg.augment
  return HParams(image_size=int(cfg.data.image_size),
                 local_bn_groups=max(1, cfg.model.bn_groups // num_devices),
                 crop=a.crop, pad=int(a.pad), scale=(float(a.scale[0]), float(a.scale[1])),
                 flip=bool(a.flip), instance_weight=float(bi.instance_weight) if bi is not None else 1.0,
                 instance_within_super=cfg.method in supervised_config.WITHIN_SUPER_INSTANCE_METHODS,
                 group_capacity=int(min(capacity or local_batch, local_batch)))


def create_state(cfg: ml_collections.ConfigDict, nets: Networks, rng: jax.Array, *,
                 tx: optax.GradientTransformation, decoder_tx: Any = None) -> State:
  """Random initial state (pure: jit it, or ``jax.eval_shape`` it for a template)."""
  del decoder_tx
  s = cfg.data.image_size
  enc_rng, super_rng, fine_rng, inst_rng = jax.random.split(rng, 4)
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  v = nets.encoder.apply(enc_vars, dummy, train=False)
  params = {"encoder": enc_vars["params"]}
  for name, module, key in (("super_head", nets.super_head, super_rng),
                            ("fine_head", nets.fine_head, fine_rng),
                            ("instance_head", nets.instance_head, inst_rng)):
    if module is not None:
      params[name] = module.init(key, v)["params"]
  return State(step=jnp.zeros((), jnp.int32), params=params, batch_stats=enc_vars.get("batch_stats", {}),
               opt_state=tx.init(params))


def augmented_view(rng: jax.Array, images01: jax.Array, hp: HParams) -> jax.Array:
  """The training view: random crop + horizontal flip, seeded per example (normalised).

  ``'pad'``: an S x S crop of the image zero-padded by ``pad`` (the paper's
  CIFAR augmentation); ``'resized'``: RandomResizedCrop(scale) of the base image
  to S x S (ImageNet). Keys come from the example's position in the global
  batch, so the views do not depend on the device count.
  """
  keys = common.example_keys(rng, images01.shape[0])

  def one(key, image):
    crop_key, flip_key = jax.random.split(key)
    if hp.crop == "pad":
      image = augment.simple_augment(crop_key, image[None], pad=hp.pad, flip_prob=0.0)[0]
    else:
      box = augment.random_resized_crop_box(crop_key, image.shape[0], image.shape[1], scale=hp.scale)
      image = augment.resized_crop(image, box, out_size=hp.image_size)
    if hp.flip:
      image = jnp.where(jax.random.uniform(flip_key) < 0.5, image[:, ::-1], image)
    return image

  return augment.normalize(jax.vmap(one)(keys, images01))


def loss_terms(params: PyTree, batch_stats: PyTree, images: jax.Array, batch: dict[str, jax.Array], *,
               nets: Networks, hp: HParams) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree]]:
  """The objective on one device's batch: CE of each head the networks have, plus the instance CE.

  Returns ``(loss, (metrics, new_batch_stats))``; the loss is the local mean.
  """
  v, new_stats = common.encode(nets.encoder, params["encoder"], batch_stats, images,
                               groups=hp.local_bn_groups)
  metrics: dict[str, jax.Array] = {}
  loss = jnp.zeros((), jnp.float32)
  if nets.super_head is not None:
    logits = nets.super_head.apply({"params": params["super_head"]}, v)
    metrics["loss_super"] = jnp.mean(instance_losses.cross_entropy(logits, batch["super_label"]))
    metrics["train_top1_super"] = jnp.mean(jnp.argmax(logits, -1) == batch["super_label"])
    loss = loss + metrics["loss_super"]
  if nets.fine_head is not None:
    logits = nets.fine_head.apply({"params": params["fine_head"]}, v)
    metrics["loss_fine"] = jnp.mean(instance_losses.cross_entropy(logits, batch["fine_label"]))
    metrics["train_top1_fine"] = jnp.mean(jnp.argmax(logits, -1) == batch["fine_label"])
    loss = loss + metrics["loss_fine"]
  if nets.instance_head is not None:
    layout = nets.layout
    p = params["instance_head"]
    ids = batch["index"]
    group, slot = jnp.asarray(layout.group_of)[ids], jnp.asarray(layout.slot_of)[ids]
    valid = jnp.asarray(layout.valid)
    if hp.instance_within_super:
      per_image, overflow = instance_losses.instance_loss_within_super(v, p["kernel"], p["bias"], valid, group, slot,
                                                          capacity=hp.group_capacity)
      metrics["instance_overflow"] = overflow.astype(jnp.float32)
    else:
      per_image = instance_losses.instance_loss_all(v, p["kernel"], p["bias"], valid, group, slot)
    metrics["loss_instance"] = jnp.mean(per_image)
    loss = loss + hp.instance_weight * metrics["loss_instance"]
  metrics["loss"] = loss
  return loss, (metrics, new_stats)


def base_indi_step(state: State, batch: dict[str, jax.Array], rng: jax.Array, *,
                   nets: Networks, hp: HParams, tx: optax.GradientTransformation
                   ) -> tuple[State, dict[str, jax.Array]]:
  """One SGD step of any seed-B objective (per device, under ``shard_map``)."""
  step_rng = jax.random.fold_in(rng, state.step)
  images = augmented_view(step_rng, common.to_float_images(batch["image"]), hp)
  grad_fn = jax.grad(loss_terms, has_aux=True)
  grads, (metrics, new_stats) = grad_fn(state.params, state.batch_stats, images, batch, nets=nets, hp=hp)
  grads, metrics, new_stats = common.mean_over_devices((grads, metrics, new_stats))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                       opt_state=opt_state), metrics


def super_logits_fn(nets: Networks, state: State):
  """``normalised images [N, H, W, 3] -> [N, K_super]`` of the trained super head, or None."""
  if getattr(nets, "super_head", None) is None:  # (seed-H networks have no super head)
    return None
  variables = {"params": state.params["encoder"], "batch_stats": state.batch_stats}
  head = {"params": state.params["super_head"]}

  def super_logits(images):
    return nets.super_head.apply(head, nets.encoder.apply(variables, images, train=False))

  return super_logits


def make_setup(module):
  """The ``setup`` of a supervised method of ``module`` (this one, or ``supcon``).

  The heads are sized by the opened training split (classes, instances), so
  ``train_source`` is required; its label levels are checked against the
  objective first.
  """
  def setup(cfg: ml_collections.ConfigDict, num_train: int | None = None, *, train_source: Any = None
            ) -> spec.Setup:
    if train_source is None:
      raise ValueError(f"setup: method {cfg.method!r} needs the opened training split")
    supervised_config.check_labels(cfg, train_source)
    nets = module.build_networks(cfg, train_source)
    steps = config_blocks.total_train_steps(cfg, num_train if num_train is not None else len(train_source))
    tx = optim.supervised_optimizer(cfg, steps)
    return spec.Setup(nets=nets, tx=tx, decoder_tx=None, joint_steps=steps,
                      init_state=functools.partial(module.create_state, cfg, nets, tx=tx))
  return setup


def hparams(cfg: ml_collections.ConfigDict, setup: spec.Setup, num_devices: int) -> HParams:
  return hparams_from_config(cfg, setup.nets, num_devices)
