"""``model.init_from``: a run's state with its encoder from pretrained weights or another fgjax run.

Sits above the methods' table and the checkpoint reader (``fgjax.methods.registry``,
``fgjax.evaluate.restore``) and below the trainer and the evaluation, so that
weight loading needs no import of its callers: ``fgjax.pretrained.load``
converts files, this module adds run directories and puts the encoder into the
method's state (``Method.with_encoder``: the key or target encoder too).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util

from fgjax.config import blocks as config_blocks
from fgjax.errors import EvaluationError
from fgjax.errors import PretrainedError
from fgjax.evaluate import restore
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.pretrained import convert
from fgjax.pretrained import load


def run_directory_encoder(workdir: str) -> convert.Converted:
  """The encoder of an fgjax run's latest good checkpoint, as :class:`convert.Converted`."""
  try:
    restored = restore.restore_run(workdir)
  except EvaluationError as e:
    raise PretrainedError(f"model.init_from: run directory {workdir}: {e}") from None
  frozen = registry.frozen_model(restored.train_cfg, restored.setup.nets, restored.state)
  variables = {path: np.asarray(x) for path, x in traverse_util.flatten_dict(
      {"params": frozen.params, "batch_stats": frozen.batch_stats}).items()}
  return convert.Converted(variables, ignored=[f"the run's other networks ({restored.train_cfg.method}: heads, "
                                               f"optimizer state), step {restored.step}"])


def with_init_from(cfg: ml_collections.ConfigDict, s: spec.Setup, state: Any) -> Any:
  """``state`` with its encoder from ``cfg.model.init_from`` (a weights file, a shipped name or an fgjax
  run); unchanged for a random initialisation ('' or 'none'). Logs what was loaded, ignored and left at
  its initialisation.

  The loaded arrays go where the state's arrays are (their shardings: replicated over a mesh).

  Raises:
    PretrainedError: the file cannot initialise this encoder (one line naming the tensor).
  """
  path = cfg.model.get("init_from", "")
  if path in config_blocks.INIT_RANDOM:
    return state
  template = {"params": state.params["encoder"], "batch_stats": state.batch_stats}
  variables, report = load.encoder_variables(path, s.nets.encoder, template, read_run=run_directory_encoder)
  logging.info("%s", report.summary())
  others = sorted(k for k in state.params if k != "encoder")
  logging.info("left at their initialisation: %s", ", ".join(others) if others else "nothing (the encoder only)")

  def like(new: np.ndarray, old: Any) -> Any:  # a device array where the state's is one, else host
    return jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else np.array(new)

  def place() -> tuple[Any, Any]:
    placed = jax.tree.map(like, variables, {k: template[k] for k in variables})
    return placed["params"], placed.get("batch_stats", state.batch_stats)

  return registry.get(cfg.method).with_encoder(state, place)  # the host copy is freed on return
