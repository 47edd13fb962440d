#!/usr/bin/env bash
# One run as N processes on this machine: a multi-host run in miniature.
#
#   launch/local.sh N -- python -m algdist.main --config configs/dark_room.py:smoke
#
# Process i gets ALGDIST_COORDINATOR, ALGDIST_NUM_PROCESSES=N and
# ALGDIST_PROCESS_ID=i (algdist/distributed.py) and writes its log to
# ${LOG_DIR:-runs/local_logs}/process_<i>.log. When one process fails, or
# TIMEOUT seconds (default 3600) pass, every process is killed with SIGKILL:
# distributed JAX processes take SIGTERM as a preemption notice (they save
# and stop at the next agreed update), and a survivor would wait in a
# barrier forever. Exits with the first failure's status (124: timeout);
# 143 is no failure: a preemption notice (SIGTERM to this script is passed
# to every process), every process saving, then exiting 143 too.
set -euo pipefail

if [[ $# -lt 3 || ! $1 =~ ^[1-9][0-9]*$ || $2 != "--" ]]; then
  echo "usage: $0 N -- COMMAND [ARGS...]" >&2
  exit 2
fi
num=$1
shift 2
timeout_s=${TIMEOUT:-3600}
logs=${LOG_DIR:-runs/local_logs}
port=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$logs"

pids=()
for ((i = 0; i < num; i++)); do
  ALGDIST_COORDINATOR="127.0.0.1:${port}" ALGDIST_NUM_PROCESSES="$num" \
    ALGDIST_PROCESS_ID="$i" "$@" >"${logs}/process_${i}.log" 2>&1 &
  pids+=("$!")
done
trap 'kill -9 "${pids[@]}" 2>/dev/null || true' EXIT
# A preemption notice (SIGTERM) to this script goes to every process: they
# save at the update they agree on and exit 143 (algdist/checkpoints.py).
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM

deadline=$((SECONDS + timeout_s))
done_count=0
preempted=0
declare -A finished=()
while ((done_count < num)); do
  if ((SECONDS >= deadline)); then
    echo "local.sh: timeout after ${timeout_s} s; killing every process" >&2
    exit 124
  fi
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [[ -n ${finished[$i]:-} ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" || rc=$?
    finished[$i]=1
    done_count=$((done_count + 1))
    if ((rc == 143)); then
      # Stopped on a preemption notice, saved: the others stop at the same
      # update; let them finish saving.
      preempted=1
      continue
    fi
    if ((rc != 0)); then
      echo "local.sh: process $i exited with $rc (log: ${logs}/process_${i}.log); killing the others" >&2
      exit "$rc"
    fi
  done
  sleep 0.2
done
if ((preempted)); then
  echo "local.sh: preempted, checkpoint saved; run the same command to resume (logs in ${logs})" >&2
  exit 143
fi
echo "local.sh: all $num processes exited 0 (logs in ${logs})"
