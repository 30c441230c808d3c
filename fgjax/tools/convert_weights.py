r"""Converts a torch weights file (.pth / .pt) into .safetensors, which fgjax reads without torch.

  pip install 'fgjax[torch-weights]'      # torch, where the conversion runs
  python -m fgjax.tools.convert_weights resnet50-11ad3fa6.pth resnet50-11ad3fa6.safetensors

Reads the file with ``torch.load(weights_only=True)`` (never unpickling other
objects), takes the state_dict inside (``state_dict`` / ``model`` keys of a
training checkpoint, or the file itself), keeps its tensors (floating ones as
float32) and writes them with ``safetensors.numpy``. Prints how many tensors and
values it wrote. Exit status 2 with one line on a file it cannot read.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fgjax.errors import PretrainedError
from fgjax.pretrained import files


def convert(src: str, dst: str) -> tuple[int, int]:
  """Writes ``src``'s tensors to ``dst`` (.safetensors); returns (tensors, values)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(src):
    raise PretrainedError(f"{src} does not exist")
  tensors = files.read_torch(src)
  if not tensors:
    raise PretrainedError(f"{src}: no tensors in the file")
  save_file({k: v for k, v in tensors.items()}, dst)
  return len(tensors), int(sum(v.size for v in tensors.values()))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m fgjax.tools.convert_weights", description=__doc__.split("\n\n")[0])
  parser.add_argument("src", help="a torch .pth / .pt file")
  parser.add_argument("dst", help="the .safetensors file to write")
  args = parser.parse_args(argv)
  if not args.dst.endswith(".safetensors"):
    parser.error(f"the output must end in .safetensors, got {args.dst}")
  try:
    count, values = convert(args.src, args.dst)
  except PretrainedError as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.dst}: {count} tensors, {values:,} values")
  return 0


if __name__ == "__main__":
  sys.exit(main())
