"""SimSiam (Chen & He, CVPR 2021) as the second base of Perturb-SSL: state and the per-device step.

``L = 0.5 D(h(z1), sg(z2)) + 0.5 D(h(z2), sg(z1))`` with ``z = g(f(x))``, ``D``
the negative cosine, ``g`` the 3-layer projector with BN, ``h`` the bottleneck
predictor (``losses.simsiam_loss``). Projector and predictor BatchNorms are
synchronised over the data axis (SimSiam's SyncBN); their running statistics
are never used (evaluation reads the encoder), so they are not kept in the
state. No momentum network and no queue: its state is ``ssl_common.OnlineState``
(step, params, BatchNorm statistics, optimizer state), nothing else.

SimSiam is written as hooks (``ssl_common.Base``): :data:`BASE` gives its step and,
wrapped by ``perturb_ssl.wrap``, Perturb-SimSiam's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from fgjax.config import ssl as ssl_config
from fgjax.config.fields import require
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import ssl_common as common
from fgjax.models import encoders
from fgjax.models import heads as heads_lib
from fgjax.ops import losses


PyTree = Any


def _simsiam_block() -> ml_collections.ConfigDict:
  ss = ml_collections.ConfigDict()
  # The paper's 2048-d projector and 512-d predictor bottleneck, scaled by 1/4
  # with the quarter-width encoder of the CPU default (the cub200 preset: 2048/512).
  ss.proj_dim = 512
  ss.pred_hidden_dim = 128
  ss.fixed_predictor_lr = True  # the official recipe: no cosine decay for the predictor
  return ss


def _defaults(c: ml_collections.ConfigDict) -> None:
  # SimSiam's small-image recipe (solo-learn's CIFAR config): lr 0.5 per 256 images
  # (the paper's ImageNet 0.05 is the cub200 preset's). Measured on the default
  # data, seed 0, 800 steps: kNN fine / super 47.4 / 78.6 % at 0.5 against
  # 22.7 / 49.7 % at 0.05 (random init: 16.2 / 39.6 %).
  c.optim.base_lr = 0.5


def _cub200(c: ml_collections.ConfigDict) -> None:
  c.simsiam.proj_dim = 2048
  c.simsiam.pred_hidden_dim = 512
  c.optim.base_lr = 0.05


def _runlocal(c: ml_collections.ConfigDict) -> None:
  c.simsiam.proj_dim = 32
  c.simsiam.pred_hidden_dim = 8


def _validate(cfg: ml_collections.ConfigDict) -> None:
  require(cfg.simsiam.proj_dim >= 1 and cfg.simsiam.pred_hidden_dim >= 1, "simsiam.proj_dim",
          "projector and predictor dims must be >= 1")


# The ``simsiam`` block: projector and predictor sizes, the predictor's fixed learning rate.
BLOCK = ssl_config.Block(name="simsiam", fields=_simsiam_block, defaults=_defaults, validate=_validate,
                         presets={"cub200": _cub200, "runlocal": _runlocal})


def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> common.SSLHParams:
  """SimSiam's step needs only the shared settings (its block sizes the networks)."""
  del setup
  return common.base_hparams(cfg, num_devices)


def networks(cfg: ml_collections.ConfigDict) -> common.Networks:
  """Encoder f, the 3-layer projector g and the bottleneck predictor h.

  BatchNorm of projector and predictor synchronised over the data axis (SimSiam
  uses SyncBN): statistics of the global batch, whatever the device count.
  """
  ss, dtype = cfg.simsiam, jnp.dtype(cfg.model.dtype)
  head = heads_lib.SimSiamProjector(hidden_dim=ss.proj_dim, out_dim=ss.proj_dim, dtype=dtype,
                                    bn_axis_name=DATA_AXIS)
  predictor = heads_lib.SimSiamPredictor(hidden_dim=ss.pred_hidden_dim, out_dim=ss.proj_dim, dtype=dtype,
                                         bn_axis_name=DATA_AXIS)
  return common.Networks(encoder=encoders.build(cfg.model), head=head, predictor=predictor)


def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                 tx: optax.GradientTransformation) -> common.OnlineState:
  """Initial state: ``params = {'encoder', 'head' (projector), 'predictor'}``."""
  s = cfg.data.image_size
  enc_rng, head_rng, pred_rng, _ = jax.random.split(rng, 4)  # the fourth: Perturb-SimSiam's decoder
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
  return common.OnlineState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=enc_vars.get("batch_stats", {}), opt_state=tx.init(params))


