"""What the training loop and the evaluator need to know about each method.

One place maps ``cfg.method`` to its networks, its initial state (the same
function for training, for a checkpoint template and for the random-init
baseline) and the frozen model that evaluation uses. A new method (SimSiam,
Base-Indi, SupCon, ...) adds one entry here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from fgjax import config_lib
from fgjax import optim
from fgjax import supervised_config
from fgjax.methods import base_indi
from fgjax.methods import moco
from fgjax.methods import perturb_moco
from fgjax.methods import perturb_simsiam
from fgjax.methods import simsiam
from fgjax.methods import ssl_common
from fgjax.methods import supcon

SSL_METHODS = config_lib.SSL_METHODS
_CREATE_STATE = {"moco": moco.create_state, "perturb_moco": moco.create_state,
                 "simsiam": simsiam.create_state, "perturb_simsiam": simsiam.create_state}
# The joint step of each method: pure (state, batch, rng, *, nets, hp, tx) -> (state, metrics).
JOINT_STEPS = {"moco": moco.moco_step, "perturb_moco": perturb_moco.perturb_moco_step,
               "simsiam": simsiam.simsiam_step, "perturb_simsiam": perturb_simsiam.perturb_simsiam_step,
               **{m: base_indi.base_indi_step for m in supervised_config.BASE_INDI_METHODS},
               **{m: supcon.supcon_step for m in supervised_config.HCL_METHODS}}
METHODS = SSL_METHODS + supervised_config.METHODS


@dataclasses.dataclass(frozen=True)
class Setup:
  """A method's modules, optimizers and initial-state function.

  Attributes:
    nets: the Flax modules.
    tx: optimizer of the joint training steps.
    decoder_tx: optimizer of decoder pre-training (Perturb-SSL), else None.
    init_state: ``rng -> TrainState`` (pure; jit it, or ``jax.eval_shape`` it
      for a checkpoint template).
  """
  nets: Any
  tx: optax.GradientTransformation
  decoder_tx: optax.GradientTransformation | None
  init_state: Callable[[jax.Array], Any]
  joint_steps: int = 1  # length of the schedules (learning rate, EMA momentum)


@dataclasses.dataclass(frozen=True)
class FrozenModel:
  """The parts of a trained state that evaluation uses.

  Attributes:
    encoder: the encoder module; ``encoder.apply({'params', 'batch_stats'},
      images, train=False)`` gives the pooled features [N, n].
    params: the encoder's parameters.
    batch_stats: the encoder's BatchNorm statistics.
    super_logits: ``images [N, H, W, 3] float (normalised) -> [N, K_super]``,
      the model's own super-class head (seed B methods), or None.
  """
  encoder: nn.Module
  params: Any
  batch_stats: Any
  super_logits: Callable[[jax.Array], jax.Array] | None = None


def setup(cfg: ml_collections.ConfigDict, num_train: int | None = None, *,
          train_source: Any = None) -> Setup:
  """Networks, optimizers and ``init_state`` for ``cfg.method``.

  ``num_train`` (the opened training split's size) sets the schedule's length
  for data whose size the config cannot know (image folders); the state's
  structure does not depend on it. ``train_source`` (the opened training split)
  sizes the heads of the supervised methods (classes, instances) and is
  required for them.
  """
  if cfg.method not in METHODS:
    raise config_lib.ConfigError(f"method: {cfg.method!r} is not one of {METHODS}")
  if cfg.method in supervised_config.METHODS:
    if train_source is None:
      raise ValueError(f"registry.setup: method {cfg.method!r} needs the opened training split")
    supervised_config.check_labels(cfg, train_source)
    module = supcon if cfg.method in supervised_config.HCL_METHODS else base_indi
    nets = module.build_networks(cfg, train_source)
    steps = config_lib.total_train_steps(cfg, num_train if num_train is not None else len(train_source))
    tx = optim.supervised_optimizer(cfg, steps)
    return Setup(nets=nets, tx=tx, decoder_tx=None,
                 init_state=functools.partial(module.create_state, cfg, nets, tx=tx), joint_steps=steps)
  nets = ssl_common.build_networks(cfg)
  joint_steps = config_lib.total_train_steps(cfg, num_train if num_train is not None else
                                              config_lib.num_train_examples(cfg) or cfg.data.global_batch_size)
  tx = optim.joint_optimizer(cfg, joint_steps)
  decoder_tx = optim.decoder_optimizer(cfg) if cfg.method in config_lib.PERTURB_METHODS else None
  init_state = functools.partial(_CREATE_STATE[cfg.method], cfg, nets, tx=tx, decoder_tx=decoder_tx)
  return Setup(nets=nets, tx=tx, decoder_tx=decoder_tx, init_state=init_state, joint_steps=joint_steps)


def hparams(cfg: ml_collections.ConfigDict, s: Setup, num_devices: int) -> Any:
  """The static hyper-parameters of ``cfg.method``'s step on ``num_devices`` devices."""
  if cfg.method in supervised_config.HCL_METHODS:
    return supcon.hparams_from_config(cfg, s.nets, num_devices)
  if cfg.method in supervised_config.METHODS:
    return base_indi.hparams_from_config(cfg, s.nets, num_devices)
  return moco.hparams_from_config(cfg, num_devices, joint_steps=s.joint_steps,
                                 pretrain_steps=pretrain_steps(cfg))


def pretrain_steps(cfg: ml_collections.ConfigDict) -> int:
  """Decoder pre-training steps before the joint phase (Perturb-SSL only)."""
  return cfg.perturb.decoder_pretrain_steps if cfg.method in config_lib.PERTURB_METHODS else 0


def step_functions(cfg: ml_collections.ConfigDict, s: Setup, hp: Any):
  """``(joint_step, decoder_pretrain_step or None)``, per device, hyper-parameters bound."""
  joint = functools.partial(JOINT_STEPS[cfg.method], nets=s.nets, hp=hp, tx=s.tx)
  pretrain = None
  if cfg.method in config_lib.PERTURB_METHODS:
    pretrain = functools.partial(perturb_moco.decoder_pretrain_step, nets=s.nets, hp=hp,
                                 decoder_tx=s.decoder_tx)
  return joint, pretrain


def rngs(cfg: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """``(init_rng, step_rng)`` of a run: the random-init baseline re-creates the same init."""
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
  return init_rng, step_rng


def frozen_model(cfg: ml_collections.ConfigDict, nets: Any, state: Any) -> FrozenModel:
  """The evaluated parts of ``state`` (host or device arrays) for ``cfg.method``."""
  super_logits = None
  if cfg.method in supervised_config.METHODS:
    super_logits = base_indi.super_logits_fn(nets, state)
  return FrozenModel(encoder=nets.encoder, params=state.params["encoder"],
                     batch_stats=state.batch_stats, super_logits=super_logits)
