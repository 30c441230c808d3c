"""Writes RUNS_DIR/learning.md and RUNS_DIR/learning_curves.png from the runs under RUNS_DIR.

  python launch/learning_table.py RUNS_DIR

Runs are the directories RUNS_DIR/<name>_seed<k> that fgjax.main wrote
(fgjax/evaluate/learning_table.py says what the table holds).
"""

import os
import sys

from fgjax.evaluate import learning_table


def main(runs_dir: str) -> None:
  runs = learning_table.find_runs(runs_dir)
  if not runs:
    sys.exit(f"no finished runs (<name>_seed<k>/results.json) under {runs_dir}")
  text = learning_table.summary(runs) + "\n" + learning_table.table(runs)
  with open(os.path.join(runs_dir, "learning.md"), "w") as f:
    f.write(text)
  learning_table.draw_curves(runs, os.path.join(runs_dir, "learning_curves.png"))
  print(text)


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
