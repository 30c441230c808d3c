r"""Copies the small results of a table's finished runs into the repository, so a table can span machines.

  python launch/keep_runs.py runs/perturb_paired docs/tables/perturb_paired_cpu

For every ``RUNS_DIR/<name>_seed<s>`` with a results.json: results.json, config.json and the
learning curves (metrics.jsonl reduced to the online kNN monitor rows and every 50th step's loss
terms) go to ``DEST/<name>_seed<s>/``, plus RUNS_DIR's times.txt. The table tools read DEST as they read
RUNS_DIR (``python -m fgjax.tools.tables perturb_paired DEST``); copying DEST back into a new RUNS_DIR
makes the table script skip those runs.
"""

import json
import os
import shutil
import sys

EVERY = 50  # loss rows kept: one in EVERY steps (the monitor rows all)


def keep(runs_dir: str, dest: str) -> list[str]:
  kept = []
  for name in sorted(os.listdir(runs_dir)):
    source = os.path.join(runs_dir, name)
    if not os.path.isfile(os.path.join(source, "results.json")):
      continue
    target = os.path.join(dest, name)
    os.makedirs(target, exist_ok=True)
    for file in ("results.json", "config.json"):
      if os.path.isfile(os.path.join(source, file)):
        shutil.copyfile(os.path.join(source, file), os.path.join(target, file))
    rows = []
    with open(os.path.join(source, "metrics.jsonl")) as f:
      for line in f:
        row = json.loads(line)
        if any(k.startswith("knn") for k in row) or row["step"] % EVERY == 0:
          rows.append(line)
    with open(os.path.join(target, "metrics.jsonl"), "w") as f:
      f.writelines(rows)
    kept.append(name)
  if os.path.isfile(os.path.join(runs_dir, "times.txt")):
    shutil.copyfile(os.path.join(runs_dir, "times.txt"), os.path.join(dest, "times.txt"))
  return kept


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__.split("\n\n")[1])
  print("kept:", " ".join(keep(sys.argv[1], sys.argv[2])) or "nothing (no results.json)")
