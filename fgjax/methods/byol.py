"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent") as an fgjax SSL base: its config block, networks,
state and hooks (``ssl_common.Base``), from which its step and, wrapped by ``perturb_ssl.wrap``,
Perturb-BYOL's come.

An online network (encoder f, projector g, predictor q) predicts the target
network's projection of the other view; the target (f_xi, g_xi) is an EMA of
the online encoder and projector, its coefficient rising from ``byol.momentum``
to ``byol.final_momentum`` along a cosine (BYOL Sec. 3.2). The loss is the
symmetrised normalised MSE ``2 - 2 cos(q(g(f(x'))), sg(g_xi(f_xi(x''))))``
(Eq. 2, ``fgjax.ops.byol_losses``). No negatives, no queue.

The EMA is applied before the target's forward pass, from the online weights
of the previous step's update: the same sequence of target weights as BYOL's
update after the optimizer step, ordered like MoCo's key network.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar

import flax.linen as nn
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
from fgjax.ops import byol_losses
from fgjax.ops import losses
from fgjax.ops import queue as queue_lib


PyTree = Any


class MLP(nn.Module):
  """BYOL's projector and predictor: ``Dense(hidden) -> BN -> ReLU -> Dense(out)`` (Sec. 3.3), ``[b, d] -> [b, out]``.

  BatchNorm is synchronised over ``bn_axis_name`` (the data axis in training:
  statistics of the global batch); its running statistics are never used.
  """
  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, name="dense1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     axis_name=self.bn_axis_name if train else None, name="bn1")(x)
    x = nn.Dense(self.out_dim, dtype=self.dtype, name="dense2")(nn.relu(x))
    return x.astype(jnp.float32)


def _byol_block() -> ml_collections.ConfigDict:
  b = ml_collections.ConfigDict()
  # The paper's 4096-d hidden layers and 256-d projection, scaled by 1/4 with the quarter-width encoder of
  # the CPU default (the cub200 preset: 4096 / 256).
  b.hidden_dim = 1024
  b.proj_dim = 64
  b.momentum = 0.99  # tau_base (solo-learn's CIFAR recipe; the paper's ImageNet: 0.996)
  b.final_momentum = 1.0  # tau at the end of training (cosine increase, Sec. 3.2)
  return b


def _cub200(c: ml_collections.ConfigDict) -> None:
  c.byol.hidden_dim = 4096
  c.byol.proj_dim = 256
  c.byol.momentum = 0.996


def _runlocal(c: ml_collections.ConfigDict) -> None:
  c.byol.hidden_dim = 16
  c.byol.proj_dim = 8


def _validate(cfg: ml_collections.ConfigDict) -> None:
  b = cfg.byol
  require(b.hidden_dim >= 1 and b.proj_dim >= 1, "byol.hidden_dim", "projector and predictor dims must be >= 1")
  for field in ("momentum", "final_momentum"):
    require(0.0 <= b[field] <= 1.0, f"byol.{field}", f"must be in [0, 1], got {b[field]}")


# The ``byol`` block: MLP sizes and the target network's EMA. The optimiser is the shared small-image SGD
# recipe (the BYOL paper gives no CIFAR recipe; its ImageNet one is LARS).
BLOCK = ssl_config.Block(name="byol", fields=_byol_block, validate=_validate,
                         presets={"cub200": _cub200, "runlocal": _runlocal})


@dataclasses.dataclass(frozen=True)
class HParams(common.SSLHParams):
  """The shared SSL settings plus the EMA schedule of the target network (the ``byol`` block's values:
  keyword-only, no defaults of their own)."""
  momentum: float = dataclasses.field(kw_only=True)
  final_momentum: float = dataclasses.field(kw_only=True)
  momentum_steps: int = dataclasses.field(kw_only=True)


def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> HParams:
  base = common.base_hparams(cfg, num_devices)
  return HParams(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                 momentum=float(cfg.byol.momentum), final_momentum=float(cfg.byol.final_momentum),
                 momentum_steps=int(setup.joint_steps))


def networks(cfg: ml_collections.ConfigDict) -> common.Networks:
  """Encoder f, projector g and predictor q (the target network shares f's and g's modules)."""
  b, dtype = cfg.byol, jnp.dtype(cfg.model.dtype)
  mlp = MLP(hidden_dim=b.hidden_dim, out_dim=b.proj_dim, dtype=dtype, bn_axis_name=DATA_AXIS)
  return common.Networks(encoder=encoders.build(cfg.model), head=mlp, predictor=mlp.clone())


class ByolState(common.OnlineState):
  """BYOL's state: the online network's (``common.OnlineState``, ``params = {'encoder', 'head', 'predictor'}``)
  and the target network xi.

  Attributes:
    target_params: ``{'encoder', 'head'}``, EMA of the online encoder and projector (BYOL Eq. 1).
    target_batch_stats: BatchNorm running statistics of the target encoder.
  """

  target_params: PyTree
  target_batch_stats: PyTree

  # (BYOL's first runs kept the target where MoCo keeps its key network.)
  LEGACY_FIELDS: ClassVar[dict[str, str]] = {**common.OnlineState.LEGACY_FIELDS,
                                             "target_params": "momentum_params",
                                             "target_batch_stats": "momentum_batch_stats"}

  def with_encoder(self, place: Any) -> "ByolState":
    """The online encoder from ``place()``, and the target encoder starts as a copy of it (its own buffers)."""
    state = common.OnlineState.with_encoder(self, place)
    params, batch_stats = place()
    return state.replace(target_params={**state.target_params, "encoder": params}, target_batch_stats=batch_stats)


def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                 tx: optax.GradientTransformation) -> ByolState:
  """Initial state: online ``{'encoder', 'head', 'predictor'}``, target ``{'encoder', 'head'}`` a copy."""
  s = cfg.data.image_size
  enc_rng, head_rng, pred_rng = jax.random.split(rng, 3)
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  feats = nets.encoder.apply(enc_vars, dummy, train=False)
  head, predictor = nets.head.clone(bn_axis_name=None), nets.predictor.clone(bn_axis_name=None)
  params = {"encoder": enc_vars["params"], "head": head.init(head_rng, feats, train=False)["params"],
            "predictor": predictor.init(pred_rng, jnp.zeros((2, cfg.byol.proj_dim)), train=False)["params"]}
  stats = enc_vars.get("batch_stats", {})
  return ByolState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats, opt_state=tx.init(params),
                   target_params=jax.tree.map(jnp.copy, {"encoder": params["encoder"], "head": params["head"]}),
                   target_batch_stats=jax.tree.map(jnp.copy, stats))


def _mlp(module: nn.Module, params: PyTree, x: jax.Array) -> jax.Array:
  """An MLP in training mode (batch statistics), its running statistics discarded."""
  return module.apply({"params": params}, x, train=True, mutable=["batch_stats"])[0]


def project_and_predict(nets: common.Networks, params: PyTree, features: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
  """``(z, p) = (g(v), q(g(v)))`` of the online network, ``[b, d]`` each."""
  z = _mlp(nets.head, params["head"], features)
  return z, _mlp(nets.predictor, params["predictor"], z)


def forward(state: ByolState, images01: jax.Array, key: jax.Array, *, nets: common.Networks,
            hp: HParams) -> dict[str, Any]:
  """The gradient-free part: two views, the EMA update of the target, its projections of both views.

  Returns:
    ``{'x1', 'x2', 't1', 't2' [b, d], 'target_params', 'target_stats'}``.
  """
  x1, x2 = common.augmented_views(key, images01, hp.image_size, hp.views)
  tau = queue_lib.cosine_momentum(state.step - hp.joint_start_step, base=hp.momentum, final=hp.final_momentum,
                                  total_steps=hp.momentum_steps)
  online = {"encoder": state.params["encoder"], "head": state.params["head"]}
  target = queue_lib.momentum_update(online=online, target=state.target_params, momentum=tau)
  groups = hp.local_bn_groups
  f1, stats = common.encode(nets.encoder, target["encoder"], state.target_batch_stats, x1, groups=groups)
  f2, stats = common.encode(nets.encoder, target["encoder"], stats, x2, groups=groups)
  t1, t2 = _mlp(nets.head, target["head"], f1), _mlp(nets.head, target["head"], f2)
  return {"x1": x1, "x2": x2, "t1": lax.stop_gradient(t1), "t2": lax.stop_gradient(t2),
          "target_params": target, "target_stats": stats}


def ssl_loss(params: PyTree, batch_stats: PyTree, ctx: dict[str, Any], *, nets: common.Networks,
             hp: HParams) -> common.SSLLoss:
  """BYOL's symmetrised loss: each view's online prediction against the target's projection of the other."""
  groups = hp.local_bn_groups
  f1, stats = common.encode(nets.encoder, params["encoder"], batch_stats, ctx["x1"], groups=groups)
  f2, stats = common.encode(nets.encoder, params["encoder"], stats, ctx["x2"], groups=groups)
  _, p1 = project_and_predict(nets, params, f1)
  _, p2 = project_and_predict(nets, params, f2)
  loss = jnp.mean(byol_losses.symmetric_byol_loss(p1=p1, z2=ctx["t2"], p2=p2, z1=ctx["t1"]))
  return common.SSLLoss(loss=loss, batch_stats=stats)


def finish(new_state: ByolState, old_state: ByolState, ctx: dict[str, Any]
           ) -> ByolState:
  """After the optimizer step: the target network of this step."""
  del old_state
  return new_state.replace(target_params=ctx["target_params"],
                           target_batch_stats=common.mean_over_devices(ctx["target_stats"]))


def gradcam_loss(params: PyTree, ctx: dict[str, Any], outputs: dict[str, jax.Array], *,
                 nets: common.Networks, hp: HParams):
  """Perturb-SSL's hook: ``nmse(q(g(v)), sg(t2))`` per example, the clean image's prediction against the
  target's projection of view 2; float32 heads, no gradient into them. ``v [b, n] -> [b]``."""
  del outputs, hp
  nets = common.float32_heads(nets)
  params = lax.stop_gradient(params)

  def per_example_loss(v):
    return byol_losses.normalized_mse(project_and_predict(nets, params, v)[1], ctx["t2"])
  return per_example_loss


def pair_loss(params: PyTree, f_a: jax.Array, f_b: jax.Array, *, nets: common.Networks, hp: HParams
              ) -> tuple[jax.Array, jax.Array]:
  """Perturb-SSL's hook, Eq. 7 in BYOL's form: the symmetrised loss between the two encodings, each one's
  online projection the other's target (stop-gradient; the target network is not run on the
  reconstructions). Returns ``(this device's mean, the global pair top-1 of the projections)``."""
  del hp
  z_a, p_a = project_and_predict(nets, params, f_a)
  z_b, p_b = project_and_predict(nets, params, f_b)
  per_example = byol_losses.symmetric_byol_loss(p1=p_a, z2=z_b, p2=p_b, z1=z_a)
  top1 = losses.pair_top1_accuracy(lax.all_gather(z_a, DATA_AXIS, tiled=True),
                                   lax.all_gather(z_b, DATA_AXIS, tiled=True))
  return jnp.mean(per_example), top1


def features_loss(nets: common.Networks, state: ByolState, cfg: ml_collections.ConfigDict,
                  x_pos: jax.Array):
  """``(loss(v) [N, n] -> [N], t_pos [N, d])``: ``nmse(q(g(v)), sg(g_xi(f_xi(x_pos))))`` of a trained state
  (Grad-CAM pictures): target encoder in eval mode, MLP BatchNorm over the picture batch."""
  del cfg
  nets = common.without_sync_bn(nets)
  target = state.target_params
  v_pos = nets.encoder.apply({"params": target["encoder"], "batch_stats": state.target_batch_stats},
                             x_pos, train=False)
  t_pos = lax.stop_gradient(_mlp(nets.head, target["head"], v_pos))

  def loss(v):
    return byol_losses.normalized_mse(project_and_predict(nets, state.params, v)[1], t_pos)
  return loss, t_pos


# BYOL as hooks: its step (``common.ssl_step``) and Perturb-BYOL's (``perturb_ssl.wrap``).
BASE = common.Base(name="byol", blocks=(BLOCK,), networks=networks, create_state=create_state, hparams=hparams,
                   forward=forward, ssl_loss=ssl_loss, finish=finish, gradcam_loss=gradcam_loss,
                   pair_loss=pair_loss, features_loss=features_loss)
