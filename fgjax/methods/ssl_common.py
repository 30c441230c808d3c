"""Pieces shared by the SSL steps (MoCo and SimSiam bases): networks, train state, grouped BN, views.

Everything here is per device (called inside ``shard_map`` over ``'data'``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any
from typing import ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from fgjax import optim
from fgjax.config import blocks as config_blocks
from fgjax.data import augment
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import spec
from fgjax.models import heads as heads_lib
from fgjax.models import encoders
from fgjax.ops import losses


PyTree = Any


@dataclasses.dataclass(frozen=True)
class Networks:
  """The Flax modules of an SSL method (static: hashable, closed over by the step).

  ``head`` is MoCo's projection head or SimSiam's projector; ``predictor`` is
  SimSiam's (None for MoCo); ``decoder`` is Perturb-SSL's (else None).
  """

  encoder: nn.Module
  head: nn.Module
  decoder: nn.Module | None = None
  predictor: nn.Module | None = None


def contrastive_networks(cfg: ml_collections.ConfigDict) -> Networks:
  """Encoder f and MoCo v2's projection head g (no BN; MoCo, SimCLR): the networks of a contrastive base.

  A base with other heads builds its own (``simsiam.networks``, ``byol.networks``);
  Perturb-SSL adds its decoder to whatever the base built (``perturb_ssl.wrap``).
  """
  m = cfg.model
  n = encoders.feature_dim(m)
  head = heads_lib.ProjectionHead(hidden_dims=(m.head_hidden_dim or n,), out_dim=m.proj_dim,
                                  dtype=jnp.dtype(m.dtype))
  return Networks(encoder=encoders.build(m), head=head)


def without_sync_bn(nets: Networks) -> Networks:
  """SimSiam's projector/predictor outside ``shard_map`` (pictures): BN over the batch, no axis name."""
  return dataclasses.replace(nets, head=nets.head.clone(bn_axis_name=None),
                             predictor=nets.predictor.clone(bn_axis_name=None))


def float32_heads(nets: Networks) -> Networks:
  """``nets`` with the head (and SimSiam's predictor) computing in float32, same parameters.

  Grad-CAM (Eq. 3) differentiates the SSL loss with respect to ``v`` through the
  head only; run in float32, that gradient has full precision whatever
  ``model.dtype`` is. The head is a few dense layers on ``[b, n]`` vectors, so
  its float32 cost is negligible next to the encoder's.
  """
  predictor = nets.predictor.clone(dtype=jnp.float32) if nets.predictor is not None else None
  return dataclasses.replace(nets, head=nets.head.clone(dtype=jnp.float32), predictor=predictor)


class OnlineState(flax.struct.PyTreeNode):
  """The state of an SSL method with one network (SimCLR, SimSiam), and the fields every SSL state begins with.

  Each method owns its state: a subclass with exactly the fields it needs
  (``moco.MocoState``: key network and queue; ``byol.ByolState``: target
  network; ``perturb_ssl.PerturbState``: a base's state plus the decoder's
  optimizer state and the memory bank). Checkpointed whole.

  Attributes:
    step: int32 scalar, number of optimizer steps taken (a Perturb-SSL run's
      decoder pre-training steps included).
    params: the online networks' parameters, ``{'encoder', 'head'[, 'predictor']
      [, 'decoder']}`` (Perturb-SSL's decoder is stepped by the same joint optimizer).
    batch_stats: BatchNorm running statistics of the online encoder.
    opt_state: optax state of the joint optimizer (all of ``params``).
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree

  # ``{field: name in the legacy layout}``: fgjax's first checkpoints held one
  # flat state for every SSL method (``checkpointing.LEGACY_SSL_FIELDS``, 1x1
  # placeholders for what a method lacked); a restore converts them.
  LEGACY_FIELDS: ClassVar[dict[str, str]] = {"step": "step", "params": "params", "batch_stats": "batch_stats",
                                             "opt_state": "opt_state"}

  def legacy_fields(self) -> dict[str, PyTree]:
    """This state's subtrees under their names in the legacy flat layout."""
    return {old: getattr(self, new) for new, old in self.LEGACY_FIELDS.items()}

  @classmethod
  def from_legacy(cls, old: dict[str, PyTree], like: Any) -> "OnlineState":
    """The state of a legacy checkpoint ``old`` (``{legacy field: subtree}``), shaped as ``like``."""
    del like
    return cls(**{new: old[name] for new, name in cls.LEGACY_FIELDS.items()})

  def with_encoder(self, place: Any) -> "OnlineState":
    """``spec.replace_encoder``: the online encoder's parameters and statistics from ``place()``."""
    return spec.replace_encoder(self, place)


