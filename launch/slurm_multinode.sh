#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, each driving all of its node's GPUs.
#
#   WORKDIR=/shared/runs/r50 DATA_DIR=/shared/tensorflow_datasets sbatch --nodes=4 launch/slurm_multinode.sh
#   WORKDIR=... sbatch launch/slurm_multinode.sh --config.method=erm     # extra arguments go to the trainer
#
# Submit from the repository root (or set REPO). WORKDIR and DATA_DIR must be on a filesystem every node sees.
# Resuming: submit the same command again (same WORKDIR); it continues from the latest checkpoint. A chain that
# survives time limits: sbatch --dependency=afterany:<previous job id> ... with the same variables.
#SBATCH --job-name=multimix
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=%x-%j.out
# --signal: SIGTERM to every task 5 minutes before the time limit; the trainer saves a checkpoint and exits.
set -euo pipefail

REPO=${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}  # a virtual environment with `pip install -e '.[cuda]'`
CONFIG=${CONFIG:-$REPO/configs/imagenet_r50.py}
WORKDIR=${WORKDIR:?set WORKDIR to a directory on a filesystem shared by all nodes}
DATA_DIR=${DATA_DIR:-$HOME/tensorflow_datasets}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
NUM_DEVICES=$((SLURM_JOB_NUM_NODES * GPUS_PER_NODE))
# The paper's b = 128 is per GPU: the global batch grows with the number of GPUs.
BATCH_SIZE=${BATCH_SIZE:-$((128 * NUM_DEVICES))}
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-$((128 * NUM_DEVICES))}

# jax.distributed.initialize() reads SLURM's variables (coordinator = first node, port from the job id). Under
# SLURM it gives each process only GPU $SLURM_LOCALID unless told otherwise: one process per node needs all.
JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS_PER_NODE - 1)))
export JAX_LOCAL_DEVICE_IDS

echo "$SLURM_JOB_NUM_NODES nodes x $GPUS_PER_NODE GPUs: batch_size=$BATCH_SIZE, config=$CONFIG, workdir=$WORKDIR"
srun --ntasks-per-node=1 --kill-on-bad-exit=1 \
  "$PYTHON" -m multimix_jax.main --jax_distributed \
    --config="$CONFIG" --workdir="$WORKDIR" \
    --config.data_dir="$DATA_DIR" \
    --config.batch_size="$BATCH_SIZE" --config.eval_batch_size="$EVAL_BATCH_SIZE" \
    "$@"
