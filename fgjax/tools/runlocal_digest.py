r"""Digests of every config's ``:runlocal`` outputs: a refactor must leave them unchanged.

  python -m fgjax.tools.runlocal_digest --out=before.json [--runs=/tmp/runlocal]
  ... change the code ...
  python -m fgjax.tools.runlocal_digest --out=after.json --compare=before.json

Runs each ``configs/*.py`` preset below with ``:runlocal`` (seconds each), then
``configs/evaluate.py:runlocal`` on the MoCo run, and records the SHA-256 of
``results.json`` (without its wall-clock fields) and of ``metrics.jsonl`` (which
holds no times). ``--compare`` prints every digest that differs and exits 1 if
any does. Pictures are drawn but not compared (PNG bytes carry library
versions); their file names are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys


# (name, config argument): every config file, and each Base-Indi / class-attentive variant.
RUNS = (
    ("moco", "configs/moco.py:runlocal"),
    ("perturb_moco", "configs/perturb_moco.py:runlocal"),
    ("simsiam", "configs/simsiam.py:runlocal"),
    ("perturb_simsiam", "configs/perturb_simsiam.py:runlocal"),
    ("ce", "configs/ce.py:runlocal"),
    ("supcon", "configs/supcon.py:runlocal"),
    ("hcl", "configs/hcl.py:runlocal"),
    ("base_indi", "configs/base_indi.py:runlocal"),
    ("base", "configs/base_indi.py:base,runlocal"),
    ("indi", "configs/base_indi.py:indi,runlocal"),
    ("fine", "configs/base_indi.py:fine,runlocal"),
    ("base_indi_eff", "configs/base_indi.py:eff,runlocal"),
    ("simclr", "configs/simclr.py:runlocal"),
    ("perturb_simclr", "configs/perturb_simclr.py:runlocal"),
    ("byol", "configs/byol.py:runlocal"),
    ("perturb_byol", "configs/perturb_byol.py:runlocal"),
    ("class_attentive", "configs/class_attentive.py:runlocal"),
    ("class_attentive_siamese", "configs/class_attentive.py:siamese,runlocal"),
)
# Entries of results.json that differ between any two runs of the same code: wall
# clock, when an evaluation ran, and where the run lives.
TIMING_KEYS = ("wall time s", "data wait", "evaluated", "workdir", "total_seconds", "train_seconds")


def _strip_timing(obj):
  if isinstance(obj, dict):
    return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
  if isinstance(obj, list):
    return [_strip_timing(v) for v in obj]
  return obj


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def digest_workdir(workdir: str) -> dict[str, str]:
  """SHA-256 of the run's results.json (timing removed) and metrics.jsonl."""
  out = {}
  path = os.path.join(workdir, "results.json")
  if os.path.exists(path):
    with open(path) as f:
      out["results.json"] = _sha(json.dumps(_strip_timing(json.load(f)), sort_keys=True).encode())
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path, "rb") as f:
      out["metrics.jsonl"] = _sha(f.read())
  pictures = os.path.join(workdir, "pictures")
  if os.path.isdir(pictures):
    out["pictures"] = ",".join(sorted(os.listdir(pictures)))
  return out


def _run(args: list[str]) -> None:
  cmd = [sys.executable, "-m", "fgjax.main", *args]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    sys.exit(f"runlocal_digest: {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="where to write the digests (JSON)")
  parser.add_argument("--runs", default="/tmp/runlocal_digest", help="the runs' parent folder")
  parser.add_argument("--compare", help="digests of an earlier run of this tool")
  parser.add_argument("--only", default="", help="comma-separated names of RUNS to do")
  parser.add_argument("--no_run", action="store_true", help="digest the runs already in --runs")
  args = parser.parse_args(argv)
  only = {n for n in args.only.split(",") if n}
  digests = {}
  for name, config in RUNS:
    if only and name not in only:
      continue
    workdir = os.path.join(args.runs, name)
    if not args.no_run:
      shutil.rmtree(workdir, ignore_errors=True)
      _run([f"--config={config}", f"--workdir={workdir}"])
      if name == "moco":
        _run(["--config=configs/evaluate.py:runlocal", f"--config.workdir={workdir}"])
      if name in ("perturb_moco", "base_indi"):
        _run(["--config=configs/pictures.py:runlocal", f"--config.workdir={workdir}"])
    digests[name] = digest_workdir(workdir)
    print(name, digests[name], flush=True)
  with open(args.out, "w") as f:
    json.dump(digests, f, indent=1, sort_keys=True)
  if not args.compare:
    return 0
  with open(args.compare) as f:
    before = json.load(f)
  differ = [(n, k) for n in digests for k in set(digests[n]) | set(before.get(n, {}))
            if digests[n].get(k) != before.get(n, {}).get(k)]
  for name, key in differ:
    print(f"DIFFERS: {name} {key}")
  print(f"{len(digests)} runs compared, {len(differ)} digests differ")
  return 1 if differ else 0


if __name__ == "__main__":
  sys.exit(main())
