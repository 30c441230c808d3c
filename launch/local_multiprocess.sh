#!/usr/bin/env bash
# Rehearsal of a multi-host run on this machine: N processes of the same fgjax command, on
# loopback (127.0.0.1), each with its own fake CPU devices, joined by jax.distributed (gloo
# collectives). The mesh, the per-process data slices, the checkpoints and the config check
# are those of a TPU pod or GPU cluster; only the devices are fake.
#
#   bash launch/local_multiprocess.sh N --config=configs/moco.py:runlocal --workdir=runs/local2 [flags...]
#
# Environment:
#   DEVICES_PER_PROCESS  fake CPU devices per process (default 2)
#   PORT                 coordinator port on 127.0.0.1 (default: a free one)
#   LOG_DIR              where processes 1..N-1 write process_<i>.log (default: a new temp dir);
#                        process 0 logs to this terminal (the others log warnings and errors only)
#   FGJAX_DISTRIBUTED_TIMEOUT  seconds to wait for every process to join (default here 120)
#   GRACE_S              on Ctrl-C, seconds between SIGTERM (save the step, exit 3) and SIGKILL (default 30)
#
# Exit status: 0 if every process succeeded, else the status of the first one that failed
# (the others are stopped at once). Ctrl-C stops all of them.
set -euo pipefail

usage="usage: bash launch/local_multiprocess.sh N --config=... --workdir=... [flags...]"
n=${1:?$usage}
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "$usage (N must be a positive integer, got '$n')" >&2; exit 2; }
shift
python=${PYTHON:-python}
devices=${DEVICES_PER_PROCESS:-2}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log_dir=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fgjax_local_XXXXXX")}
mkdir -p "$log_dir"
launcher=()
command -v setsid >/dev/null && launcher=(setsid)  # own process group: a stop reaches grain workers too

pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  # On Ctrl-C / SIGTERM fgjax saves the current step and exits (status 3): GRACE_S seconds
  # for that; after a process failed, the others get 1 s.
  local deadline=$((SECONDS + ${grace:-1}))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  done
  for pid in "${pids[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT
trap 'grace=${GRACE_S:-30}; exit 130' INT TERM

echo "local_multiprocess: $n process(es) x $devices CPU device(s), coordinator 127.0.0.1:$port," \
     "logs of processes 1..$((n - 1)) in $log_dir" >&2
start_process() {  # start_process I ARGS...: process I of N, in the background
  local i=$1; shift
  exec env JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="$devices" \
      FGJAX_COORDINATOR_ADDRESS="127.0.0.1:$port" FGJAX_NUM_PROCESSES="$n" FGJAX_PROCESS_ID="$i" \
      FGJAX_DISTRIBUTED_TIMEOUT="${FGJAX_DISTRIBUTED_TIMEOUT:-120}" \
      ${launcher[@]+"${launcher[@]}"} "$python" -m fgjax.main "$@"
}
for ((i = 0; i < n; i++)); do
  if ((i == 0)); then
    start_process "$i" "$@" &  # this terminal (inherited, never reopened: a log file keeps its offset)
  else
    start_process "$i" "$@" >"$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done

# Wait for all; the first failure stops the rest (a peer that died would otherwise leave the
# others waiting in a collective until the runtime's heartbeat timeout).
status=0
remaining=$n
declare -a done_flags
while ((remaining > 0)); do
  for ((i = 0; i < n; i++)); do
    [[ -n "${done_flags[$i]:-}" ]] && continue
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    code=0; wait "${pids[$i]}" || code=$?
    done_flags[$i]=1; remaining=$((remaining - 1))
    if ((code != 0)); then
      echo "local_multiprocess: process $i exited with status $code" >&2
      if ((i > 0)); then tail -n 5 "$log_dir/process_$i.log" | sed "s/^/  [process $i] /" >&2; fi
      ((status == 0)) && status=$code
    fi
  done
  if ((status != 0)); then break; fi
  ((remaining > 0)) && sleep 0.5
done
if ((status != 0)) && ((remaining > 0)); then
  sleep 2  # let the others print their own error line (a config error reaches every process)
  for ((i = 0; i < n; i++)); do
    [[ -n "${done_flags[$i]:-}" ]] && continue
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      code=0; wait "${pids[$i]}" || code=$?
      echo "local_multiprocess: process $i exited with status $code" >&2
      if ((i > 0)); then tail -n 5 "$log_dir/process_$i.log" | sed "s/^/  [process $i] /" >&2; fi
    else
      echo "local_multiprocess: stopping process $i" >&2
    fi
  done
fi
exit "$status"
