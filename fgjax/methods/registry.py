"""The methods' table: ``METHODS: name -> spec.Method``, and the lookups the machinery uses.

Adding a method is: its module (steps, state, its config block), its
``configs/<name>.py``, one entry in :data:`METHODS`, and its tests
(docs/adding_a_method.md walks through one). The trainer, the evaluation, the
pictures and the benchmark ask the entry (``get(cfg.method)``) what a method
has; none of them compares method names.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import ml_collections

from fgjax.config import ssl as ssl_config
from fgjax.config import supervised as supervised_config
from fgjax.config import upgrade
from fgjax.errors import ConfigError
from fgjax.methods import base_indi
from fgjax.methods import byol
from fgjax.methods import class_attentive
from fgjax.methods.class_attentive import config as ca_config
from fgjax.methods import moco
from fgjax.methods import perturb_ssl
from fgjax.methods import simclr
from fgjax.methods import simsiam
from fgjax.methods import spec
from fgjax.methods import ssl_common
from fgjax.methods import supcon


Method = spec.Method
Setup = spec.Setup
FrozenModel = spec.FrozenModel


def _ssl(base: ssl_common.Base) -> spec.Method:
  """An SSL method from its hooks (``ssl_common.Base``): the shared SSL schema plus the base's blocks."""
  blocks = base.blocks
  return spec.Method(
      name=base.name, docs="perturb_ssl", config=functools.partial(ssl_config.ssl_config, base.name, blocks),
      presets=ssl_config.preset_names(blocks), validate=functools.partial(ssl_config.validate, blocks=blocks),
      setup=ssl_common.make_setup(base.create_state, base.networks), hparams=base.hparams,
      joint_step=base.step(), pretrain_step=base.pretrain_step, pretrain_steps=base.pretrain_steps,
      features_loss=base.features_loss, has_decoder=base.has_decoder, benchmark=True,
      with_encoder=ssl_common.with_encoder)


def _base_indi(name: str) -> spec.Method:
  """An objective of seed B (Base, Fine, Indi, Base-Indi, Base-Indi_eff): one step, one schema."""
  return spec.Method(
      name=name, docs="base_indi", config=functools.partial(supervised_config.base_indi_config, name),
      presets=supervised_config.BASE_INDI_PRESETS, validate=supervised_config.validate, setup=base_indi.make_setup(base_indi), hparams=base_indi.hparams,
      joint_step=base_indi.base_indi_step, super_logits=base_indi.super_logits_fn, needs_train_source=True)


def _hcl(name: str) -> spec.Method:
  """An objective of seed H (CE, SupCon, HCL) on a ResNet or a ViT."""
  return spec.Method(
      name=name, docs="supcon_hcl", config=functools.partial(supervised_config.hcl_config, name),
      presets=supervised_config.HCL_PRESETS, validate=supervised_config.validate, setup=base_indi.make_setup(supcon), hparams=supcon.hparams,
      joint_step=supcon.STEPS[name], super_logits=base_indi.super_logits_fn, needs_train_source=True)


def _class_attentive() -> spec.Method:
  """Seed A on the toy circles: its own schema and loop (tiny vectors, one ``lax.scan`` per epoch)."""
  return spec.Method(name="class_attentive", docs="class_attentive", config=ca_config.class_attentive_config,
                     presets=tuple(ca_config._PRESET_FNS), validate=lambda cfg, **_: ca_config.validate(cfg), run=class_attentive.train_and_evaluate)


# Every SSL base, and Perturb-SSL wrapped around each (the paper's Fig. 1a: a plug-in for any SSL method).
_SSL_BASES = (moco.BASE, simsiam.BASE, simclr.BASE, byol.BASE)

METHODS: dict[str, spec.Method] = {m.name: m for m in (
    *(method for base in _SSL_BASES for method in (_ssl(base), _ssl(perturb_ssl.wrap(base)))),
    *(_base_indi(name) for name in supervised_config.BASE_INDI_METHODS),
    *(_hcl(name) for name in supervised_config.HCL_METHODS),
    _class_attentive(),
)}


def get(name: Any) -> spec.Method:
  """The entry of ``name``; ConfigError (naming the field ``method``) if there is none."""
  if name not in METHODS:
    raise ConfigError(f"config field 'method': expected one of {tuple(METHODS)}, got {name!r}")
  return METHODS[name]


def names(**having: Any) -> tuple[str, ...]:
  """The methods whose entry has the given values, e.g. ``names(has_decoder=True)``."""
  return tuple(n for n, m in METHODS.items() if all(getattr(m, k) == v for k, v in having.items()))


def config(name: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of method ``name`` with the comma-separated ``preset`` applied (``configs/*.py``)."""
  return get(name).config(preset)


def validate(cfg: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1) -> None:
  """Checks a config for unknown fields (another method's included) and impossible values.

  Raises:
    ConfigError: one line naming the offending field.
  """
  get(cfg.get("method")).validate(cfg, num_devices=num_devices, num_processes=num_processes)


def with_defaults(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved training config (``config.json``) completed for today's code (``fgjax.config.upgrade``)."""
  method = METHODS.get(cfg.get("method"))
  if method is None or method.run is not None:
    return cfg
  defaults = method.config(None)
  others = [m.config(None) for m in METHODS.values() if m is not method and m.run is None]
  ssl = "jitter" in defaults.get("augment", {})  # the SSL two-view augmentation
  return upgrade.with_defaults(cfg, defaults, others, ssl_augment=ssl_config.augment_config() if ssl else None)


def setup(cfg: ml_collections.ConfigDict, num_train: int | None = None, *, train_source: Any = None
          ) -> spec.Setup:
  """Networks, optimizers and ``init_state`` of ``cfg.method``.

  ``num_train`` (the opened training split's size) sets the schedule's length
  for data whose size the config cannot know (image folders). Supervised
  methods size their heads by ``train_source`` (the opened training split),
  which they require.
  """
  return get(cfg.method).setup(cfg, num_train, train_source=train_source)


def hparams(cfg: ml_collections.ConfigDict, s: spec.Setup, num_devices: int) -> Any:
  """The static hyper-parameters of ``cfg.method``'s step on ``num_devices`` devices."""
  return get(cfg.method).hparams(cfg, s, num_devices)


def pretrain_steps(cfg: ml_collections.ConfigDict) -> int:
  """Steps before the joint phase (Perturb-SSL's decoder pre-training), else 0."""
  return get(cfg.method).pretrain_steps(cfg)


def step_functions(cfg: ml_collections.ConfigDict, s: spec.Setup, hp: Any):
  """``(joint_step, pretrain_step or None)``, per device, hyper-parameters bound."""
  method = get(cfg.method)
  joint = functools.partial(method.joint_step, nets=s.nets, hp=hp, tx=s.tx)
  pretrain = None
  if method.pretrain_step is not None:
    pretrain = functools.partial(method.pretrain_step, nets=s.nets, hp=hp, decoder_tx=s.decoder_tx)
  return joint, pretrain


def rngs(cfg: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """``(init_rng, step_rng)`` of a run: the random-init baseline re-creates the same init."""
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
  return init_rng, step_rng


def frozen_model(cfg: ml_collections.ConfigDict, nets: Any, state: Any) -> spec.FrozenModel:
  """The evaluated parts of ``state`` (host or device arrays) for ``cfg.method``."""
  method = get(cfg.method)
  super_logits = method.super_logits(nets, state) if method.super_logits is not None else None
  return spec.FrozenModel(encoder=nets.encoder, params=state.params["encoder"],
                          batch_stats=state.batch_stats, super_logits=super_logits)
