"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations") as an fgjax method: the worked example of docs/adding_a_method.md.

Two augmented views ``x', x''`` of each image pass the encoder f and the
projection head g; ``z = normalize(g(f(x)))``. The loss is NT-Xent (SimCLR
Eq. 1): for each view, its other view is the positive and the ``2B - 2`` other
views of the *global* batch (all-gathered over devices) are the negatives.
No momentum network, no queue: the batch is the negative set.

Everything SimCLR needs beyond the shared SSL machinery is in this file: its
config block (``simclr``), its step's settings, its initial state and its step.
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
  """The shared SSL settings plus NT-Xent's temperature."""
  temperature: float = 0.2


def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> HParams:
  del setup
  base = common.base_hparams(cfg, num_devices)
  return HParams(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                 temperature=float(cfg.simclr.temperature))


def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                 tx: optax.GradientTransformation, decoder_tx: Any = None) -> common.TrainState:
  """Initial state: ``params = {'encoder', 'head'}``; no momentum network, queue or bank."""
  del decoder_tx
  s = cfg.data.image_size
  enc_rng, head_rng = jax.random.split(rng)
  dummy = jnp.zeros((2, s, s, 3), jnp.float32)
  enc_vars = nets.encoder.init(enc_rng, dummy, train=False)
  feats = nets.encoder.apply(enc_vars, dummy, train=False)
  params = {"encoder": enc_vars["params"], "head": nets.head.init(head_rng, feats)["params"]}
  zero, unused = jnp.zeros((), jnp.int32), jnp.zeros((1, 1), jnp.float32)  # (orbax saves no empty arrays)
  return common.TrainState(
      step=zero, params=params, batch_stats=enc_vars.get("batch_stats", {}), momentum_params={},
      momentum_batch_stats={}, opt_state=tx.init(params), decoder_opt_state=(), queue=unused,
      queue_ptr=zero, feature_bank=unused, bank_ptr=zero, bank_count=zero)


def simclr_step(state: common.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                nets: common.Networks, hp: HParams, tx: optax.GradientTransformation
                ) -> tuple[common.TrainState, dict[str, jax.Array]]:
  """One SimCLR step, per device: two views, NT-Xent over the global batch, SGD.

  Each device computes the loss of its own ``b`` pairs against all ``2B``
  embeddings, so the mean over devices is the loss of the global batch on any
  device count.
  """
  rng = jax.random.fold_in(rng, state.step)
  x1, x2 = common.augmented_views(rng, common.to_float_images(batch["image"]), hp.image_size, hp.views)
  b, groups = x1.shape[0], hp.local_bn_groups

  def loss_fn(params):
    f1, stats = common.encode(nets.encoder, params["encoder"], state.batch_stats, x1, groups=groups)
    f2, stats = common.encode(nets.encoder, params["encoder"], stats, x2, groups=groups)
    z1 = losses.l2_normalize(nets.head.apply({"params": params["head"]}, f1))
    z2 = losses.l2_normalize(nets.head.apply({"params": params["head"]}, f2))
    per_pair = losses.nt_xent(z_a=lax.all_gather(z1, DATA_AXIS, tiled=True),
                              z_b=lax.all_gather(z2, DATA_AXIS, tiled=True), temperature=hp.temperature)
    return jnp.mean(lax.dynamic_slice_in_dim(per_pair, lax.axis_index(DATA_AXIS) * b, b)), stats

  (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = common.apply_gradients(state, grads, tx)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            batch_stats=common.mean_over_devices(new_stats))
  return new_state, common.mean_over_devices({"loss": loss, "loss_c": loss})
