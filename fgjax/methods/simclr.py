"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations") as an fgjax method: the worked example of docs/adding_a_method.md.

Two augmented views ``x', x''`` of each image pass the encoder f and the
projection head g; ``z = normalize(g(f(x)))``. The loss is NT-Xent (SimCLR
Eq. 1): for each view, its other view is the positive and the ``2B - 2`` other
views of the *global* batch (all-gathered over devices) are the negatives.
No momentum network, no queue: the batch is the negative set.

Everything SimCLR needs beyond the shared SSL machinery is in this file: its
config block (``simclr``), its step's settings, its initial state and its loss,
as the hooks of an SSL base (``ssl_common.Base``): :data:`BASE` gives its step
and, wrapped by ``perturb_ssl.wrap``, Perturb-SimCLR's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from fgjax.config import ssl as ssl_config
from fgjax.config.fields import require
from fgjax.config.fields import require_positive
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import ssl_common as common
from fgjax.ops import losses


def _simclr_block() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.temperature = 0.2  # tau of NT-Xent (the MoCo recipe's; SimCLR's CIFAR runs used 0.5)
  return s


def _head_sizes(c: ml_collections.ConfigDict) -> None:
  c.model.head_hidden_dim = 0  # the projection head n-n-proj_dim (0: n, the encoder's width)
  c.model.proj_dim = 128


def _runlocal(c: ml_collections.ConfigDict) -> None:
  c.model.head_hidden_dim = 16
  c.model.proj_dim = 8


def _validate(cfg: ml_collections.ConfigDict) -> None:
  require_positive(cfg.simclr.temperature, "simclr.temperature")
  require(cfg.model.proj_dim >= 1, "model.proj_dim", f"must be >= 1, got {cfg.model.proj_dim}")


# The ``simclr`` block; the projection head's sizes in ``model``.
BLOCK = ssl_config.Block(name="simclr", fields=_simclr_block, defaults=_head_sizes, validate=_validate,
                         presets={"runlocal": _runlocal})


@dataclasses.dataclass(frozen=True)
class HParams(common.SSLHParams):
  """The shared SSL settings plus NT-Xent's temperature (the ``simclr`` block's: keyword-only, no default)."""
  temperature: float = dataclasses.field(kw_only=True)


def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> HParams:
  del setup
  base = common.base_hparams(cfg, num_devices)
  return HParams(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                 temperature=float(cfg.simclr.temperature))


def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                 tx: optax.GradientTransformation) -> common.OnlineState:
  """Initial state (``common.OnlineState``): ``params = {'encoder', 'head'}``, nothing else."""
  s = cfg.data.image_size
  enc_rng, head_rng = jax.random.split(rng)
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  feats = nets.encoder.apply(enc_vars, dummy, train=False)
  params = {"encoder": enc_vars["params"], "head": nets.head.init(head_rng, feats)["params"]}
  return common.OnlineState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=enc_vars.get("batch_stats", {}), opt_state=tx.init(params))


def ssl_loss(params: Any, batch_stats: Any, ctx: dict[str, jax.Array], *, nets: common.Networks, hp: HParams
             ) -> common.SSLLoss:
  """NT-Xent of this device's ``b`` pairs against all ``2B`` embeddings of the global batch, so that the mean
  over devices is the loss of the global batch on any device count. ``outputs``: ``{'z_all' [2B, k]}``, the
  global batch's normalised embeddings, view 1 then view 2 (the Grad-CAM loss's candidates)."""
  x1, x2 = ctx["x1"], ctx["x2"]
  b, groups = x1.shape[0], hp.local_bn_groups
  f1, stats = common.encode(nets.encoder, params["encoder"], batch_stats, x1, groups=groups)
  f2, stats = common.encode(nets.encoder, params["encoder"], stats, x2, groups=groups)
  z1 = losses.l2_normalize(nets.head.apply({"params": params["head"]}, f1))
  z2 = losses.l2_normalize(nets.head.apply({"params": params["head"]}, f2))
  z1_all, z2_all = lax.all_gather(z1, DATA_AXIS, tiled=True), lax.all_gather(z2, DATA_AXIS, tiled=True)
  per_pair = losses.nt_xent(z_a=z1_all, z_b=z2_all, temperature=hp.temperature)
  loss = jnp.mean(lax.dynamic_slice_in_dim(per_pair, lax.axis_index(DATA_AXIS) * b, b))
  return common.SSLLoss(loss=loss, batch_stats=stats, outputs={"z_all": jnp.concatenate([z1_all, z2_all])})


def gradcam_loss(params: Any, ctx: dict[str, jax.Array], outputs: dict[str, jax.Array], *,
                 nets: common.Networks, hp: HParams):
  """Perturb-SSL's hook: NT-Xent with the clean image's ``z = normalize(g(v))`` as the anchor in place of view
  1: positive its view 2, negatives both views of every other image of the global batch (no gradient into
  them or the head; float32 head). ``v [b, n] -> [b]``."""
  del ctx
  head = nets.head.clone(dtype=jnp.float32)
  head_params = lax.stop_gradient(params["head"])
  candidates = lax.stop_gradient(outputs["z_all"])  # [2B, k]
  big_b = candidates.shape[0] // 2

  def per_example_loss(v):
    b = v.shape[0]
    own = lax.axis_index(DATA_AXIS) * b + jnp.arange(b)  # global positions of this device's images
    z = losses.l2_normalize(head.apply({"params": head_params}, v))
    logits = z @ candidates.T / hp.temperature  # [b, 2B]
    logits = jnp.where(jnp.arange(2 * big_b)[None, :] == own[:, None], -jnp.inf, logits)  # not its view 1
    return jax.nn.logsumexp(logits, axis=-1) - logits[jnp.arange(b), big_b + own]
  return per_example_loss


def features_loss(nets: common.Networks, state: common.OnlineState, cfg: ml_collections.ConfigDict,
                  x_pos: jax.Array):
  """``(loss(v) [N, n] -> [N], z_pos [N, k])``: the SSL loss of a trained state as a function of pooled
  features (Grad-CAM pictures): InfoNCE of ``normalize(g(v))`` with its positive ``normalize(g(f(x_pos)))``
  (eval-mode BN) against the other images' positives; float32 head."""
  head = nets.head.clone(dtype=jnp.float32)
  params = state.params
  f_pos = nets.encoder.apply({"params": params["encoder"], "batch_stats": state.batch_stats}, x_pos, train=False)
  z_pos = lax.stop_gradient(losses.l2_normalize(head.apply({"params": params["head"]}, f_pos)))

  def loss(v):
    logits = losses.l2_normalize(head.apply({"params": params["head"]}, v)) @ z_pos.T / cfg.simclr.temperature
    return jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)
  return loss, z_pos


# SimCLR as hooks: its step (``common.ssl_step``) and Perturb-SimCLR's (``perturb_ssl.wrap``).
BASE = common.Base(name="simclr", blocks=(BLOCK,), networks=common.contrastive_networks,
                   create_state=create_state, hparams=hparams, forward=common.two_views, ssl_loss=ssl_loss,
                   gradcam_loss=gradcam_loss, pair_loss=common.head_pair_loss,
                   features_loss=features_loss)
simclr_step = common.ssl_step(BASE)
