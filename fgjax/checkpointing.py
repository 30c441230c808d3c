"""orbax checkpoints of the whole train state plus the data position."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def tree_path(path) -> str:
  """A key path as 'a/b/c', the same for a dataclass field and a dict key."""
  parts = []
  for entry in path:
    for attr in ("name", "key", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
  return "/".join(parts)


def shape_mismatch(expected: Any, saved: dict[str, tuple[tuple[int, ...], str]]) -> str | None:
  """None if ``saved`` (``state_shapes``) holds exactly the arrays of ``expected``.

  Otherwise one line naming the first difference: a missing or extra array, or
  a shape or dtype change (e.g. a checkpoint of another encoder width).
  """
  wanted = {tree_path(p): (tuple(x.shape), str(x.dtype))
            for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
  for path, (shape, dtype) in wanted.items():
    if path not in saved:
      return f"the checkpoint has no array {path}"
    if saved[path][0] != shape:
      return f"{path} has shape {saved[path][0]} in the checkpoint, the config's model needs {shape}"
    if saved[path][1] != dtype:
      return f"{path} is {saved[path][1]} in the checkpoint, the config's model needs {dtype}"
  extra = sorted(set(saved) - set(wanted))
  if extra:
    return f"the checkpoint holds {len(extra)} array(s) the config's model does not, e.g. {extra[0]}"
  return None


class Checkpointer:
  """``CheckpointManager`` over ``<workdir>/checkpoints``.

  Each checkpoint holds ``state`` (every array of the TrainState: parameters,
  momentum network, optimizer states, queue, memory bank, counters) and
  ``data`` (JSON: the position in the training stream, i.e. batches consumed).
  All processes take part in save and restore.
  """

  def __init__(self, workdir: str, *, keep: int = 1, create: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    # Handlers named up front, so that metadata can be read before a restore.
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def state_shapes(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """``'params/encoder/conv_init/kernel' -> (shape, dtype name)`` of every saved array."""
    metadata = self._manager.item_metadata(step)["state"]
    return {tree_path(path): (tuple(leaf.shape), str(leaf.dtype))
            for path, leaf in jax.tree_util.tree_flatten_with_path(metadata)[0]}

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
