"""Weights shipped inside fgjax, addressed by name: ``model.init_from=source``.

``source`` is the source encoder: the CPU default's quarter-width ResNet-18
(CIFAR stem) pretrained with cross-entropy on the embedded *source* set, the
ImageNet stand-in (``fgjax.data.source``, ``configs/source.py``). The file is
``fgjax/pretrained/weights/source_resnet18_w16.safetensors`` in torchvision's
ResNet layout (``fgjax.pretrained.layout_resnet``; PyTorch reads it too), and
beside it ``source_resnet18_w16.json``, its manifest: the command that made it,
the commit, the file's SHA-256, its own accuracy and its transfer to the
embedded targets (``launch/make_source_encoder.sh`` writes both).

A name is resolved to the file only after its SHA-256 matches the manifest's: a
missing, truncated or altered file is one :class:`PretrainedError` naming the
file and the command that remakes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from fgjax.errors import PretrainedError

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
REMAKE_COMMAND = "bash launch/make_source_encoder.sh"


# name -> (file stem in WEIGHTS_DIR, the encoder fields it fits)
SHIPPED = {
    "source": ("source_resnet18_w16", {"encoder": "resnet18", "width": 16, "cifar_stem": True}),
}


def is_shipped(init_from: Any) -> bool:
  """Whether ``model.init_from`` names shipped weights (rather than a path)."""
  return isinstance(init_from, str) and init_from in SHIPPED


def paths(name: str) -> tuple[str, str]:
  """``(weights file, manifest)`` of the shipped weights ``name``."""
  stem = SHIPPED[name][0]
  return os.path.join(WEIGHTS_DIR, stem + ".safetensors"), os.path.join(WEIGHTS_DIR, stem + ".json")


def model_mismatch(name: str, model: Any) -> str:
  """'' when the ``model`` config block builds the encoder the weights ``name`` fit, else what differs."""
  want = SHIPPED[name][1]
  wrong = [f"model.{k}={model.get(k)!r} (the file needs {v!r})" for k, v in want.items() if model.get(k) != v]
  return ", ".join(wrong)


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def manifest(name: str) -> dict[str, Any]:
  """The manifest of the shipped weights ``name`` (PretrainedError if missing or unreadable)."""
  _, path = paths(name)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    reason = "is missing" if isinstance(e, FileNotFoundError) else f"cannot be read ({e})"
    raise PretrainedError(f"model.init_from={name}: the manifest {path} {reason}; remake the source encoder: "
                          f"{REMAKE_COMMAND}") from None


def resolve(name: str) -> str:
  """The verified file of the shipped weights ``name``.

  Raises:
    PretrainedError: the file or its manifest missing, or the file's SHA-256 not the manifest's.
  """
  weights, _ = paths(name)
  expected = manifest(name).get("sha256")
  if not os.path.isfile(weights):
    raise PretrainedError(f"model.init_from={name}: {weights} is missing; remake it: {REMAKE_COMMAND}")
  got = sha256(weights)
  if got != expected:
    raise PretrainedError(f"model.init_from={name}: {weights} is damaged (SHA-256 {got[:16]}..., its manifest says "
                          f"{str(expected)[:16]}...); restore it (git checkout -- fgjax/pretrained/weights/"
                          f"{os.path.basename(weights)}) or remake it: {REMAKE_COMMAND}")
  return weights
