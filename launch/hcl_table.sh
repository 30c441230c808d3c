#!/usr/bin/env bash
# Seed H's comparison on the embedded two-level hierarchy data: CE vs SupCon vs HCL, N seeds,
# the same backbone, data and augmentation; one Markdown table at the end (also written to
# RUNS_DIR/table.md): genus-level nearest-centroid outliers (count, share, reduction vs CE),
# species-level kNN and linear-probe accuracy, beside the seed paper's DF20-Mini figures.
#
#   bash launch/hcl_table.sh [NUM_SEEDS=3] [RUNS_DIR=runs/hcl] [extra --config.* flags...]
#
# e.g. `bash launch/hcl_table.sh 3 runs/hcl_vit --config.model.encoder=vit_tiny` (add the
# `vit` preset's optimizer flags) for the ViT backbone. A finished run is skipped when its
# results.json exists, so the script can be re-run after an interruption.
set -euo pipefail
. "$(dirname "$0")/table_runs.sh"
seeds=${1:-3}; runs=${2:-runs/hcl}; shift $(( $# > 2 ? 2 : $# )) || true
methods=(ce supcon hcl)
mkdir -p "${runs}"
start=$(date +%s)
for seed in $(seq 0 $((seeds - 1))); do
  for name in "${methods[@]}"; do
    run_table_entry "${name}" "${seed}" "${runs}" "configs/${name}.py" "$@"
  done
done
echo "total: $(( $(date +%s) - start )) s" | tee -a "${runs}/times.txt"
python - "$runs" "$seeds" <<'PY' | tee "${runs}/table.md"
import json, statistics as st, sys
runs, seeds = sys.argv[1], int(sys.argv[2])
def load(name):
    return [json.load(open(f"{runs}/{name}_seed{s}/results.json")) for s in range(seeds)]
def ms(values, pct=True):
    values = [100 * v if pct else v for v in values]
    return (st.mean(values), st.stdev(values) if len(values) > 1 else 0.0)
def fmt(m_s, digits=2):
    return f"{m_s[0]:.{digits}f}" + (f" ± {m_s[1]:.{digits}f}" if seeds > 1 else "")
res = {name: load(name) for name in ("ce", "supcon", "hcl")}
n_test = res["ce"][0]["run"]["data"]
ce_outliers = [r["trained"]["outliers_super"] for r in res["ce"]]
paper = {"ce": "725 (~20 %)", "supcon": "423 (-41.7 %)", "hcl": "201 (-72.3 %)"}
print(f"Embedded hierarchy data ({n_test}); test split; mean ± std over {seeds} seed(s). "
      "Outliers: test images whose nearest genus centroid (cosine, on f(x)) is not their genus. "
      "Reduction vs CE: per seed, 1 - outliers / CE's outliers of the same seed. "
      "Paper: DF20-Mini (182 species, 6 genera), ViT/Swin, one run.\n")
print("| method | genus outliers | share % | reduction vs CE % | species kNN top-1 % | species linear top-1 % | paper (DF20-Mini) |")
print("|---|---|---|---|---|---|---|")
for title, name in (("CE", "ce"), ("SupCon", "supcon"), ("HCL", "hcl")):
    t = [r["trained"] for r in res[name]]
    knn = [k for k in t[0] if k.startswith("knn") and k.endswith("_top1_fine")][0]
    red = [100 * (1 - o["outliers_super"] / c) if c else float("nan") for o, c in zip(t, ce_outliers)]
    print(f"| {title} | {fmt(ms([x['outliers_super'] for x in t], pct=False), 1)} | "
          f"{fmt(ms([x['outlier_share_super'] for x in t]))} | "
          f"{'-' if name == 'ce' else fmt((st.mean(red), st.stdev(red) if seeds > 1 else 0.0), 1)} | "
          f"{fmt(ms([x[knn] for x in t]))} | {fmt(ms([x['probe100_top1_fine'] for x in t]))} | {paper[name]} |")
PY
