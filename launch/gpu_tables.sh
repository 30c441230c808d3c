#!/usr/bin/env bash
# The reproduction tables at their long budgets on one GPU: each table script with BUDGET=gpu
# (same data, model and recipe as the CPU tables, more epochs; the scripts' headers give them).
#
#   bash launch/gpu_tables.sh                                  # perturb, hcl, base_indi; 3 seeds
#   TABLES="hcl" SEEDS=5 OUT_DIR=$OUT bash launch/gpu_tables.sh
#
# Needs fgjax and a CUDA jax (pip install -e . 'jax[cuda12]'); the embedded data is generated
# on the machine, so nothing but the code travels. Each table goes to OUT_DIR/<table>/ (table.md,
# curves.png, the runs); a table interrupted by a time limit resumes where it stopped when run
# again with the same OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
tables=${TABLES:-perturb hcl base_indi}
seeds=${SEEDS:-3}
out=${OUT_DIR:-runs/gpu_tables}
python -c "import jax; print('devices:', jax.devices())"
for table in ${tables}; do
  case "${table}" in
    perturb|hcl|base_indi) ;;
    *) echo "unknown table '${table}' (known: perturb hcl base_indi)" >&2; exit 2 ;;
  esac
  echo "== ${table} (BUDGET=gpu, ${seeds} seeds) -> ${out}/${table}"
  BUDGET=gpu bash "launch/${table}_table.sh" "${seeds}" "${out}/${table}"
done
