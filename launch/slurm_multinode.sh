#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, each driving all of its node's GPUs.
#
#   WORKDIR=/shared/runs/r50 DATA_DIR=/shared/tensorflow_datasets \
#     sbatch --nodes=4 --partition=gpu --account=myproject --gpus-per-node=8 --cpus-per-task=32 \
#     launch/slurm_multinode.sh [--config.method=erm ...]          # extra arguments go to the trainer
#
# Partition, account, GPUs and CPUs per node are sbatch options (your cluster's names), not written here.
# Install first, once, on a filesystem every node sees, from the repository root (Python 3.11 or 3.12):
#   python3 -m venv .venv && .venv/bin/pip install -c launch/constraints.txt -e '.[train,cuda]'   # 'train,cuda13': CUDA 13
# Submit from the repository root (or set REPO). WORKDIR and DATA_DIR must be on a filesystem every node sees;
# every host checks at start that it sees the same workdir state as process 0.
# Resuming: submit the same command again (same WORKDIR); it continues from the latest checkpoint. The job does it
# by itself after a preemption or the time limit: the trainer saves a checkpoint on SIGTERM, and when it stopped
# before the run's last step the job requeues itself (REQUEUE=0 turns that off).
#SBATCH --job-name=multimix
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
# --signal: SIGTERM to every task 5 minutes before the time limit; the trainer saves a checkpoint and exits.
# --requeue: a preempted job goes back to the queue (where the cluster's preemption mode is REQUEUE); --open-mode:
# the requeued job appends to the same output file.
set -euo pipefail

REPO=${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CONFIG=${CONFIG:-$REPO/configs/imagenet_r50.py}
WORKDIR=${WORKDIR:?set WORKDIR to a directory on a filesystem shared by all nodes}
DATA_DIR=${DATA_DIR:-$HOME/tensorflow_datasets}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-}}
GPUS_PER_NODE=${GPUS_PER_NODE:?set GPUS_PER_NODE or submit with sbatch --gpus-per-node=N}
PER_DEVICE_BATCH_SIZE=${PER_DEVICE_BATCH_SIZE:-128}  # the paper's b; the trainer multiplies by all GPUs of the job
# Since SLURM 22.05, srun no longer inherits --cpus-per-task from sbatch: without it each task would get one core
# and the input pipeline would starve the GPUs. Pass it on explicitly (sbatch --cpus-per-task, or CPUS_PER_TASK).
CPUS_PER_TASK=${CPUS_PER_TASK:-${SLURM_CPUS_PER_TASK:-}}
CPUS_PER_TASK=${CPUS_PER_TASK:?set CPUS_PER_TASK or submit with sbatch --cpus-per-task=N (the cores of a node)}
# A node silent for this many seconds counts as lost: the others stop, with a line naming it.
HEARTBEAT_TIMEOUT=${HEARTBEAT_TIMEOUT:-60}
REQUEUE=${REQUEUE:-1}

# gRPC, which jax.distributed.initialize uses to reach process 0, honours proxy variables; JAX's multi-process
# initialization warns that on some systems they make it hang, and that unsetting them may be needed.
PROXY_VARS=$(env | sed -n 's/^\([A-Za-z_]*_[Pp][Rr][Oo][Xx][Yy]\)=.*/\1/p' | tr '\n' ' ')
if [[ -n $PROXY_VARS ]]; then
  echo "warning: ${PROXY_VARS}set: JAX warns that proxy variables can make jax.distributed.initialize hang on some" \
    "systems; if the job stalls before training, unset them for the job (e.g. unset ${PROXY_VARS% })." >&2
fi

# jax.distributed.initialize() reads SLURM's variables (coordinator = first node, port from the job id). Under
# SLURM it gives each process only one GPU unless told otherwise: one process per node needs all of them.
LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS_PER_NODE - 1)))

echo "$SLURM_JOB_NUM_NODES nodes x $GPUS_PER_NODE GPUs, $CPUS_PER_TASK CPUs per task," \
  "$PER_DEVICE_BATCH_SIZE examples per GPU; config=$CONFIG, workdir=$WORKDIR"
# On preemption SLURM sends SIGTERM to this script as well as to the trainers: without a trap the script would end
# at once and the job with it, cutting the trainers' checkpoint short. Wait for them to save and exit.
trap 'echo "SIGTERM: waiting for the trainers to save a checkpoint" >&2' TERM
# --label: every output line starts with its task's number (the process index).
srun --label --ntasks-per-node=1 --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
  "$PYTHON" -m multimix_jax.main --jax_distributed --local_device_ids="$LOCAL_DEVICE_IDS" \
    --heartbeat_timeout="$HEARTBEAT_TIMEOUT" \
    --config="$CONFIG" --workdir="$WORKDIR" --config.data_dir="$DATA_DIR" \
    --per_device_batch_size="$PER_DEVICE_BATCH_SIZE" \
    "$@" &
TRAINERS=$!
while true; do
  status=0
  wait "$TRAINERS" || status=$?
  if ! kill -0 "$TRAINERS" 2> /dev/null; then break; fi  # the wait was cut short by SIGTERM
done
# The trainers exit 0 both at the run's last step (summary.json written) and after saving on SIGTERM.
if [[ $status == 0 && ! -e $WORKDIR/summary.json && $REQUEUE == 1 && -n ${SLURM_JOB_ID:-} ]]; then
  echo "stopped before the last step: requeueing job $SLURM_JOB_ID, which resumes from the checkpoint in $WORKDIR"
  scontrol requeue "$SLURM_JOB_ID" || echo "scontrol requeue failed: submit the same command again to resume" >&2
fi
exit "$status"