def encode(encoder: nn.Module, params: PyTree, batch_stats: PyTree, images: jax.Array, *,
           groups: int, train: bool = True) -> tuple[jax.Array, PyTree]:
  """Pooled features of ``images`` with BatchNorm statistics per group.

  The batch ``images: [b, H, W, 3]`` is split into ``groups`` contiguous groups
  and each group is normalised with its own batch statistics -- exactly what
  ``groups`` devices with per-device BN compute. The running statistics are the
  mean of the groups' updates (what a pmean over those devices gives).

  Returns:
    ``(v [b, n] float32, new_batch_stats)``; in eval mode the stats are unchanged.
  """
  if not batch_stats:  # ViT, Swin: no BatchNorm statistics to group or update
    return encoder.apply({"params": params}, images, train=train), batch_stats
  variables = {"params": params, "batch_stats": batch_stats}
  if not train:
    return encoder.apply(variables, images, train=False), batch_stats
  b = images.shape[0]
  if b % groups:
    raise ValueError(f"encode: batch {b} is not divisible into {groups} BatchNorm groups")

  def one_group(x):
    v, updates = encoder.apply(variables, x, train=True, mutable=["batch_stats"])
    return v, updates["batch_stats"]

  if groups == 1:
    return one_group(images)
  grouped = images.reshape(groups, b // groups, *images.shape[1:])
  v, stats = jax.vmap(one_group)(grouped)
  return v.reshape(b, -1), jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)


def example_keys(rng: jax.Array, local_batch: int) -> jax.Array:
  """One PRNG key per example, by its position in the *global* batch.

  Seeding by global position (not by device) makes augmentation and noise
  independent of how the batch is split over devices.
  """
  offset = lax.axis_index(DATA_AXIS) * local_batch
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(offset + jnp.arange(local_batch))


