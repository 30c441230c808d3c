"""What a method is, to the trainer, the evaluation, the pictures and the benchmarks.

:class:`Method` is one entry of the methods' table (``fgjax.methods.registry``):
its config, its checks, its networks and initial state, its steps, the frozen
model evaluation uses, and what it has (a decoder, a super-class head, its own
loop). Code outside a method's own files asks the entry, never the method's name.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable

import flax.linen as nn
import jax
import ml_collections
import optax


ConfigDict = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Setup:
  """A method's modules, optimizers and initial-state function for one config.

  Attributes:
    nets: the Flax modules.
    tx: optimizer of the joint training steps.
    decoder_tx: optimizer of decoder pre-training (Perturb-SSL), else None.
    init_state: ``rng -> state`` (pure). :func:`initial_state` runs it (never
      a plain ``jax.jit``: every place that needs a run's initial state must
      get the same values); ``jax.eval_shape`` it for a checkpoint template.
    joint_steps: length of the schedules (learning rate, EMA momentum).
  """
  nets: Any
  tx: optax.GradientTransformation
  decoder_tx: optax.GradientTransformation | None
  init_state: Callable[[jax.Array], Any]
  joint_steps: int = 1


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


# XLA's backend optimisation level for the initial state on CPU (see initial_state).
INIT_CPU_OPTIMIZATION_LEVEL = 0


def initial_state(setup: Setup, rng: jax.Array) -> Any:
  """``setup.init_state(rng)``, compiled as one program at little optimisation on CPU.

  Random initialisation is threefry bit arithmetic over every parameter: run
  op by op, each op compiles on its own (a quarter-width ResNet-18's Perturb
  state: ~40 s on a 2-core CPU); as one program at XLA's default optimisation
  the compile still takes ~25 s, for a program that runs once, in
  milliseconds. At backend optimisation level 0 it compiles in ~4 s. The
  values are that program's: they differ from the default level's only in the
  last bit of some normal draws (whether a multiply and an add are fused), so
  the trainer, the random-init baseline of the evaluation, the benchmarks and
  the tests all take the initial state from here. Other backends compile it as
  they compile everything.
  """
  lowered = jax.jit(setup.init_state).lower(rng)
  options = {}
  if jax.default_backend() == "cpu":
    options["xla_backend_optimization_level"] = INIT_CPU_OPTIMIZATION_LEVEL
  return lowered.compile(compiler_options=options)(rng)


def no_pretraining(cfg: ConfigDict) -> int:
  del cfg
  return 0


def replace_encoder(state: Any, place: Callable[[], tuple[Any, Any]]) -> Any:
  """``state`` with the encoder's parameters and BatchNorm statistics from ``place()`` (``model.init_from``).

  The online encoder is ``params['encoder']`` and ``batch_stats`` in every
  method's state. ``place()`` returns ``(params, batch_stats)`` as new device
  arrays on each call, so that a method with a second copy of the encoder (a
  key encoder) gives it its own buffers (a training step donates the state's).
  """
  params, batch_stats = place()
  return state.replace(params={**state.params, "encoder": params}, batch_stats=batch_stats)


@dataclasses.dataclass(frozen=True)
class Method:
  """One method: everything the machinery needs, so that it never compares method names.

  Attributes:
    name: ``cfg.method``.
    docs: the page that describes it (``docs/<page>.md``).
    config: ``preset -> ConfigDict``, the method's schema with its defaults and
      the comma-separated presets applied (``configs/<x>.py`` call it).
    presets: the names ``config`` accepts (comma-separated, left to right).
    validate: ``(cfg, *, num_devices, num_processes) -> None``; ConfigError
      names the field (including a field of another method's block).
    setup: ``(cfg, num_train=None, *, train_source=None) -> Setup``.
    hparams: ``(cfg, setup, num_devices) -> static step settings``.
    joint_step: ``(state, batch, rng, *, nets, hp, tx) -> (state, metrics)``,
      per device (inside ``shard_map``).
    pretrain_step: ``(state, batch, rng, *, nets, hp, decoder_tx) -> (state,
      metrics)``: decoder pre-training before the joint phase, or None.
    pretrain_steps: ``cfg -> int``, how many pre-training steps.
    super_logits: ``(nets, state) -> images -> [N, K_super]`` or None: the
      model's own super-class head (evaluated as a classifier).
    features_loss: ``(nets, state, cfg, x_pos) -> (loss(v) -> [N], targets)``:
      the SSL loss as a function of pooled features (Grad-CAM pictures), or None.
    needs_train_source: the heads are sized by the opened training split.
    has_decoder: a decoder reconstructs images from features (Perturb-SSL).
    run: ``(cfg, workdir) -> None``, a method with its own loop (no image
      trainer), or None.
    benchmark: timed by ``python -m fgjax.tools.bench``.
    with_encoder: ``(state, place) -> state`` with the encoder replaced
      (``model.init_from``; :func:`replace_encoder`, or the method's own where
      it has a key encoder to start as the same copy).
  """
  name: str
  docs: str
  config: Callable[[str | None], ConfigDict]
  presets: tuple[str, ...]
  validate: Callable[..., None]
  setup: Callable[..., Setup] | None = None
  hparams: Callable[..., Any] | None = None
  joint_step: Callable[..., Any] | None = None
  pretrain_step: Callable[..., Any] | None = None
  pretrain_steps: Callable[[ConfigDict], int] = no_pretraining
  super_logits: Callable[..., Any] | None = None
  features_loss: Callable[..., Any] | None = None
  needs_train_source: bool = False
  has_decoder: bool = False
  run: Callable[[ConfigDict, str], None] | None = None
  benchmark: bool = False
  with_encoder: Callable[[Any, Callable[[], tuple[Any, Any]]], Any] = replace_encoder
