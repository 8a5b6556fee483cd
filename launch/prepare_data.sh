#!/usr/bin/env bash
# Prepares one TFDS dataset once as ArrayRecord in DATA_DIR (a local path; copy it to a bucket afterwards), before any
# run: `python -m multimix_jax.data.prepare`, which says first what it will do and how much disk it needs.
#
#   launch/prepare_data.sh cifar10                      # or cifar100, tiny_imagenet, imagenet2012, any TFDS name
#   DATA_DIR=/data/tensorflow_datasets launch/prepare_data.sh cifar100
#   MANUAL_DIR=/data/imagenet launch/prepare_data.sh imagenet2012
#
# cifar10 / cifar100 download themselves (~170 MB). tiny_imagenet needs tiny-imagenet-200.zip (not extracted) in
# DATA_DIR/downloads/manual/ (or MANUAL_DIR); imagenet2012 needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
# there (from https://image-net.org, an account is needed; preparing takes hours and ~150 GB). Building a TFDS
# catalog dataset needs TensorFlow (pip install 'multimix_jax[prepare]'); cifar10, cifar100 and tiny_imagenet do
# not. A dataset already prepared as TFRecord in DATA_DIR (an older TFDS or tf.data setup) is converted in place
# instead, without TensorFlow or downloading. Rerunning after an interruption resumes; on a prepared dataset it does nothing. Run it
# on one machine only: hosts preparing the same DATA_DIR at once would race.
set -euo pipefail

DATASET=${1:?usage: launch/prepare_data.sh DATASET (cifar10, cifar100, tiny_imagenet, imagenet2012, any TFDS name)}
DATA_DIR=${DATA_DIR:-$HOME/tensorflow_datasets}
PYTHON=${PYTHON:-python}

exec "$PYTHON" -m multimix_jax.data.prepare --dataset="$DATASET" --data_dir="$DATA_DIR" \
  ${MANUAL_DIR:+--manual_dir="$MANUAL_DIR"}
