#!/usr/bin/env bash
# One TPU VM host's side of `launch/tpu_pod.sh train`, run on every host from ~/multimix_jax (copied there by
# `tpu_pod.sh setup`); not meant to be run by hand.
#
#   launch/tpu_host.sh check                     # fails, with one error line, when a trainer runs on this host
#   launch/tpu_host.sh start WORKDIR [trainer flags]
#
# `start` refuses to start a second trainer, starts `python -m multimix_jax.main [trainer flags]` in the background
# with its output in ~/multimix_train.log, and copies that log to WORKDIR/logs/worker-N.log (N: the host's worker
# number) every LOG_COPY_INTERVAL seconds (default 30) and when the trainer ends or the host shuts down: a preempted
# host's disk is gone, the copy in WORKDIR stays. A new start appends to the copy of the earlier attempts.
set -euo pipefail

LOG=${LOG:-$HOME/multimix_train.log}
PIDFILE=${PIDFILE:-$HOME/multimix_train.pid}
PYTHON=${PYTHON:-.venv/bin/python}
LOG_COPY_INTERVAL=${LOG_COPY_INTERVAL:-30}

check() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 0
  # The pid of a trainer that ended may have been reused: only a running multimix_jax.main counts.
  if [[ -n $pid ]] && grep -qs 'multimix_jax\.main' "/proc/$pid/cmdline"; then
    echo "error: $(hostname): a trainer already runs (pid $pid); stop it first (launch/tpu_pod.sh stop)" >&2
    return 1
  fi
}

worker_number() {
  # TPU_WORKER_ID where the environment sets it (GKE), else the TPU VM's metadata, else the host name.
  if [[ -n ${TPU_WORKER_ID:-} ]]; then echo "$TPU_WORKER_ID"; return; fi
  curl -sf --max-time 5 -H 'Metadata-Flavor: Google' \
    http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname
}

copy() {  # copy SRC DST, DST on GCS or a local path
  if [[ $2 == gs://* ]]; then
    gcloud storage cp --quiet "$1" "$2" > /dev/null 2>&1
  else
    mkdir -p "$(dirname "$2")" && cp "$1" "$2"
  fi
}

keep_copying() {  # keep_copying PID LOG SAVED: until the trainer PID ends, and once more at the end or on SIGTERM
  local pid=$1 log=$2 saved=$3
  trap 'copy "$log" "$saved" || true; exit 0' TERM
  while kill -0 "$pid" 2> /dev/null; do
    sleep "$LOG_COPY_INTERVAL" & wait $! || true
    copy "$log" "$saved" || true
  done
  copy "$log" "$saved" || true
}

start() {
  local workdir=$1 saved trainer
  shift
  check
  saved=$workdir/logs/worker-$(worker_number).log
  # A recreated host starts with an empty disk: continue the copy of the earlier attempts.
  copy "$saved" "$LOG" 2> /dev/null || : > "$LOG"
  setsid nohup "$PYTHON" -m multimix_jax.main "$@" >> "$LOG" 2>&1 < /dev/null &
  trainer=$!
  echo "$trainer" > "$PIDFILE"
  setsid nohup bash "$0" keep_copying "$trainer" "$LOG" "$saved" > /dev/null 2>&1 < /dev/null &
  echo "$(hostname): trainer started (pid $trainer); its log is $LOG, copied to $saved"
}

case ${1:-} in
  check) check ;;
  start) shift; start "$@" ;;
  keep_copying) shift; keep_copying "$@" ;;
  *) echo "error: usage: launch/tpu_host.sh check | start WORKDIR [trainer flags]" >&2; exit 2 ;;
esac
