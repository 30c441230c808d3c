"""Evaluate a trained checkpoint without retraining (``configs/evaluate.py``).

``python -m fgjax.main --config=configs/evaluate.py --config.workdir=runs/x``
reads the run's ``config.json`` (method, data, model), checks that the saved
arrays match that model, restores the checkpoint, extracts the frozen
encoder's features once and runs every protocol of the ``eval`` block
(``fgjax.evaluate.suite``). Results are merged into ``results.json`` under
``evaluations/step_<N>`` and appended to ``results.md`` as a table.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from fgjax.config import blocks as config_blocks
from fgjax.config.fields import check_known_fields
from fgjax.data import pipeline
from fgjax.errors import ConfigError
from fgjax.evaluate import features as features_lib
from fgjax.evaluate import report
from fgjax.evaluate import suite
from fgjax.infra import checkpointing
from fgjax.methods import registry


EvaluationError = suite.EvaluationError


def evaluate_config() -> ml_collections.ConfigDict:
  """Schema and defaults of ``configs/evaluate.py``."""
  c = ml_collections.ConfigDict()
  c.mode = "evaluate"
  c.workdir = ""  # the training run to evaluate (its config.json and checkpoints/)
  c.checkpoint_step = -1  # -1: the latest checkpoint
  # '' : the run's own config.json; else a config file (configs/x.py[:preset]
  # or a .json) describing the model that wrote the checkpoint.
  c.train_config = ""
  # A weights file (.safetensors / .pth) or another run to evaluate with no training at all (e.g. the
  # "ImageNet-supervised ResNet-50" row); needs train_config (the model and data) and writes into workdir.
  c.init_from = ""
  # Where the training config's data lives on this machine ('' = as it says): data.root of an image folder,
  # data.super_map of its fine -> super-class map.
  c.data = ml_collections.ConfigDict({"root": "", "super_map": ""})
  c.eval = config_blocks.eval_config()
  return c


def _with_data_paths(train_cfg: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict) -> None:
  """``cfg.data``'s non-empty paths into the training config (its data set, read from here)."""
  for field in ("root", "super_map"):
    if cfg.data.get(field):
      train_cfg.data[field] = cfg.data[field]


def validate(cfg: ml_collections.ConfigDict) -> None:
  check_known_fields(cfg, evaluate_config())
  if not cfg.workdir:
    raise ConfigError("config field 'workdir': give the run to evaluate, "
                                 "e.g. --config.workdir=runs/perturb_moco")
  if cfg.init_from and not cfg.train_config:
    raise ConfigError("config field 'train_config': evaluating init_from's weights needs the config of the model "
                      "and data, e.g. --config.train_config=configs/moco.py:folder")
  config_blocks.validate_eval(cfg.eval)


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


def evaluate_state(cfg: ml_collections.ConfigDict, nets: Any, state: Any,
                   data: dict[str, Any], *, monitor_only: bool = False) -> dict[str, Any]:
  """Every protocol of ``cfg.eval`` on the frozen model of ``state`` (host arrays).

  ``data`` is ``pipeline.load_splits(cfg)``: each split is read once, in order,
  through the evaluation transform.
  """
  e = cfg.eval
  model = registry.frozen_model(cfg, nets, state)
  extracted = {}
  for split in ("train", "test"):
    if len(data[split]) == 0:
      raise EvaluationError(f"the {split} split of {cfg.data.name} is empty")
    extracted[split] = features_lib.extract_split(
        model, data[split], batch_size=e.batch_size,
        transform=pipeline.eval_transform(cfg, data[split]),
        with_super_logits=split == "test" and model.super_logits is not None and not monitor_only)

  def labels(split):
    return {level: extracted[split][level] for level in ("fine", "super") if level in extracted[split]}

  return suite.evaluate_features(e, extracted["train"]["features"], labels("train"),
                                 extracted["test"]["features"], labels("test"),
                                 super_logits=extracted["test"].get("super_logits"),
                                 monitor_only=monitor_only)


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A training run read back from its workdir: config, networks, state, data.

  Attributes:
    workdir: the run's absolute path.
    step: the restored checkpoint's step.
    train_cfg: the run's training config (``config.json`` or ``train_config``).
    setup: ``registry.setup`` of that config (networks, ``init_state``).
    state: the restored TrainState, host arrays.
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
    _with_data_paths(train_cfg, data_paths)
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


