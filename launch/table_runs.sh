# Sourced by the reproduction-table scripts (perturb_table.sh, base_indi_table.sh, hcl_table.sh).
#
#   run_table_entry NAME SEED RUNS_DIR CONFIG [--config.* flags...]
#
# Trains RUNS_DIR/NAME_seedSEED with CONFIG unless its results.json exists (so a table can be
# re-run after an interruption), logs to RUNS_DIR/NAME_seedSEED.log, appends the run's
# seconds to RUNS_DIR/times.txt, and stops the calling script (its last log lines shown) on
# a failed run.
run_table_entry() {
  local name=$1 seed=$2 runs=$3 config=$4
  shift 4
  local workdir="${runs}/${name}_seed${seed}"
  [[ -f "${workdir}/results.json" ]] && return 0
  local t0
  t0=$(date +%s)
  python -m fgjax.main --config="${config}" --workdir="${workdir}" --config.seed="${seed}" "$@" \
    2> "${workdir}.log" || { tail -3 "${workdir}.log"; exit 1; }
  echo "${name} seed ${seed}: $(( $(date +%s) - t0 )) s" | tee -a "${runs}/times.txt"
}
