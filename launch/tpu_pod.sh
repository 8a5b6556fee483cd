#!/usr/bin/env bash
# Cloud TPU VMs, one host or a pod slice: run from your machine (gcloud installed and logged in), at the
# repository root. Every command reaches all hosts of the slice (--worker=all); each host runs the same trainer,
# and jax.distributed.initialize() finds the others by itself.
#
#   export TPU_NAME=multimix ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#          DATA_DIR=gs://my-bucket/tensorflow_datasets WORKDIR=gs://my-bucket/runs/r50
#   launch/tpu_pod.sh create        # the TPU VM(s); SPOT=1 for a Spot TPU
#   launch/tpu_pod.sh setup         # copy this checkout to every host and install it (Python 3.12, jax[tpu])
#   launch/tpu_pod.sh train [--config.method=erm ...]   # start in the background on every host
#   launch/tpu_pod.sh logs          # follow host 0's log
#   launch/tpu_pod.sh stop          # SIGTERM: every host saves a checkpoint at the same step and exits
#   launch/tpu_pod.sh delete
#   launch/tpu_pod.sh recreate [--config...]   # after a Spot preemption: delete, create, setup, train (resumes)
#
# Data and workdir live on GCS: the hosts' disks do not survive a preemption and are not shared. The TPU VM's
# service account needs read access to DATA_DIR and write access to WORKDIR. Prepare the dataset once
# beforehand (launch/prepare_data.sh with DATA_DIR=gs://...). Rerunning `train` with the same WORKDIR resumes.
set -euo pipefail

TPU_NAME=${TPU_NAME:-multimix}
ZONE=${ZONE:?set ZONE, e.g. us-central2-b (v4), us-east5-a (v5p) or us-east1-d (v6e)}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
# Ubuntu 22.04 images: tpu-ubuntu2204-base for v2, v3 and v4; v2-alpha-tpuv5 (v5p), v2-alpha-tpuv5-lite (v5e),
# v2-alpha-tpuv6e (v6e).
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
SPOT=${SPOT:-0}
CONFIG=${CONFIG:-configs/imagenet_r50.py}  # relative to the repository root
DATA_DIR=${DATA_DIR:-}
WORKDIR=${WORKDIR:-}
REMOTE_DIR=multimix_jax  # on each host, under the home directory
LOG=multimix_train.log

GCLOUD=(gcloud compute tpus tpu-vm)
LOCATION=(--zone="$ZONE")
if [[ -n ${PROJECT:-} ]]; then LOCATION+=(--project="$PROJECT"); fi

# JAX devices of the slice: the type's suffix counts TensorCores; v4 and v5p chips hold two and are one device.
num_devices() {
  local cores=${ACCELERATOR_TYPE##*-}
  case $ACCELERATOR_TYPE in
    v4-* | v5p-*) echo $((cores / 2)) ;;
    *) echo "$cores" ;;
  esac
}

on_all_hosts() {
  "${GCLOUD[@]}" ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$1"
}

create() {
  local extra=()
  if [[ $SPOT == 1 ]]; then extra+=(--spot); fi
  # ${extra[@]+...}: an empty array under `set -u` is an error in macOS's bash 3.2.
  "${GCLOUD[@]}" create "$TPU_NAME" "${LOCATION[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
}

setup() {
  local archive
  archive=$(mktemp "${TMPDIR:-/tmp}/multimix_jax.XXXXXX")
  # The checkout as git sees it: tracked and untracked files, without what .gitignore excludes (.venv, runs).
  (cd "$(git rev-parse --show-toplevel)" &&
    git ls-files -z --cached --others --exclude-standard | tar --null -czf "$archive" -T -)
  "${GCLOUD[@]}" scp "$archive" "$TPU_NAME:$REMOTE_DIR.tar.gz" "${LOCATION[@]}" --worker=all
  rm -f "$archive"
  # The images' Python is 3.10; the project needs >= 3.11: uv fetches 3.12 into a virtual environment.
  on_all_hosts "set -euo pipefail
    mkdir -p ~/$REMOTE_DIR && tar -xzf ~/$REMOTE_DIR.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR
    python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv
    ~/.local/bin/uv venv --quiet --allow-existing --python 3.12 .venv
    ~/.local/bin/uv pip install --quiet --python .venv/bin/python -e '.[tpu]'
    .venv/bin/python -c 'import jax, multimix_jax; print(\"jax\", jax.__version__)'"
}

train() {
  : "${DATA_DIR:?set DATA_DIR=gs://...: every host reads the dataset from it}"
  : "${WORKDIR:?set WORKDIR=gs://...: checkpoints must outlive the hosts and be seen by all of them}"
  local devices batch_size eval_batch_size args
  devices=$(num_devices)
  # The paper's b = 128 is per device: the global batch grows with the slice.
  batch_size=${BATCH_SIZE:-$((128 * devices))}
  eval_batch_size=${EVAL_BATCH_SIZE:-$((128 * devices))}
  args=$(printf '%q ' --jax_distributed --config="$CONFIG" --workdir="$WORKDIR" --config.data_dir="$DATA_DIR" \
    --config.batch_size="$batch_size" --config.eval_batch_size="$eval_batch_size" "$@")
  echo "$ACCELERATOR_TYPE ($devices devices): batch_size=$batch_size; log in ~/$LOG on each host"
  on_all_hosts "cd ~/$REMOTE_DIR && setsid nohup .venv/bin/python -m multimix_jax.main $args \
    > ~/$LOG 2>&1 < /dev/null & echo \$! > ~/multimix_train.pid"
}

logs() {
  "${GCLOUD[@]}" ssh "$TPU_NAME" "${LOCATION[@]}" --worker=0 --command="tail -n 100 -f ~/$LOG"
}

stop() {
  on_all_hosts "kill -TERM \$(cat ~/multimix_train.pid) 2>/dev/null || true"
}

delete() {
  "${GCLOUD[@]}" delete "$TPU_NAME" "${LOCATION[@]}" --quiet
}

recreate() {
  delete || true
  create
  setup
  train "$@"
}

COMMAND=${1:?usage: launch/tpu_pod.sh create|setup|train|logs|stop|delete|recreate [trainer flags]}
shift
case $COMMAND in
  create | setup | logs | stop | delete) "$COMMAND" ;;
  train | recreate) "$COMMAND" "$@" ;;
  *) echo "unknown command $COMMAND; use create, setup, train, logs, stop, delete or recreate" >&2; exit 2 ;;
esac
