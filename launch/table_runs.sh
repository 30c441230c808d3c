# Sourced by the reproduction-table scripts (perturb_table.sh, base_indi_table.sh, hcl_table.sh).
#
#   table_budget CPU_FLAGS_VAR GPU_FLAGS_VAR  -> sets the array `budget` from BUDGET (cpu or gpu)
#   run_table_entry NAME SEED RUNS_DIR CONFIG [--config.* flags...]
#   finish_table TABLE RUNS_DIR SEEDS START_SECONDS [tables.py flags...]
#
# BUDGET=cpu (the default) runs the script's CPU budget, sized for the 2-core machine;
# BUDGET=gpu its long budget for one GPU (same data, model and recipe, more epochs).
# run_table_entry trains RUNS_DIR/NAME_seedSEED with CONFIG unless its results.json exists
# (so a table can be re-run after an interruption), logs to RUNS_DIR/NAME_seedSEED.log,
# appends the run's seconds to RUNS_DIR/times.txt, and stops the calling script (its last
# log lines shown) on a failed run. finish_table writes RUNS_DIR/table.md (the table, missing
# runs listed as such) and RUNS_DIR/curves.png (every run's online kNN curve).
table_budget() {
  case "${BUDGET:-cpu}" in
    cpu) eval "budget=(\"\${$1[@]}\")" ;;
    gpu) eval "budget=(\"\${$2[@]}\")" ;;
    *) echo "BUDGET must be cpu or gpu, got '${BUDGET}'" >&2; exit 2 ;;
  esac
  echo "budget ${BUDGET:-cpu}: ${budget[*]}"
}

run_table_entry() {
  local name=$1 seed=$2 runs=$3 config=$4
  shift 4
  local workdir="${runs}/${name}_seed${seed}"
  [[ -f "${workdir}/results.json" ]] && return 0
  mkdir -p "${runs}"
  local t0
  t0=$(date +%s)
  python -m fgjax.main --config="${config}" --workdir="${workdir}" --config.seed="${seed}" "$@" \
    2> "${workdir}.log" || { tail -3 "${workdir}.log"; exit 1; }
  echo "${name} seed ${seed}: $(( $(date +%s) - t0 )) s" | tee -a "${runs}/times.txt"
}

finish_table() {
  local table=$1 runs=$2 seeds=$3 start=$4
  shift 4
  echo "total: $(( $(date +%s) - start )) s (budget ${BUDGET:-cpu})" | tee -a "${runs}/times.txt"
  python -m fgjax.tools.tables "${table}" "${runs}" --seeds "${seeds}" --curves "${runs}/curves.png" "$@" \
    | tee "${runs}/table.md"
}
