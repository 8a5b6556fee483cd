#!/usr/bin/env bash
# The sweep behind the defaults of configs/default.py (README, "Results on the default dataset"): every method
# and MultiMix setting on digits with the default schedule, several seeds, then one markdown table.
# Usage: scripts/sweep_default.sh [OUT_DIR]   (about 1 minute a run on 2 CPU cores)
set -euo pipefail
out=${1:-runs/sweep_default}
seeds=${SEEDS:-"0 1 2"}
mkdir -p "$out"
declare -A runs=(
  [erm]="--config.method=erm"
  [input_mixup]="--config.method=input_mixup"
  [control_erm_or_input_mixup]="--config.method=erm_or_input_mixup"
  [multimix_a0.1]="--config.method=multimix --config.multimix.alpha=0.1"
  [multimix_a0.5]="--config.method=multimix --config.multimix.alpha=0.5"
  [multimix_a1]="--config.method=multimix --config.multimix.alpha=1.0"
  [multimix_a2]="--config.method=multimix --config.multimix.alpha=2.0"
  [multimix_only_a0.1]="--config.method=multimix --config.multimix.alpha=0.1 --config.multimix.prob=1.0"
  [dense_multimix_a0.1]="--config.method=dense_multimix --config.multimix.alpha=0.1"
  [alignmixup]="--config.method=alignmixup"  # the authors' protocol: alignmixup.alpha = 2, prob = 0.5
)
for name in "${!runs[@]}"; do
  for seed in $seeds; do
    dir="$out/$name/seed$seed"
    [ -f "$dir/summary.json" ] && continue  # finished earlier: the sweep resumes
    # shellcheck disable=SC2086
    python -m multimix_jax.main --workdir="$dir" --config.seed="$seed" ${runs[$name]} >"$out/$name.seed$seed.log" 2>&1
  done
done
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
