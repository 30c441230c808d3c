r"""Exports an fgjax run's ResNet encoder as a torchvision-layout ``.safetensors`` file.

  python -m fgjax.tools.export_encoder runs/source fgjax/pretrained/weights/source_resnet18_w16.safetensors

Takes the run's latest good checkpoint (verified as for an evaluation), keeps
the encoder's parameters and BatchNorm running statistics (no heads, no
optimizer state), and writes them under torchvision's ResNet names
(``fgjax.pretrained.layout_resnet.resnet_to_torch``): any method's
``model.init_from`` reads the file back to the same function, and PyTorch's
``torchvision.models.resnet18`` (with a CIFAR stem and the same width) loads it
with ``strict=False`` (no ``fc``). Prints the file's tensors, values and SHA-256.
Exit status 2 with one line on a run it cannot read or a non-ResNet encoder.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fgjax.errors import UserError


def export(workdir: str, dst: str) -> tuple[int, int, int]:
  """Writes ``workdir``'s encoder to ``dst``; returns (tensors, values, checkpoint step)."""
  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file

  from fgjax.errors import PretrainedError
  from fgjax.evaluate import restore
  from fgjax.methods import registry
  from fgjax.models import resnet
  from fgjax.pretrained import layout_resnet

  restored = restore.restore_run(workdir)
  encoder = restored.setup.nets.encoder
  if not isinstance(encoder, resnet.ResNet):
    raise PretrainedError(f"{workdir}: its encoder is a {type(encoder).__name__}; only ResNets are exported")
  frozen = registry.frozen_model(restored.train_cfg, restored.setup.nets, restored.state)
  tensors = layout_resnet.resnet_to_torch({"params": frozen.params, "batch_stats": frozen.batch_stats}, encoder)
  save_file(tensors, dst, metadata={"fgjax_run": workdir, "checkpoint_step": str(restored.step),
                                    "encoder": restored.train_cfg.model.encoder,
                                    "width": str(restored.train_cfg.model.width),
                                    "cifar_stem": str(restored.train_cfg.model.cifar_stem)})
  return len(tensors), int(sum(v.size for v in tensors.values())), int(restored.step)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m fgjax.tools.export_encoder",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("workdir", help="an fgjax run directory (its checkpoints/ and config.json)")
  parser.add_argument("dst", help="the .safetensors file to write")
  args = parser.parse_args(argv)
  if not args.dst.endswith(".safetensors"):
    parser.error(f"the output must end in .safetensors, got {args.dst}")
  try:
    count, values, step = export(args.workdir, args.dst)
  except UserError as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  from fgjax.pretrained import shipped  # pylint: disable=import-outside-toplevel
  print(f"wrote {args.dst}: {count} tensors, {values:,} values, checkpoint step {step}, "
        f"sha256 {shipped.sha256(args.dst)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
