#!/usr/bin/env bash
# Cloud TPU VMs (v4, v5e, v5p, v6e), one host or a pod slice, through the Cloud TPU API (gcloud compute tpus
# queued-resources and tpu-vm): run from your machine (gcloud installed and logged in), at the repository root.
# Every command reaches all hosts of the slice (--worker=all); each host runs the same trainer, and
# jax.distributed.initialize() finds the others by itself.
#
#   export TPU_NAME=multimix ZONE=us-east5-b ACCELERATOR_TYPE=v6e-16 RUNTIME_VERSION=v2-alpha-tpuv6e \
#          DATA_DIR=/mnt/my-bucket/tensorflow_datasets WORKDIR=gs://my-bucket/runs/r50
#   launch/tpu_pod.sh request       # a queued resource (the way to get v5e and v6e slices); SPOT=1 for Spot
#   launch/tpu_pod.sh wait          # until the request is ACTIVE
#   launch/tpu_pod.sh create        # or: the TPU VM(s) directly, where capacity is there (v4, v5p)
#   launch/tpu_pod.sh setup         # copy this checkout to every host, install it (Python 3.11, launch/constraints.txt)
#   launch/tpu_pod.sh train [--config.method=erm ...]   # start in the background on every host (refused while a
#                                   # trainer runs); each host's log is copied to $WORKDIR/logs/worker-N.log
#   launch/tpu_pod.sh status        # every worker: trainer running or not, the last lines of its log
#   launch/tpu_pod.sh logs          # follow host 0's log
#   launch/tpu_pod.sh stop          # SIGTERM: every host saves a checkpoint at the same step and exits
#   launch/tpu_pod.sh delete        # the queued resource and its VMs, or the VMs made by `create`
#   launch/tpu_pod.sh recreate [--config...]   # after a Spot preemption: delete, request, wait, setup, train
#   launch/tpu_pod.sh watch [--config...]      # every WATCH_INTERVAL s (300): recreate when the queued resource is
#                                   # SUSPENDED or FAILED; the run resumes from WORKDIR. WATCH_ROUNDS=1 looks once (cron)
#   DRY_RUN=1 launch/tpu_pod.sh train ...   # print the gcloud commands instead of running them
#
# Data and workdir live on GCS: the hosts' disks do not survive a preemption and are not shared. The TPU VM's
# service account needs read access to DATA_DIR and write access to WORKDIR. Prepare the dataset once
# beforehand (launch/prepare_data.sh). The ArrayRecord reader opens local paths only: DATA_DIR is the bucket
# mounted by gcsfuse on every host (this script does not mount it). Rerunning `train` with the same WORKDIR resumes.
# The global batch is PER_DEVICE_BATCH_SIZE (default 128, the paper's b) times the slice's JAX devices, which the
# trainer counts itself (--per_device_batch_size): nothing here reads the accelerator type.
set -euo pipefail

TPU_NAME=${TPU_NAME:-multimix}
ZONE=${ZONE:-}
# Accelerator types: v5litepod-N (v5e), v6e-N (v6e), v5p-N, v4-N. Runtime versions: v2-alpha-tpuv5-lite (v5e),
# v2-alpha-tpuv6e (v6e), v2-alpha-tpuv5 (v5p), tpu-ubuntu2204-base (v2, v3, v4).
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v6e-16}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv6e}
QUEUED_RESOURCE=${QUEUED_RESOURCE:-$TPU_NAME-qr}
SPOT=${SPOT:-0}
DRY_RUN=${DRY_RUN:-0}
CONFIG=${CONFIG:-configs/imagenet_r50.py}  # relative to the repository root
PER_DEVICE_BATCH_SIZE=${PER_DEVICE_BATCH_SIZE:-128}
HEARTBEAT_TIMEOUT=${HEARTBEAT_TIMEOUT:-60}  # a host silent this long counts as lost; the others stop, naming it
PYTHON_VERSION=${PYTHON_VERSION:-3.11}  # the tests' Python, which launch/constraints.txt was resolved for
# Another libtpu than launch/constraints.txt's, installed over it by `setup`. On v6e, 0.0.52 unless set (empty: the
# pinned one): the pinned 0.0.42.1 crashes compiling PreActResNet-18 and ResNet-50 for v6e (launch/README.md).
if [[ $ACCELERATOR_TYPE == v6e-* ]]; then LIBTPU_VERSION=${LIBTPU_VERSION-0.0.52}; fi
LIBTPU_VERSION=${LIBTPU_VERSION:-}
WATCH_INTERVAL=${WATCH_INTERVAL:-300}
WATCH_ROUNDS=${WATCH_ROUNDS:-0}  # 0: watch until the queued resource is deleted
DATA_DIR=${DATA_DIR:-}
WORKDIR=${WORKDIR:-}
REMOTE_DIR=multimix_jax  # on each host, under the home directory
LOG=multimix_train.log