def to_float_images(images: jax.Array) -> jax.Array:
  """uint8 ``[b, H, W, 3]`` -> float32 in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class ViewAugmentation:
  """The two-view augmentation of the SSL methods (static, hashable); defaults: MoCo v2 aug+.

  The config's ``augment`` block (:func:`from_config`); the small-image recipes
  change strengths and probabilities, never the order of the steps
  (`fgjax.data.augment.mocov2_augment`).
  """

  crop_scale: tuple[float, float] = (0.2, 1.0)
  jitter_strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
  jitter_prob: float = 0.8
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  flip_prob: float = 0.5

  @classmethod
  def from_config(cls, a: ml_collections.ConfigDict) -> "ViewAugmentation":
    return cls(crop_scale=tuple(float(x) for x in a.scale),
               jitter_strength=tuple(float(x) for x in a.jitter),
               jitter_prob=float(a.jitter_prob), grayscale_prob=float(a.grayscale_prob),
               blur_prob=float(a.blur_prob), flip_prob=0.5 if a.flip else 0.0)

  def apply(self, key: jax.Array, image01: jax.Array, out_size: int | None = None) -> jax.Array:
    """One augmented view of one image ``[H, W, 3]`` in [0, 1] (not normalised)."""
    return augment.mocov2_augment(
        key, image01[None], crop_scale=self.crop_scale, jitter_strength=self.jitter_strength,
        jitter_prob=self.jitter_prob, grayscale_prob=self.grayscale_prob, blur_prob=self.blur_prob,
        flip_prob=self.flip_prob, out_size=out_size)[0]


@dataclasses.dataclass(frozen=True)
class SSLHParams:
  """Static hyper-parameters of an SSL step (hashable): the shared ones, and each block's own.

  Attributes:
    local_bn_groups: BatchNorm groups per device (``model.bn_groups / devices``).
    image_size: training image side S; the host's base images may be larger
      (``data.base_size``).
    views: the two-view augmentation.
    joint_start_step: steps before the joint phase (decoder pre-training), not
      counted by the schedules.
    moco: MoCo's (``fgjax.methods.moco.MocoHParams``), None without a ``moco`` block.
    perturb: Perturb-SSL's (``fgjax.methods.perturb_ssl.PerturbHParams``), None
      without a ``perturb`` block.
  """
  local_bn_groups: int
  image_size: int | None = None
  views: ViewAugmentation = ViewAugmentation()
  joint_start_step: int = 0
  moco: Any = None
  perturb: Any = None


def augmented_views(rng: jax.Array, images01: jax.Array, image_size: int | None = None,
                    views: ViewAugmentation = ViewAugmentation()) -> tuple[jax.Array, jax.Array]:
  """Two views ``x' = T1(x), x'' = T2(x)`` (normalised), ``[b, S, S, 3]`` each.

  ``images01`` is the host's base image ``[b, H, W, 3]`` (H = W = data.base_size,
  the training size or larger); each view is a random resized crop of it at
  ``image_size`` (None: H), then the rest of ``views`` (default: MoCo v2 aug+).
  """
  rng1, rng2 = jax.random.split(rng)
  b = images01.shape[0]
  size = None if image_size is None or image_size == images01.shape[1] else image_size

  def one_view(key):
    keys = example_keys(key, b)
    out = jax.vmap(lambda k, im: views.apply(k, im, size))(keys, images01)
    return augment.normalize(out)

  return one_view(rng1), one_view(rng2)


def clean_view(images01: jax.Array, image_size: int | None = None) -> jax.Array:
  """The non-augmented image x at the training size: the whole base image resized (bilinear)."""
  if image_size is None or images01.shape[1:3] == (image_size, image_size):
    return images01
  return jax.image.resize(images01, (images01.shape[0], image_size, image_size, images01.shape[3]),
                          method="linear", antialias=True)


def shuffle_across_devices(images: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """This device's slice of the globally permuted batch: shuffle-BN's first half.

  The global batch (all devices' ``images``, all-gathered) is permuted with a
  permutation that every device draws alike from ``rng``; each device takes its
  slice. Its BatchNorm groups then hold other images than the same-numbered
  groups of an unshuffled batch, on one device with several groups as on many.

  Args:
    images: ``[b, ...]`` this device's images.

  Returns:
    ``(shuffled [b, ...], perm [B])``; ``perm`` undoes it (:func:`unshuffle_to_global`).
  """
  b = images.shape[0]
  everything = lax.all_gather(images, DATA_AXIS, tiled=True)
  perm = jax.random.permutation(rng, everything.shape[0])
  return everything[lax.dynamic_slice_in_dim(perm, lax.axis_index(DATA_AXIS) * b, b)], perm


def unshuffle_to_global(outputs: jax.Array, perm: jax.Array) -> jax.Array:
  """``[b, ...]`` per-device outputs of shuffled inputs -> ``[B, ...]`` in global batch order."""
  return lax.all_gather(outputs, DATA_AXIS, tiled=True)[jnp.argsort(perm)]


def local_slice(global_rows: jax.Array, b: int) -> jax.Array:
  """This device's ``b`` rows of a ``[B, ...]`` array in global batch order."""
  return lax.dynamic_slice_in_dim(global_rows, lax.axis_index(DATA_AXIS) * b, b)


def shuffled_keys(nets: Networks, momentum_params: PyTree, momentum_batch_stats: PyTree,
                  views: jax.Array, rng: jax.Array, *, groups: int, shuffle_bn: bool
                  ) -> tuple[jax.Array, jax.Array, PyTree]:
  """MoCo keys ``k = normalize(g_k(f_k(x'')))`` with shuffle-BN across all devices.

  The global batch of views is permuted with a permutation shared by all
  devices before the key encoder (so a BN group holds other images than the
  matching query group), then the keys are un-shuffled. One device with
  ``groups > 1`` BN groups computes the same as ``groups`` devices.

  Args:
    views: ``[b, H, W, 3]`` this device's key views.

  Returns:
    ``(local_keys [b, k], global_keys [B, k], new_momentum_batch_stats)``,
    gradient-free; ``global_keys`` are in global batch order (for the queue).
  """
  b = views.shape[0]
  if shuffle_bn:
    views, perm = shuffle_across_devices(views, rng)
  feats, new_stats = encode(nets.encoder, momentum_params["encoder"], momentum_batch_stats, views,
                            groups=groups)
  keys = losses.l2_normalize(nets.head.apply({"params": momentum_params["head"]}, feats))
  if shuffle_bn:
    global_keys = unshuffle_to_global(keys, perm)
  else:
    global_keys = lax.all_gather(keys, DATA_AXIS, tiled=True)
  local_keys = local_slice(global_keys, b)
  return lax.stop_gradient(local_keys), lax.stop_gradient(global_keys), new_stats


def apply_gradients(state: OnlineState, grads: PyTree, tx: optax.GradientTransformation
                    ) -> tuple[PyTree, PyTree]:
  """Averages per-device gradients over the data axis and takes one optimizer step."""
  grads = mean_over_devices(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), opt_state


def mean_over_devices(tree: PyTree) -> PyTree:
  """``lax.pmean`` over the data axis: gradients, BN statistics, metrics."""
  return lax.pmean(tree, DATA_AXIS)


def base_hparams(cfg: ml_collections.ConfigDict, num_devices: int, *, joint_start_step: int = 0) -> SSLHParams:
  """The shared part of an SSL step's settings (the methods add their blocks' own)."""
  return SSLHParams(local_bn_groups=cfg.model.bn_groups // num_devices, image_size=int(cfg.data.image_size),
                    views=ViewAugmentation.from_config(cfg.augment), joint_start_step=int(joint_start_step))


def with_encoder(state: OnlineState, place: Any) -> OnlineState:
  """``Method.with_encoder`` of every SSL method: the state's own ``with_encoder`` (a method with a key or
  target encoder starts it as a copy of the online one, in its own buffers)."""
  return state.with_encoder(place)


def make_setup(create_state, networks=contrastive_networks):
  """The ``setup`` of an SSL method with networks ``networks(cfg)`` and initial state
  ``create_state(cfg, nets, rng, tx)``.

  ``num_train`` (the opened training split's size) sets the schedule's length
  for data whose size the config cannot know (image folders); the state's
  structure does not depend on it.
  """
  def setup(cfg: ml_collections.ConfigDict, num_train: int | None = None, *, train_source: Any = None
            ) -> spec.Setup:
    del train_source  # SSL networks do not depend on the labels
    nets = networks(cfg)
    if num_train is None:
      num_train = config_blocks.num_train_examples(cfg) or cfg.data.global_batch_size
    joint_steps = config_blocks.total_train_steps(cfg, num_train)
    tx = optim.joint_optimizer(cfg, joint_steps)
    decoder_tx = optim.decoder_optimizer(cfg) if nets.decoder is not None else None
    init_state = functools.partial(create_state, cfg, nets, tx=tx)
    return spec.Setup(nets=nets, tx=tx, decoder_tx=decoder_tx, init_state=init_state, joint_steps=joint_steps)
  return setup


# --- An SSL base as hooks: its own step and Perturb-SSL's step (``perturb_ssl.wrap``) are built from them.


@dataclasses.dataclass(frozen=True)
class SSLLoss:
  """What a base's ``ssl_loss`` hook returns (inside the gradient).

  Attributes:
    loss: scalar, this device's mean SSL loss L_C.
    batch_stats: the online encoder's BatchNorm statistics after the passes.
    outputs: whatever the base's ``gradcam_loss`` hook needs of this pass (e.g.
      SimSiam's projection of view 2), a dict of arrays.
  """
  loss: jax.Array
  batch_stats: PyTree
  outputs: dict[str, jax.Array] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Base:
  """An SSL method written as hooks, so that Perturb-SSL can wrap it (``perturb_ssl.wrap``).

  The base's own step (:func:`ssl_step`) is ``forward`` (no gradient: the views,
  a target network), ``ssl_loss`` under ``jax.value_and_grad``, one optimizer
  step, then ``finish`` (queue, target network). Perturb-SSL adds its terms
  between them and needs two more hooks, which a base without them simply
  cannot be wrapped by:

  * ``gradcam_loss(params, ctx, outputs, *, nets, hp) -> loss(v)``: the SSL
    loss as a function of pooled features ``v [b, n] -> [b]``, the loss whose
    Grad-CAM scores Eq. 3 takes (no gradient into the networks);
  * ``pair_loss(params, f_a, f_b, *, nets, hp) -> (loss, top1)``: Eq. 7's pair
    term between two batches of encodings ``[b, n]`` (NT-Xent for a contrastive
    base, :func:`nt_xent_pairs`; the base's own loss for SimSiam and BYOL), this
    device's mean and the global pair top-1.

  Attributes:
    name: ``cfg.method``.
    blocks: the method's config blocks (``fgjax.config.ssl.Block``).
    networks: ``cfg -> Networks``.
    create_state: ``(cfg, nets, rng, tx) -> state``, the method's own state
      (a ``flax.struct.PyTreeNode``: ``OnlineState`` or a subclass, or
      ``perturb_ssl.PerturbState``).
    hparams: ``(cfg, setup, num_devices) -> SSLHParams``.
    forward: ``(state, images01 [b, H, W, 3], key, *, nets, hp) -> ctx`` (a dict).
    ssl_loss: ``(params, batch_stats, ctx, *, nets, hp) -> SSLLoss``.
    finish: ``(new_state, old_state, ctx) -> state`` after the optimizer step.
    gradcam_loss, pair_loss: Perturb-SSL's hooks (above), or None.
    features_loss: the SSL loss of a trained state as a function of pooled
      features (pictures; ``spec.Method.features_loss``), or None.
    joint_step: the step; None: :func:`ssl_step` of these hooks.
    pretrain_step, pretrain_steps, has_decoder: as ``spec.Method``'s (Perturb-SSL's).
    decoder_key: ``init rng -> key`` of Perturb-SSL's decoder, for a base whose
      runs drew it before the wrapper existed (MoCo, SimSiam: their Perturb
      runs reproduce bit for bit); None: a stream of its own.
  """
  name: str
  blocks: tuple[Any, ...]
  networks: Any
  create_state: Any
  hparams: Any
  forward: Any
  ssl_loss: Any
  finish: Any = None
  gradcam_loss: Any = None
  pair_loss: Any = None
  features_loss: Any = None
  joint_step: Any = None
  pretrain_step: Any = None
  pretrain_steps: Any = spec.no_pretraining
  has_decoder: bool = False
  decoder_key: Any = None

  def step(self):
    """The per-device joint step: ``joint_step`` or the hooks' :func:`ssl_step`."""
    return self.joint_step if self.joint_step is not None else ssl_step(self)


def no_finish(new_state: OnlineState, old_state: OnlineState, ctx: dict) -> OnlineState:
  """``Base.finish`` of a base with nothing to update after the optimizer step."""
  del old_state, ctx
  return new_state


def ssl_step(base: Base):
  """The per-device step of ``base``: ``(state, batch, rng, *, nets, hp, tx) -> (state, metrics)``."""
  finish = base.finish or no_finish

  def step(state: OnlineState, batch: dict[str, jax.Array], rng: jax.Array, *, nets: Networks, hp: SSLHParams,
           tx: optax.GradientTransformation) -> tuple[OnlineState, dict[str, jax.Array]]:
    key = jax.random.fold_in(rng, state.step)
    ctx = base.forward(state, to_float_images(batch["image"]), key, nets=nets, hp=hp)

    def loss_fn(params):
      out = base.ssl_loss(params, state.batch_stats, ctx, nets=nets, hp=hp)
      return out.loss, out.batch_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = apply_gradients(state, grads, tx)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              batch_stats=mean_over_devices(new_stats))
    return finish(new_state, state, ctx), mean_over_devices({"loss": loss, "loss_c": loss})
  return step


