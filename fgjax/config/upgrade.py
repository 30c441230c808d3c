"""Saved configs (a run's ``config.json``) completed for today's code.

A run written before a field existed keeps every value it had; new fields take
their defaults, which leave the old behaviour unchanged. Fields that fgjax once
wrote for every method but that belong to other methods' blocks (a MoCo run's
``perturb`` block, written before each method had its own schema) are dropped:
they never did anything for that method. Unknown fields are kept, so
validation still names them.
"""

from __future__ import annotations

from typing import Iterable

import ml_collections

from fgjax.config.fields import flatten


ConfigDict = ml_collections.ConfigDict


def with_defaults(saved: ConfigDict, defaults: ConfigDict, other_schemas: Iterable[ConfigDict] = (),
                  *, ssl_augment: ConfigDict | None = None) -> ConfigDict:
  """``defaults`` (the method's config today) overwritten by every field of ``saved``.

  Args:
    saved: the config a run was written with.
    defaults: today's config of the same method (no presets).
    other_schemas: the configs of every other method: a field of ``saved``
      that one of them has and ``defaults`` lacks is another method's, dropped.
    ssl_augment: MoCo v2 aug+ (``fgjax.config.ssl.augment_config()``) for an
      SSL method: a saved config without an ``augment`` block ran with it.
  """
  full = ConfigDict(defaults.to_dict())
  own = set(flatten(defaults))
  foreign = set()
  for schema in other_schemas:
    foreign |= set(flatten(schema)) - own
  _legacy_defaults(saved, full, ssl_augment)

  def blocks(paths):  # 'a.b.c' -> {'a', 'a.b'}
    return {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 1)}
  own_blocks, foreign_blocks = blocks(own), blocks(foreign)

  def merge(target: ConfigDict, saved_block: ConfigDict, prefix: str) -> None:
    for key, value in saved_block.items():
      path = prefix + key
      if isinstance(value, ConfigDict):
        if path in foreign_blocks and path not in own_blocks:
          continue  # a block of other methods only
        if isinstance(target.get(key), ConfigDict):
          merge(target[key], value, path + ".")
        else:
          target[key] = value.to_dict()
      elif path not in foreign:  # (a field of other methods only is dropped)
        target[key] = value

  merge(full, saved, "")
  return full


def _legacy_defaults(saved: ConfigDict, full: ConfigDict, ssl_augment: ConfigDict | None) -> None:
  """Where a field added later changed what the default does, an old run gets what it ran with.

  * ``data.version`` (added with the embedded data's version 2): absent means
    version 1 on its 'gradient' background.
  * The SSL ``augment`` block (added with the small-image recipe): absent means
    MoCo v2 aug+, the only augmentation there was.
  * ``moco.final_momentum`` (added with the momentum schedule): absent means the
    constant ``moco.momentum``.
  * ``model.init_from`` (the SSL default became the shipped source encoder):
    absent means a random initialisation.
  """
  data = saved.get("data")
  if data is not None and "version" not in data:
    full.data.version = 1
    full.data.background = "gradient"
  if ssl_augment is not None and "augment" not in saved:
    full.augment = ssl_augment
  moco = saved.get("moco")
  if moco is not None and "moco" in full and "final_momentum" not in moco and "momentum" in moco:
    full.moco.final_momentum = moco["momentum"]
  model = saved.get("model")
  if model is not None and "model" in full and "init_from" in full.model and "init_from" not in model:
    full.model.init_from = ""  # before model.init_from, every run started from a random initialisation
  perturb = saved.get("perturb")
  if perturb is not None and "perturb" in full:
    if "pair_shuffle_bn" not in perturb:
      full.perturb.pair_shuffle_bn = False
    if "gradcam_sign" not in perturb:
      full.perturb.gradcam_sign = "loss"