if [[ -n $LIBTPU_VERSION && ! $LIBTPU_VERSION =~ ^[0-9]+(\.[0-9]+)*$ ]]; then
  echo "error: LIBTPU_VERSION=$LIBTPU_VERSION is not a version; give one such as 0.0.52 (pip index versions libtpu)" >&2
  exit 2
fi
if [[ -z $ZONE ]]; then
  echo "error: set ZONE, e.g. us-east5-b (v6e), us-west4-a (v5e), us-east5-a (v5p) or us-central2-b (v4)" >&2
  exit 2
fi
LOCATION=(--zone="$ZONE")
if [[ -n ${PROJECT:-} ]]; then LOCATION+=(--project="$PROJECT"); fi

# Runs a command, or prints it (quoted, one line) with DRY_RUN=1.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

on_all_hosts() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$1"
}

request() {
  local extra=()
  if [[ $SPOT == 1 ]]; then extra+=(--spot); fi
  # ${extra[@]+...}: an empty array under `set -u` is an error in macOS's bash 3.2.
  run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" "${LOCATION[@]}" --node-id="$TPU_NAME" \
    --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
}

qr_state() {
  run gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" "${LOCATION[@]}" --format='value(state.state)'
}

wait_active() {
  local state
  while true; do
    state=$(qr_state)
    echo "$QUEUED_RESOURCE: $state"
    if [[ $DRY_RUN == 1 || $state == ACTIVE ]]; then return; fi
    if [[ $state == FAILED || $state == SUSPENDED ]]; then return 1; fi
    sleep 60
  done
}

create() {
  local extra=()
  if [[ $SPOT == 1 ]]; then extra+=(--spot); fi
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOCATION[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
}

setup() {
  local archive
  archive=$(mktemp "${TMPDIR:-/tmp}/multimix_jax.XXXXXX")
  # The checkout as git sees it: tracked and untracked files, without what .gitignore excludes (.venv, runs).
  (cd "$(git rev-parse --show-toplevel)" &&
    git ls-files -z --cached --others --exclude-standard | tar --null -czf "$archive" -T -)
  run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:$REMOTE_DIR.tar.gz" "${LOCATION[@]}" --worker=all
  rm -f "$archive"
  # The images' Python is 3.10; the project needs >= 3.11: uv fetches it into a virtual environment. Every host
  # installs the versions of launch/constraints.txt, so all resolve the same jax, libtpu and the rest.
  on_all_hosts "set -euo pipefail
    mkdir -p ~/$REMOTE_DIR && tar -xzf ~/$REMOTE_DIR.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR
    python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv
    ~/.local/bin/uv venv --quiet --allow-existing --python $PYTHON_VERSION .venv
    ~/.local/bin/uv pip install --quiet --python .venv/bin/python -c launch/constraints.txt -e '.[train,tpu]'
    ${LIBTPU_VERSION:+~/.local/bin/uv pip install --quiet --python .venv/bin/python libtpu==$LIBTPU_VERSION}
    .venv/bin/python -c 'import importlib.metadata as m, jax, multimix_jax; print(\"jax\", jax.__version__, \"libtpu\", m.version(\"libtpu\"))'"
}

require_run_settings() {
  if [[ -z $DATA_DIR || -z $WORKDIR ]]; then
    echo "error: set DATA_DIR (a gcsfuse mount of the bucket on every host) and WORKDIR=gs://...: every host reads the data and the checkpoints there" >&2
    exit 2
  fi
}

train() {
  require_run_settings
  local args
  args=$(printf '%q ' "$WORKDIR" --jax_distributed --heartbeat_timeout="$HEARTBEAT_TIMEOUT" --config="$CONFIG" \
    --workdir="$WORKDIR" --config.data_dir="$DATA_DIR" --per_device_batch_size="$PER_DEVICE_BATCH_SIZE" "$@")
  # All hosts first: a host that already trains would leave the others waiting for it at their first step.
  if ! on_all_hosts "cd ~/$REMOTE_DIR && bash launch/tpu_host.sh check"; then
    echo "error: a trainer already runs on the slice (see above): launch/tpu_pod.sh stop first" >&2
    exit 1
  fi
  echo "$ACCELERATOR_TYPE: $PER_DEVICE_BATCH_SIZE examples per device; log in ~/$LOG on each host," \
    "copied to $WORKDIR/logs/worker-N.log"
  on_all_hosts "cd ~/$REMOTE_DIR && bash launch/tpu_host.sh start $args"
}

status() {
  # Every worker prints its own lines, prefixed by gcloud with the worker's address.
  on_all_hosts "if kill -0 \$(cat ~/multimix_train.pid 2>/dev/null) 2>/dev/null; then
      echo \"\$(hostname): trainer running\"; else echo \"\$(hostname): trainer not running\"; fi
    tail -n 3 ~/$LOG 2>/dev/null || echo \"\$(hostname): no log yet\""
}

logs() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=0 --command="tail -n 100 -f ~/$LOG"
}

