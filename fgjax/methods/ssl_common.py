"""Pieces shared by the SSL steps (MoCo and SimSiam bases): networks, train state, grouped BN, views.

Everything here is per device (called inside ``shard_map`` over ``'data'``).
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
from jax import lax

from fgjax import optim
from fgjax.config import blocks as config_blocks
from fgjax.data import augment
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import spec
from fgjax.models import decoder as decoder_lib
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


def build_networks(cfg: ml_collections.ConfigDict) -> Networks:
  """Encoder f, the base's head (and SimSiam's predictor) and Perturb-SSL's decoder h.

  Which networks a method has follows from its config blocks (the blocks are
  the method's, ``fgjax.methods.registry``): ``simsiam`` -> projector and
  predictor, else MoCo's projection head; ``perturb`` -> the decoder.
  """
  m = cfg.model
  dtype = jnp.dtype(m.dtype)
  encoder = encoders.build(m)
  n = encoders.feature_dim(m)
  predictor = None
  if "simsiam" in cfg:
    # BatchNorm of projector and predictor synchronised over the data axis (SimSiam
    # uses SyncBN): statistics of the global batch, whatever the device count.
    ss = cfg.simsiam
    head = heads_lib.SimSiamProjector(hidden_dim=ss.proj_dim, out_dim=ss.proj_dim, dtype=dtype,
                                      bn_axis_name=DATA_AXIS)
    predictor = heads_lib.SimSiamPredictor(hidden_dim=ss.pred_hidden_dim, out_dim=ss.proj_dim,
                                           dtype=dtype, bn_axis_name=DATA_AXIS)
  else:
    head = heads_lib.ProjectionHead(hidden_dims=(m.head_hidden_dim or n,), out_dim=m.proj_dim, dtype=dtype)
  decoder = None
  if "perturb" in cfg:
    decoder = decoder_lib.Decoder(
        image_size=cfg.data.image_size, base_channels=m.decoder_channels,
        num_upsamples=m.decoder_upsamples, dtype=dtype)
  return Networks(encoder=encoder, head=head, decoder=decoder, predictor=predictor)


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


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly (checkpointed whole).

  Attributes:
    step: int32 scalar, number of optimizer steps taken (decoder pre-training
      steps included).
    params: ``{'encoder', 'head'[, 'decoder']}`` online parameters.
    batch_stats: BatchNorm running statistics of the online encoder.
    momentum_params: ``{'encoder', 'head'}`` key (momentum) network, EMA of params.
    momentum_batch_stats: BatchNorm running statistics of the key encoder.
    opt_state: optax state of the joint optimizer (all of ``params``).
    decoder_opt_state: optax state of the decoder pre-training optimizer (``()``
      for plain MoCo).
    queue: ``[K, proj_dim]`` L2-normalised keys (MoCo negatives), a ring buffer.
    queue_ptr: int32 scalar, next row of ``queue`` to write.
    feature_bank: ``[D, n]`` memory bank M of pooled features (an unused
      ``[1, 1]`` placeholder for plain MoCo).
    bank_ptr: int32 scalar, next row of ``feature_bank`` to write.
    bank_count: int32 scalar, rows of ``feature_bank`` filled so far (<= D).
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  momentum_params: PyTree
  momentum_batch_stats: PyTree
  opt_state: PyTree
  decoder_opt_state: PyTree
  queue: jax.Array
  queue_ptr: jax.Array
  feature_bank: jax.Array
  bank_ptr: jax.Array
  bank_count: jax.Array


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


def apply_gradients(state: TrainState, grads: PyTree, tx: optax.GradientTransformation
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


def with_encoder(state: TrainState, place: Any) -> TrainState:
  """``spec.replace_encoder``, and the key (momentum) encoder, where the method has one, from the same weights
  (its own buffers): MoCo's key encoder starts as a copy of the query encoder."""
  state = spec.replace_encoder(state, place)
  if "encoder" in state.momentum_params:
    params, batch_stats = place()
    state = state.replace(momentum_params={**state.momentum_params, "encoder": params},
                          momentum_batch_stats=batch_stats)
  return state


def make_setup(create_state):
  """The ``setup`` of an SSL method whose initial state is ``create_state(cfg, nets, rng, tx, decoder_tx)``.

  ``num_train`` (the opened training split's size) sets the schedule's length
  for data whose size the config cannot know (image folders); the state's
  structure does not depend on it.
  """
  def setup(cfg: ml_collections.ConfigDict, num_train: int | None = None, *, train_source: Any = None
            ) -> spec.Setup:
    del train_source  # SSL networks do not depend on the labels
    nets = build_networks(cfg)
    if num_train is None:
      num_train = config_blocks.num_train_examples(cfg) or cfg.data.global_batch_size
    joint_steps = config_blocks.total_train_steps(cfg, num_train)
    tx = optim.joint_optimizer(cfg, joint_steps)
    decoder_tx = optim.decoder_optimizer(cfg) if nets.decoder is not None else None
    init_state = functools.partial(create_state, cfg, nets, tx=tx, decoder_tx=decoder_tx)
    return spec.Setup(nets=nets, tx=tx, decoder_tx=decoder_tx, init_state=init_state, joint_steps=joint_steps)
  return setup
