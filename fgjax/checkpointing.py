"""orbax checkpoints of the whole train state plus the data position."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """``CheckpointManager`` over ``<workdir>/checkpoints``.

  Each checkpoint holds ``state`` (every array of the TrainState: parameters,
  momentum network, optimizer states, queue, memory bank, counters) and
  ``data`` (JSON: the position in the training stream, i.e. batches consumed).
  All processes take part in save and restore.
  """

  def __init__(self, workdir: str, *, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, *, data_position: int) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({"data_position": int(data_position)})))

  def restore(self, step: int, target_state: Any) -> tuple[Any, int]:
    """Restores ``step`` into the shapes, dtypes and shardings of ``target_state``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    return restored["state"], int(restored["data"]["data_position"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