def project_and_predict(nets: common.Networks, params: PyTree, features: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
  """``(z, p) = (g(v), h(g(v)))`` in training mode (batch statistics, synchronised), ``[b, d]`` each."""
  z, _ = nets.head.apply({"params": params["head"]}, features, train=True, mutable=["batch_stats"])
  p, _ = nets.predictor.apply({"params": params["predictor"]}, z, train=True, mutable=["batch_stats"])
  return z, p


def pair_loss(nets: common.Networks, params: PyTree, features_a: jax.Array, features_b: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Symmetric SimSiam loss between two batches of features ``[b, n]``.

  Returns:
    ``(per-example losses [b], z_a [b, d], z_b [b, d])``: the projections too (diagnostics).
  """
  z_a, p_a = project_and_predict(nets, params, features_a)
  z_b, p_b = project_and_predict(nets, params, features_b)
  return losses.simsiam_loss(p1=p_a, z2=z_b, p2=p_b, z1=z_a), z_a, z_b


def ssl_loss(params: PyTree, batch_stats: PyTree, ctx: dict[str, jax.Array], *, nets: common.Networks,
             hp: common.SSLHParams) -> common.SSLLoss:
  """The symmetric SimSiam loss of the two views; both pass the encoder as separate batches (per-group BN
  statistics, as two forward calls in the official code). ``outputs``: ``{'z2'}``, view 2's projection."""
  groups = hp.local_bn_groups
  f1, stats = common.encode(nets.encoder, params["encoder"], batch_stats, ctx["x1"], groups=groups)
  f2, stats = common.encode(nets.encoder, params["encoder"], stats, ctx["x2"], groups=groups)
  z1, p1 = project_and_predict(nets, params, f1)
  z2, p2 = project_and_predict(nets, params, f2)
  loss = jnp.mean(losses.simsiam_loss(p1=p1, z2=z2, p2=p2, z1=z1))
  return common.SSLLoss(loss=loss, batch_stats=stats, outputs={"z2": z2})


def gradcam_loss(params: PyTree, ctx: dict[str, jax.Array], outputs: dict[str, jax.Array], *,
                 nets: common.Networks, hp: common.SSLHParams):
  """Perturb-SSL's hook: ``L(v) = D(h(g(v)), sg(z2))`` per example, the clean image's prediction against
  view 2's projection (the symmetric term ``D(p2, sg(g(v)))`` has no gradient in v).

  Projector and predictor in float32 whatever ``model.dtype`` (same
  parameters, no gradient into them): ``v [b, n] -> [b]``.
  """
  del ctx, hp
  nets = common.float32_heads(nets)
  params = lax.stop_gradient(params)
  target = lax.stop_gradient(outputs["z2"])

  def per_example_loss(v):
    _, p = project_and_predict(nets, params, v)
    return losses.simsiam_loss(p1=p, z2=target, p2=p, z1=target)  # = D(p, sg(z2)) per example
  return per_example_loss


def pair_loss_hook(params: PyTree, f_a: jax.Array, f_b: jax.Array, *, nets: common.Networks,
                   hp: common.SSLHParams) -> tuple[jax.Array, jax.Array]:
  """Perturb-SSL's hook, Eq. 7 in SimSiam form: the symmetric SimSiam loss between ``f_a`` and ``f_b``
  (SimSiam has no negatives, so no NT-Xent). Returns ``(this device's mean, the global pair top-1 of the
  projections)``; the top-1 only reports how recognisable the pairs are."""
  del hp
  per_example, z_a, z_b = pair_loss(nets, params, f_a, f_b)
  top1 = losses.pair_top1_accuracy(lax.all_gather(z_a, DATA_AXIS, tiled=True),
                                   lax.all_gather(z_b, DATA_AXIS, tiled=True))
  return jnp.mean(per_example), top1


def features_loss(nets: common.Networks, state: common.OnlineState, cfg: ml_collections.ConfigDict,
                  x_pos: jax.Array):
  """``(loss(v) [N, n] -> [N], z_pos [N, d])``: SimSiam's ``D(h(g(v)), sg(g(f(x_pos))))`` per example.

  For Grad-CAM pictures: projector and predictor BatchNorm over the picture
  batch, not synchronised (no device axis outside training).
  """
  del cfg
  nets = common.without_sync_bn(nets)
  params = state.params
  v_pos = nets.encoder.apply({"params": params["encoder"], "batch_stats": state.batch_stats},
                             x_pos, train=False)
  z_pos, _ = project_and_predict(nets, params, v_pos)
  z_pos = jax.lax.stop_gradient(z_pos)

  def loss(v):
    _, p = project_and_predict(nets, params, v)
    return losses.simsiam_loss(p1=p, z2=z_pos, p2=p, z1=z_pos)
  return loss, z_pos


# SimSiam as hooks: its step (``common.ssl_step``) and Perturb-SimSiam's (``perturb_ssl.wrap``).
BASE = common.Base(name="simsiam", blocks=(BLOCK,), networks=networks, create_state=create_state,
                   hparams=hparams, forward=common.two_views, ssl_loss=ssl_loss, gradcam_loss=gradcam_loss,
                   pair_loss=pair_loss_hook, features_loss=features_loss,
                   decoder_key=lambda rng: jax.random.split(rng, 4)[3])
simsiam_step = common.ssl_step(BASE)
