#!/usr/bin/env bash
# The sweep behind the defaults of configs/default.py (README, "Results on the default dataset"): every method
# and MultiMix setting on digits with the default schedule, several seeds, then one markdown table.
# Usage: [JOBS=2] [SEEDS="0 1 2"] scripts/sweep_default.sh [OUT_DIR]   (45 runs, about 1 minute each on 2 CPU cores)
# ONLY="fmix resizemix" runs those rows alone (the table still lists every finished row).
set -euo pipefail
out=${1:-runs/sweep_default}
seeds=${SEEDS:-"0 1 2"}
mkdir -p "$out"
declare -A runs=(
  [erm]="--config.method=erm"
  [input_mixup]="--config.method=input_mixup"
  [input_mixup_beta2]="--config.method=input_mixup --config.mixup_alpha=2.0"
  [control_erm_or_input_mixup]="--config.method=erm_or_input_mixup"
  [multimix_a0.1]="--config.method=multimix --config.multimix.alpha=0.1"
  [multimix_a0.1_beta2]="--config.method=multimix --config.multimix.alpha=0.1 --config.mixup_alpha=2.0"
  [multimix_a0.5]="--config.method=multimix --config.multimix.alpha=0.5"
  [multimix_a1]="--config.method=multimix --config.multimix.alpha=1.0"
  [multimix_a2]="--config.method=multimix --config.multimix.alpha=2.0"
  [multimix_only_a0.1]="--config.method=multimix --config.multimix.alpha=0.1 --config.multimix.prob=1.0"
  [dense_multimix_a0.1]="--config.method=dense_multimix --config.multimix.alpha=0.1"
  [alignmixup]="--config.method=alignmixup"  # the authors' protocol: alignmixup.alpha = 2, prob = 0.5
  [saliencymix]="--config.method=saliencymix"
  [fmix]="--config.method=fmix"
  [resizemix]="--config.method=resizemix"
)
# One line per run still to do (a finished run is skipped: the sweep resumes), then JOBS runs at a time.
# shellcheck disable=SC2016  # the single-quoted script is expanded by `bash -c`, not here
for name in ${ONLY:-"${!runs[@]}"}; do
  for seed in $seeds; do
    [ -f "$out/$name/seed$seed/summary.json" ] || echo "$name $seed ${runs[$name]}"
  done
done | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'python -m multimix_jax.main --workdir="$0/$1/seed$2" --config.seed="$2" "${@:3}" >"$0/$1.seed$2.log" 2>&1 || echo "run $1 seed $2 failed: see $0/$1.seed$2.log" >&2' "$out"
python - "$out" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
print('| run | final top-1 (mean ± sd over seeds) | median of last 10 | seeds | wall s/run |')
print('| --- | --- | --- | --- | --- |')
for name in sorted(os.listdir(out)):
  runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, name, 'seed*', 'summary.json')))]
  if not runs:
    continue
  final = [r['final_top1'] for r in runs]
  median = [r['median_last10_top1'] for r in runs]
  sd = statistics.stdev(final) if len(final) > 1 else 0.0
  print(f'| {name} | {statistics.mean(final):.2f} ± {sd:.2f} | {statistics.mean(median):.2f} | {len(runs)} | '
        f'{statistics.mean(r["wall_time_s"] for r in runs):.0f} |')
PY