def two_views(state: OnlineState, images01: jax.Array, key: jax.Array, *, nets: Networks, hp: SSLHParams
              ) -> dict[str, jax.Array]:
  """``Base.forward`` of a base whose gradient-free part is only its two views: ``{'x1', 'x2'}``."""
  del state, nets
  x1, x2 = augmented_views(key, images01, hp.image_size, hp.views)
  return {"x1": x1, "x2": x2}


def nt_xent_pairs(z_a: jax.Array, z_b: jax.Array, *, temperature: float, positive_in_denominator: bool = True
                  ) -> tuple[jax.Array, jax.Array]:
  """NT-Xent (SimCLR Eq. 1) of this device's pairs ``(z_a[i], z_b[i])`` against every other embedding of the
  global batch (all-gathered): the pair-loss form of a contrastive base (Perturb-SSL Eq. 7).

  Args:
    z_a, z_b: ``[b, k]`` this device's L2-normalised embeddings.

  Returns:
    ``(this device's mean loss, the global pair top-1)``.
  """
  b = z_a.shape[0]
  z_all = lax.all_gather(z_a, DATA_AXIS, tiled=True)
  z_b_all = lax.all_gather(z_b, DATA_AXIS, tiled=True)
  per_pair = losses.nt_xent(z_a=z_all, z_b=z_b_all, temperature=temperature,
                            include_positive_in_denominator=positive_in_denominator)
  return jnp.mean(local_slice(per_pair, b)), losses.pair_top1_accuracy(z_all, z_b_all)


def head_pair_loss(params: PyTree, f_a: jax.Array, f_b: jax.Array, *, nets: Networks, hp: SSLHParams
                   ) -> tuple[jax.Array, jax.Array]:
  """``Base.pair_loss`` of a contrastive base (MoCo, SimCLR), Perturb-SSL Eq. 7: NT-Xent between
  ``normalize(g(f_a))`` and ``normalize(g(f_b))``, every other embedding of the global batch a negative.

  One head pass on the concatenation ``[2b, n]``; the temperature and the
  denominator are the ``perturb`` block's (``pair_temperature``,
  ``pair_positive_in_denominator``). Returns ``(this device's mean, the global pair top-1)``.
  """
  b = f_a.shape[0]
  z = losses.l2_normalize(nets.head.apply({"params": params["head"]}, jnp.concatenate([f_a, f_b])))
  return nt_xent_pairs(z[:b], z[b:], temperature=hp.perturb.pair_temperature,
                       positive_in_denominator=hp.perturb.pair_positive_in_denominator)
