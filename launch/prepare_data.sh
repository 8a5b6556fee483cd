#!/usr/bin/env bash
# Prepares one TFDS dataset once, in DATA_DIR (a local path or gs://bucket/path), before any training run.
#
#   launch/prepare_data.sh cifar10                      # or cifar100, tiny_imagenet, imagenet2012
#   DATA_DIR=gs://my-bucket/tensorflow_datasets launch/prepare_data.sh cifar100
#
# cifar10 / cifar100 download themselves (~170 MB). tiny_imagenet needs tiny-imagenet-200.zip (not extracted) in
# DATA_DIR/downloads/manual/; imagenet2012 needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there (from
# https://image-net.org, an account is needed; preparing takes hours and ~150 GB). digits needs nothing.
# This uses TFDS's Python API: the `tfds build` command of tensorflow-datasets 4.9.10 fails to start without
# apache_beam. Run it on one machine only: hosts preparing the same DATA_DIR at once would race.
set -euo pipefail

DATASET=${1:?usage: launch/prepare_data.sh DATASET (cifar10, cifar100, tiny_imagenet, imagenet2012)}
DATA_DIR=${DATA_DIR:-$HOME/tensorflow_datasets}
PYTHON=${PYTHON:-python}

"$PYTHON" - "$DATASET" "$DATA_DIR" <<'PY'
import sys

import tensorflow_datasets as tfds

import multimix_jax.data  # registers the digits and tiny_imagenet builders

name, data_dir = sys.argv[1:]
builder = tfds.builder(name, data_dir=data_dir)
builder.download_and_prepare()
print(f'{name} ready in {builder.data_dir}:',
      {split: info.num_examples for split, info in builder.info.splits.items()})
PY
