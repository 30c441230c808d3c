r"""Writes the manifest of the shipped source encoder and prints its transfer table.

  python -m fgjax.tools.source_manifest runs/make_source fgjax/pretrained/weights/source_resnet18_w16.safetensors

Run by ``launch/make_source_encoder.sh`` (twice: first with the file's SHA-256
alone, so that ``model.init_from=source`` can verify the file, then with the
transfer figures). Reads ``RUNS_DIR/source/results.json`` (the source
training: its own accuracy on the source test split) and
``RUNS_DIR/transfer_{patches,hierarchy}_{source,none}/results.json`` (the
targets' protocols with the source encoder untouched and at random init), and
writes ``<weights>.json`` beside the weights: name, file, bytes, SHA-256, the
command, the commit (``-dirty`` when the tree had changes), the date, the CPU,
the training's steps and wall time, the source accuracy and the transfer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Any, Sequence

from fgjax.pretrained import shipped

TARGETS = ("patches", "hierarchy")
INITS = {"source": "source encoder", "none": "random init"}
# The figures the manifest keeps (percent); the full tables are in the runs' results.json.
METRICS = ("probe100_top1_fine", "probe20_top1_fine", "knn20_top1_fine", "map_fine",
           "probe100_top1_super", "knn20_top1_super", "map_super")


def _read(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _commit() -> str:
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                           text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("-dirty" if dirty else "")


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
    model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    flags = next(line for line in text.splitlines() if line.startswith("flags"))
    return f"{model}, {os.cpu_count()} cores, {'AVX-512' if 'avx512f' in flags else 'AVX2'}"
  except (OSError, StopIteration):
    return platform.processor() or "unknown"


def _percent(section: dict[str, Any]) -> dict[str, float]:
  return {k: round(100 * float(section[k]), 2) for k in METRICS if k in section}


def transfer(runs: str) -> dict[str, Any]:
  """``{target: {metric: {'source encoder': %, 'random init': %}}}`` of the finished evaluations."""
  out: dict[str, Any] = {}
  for target in TARGETS:
    for init, label in INITS.items():
      results = _read(os.path.join(runs, f"transfer_{target}_{init}", "results.json"))
      if results is None:
        continue
      section = results["evaluations"]["imported"]["imported"]
      for metric, value in _percent(section).items():
        out.setdefault(target, {}).setdefault(metric, {})[label] = value
  return out


def table(figures: dict[str, Any]) -> list[str]:
  """The transfer table in Markdown (one row per target and metric)."""
  lines = ["| target | metric | random init | source encoder | difference |", "|---|---|---|---|---|"]
  for target, metrics in figures.items():
    for metric, pair in metrics.items():
      r, s = pair.get("random init"), pair.get("source encoder")
      diff = f"{s - r:+.2f}" if r is not None and s is not None else ""
      lines.append(f"| {target} | {metric} | {r if r is not None else ''} | {s if s is not None else ''} | {diff} |")
  return lines


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m fgjax.tools.source_manifest", description=__doc__.split("\n\n")[0])
  parser.add_argument("runs", help="the RUNS_DIR of launch/make_source_encoder.sh")
  parser.add_argument("weights", help="the exported .safetensors file")
  parser.add_argument("--command", default="bash launch/make_source_encoder.sh")
  args = parser.parse_args(argv)
  trained = _read(os.path.join(args.runs, "source", "results.json"))
  if trained is None or not os.path.isfile(args.weights):
    print(f"{parser.prog}: error: no finished source run in {args.runs}/source or no file {args.weights}",
          file=sys.stderr)
    return 2
  figures = transfer(args.runs)
  manifest = {
      "name": "source",
      "file": os.path.basename(args.weights),
      "bytes": os.path.getsize(args.weights),
      "sha256": shipped.sha256(args.weights),
      "command": args.command,
      "commit": _commit(),
      "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "machine": _cpu(),
      "encoder": trained["run"].get("encoder", ""),
      "training": {"config": "configs/source.py", "steps": trained["run"].get("steps"),
                   "wall time s": trained["run"].get("wall time s"), "data": trained["run"].get("data")},
      "source accuracy": {"split": "source test (2,560 images, 128 classes)", **_percent(trained["trained"])},
      "transfer": figures,
      "transfer protocol": "configs/evaluate.py with init_from=source / none and train_config=configs/moco.py "
                           "(patches) or configs/ce.py (hierarchy): linear probe on 100 / 20 % of the train "
                           "labels, 20-NN, leave-one-out mAP on the test split; percent",
  }
  path = os.path.splitext(args.weights)[0] + ".json"
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)
  print(f"wrote {path} (sha256 {manifest['sha256'][:16]}...)")
  print("\n".join(table(figures)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
