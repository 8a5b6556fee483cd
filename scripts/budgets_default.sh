#!/usr/bin/env bash
# ERM, the input-mixup control, MultiMix and Dense MultiMix on the default dataset (digits, small CNN) at three
# training budgets, three seeds each: the table of docs/results.md. The learning rate drops ×0.1 at half and three
# quarters of each budget, as the default's (50, 75) of 100 epochs.
# Usage: [JOBS=1] [SEEDS="0 1 2"] [BUDGETS="5 25 100"] scripts/budgets_default.sh [OUT_DIR]
# (36 runs; a finished run is skipped, so the script resumes; then one markdown table.)
set -euo pipefail
out=${1:-runs/budgets_default}
seeds=${SEEDS:-"0 1 2"}
budgets=${BUDGETS:-"5 25 100"}
mkdir -p "$out"
declare -A runs=(
  [erm]="--config.method=erm"
  [control_erm_or_input_mixup]="--config.method=erm_or_input_mixup"
  [multimix]="--config.method=multimix"
  [dense_multimix]="--config.method=dense_multimix"
)
# shellcheck disable=SC2016  # the single-quoted script is expanded by `bash -c`, not here
for epochs in $budgets; do
  boundaries="($(python3 -c "print($epochs / 2, $epochs * 3 / 4, sep=',')"))"
  for name in erm control_erm_or_input_mixup multimix dense_multimix; do
    for seed in $seeds; do
      dir="$out/e$epochs/$name/seed$seed"
      [ -f "$dir/summary.json" ] || echo "$dir $seed $epochs $boundaries ${runs[$name]}"
    done
  done
done | xargs -P "${JOBS:-1}" -L 1 -d '\n' bash -c '
  read -r dir seed epochs boundaries flags <<<"$0"; mkdir -p "$(dirname "$dir")"
  python -m multimix_jax.main --workdir="$dir" --config.seed="$seed" --config.num_epochs="$epochs" \
    --config.lr_boundaries_epochs="$boundaries" $flags >"$dir.log" 2>&1 || echo "run $dir failed: see $dir.log" >&2'
python - "$out" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
names = ['erm', 'control_erm_or_input_mixup', 'multimix', 'dense_multimix']
budgets = sorted((int(d[1:]) for d in os.listdir(out) if d.startswith('e') and d[1:].isdigit()))
print('| method | ' + ' | '.join(f'{e} epochs' for e in budgets) + ' |')
print('| --- |' + ' --- |' * len(budgets))
for name in names:
  cells = []
  for e in budgets:
    final = [json.load(open(p))['final_top1'] for p in sorted(glob.glob(f'{out}/e{e}/{name}/seed*/summary.json'))]
    sd = statistics.stdev(final) if len(final) > 1 else 0.0
    cells.append(f'{statistics.mean(final):.2f} ± {sd:.2f} ({len(final)})' if final else '')
  print(f'| {name} | ' + ' | '.join(cells) + ' |')
PY