stop() {
  on_all_hosts "kill -TERM \$(cat ~/multimix_train.pid) 2>/dev/null || true"
}

delete() {
  if run gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" "${LOCATION[@]}" > /dev/null 2>&1; then
    run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" "${LOCATION[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOCATION[@]}" --quiet
  fi
}

recreate() {
  delete || true
  request && wait_active && setup && train "$@"
}

# Recreates the slice whenever its queued resource is SUSPENDED (a Spot or preemptible slice was preempted) or FAILED;
# the new slice's trainer resumes from the checkpoints in WORKDIR. Ends when the queued resource is deleted.
watch() {
  require_run_settings
  local state round=0 errors
  errors=$(mktemp "${TMPDIR:-/tmp}/multimix_watch.XXXXXX")
  while true; do
    round=$((round + 1))
    if state=$(qr_state 2> "$errors"); then
      echo "$(date -u +%FT%TZ) $QUEUED_RESOURCE: $state"
      if [[ $state == SUSPENDED || $state == FAILED ]]; then
        echo "$(date -u +%FT%TZ) recreating $QUEUED_RESOURCE; the run resumes from $WORKDIR"
        recreate "$@" || echo "$(date -u +%FT%TZ) recreating failed; next try in $WATCH_INTERVAL s" >&2
      fi
    elif grep -q NOT_FOUND "$errors"; then
      echo "$(date -u +%FT%TZ) $QUEUED_RESOURCE does not exist (deleted): nothing to watch"
      break
    else  # gcloud could not answer (network, quota): look again later
      echo "$(date -u +%FT%TZ) could not read the state of $QUEUED_RESOURCE: $(tr '\n' ' ' < "$errors")" >&2
    fi
    if [[ $DRY_RUN == 1 || $round == "$WATCH_ROUNDS" ]]; then break; fi
    sleep "$WATCH_INTERVAL"
  done
  rm -f "$errors"
}

USAGE="usage: launch/tpu_pod.sh request|wait|create|setup|train|status|logs|stop|delete|recreate|watch [trainer flags]"
if [[ $# -lt 1 ]]; then
  echo "error: $USAGE" >&2
  exit 2
fi
COMMAND=$1
shift
case $COMMAND in
  request | create | setup | status | logs | stop | delete) "$COMMAND" ;;
  wait) wait_active ;;
  train | recreate | watch) "$COMMAND" "$@" ;;
  *) echo "error: unknown command $COMMAND; $USAGE" >&2; exit 2 ;;
esac
