#!/usr/bin/env bash
# MoCo v2 vs Perturb-MoCo v2 on the embedded data, same data/model/schedule, N seeds,
# one table (mean +- std) at the end. The paper-scale ablation table is issue 5.
#
#   bash launch/moco_vs_perturb.sh [NUM_SEEDS=1] [RUNS_DIR=runs/compare] [extra --config.* flags...]
#
# On the 2-core CPU machine each seed takes about 2 min (MoCo) + 6.5 min (Perturb-MoCo), measured.
set -euo pipefail
seeds=${1:-1}; runs=${2:-runs/compare}; shift $(( $# > 2 ? 2 : $# )) || true
for seed in $(seq 0 $((seeds - 1))); do
  for method in moco perturb_moco; do
    python -m fgjax.main --config=configs/${method}.py --workdir="${runs}/${method}_seed${seed}" \
      --config.seed="${seed}" "$@"
  done
done
python - "$runs" "$seeds" <<'PY'
import json, sys, statistics as st
runs, seeds = sys.argv[1], int(sys.argv[2])
keys = ["knn20_top1_fine", "probe100_top1_fine", "probe20_top1_fine", "rank1_fine", "rank5_fine", "map_fine",
        "knn20_top1_super", "map_super"]
def cell(values):
    values = [100 * v for v in values]
    return f"{st.mean(values):.2f}" + (f" ± {st.stdev(values):.2f}" if len(values) > 1 else "")
print("| encoder | " + " | ".join(keys) + " |")
print("|---|" + "---|" * len(keys))
rows = {}
for method in ("moco", "perturb_moco"):
    res = [json.load(open(f"{runs}/{method}_seed{s}/results.json")) for s in range(seeds)]
    rows[method] = [r["trained"] for r in res]
    rows.setdefault("random init", [r["random_init"] for r in res if "random_init" in r])
for name, results in rows.items():
    if results:
        print(f"| {name} | " + " | ".join(cell([r[k] for r in results]) for k in keys) + " |")
PY
