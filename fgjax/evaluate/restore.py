"""A training run read back from its workdir: its config, networks, restored state and data.

``restore_run`` is what evaluation, pictures, the explorer, weight export and
``model.init_from=<run directory>`` share: it reads ``config.json`` (completed
with today's defaults), checks that the saved arrays fit that config's model,
and restores the latest good checkpoint (or a given step) into host arrays.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from fgjax.data import pipeline
from fgjax.errors import EvaluationError
from fgjax.infra import checkpointing
from fgjax.methods import registry


def with_data_paths(train_cfg: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict) -> None:
  """``cfg.data``'s non-empty paths into the training config (its data set, read from here)."""
  for field in ("root", "super_map"):
    if cfg.data.get(field):
      train_cfg.data[field] = cfg.data[field]


def load_train_config(path: str) -> ml_collections.ConfigDict:
  """A training config from ``config.json`` or ``configs/x.py[:preset]``."""
  file, _, preset = path.partition(":")
  if not os.path.isfile(file):
    raise EvaluationError(f"no training config at {file}")
  if file.endswith(".json"):
    with open(file) as f:
      try:
        # A run of an older fgjax lacks the fields added since: defaults fill them.
        return registry.with_defaults(ml_collections.ConfigDict(json.load(f)))
      except json.JSONDecodeError as e:
        raise EvaluationError(f"{file} is not valid JSON: {e}") from None
  spec = importlib.util.spec_from_file_location("_fgjax_train_config", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset or None) if preset else module.get_config()


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A training run read back from its workdir: config, networks, state, data.

  Attributes:
    workdir: the run's absolute path.
    step: the restored checkpoint's step.
    train_cfg: the run's training config (``config.json`` or ``train_config``).
    setup: ``registry.setup`` of that config (networks, ``init_state``).
    state: the method's restored state, host arrays.
    data: ``pipeline.load_splits(train_cfg)``.
  """
  workdir: str
  step: int
  train_cfg: ml_collections.ConfigDict
  setup: Any
  state: Any
  data: dict[str, Any]


def restore_run(workdir: str, *, checkpoint_step: int = -1, train_config: str = "",
                eval_cfg: ml_collections.ConfigDict | None = None,
                data_paths: ml_collections.ConfigDict | None = None) -> RestoredRun:
  """Restores a run's checkpoint (latest, or ``checkpoint_step``) into host arrays.

  Args:
    workdir: the training run (its ``config.json`` and ``checkpoints/``).
    checkpoint_step: -1 for the latest checkpoint.
    train_config: '' for the run's own ``config.json``, else a config file
      describing the model that wrote the checkpoint.
    eval_cfg: replaces the run's ``eval`` block (the caller's protocol).
    data_paths: an evaluation config whose ``data.root`` / ``data.super_map``
      replace the run's where set (the data moved).

  Raises:
    EvaluationError: no run or checkpoint, a checkpoint of another model.
    ConfigError: a bad field of the training config.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise EvaluationError(f"workdir {workdir} does not exist")
  train_cfg = load_train_config(train_config or os.path.join(workdir, "config.json"))
  if data_paths is not None:
    with_data_paths(train_cfg, data_paths)
  if eval_cfg is not None:
    train_cfg.eval = ml_collections.ConfigDict(eval_cfg.to_dict())
  registry.validate(train_cfg, num_devices=1)

  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise EvaluationError(f"no checkpoint in {workdir} (no checkpoints/ directory)")
  ckpt = checkpointing.Checkpointer(workdir, create=False)
  try:
    steps = ckpt.all_steps()
    if not steps and checkpoint_step < 0:
      raise EvaluationError(f"no checkpoint in {ckpt_dir}")
    if checkpoint_step in ckpt.incomplete_steps():
      raise EvaluationError(f"checkpoint step {checkpoint_step} in {ckpt_dir} is incomplete (no "
                            f"{', '.join(ckpt.missing_files(checkpoint_step))}); saved steps: {steps}")
    if checkpoint_step >= 0 and checkpoint_step not in steps:
      raise EvaluationError(f"no checkpoint of step {checkpoint_step} in {ckpt_dir}; saved steps: {steps}")
    data = pipeline.load_splits(train_cfg)  # (the supervised heads are sized by the train split)
    # The schedule's length does not shape the state.
    setup = registry.setup(train_cfg, num_train=1, train_source=data["train"])
    init_rng, _ = registry.rngs(train_cfg)
    abstract = jax.eval_shape(setup.init_state, init_rng)
    newest = checkpoint_step if checkpoint_step >= 0 else steps[-1]
    try:
      problem = checkpointing.shape_mismatch(abstract, ckpt.state_shapes(newest))
    except checkpointing.CheckpointError:
      problem = None  # damaged metadata: reported (or fallen back from) below
    if problem:
      raise EvaluationError(f"checkpoint step {newest} in {ckpt_dir} does not match the model of "
                            f"the training config ({train_cfg.method}, {train_cfg.model.encoder} "
                            f"width {train_cfg.model.width}): {problem}")
    device = jax.local_devices()[0]
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(device)),
        abstract)
    try:
      if checkpoint_step >= 0:  # the step asked for, or one line naming its damage
        state, _ = ckpt.restore(checkpoint_step, target)
        step = checkpoint_step
      else:  # the latest; a damaged one falls back to the step before (named in the log)
        state, _, step = ckpt.restore_latest_good(target, move_damaged=False)
        newer = [s for s in ckpt.incomplete_steps() if s > step]
        if newer:
          logging.warning("evaluating checkpoint step %d of %s: the newer step folder(s) %s are incomplete "
                          "(a run still writing, or killed while writing), not steps", step, ckpt_dir, newer)
    except checkpointing.CheckpointError as e:
      raise EvaluationError(str(e)) from None
  finally:
    ckpt.close()
  return RestoredRun(workdir=workdir, step=step, train_cfg=train_cfg, setup=setup,
                     state=jax.device_get(state), data=data)