def evaluate_workdir(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """Evaluates the checkpoint of ``cfg.workdir``; writes and returns the results.

  Raises:
    ConfigError: a bad field of the evaluation or training config.
    EvaluationError: no run or checkpoint, a checkpoint of another model, an
      empty split, NaN features.
  """
  validate(cfg)
  if cfg.init_from:
    return evaluate_imported(cfg)
  restored = restore_run(cfg.workdir, checkpoint_step=cfg.checkpoint_step, train_config=cfg.train_config,
                         eval_cfg=cfg.eval, data_paths=cfg)
  workdir, step, train_cfg, setup, state, data = (restored.workdir, restored.step, restored.train_cfg,
                                                  restored.setup, restored.state, restored.data)
  init_rng, _ = registry.rngs(train_cfg)

  logging.info("evaluating %s step %d (%s)", workdir, step, train_cfg.method)
  sections = {"trained": evaluate_state(train_cfg, setup.nets, state, data)}
  if cfg.eval.random_init_baseline:  # the run's encoder at random init, and its model.init_from's untouched
    random_init = jax.device_get(jax.jit(setup.init_state)(init_rng))
    sections["random_init"] = evaluate_state(train_cfg, setup.nets, random_init, data)
    if train_cfg.model.get("init_from", "") not in config_blocks.INIT_RANDOM:
      initial = registry.with_init_from(train_cfg, setup, random_init)
      sections["initial"] = evaluate_state(train_cfg, setup.nets, initial, data)

  run = {"workdir": workdir, "checkpoint step": step, "method": train_cfg.method,
         "encoder": f"{train_cfg.model.encoder} width {train_cfg.model.width}",
         "data": f"{train_cfg.data.name} {train_cfg.data.image_size}px",
         "evaluated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
  if jax.process_index() == 0:
    report.append_evaluation(workdir, f"step_{step}", sections, run=run)
  return {"run": run, **sections}


def evaluate_imported(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """Evaluates ``cfg.init_from``'s encoder as it is, no training (``configs/evaluate.py`` with ``init_from``).

  The model and data are ``cfg.train_config``'s, with its ``model.init_from``
  set to ``cfg.init_from``; the section ``imported`` is written into
  ``cfg.workdir``'s results (created if needed).

  Raises:
    ConfigError: a bad field of the training config.
    PretrainedError: the weights cannot initialise that encoder.
  """
  train_cfg = load_train_config(cfg.train_config)
  _with_data_paths(train_cfg, cfg)
  train_cfg.model.init_from = cfg.init_from
  train_cfg.eval = ml_collections.ConfigDict(cfg.eval.to_dict())
  registry.validate(train_cfg, num_devices=1)
  data = pipeline.load_splits(train_cfg)
  setup = registry.setup(train_cfg, num_train=1, train_source=data["train"])
  init_rng, _ = registry.rngs(train_cfg)
  state = registry.with_init_from(train_cfg, setup, jax.device_get(jax.jit(setup.init_state)(init_rng)))
  logging.info("evaluating %s as imported (%s, no training)", cfg.init_from, train_cfg.model.encoder)
  sections = {"imported": evaluate_state(train_cfg, setup.nets, state, data)}
  workdir = os.path.abspath(cfg.workdir)
  run = {"weights": cfg.init_from, "training config": cfg.train_config, "method": train_cfg.method,
         "encoder": f"{train_cfg.model.encoder}" + (f" width {train_cfg.model.width}" if "width" in train_cfg.model
                                                    else ""),
         "data": f"{train_cfg.data.name} {train_cfg.data.image_size}px",
         "evaluated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    report.append_evaluation(workdir, "imported", sections, run=run)
  return {"run": run, **sections}
