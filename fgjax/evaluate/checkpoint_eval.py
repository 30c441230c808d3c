"""Evaluate a trained checkpoint without retraining (``configs/evaluate.py``).

``python -m fgjax.main --config=configs/evaluate.py --config.workdir=runs/x``
reads the run's ``config.json`` (method, data, model), checks that the saved
arrays match that model, restores the checkpoint, extracts the frozen
encoder's features once and runs every protocol of the ``eval`` block
(``fgjax.evaluate.suite``). Results are merged into ``results.json`` under
``evaluations/step_<N>`` and appended to ``results.md`` as a table.
"""

from __future__ import annotations

import datetime
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
from fgjax.evaluate import restore
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.pretrained import init_from


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


def validate(cfg: ml_collections.ConfigDict) -> None:
  check_known_fields(cfg, evaluate_config())
  if not cfg.workdir:
    raise ConfigError("config field 'workdir': give the run to evaluate, "
                                 "e.g. --config.workdir=runs/perturb_moco")
  if cfg.init_from and not cfg.train_config:
    raise ConfigError("config field 'train_config': evaluating init_from's weights needs the config of the model "
                      "and data, e.g. --config.train_config=configs/moco.py:folder")
  config_blocks.validate_eval(cfg.eval)


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
  restored = restore.restore_run(cfg.workdir, checkpoint_step=cfg.checkpoint_step, train_config=cfg.train_config,
                         eval_cfg=cfg.eval, data_paths=cfg)
  workdir, step, train_cfg, setup, state, data = (restored.workdir, restored.step, restored.train_cfg,
                                                  restored.setup, restored.state, restored.data)
  init_rng, _ = registry.rngs(train_cfg)

  logging.info("evaluating %s step %d (%s)", workdir, step, train_cfg.method)
  sections = {"trained": evaluate_state(train_cfg, setup.nets, state, data)}
  if cfg.eval.random_init_baseline:  # the run's encoder at random init, and its model.init_from's untouched
    random_init = jax.device_get(spec.initial_state(setup, init_rng))
    sections["random_init"] = evaluate_state(train_cfg, setup.nets, random_init, data)
    if train_cfg.model.get("init_from", "") not in config_blocks.INIT_RANDOM:
      initial = init_from.with_init_from(train_cfg, setup, random_init)
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
  train_cfg = restore.load_train_config(cfg.train_config)
  restore.with_data_paths(train_cfg, cfg)
  train_cfg.model.init_from = cfg.init_from
  train_cfg.eval = ml_collections.ConfigDict(cfg.eval.to_dict())
  registry.validate(train_cfg, num_devices=1)
  data = pipeline.load_splits(train_cfg)
  setup = registry.setup(train_cfg, num_train=1, train_source=data["train"])
  init_rng, _ = registry.rngs(train_cfg)
  state = init_from.with_init_from(train_cfg, setup, jax.device_get(spec.initial_state(setup, init_rng)))
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
