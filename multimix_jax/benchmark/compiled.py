"""`--target`: every method of the settings compiled for a TPU slice or GPU node that is not here, not timed.

Each method is built as the timed benchmark builds it (`timing.make_branch`) and compiled by `multimix_jax.preflight`
for the target's devices at b per device. The figures are the compiler's (per-chip memory, FLOPs, bytes accessed, a
roofline bound) and deterministic, so each method's ratio to ERM has no interval and the targets are judged on the
figures themselves.
"""

from multimix_jax import models
from multimix_jax.benchmark import ratios
from multimix_jax.benchmark.presets import Setting, parse_method
from multimix_jax.benchmark.timing import feature_positions, make_branch, optimizer
from multimix_jax.preflight import compile as compile_lib
from multimix_jax.preflight import hardware
from multimix_jax.preflight import roofline
from multimix_jax.trainer import step as step_lib

# Ratios to ERM that the compiled figures are judged on, by the loss compiled (n = 1000).
RATIO_KEYS = {'flops': 'FLOPs', 'bytes_accessed': 'bytes accessed', 'total_bytes': 'memory'}


def compile_setting(setting: Setting, target: hardware.Target, *, chunk_size: int = -1, log=print) -> dict:
  """Compiles every method of `setting` for `target`; returns the setting's JSON-able result (per-chip rows)."""
  devices = target.devices()
  dp = step_lib.DataParallel('shard_map', devices=devices)
  model = models.create_model(setting.model, num_classes=setting.num_classes, dtype=step_lib.DTYPES[setting.dtype])
  r = feature_positions(model, setting.image_shape)
  tx = optimizer()
  rows = []
  for name in setting.methods:
    branch = make_branch(parse_method(name), setting, num_devices=len(devices), r=r, chunk_size=chunk_size)
    log(f'[{setting.model} on {target.name}] compiling {name}...')
    cost = compile_lib.compile_train_step(name, dp, model=model, tx=tx, loss_fn=branch.loss_fn,
                                          image_shape=setting.image_shape,
                                          global_batch=setting.batch_size * len(devices),
                                          count_on_cpu=target.chip.platform != 'tpu')
    rows.append({'method': name, 'timed': branch.timed, 'loss': branch.loss_name, 'n': branch.n,
                 **roofline.chip_row(cost, target, setting.dtype)})
  erm = next((row for row in rows if row['method'] == 'erm' and not row['error']), None)
  for row in rows:
    for key in RATIO_KEYS:
      ok = erm is not None and not row['error'] and row[key] is not None and erm[key]
      row[f'{key}_to_erm'] = row[key] / erm[key] if ok else None
  return {'setting': setting.to_json(), 'target': target.name, 'target_description': target.describe(), 'r': r,
          'num_devices': len(devices), 'methods': rows}


def check_targets(results: list[dict]) -> list[tuple[str, str, str]]:
  """[(target, compiled figure, met / missed)] for MultiMix and Dense MultiMix at n = 1000 against ERM."""
  checks = []
  for result in results:
    model, where = result['setting']['model'], result['target']
    for row in result['methods']:
      if row['n'] != 1000 or row['loss'] not in ratios.STEP_TARGETS or row['error']:
        continue
      limit = ratios.STEP_TARGETS[row['loss']]
      for key in ('flops', 'bytes_accessed'):
        if row[f'{key}_to_erm'] is not None and not (key == 'bytes_accessed' and row['bytes_are_minimum']):
          ratio = row[f'{key}_to_erm']
          checks.append((f'{model} on {where}: {row["method"]} {RATIO_KEYS[key]} ≤ {limit} × erm', f'{ratio:.3f}',
                         'met' if ratio <= limit else 'missed'))
      if row['loss'] == 'dense_multimix' and model == 'resnet50' and row['total_bytes_to_erm'] is not None:
        limit, ratio = ratios.DENSE_PEAK_MEMORY_TARGET, row['total_bytes_to_erm']
        checks.append((f'{model} on {where}: {row["method"]} memory ≤ {limit} × erm', f'{ratio:.3f}',
                       'met' if ratio <= limit else 'missed'))
  return checks


def _ratio(value):
  return '—' if value is None else f'{value:.3f}'


def markdown_setting(result: dict) -> str:
  s = result['setting']
  shape = '×'.join(map(str, s['image_shape']))
  lines = [f"#### {s['model']}, b = {s['batch_size']} per device, {shape}, c = {s['num_classes']}, r = {result['r']}, "
           f"{s['dtype']}: compiled for {result['target_description']}", '',
           '| method | compiled | compile (s) | memory / chip | FLOPs / chip | × erm | bytes / chip | × erm | '
           'memory × erm | bound images/s/chip |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for row in result['methods']:
    if row['error']:
      lines.append(f"| {row['method']} | {row['timed']} | failed: {row['error'][:200]} | | | | | | | |")
      continue
    traffic = roofline.count(row['bytes_accessed'], 'B')
    if row['bytes_are_minimum']:
      traffic = f'≥ {traffic}'
    bound = '—' if row['bound_images_per_s'] is None else f"{row['bound_images_per_s']:,.0f}"
    lines.append(f"| {row['method']} | {row['timed']} | {row['compile_s']:.1f} | "
                 f"{roofline.size(row['total_bytes'])} | {roofline.count(row['flops'])} | "
                 f"{_ratio(row['flops_to_erm'])} | {traffic} | {_ratio(row['bytes_accessed_to_erm'])} | "
                 f"{_ratio(row['total_bytes_to_erm'])} | {bound} |")
  return '\n'.join(lines)


def markdown_report(results: list[dict], checks) -> str:
  parts = ['Compiled, not run: memory, FLOPs and bytes are the target compiler\'s figures for one chip, and the bound '
           'is a roofline bound (no step can be faster), not a measured speed.', '']
  for result in results:
    parts += [markdown_setting(result), '']
  if checks:
    parts += ['#### Targets (compiled figures, no interval: they are deterministic)', '',
              '| target | compiled | verdict |', '| --- | --- | --- |']
    parts += [f'| {t} | {m} | {v} |' for t, m, v in checks]
    parts.append('')
  return '\n'.join(parts)
