"""Reading a weights file into ``{name: NumPy array}``: .safetensors without torch, torch files without pickle.

No JAX here: ``python -m fgjax.tools.convert_weights`` needs only this module
and torch.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import numpy as np

from fgjax.errors import PretrainedError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def convert_command(path: str) -> str:
  """The one-line conversion of a torch file into ``.safetensors`` (run where torch is installed)."""
  return f"python -m fgjax.tools.convert_weights {path} {os.path.splitext(path)[0]}.safetensors"


def _unwrap(obj: Any, path: str) -> dict[str, Any]:
  """The state_dict inside a torch checkpoint (``{'state_dict': ...}``, ``{'model': ...}`` or itself)."""
  for key in ("state_dict", "model", "module"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise PretrainedError(f"{path}: expected a state_dict (a dict of tensors), found a {type(obj).__name__}")
  return obj


def read_torch(path: str) -> dict[str, np.ndarray]:
  """A torch file's tensors, ``torch.load(weights_only=True)``; float tensors as float32 NumPy."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PretrainedError(f"{path}: reading a torch file needs torch (pip install 'fgjax[torch-weights]'); or "
                          f"convert it once where torch is installed: {convert_command(path)}") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    reason = f"it holds a pickled {found[1]}" if found else "it holds objects other than tensors"
    raise PretrainedError(f"{path}: the file needs pickle to load ({reason}); fgjax reads tensors only "
                          "(torch.load weights_only=True). Where you trust the file, save its state_dict alone: "
                          "torch.save(model.state_dict(), 'weights.pth')") from None
  except (RuntimeError, EOFError, OSError, ValueError) as e:
    first = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().split(". ")[0][:200]
    raise PretrainedError(f"{path}: not a readable torch file ({first}); truncated or damaged?") from None
  out = {}
  for name, tensor in _unwrap(obj, path).items():
    if not isinstance(tensor, torch.Tensor):
      continue  # e.g. a checkpoint's epoch counter next to its tensors
    out[name] = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
  return out


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """``{name: array}`` of a ``.safetensors`` or torch file (see the module docstring).

  Raises:
    PretrainedError: no such file, an unknown suffix, a truncated or damaged
      file, a file that needs pickle, torch missing for a ``.pth``.
  """
  if not os.path.isfile(path):
    raise PretrainedError(f"model.init_from: {path} does not exist (a .safetensors or .pth file, or an fgjax run "
                          "directory)")
  if path.endswith(SAFETENSORS_SUFFIXES):
    from safetensors import SafetensorError  # pylint: disable=import-outside-toplevel
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
      raise PretrainedError(f"{path}: not a readable .safetensors file ({str(e).strip()[:200]}); truncated or "
                            "damaged? (bfloat16 files: convert them to float32)") from None
  if path.endswith(TORCH_SUFFIXES):
    return read_torch(path)
  raise PretrainedError(f"model.init_from: {path}: unknown weights format (expected "
                        f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}, or an fgjax run directory)")
