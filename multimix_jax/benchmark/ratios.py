"""Ratios to ERM with confidence intervals, the verdict on each target, and the markdown tables.

A ratio is estimated from the rounds, not from one figure: round k times every method back to back, so
t_method[k] / t_erm[k] is one paired ratio, and the ratio reported is their geometric mean with a 95% Student-t
interval on the mean of their logarithms (exp(mean ± t_{0.975, k-1} · sd / √k)). Logs make the interval symmetric
for a ratio and its inverse; pairing removes the machine's drift shared by a round. A target "≤ T" is met when the
whole interval lies at or below T, missed when it lies above, and undecided otherwise: more rounds (or a quieter
machine) decide it. One round gives no interval, so its targets stay undecided.
"""

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95

# Targets of the project (the benchmark reports them; tests never time anything). Keyed by the loss timed.
STEP_TARGETS = {'multimix': 1.03, 'dense_multimix': 1.10}  # step time × ERM's, at n = 1000
DENSE_PEAK_MEMORY_TARGET = 1.2  # Dense MultiMix at n = 1000, peak device memory × ERM's
RESNET50_IMAGES_PER_S_TARGET = 3000.0  # ERM, per GPU

_MIB = 2**20


# ------------------------------------------------------------------------------------------------ statistics


def log_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
  """(geometric mean, lower, upper) of positive `values`: the Student-t interval of the mean of their logs,
  exponentiated. The bounds are None with fewer than two values."""
  logs = np.log(np.asarray(values, np.float64))
  k, mean = len(logs), float(np.mean(logs))
  if k < 2:
    return math.exp(mean), None, None
  half = stats.t.ppf((1 + confidence) / 2, k - 1) * float(np.std(logs, ddof=1)) / math.sqrt(k)
  return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def paired_ratio(times, reference, confidence: float = CONFIDENCE):
  """Round-by-round ratios times[k] / reference[k] -> (geometric mean, lower, upper), see `log_interval`."""
  if len(times) != len(reference):
    raise ValueError(f'paired times need as many rounds: {len(times)} against {len(reference)}.')
  return log_interval([a / b for a, b in zip(times, reference)], confidence)


def unpaired_ratio(times, reference, confidence: float = CONFIDENCE):
  """geomean(times) / geomean(reference) with Welch's t-interval on the difference of mean logs, for timings
  that were not taken side by side (PyTorch's, in its own process). Bounds None with fewer than two of either."""
  a, b = np.log(np.asarray(times, np.float64)), np.log(np.asarray(reference, np.float64))
  estimate = math.exp(float(np.mean(a) - np.mean(b)))
  if len(a) < 2 or len(b) < 2:
    return estimate, None, None
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  se = math.sqrt(va + vb)
  if se == 0:
    return estimate, estimate, estimate
  df = (va + vb)**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  half = stats.t.ppf((1 + confidence) / 2, df) * se
  return estimate, estimate * math.exp(-half), estimate * math.exp(half)


def verdict(lower: float | None, upper: float | None, target: float, *, at_most: bool = True) -> str:
  """'met', 'missed' or 'undecided' for "value ≤ target" (at_most) or "value ≥ target", from its interval."""
  if lower is None or upper is None:
    return 'undecided'
  if at_most:
    return 'met' if upper <= target else 'missed' if lower > target else 'undecided'
  return 'met' if lower >= target else 'missed' if upper < target else 'undecided'


def add_ratios(result: dict) -> dict:
  """Adds to every row of a setting's result its ratio to ERM's step time, `ratio_to_erm` [`ratio_to_erm_ci`]."""
  erm = next((row for row in result['methods'] if row['method'] == 'erm' and row['step_s_rounds']), None)
  for row in result['methods']:
    row['ratio_to_erm'] = row['ratio_to_erm_ci'] = None
    if erm is not None and row is not erm and row['step_s_rounds']:
      estimate, lower, upper = paired_ratio(row['step_s_rounds'], erm['step_s_rounds'])
      row['ratio_to_erm'] = estimate
      row['ratio_to_erm_ci'] = None if lower is None else [lower, upper]
  return result


# ------------------------------------------------------------------------------------------------ targets


def interval_text(estimate, interval, spec='.3f'):
  text = format(estimate, spec)
  return text if interval is None else f'{text} [{interval[0]:{spec}}, {interval[1]:{spec}}]'


def check_targets(results: list[dict], backend: str) -> list[tuple[str, str, str]]:
  """The project's targets against the measurements: [(target, measured [95% CI], met / missed / undecided)]."""
  checks = []
  for result in results:
    model = result['setting']['model']
    rows = {r['method']: r for r in result['methods']}
    erm = rows.get('erm')
    if erm is None or erm['error'] is not None:
      continue
    for name, row in rows.items():
      if row['n'] != 1000 or row['error'] is not None:
        continue
      if row['loss'] in STEP_TARGETS and row['ratio_to_erm'] is not None:
        limit, ci = STEP_TARGETS[row['loss']], row['ratio_to_erm_ci']
        checks.append((f'{model}: {name} step ≤ {limit} × erm', interval_text(row['ratio_to_erm'], ci),
                       verdict(*(ci or (None, None)), limit)))
      if row['loss'] == 'dense_multimix':
        limit = DENSE_PEAK_MEMORY_TARGET
        peak, erm_peak = (r['peak_memory'] and r['peak_memory'].get('peak_bytes_in_use') for r in (row, erm))
        if peak and erm_peak:  # memory is deterministic: no interval
          ratio = peak / erm_peak
          checks.append((f'{model}: {name} peak device memory ≤ {limit} × erm', f'{ratio:.3f}',
                         'met' if ratio <= limit else 'missed'))
        elif row['xla_memory'] and erm['xla_memory']:
          ratio = row['xla_memory']['step_bytes'] / erm['xla_memory']['step_bytes']
          checks.append((f'{model}: {name} peak device memory ≤ {limit} × erm',
                         f'{ratio:.3f} (XLA step memory; {backend} reports no peak)', 'n/a'))
    if model == 'resnet50' and backend == 'gpu' and len(erm['step_s_rounds']) > 0:
      limit = RESNET50_IMAGES_PER_S_TARGET
      per_device = result['global_batch_size'] / result['num_devices']
      step, lower, upper = log_interval(erm['step_s_rounds'])
      ci = None if lower is None else [per_device / upper, per_device / lower]
      checks.append((f'resnet50 ERM > {limit:,.0f} images/s per GPU', interval_text(per_device / step, ci, ',.0f'),
                     verdict(*(ci or (None, None)), limit, at_most=False)))
    torch_result = result.get('torch')
    if torch_result and torch_result.get('step_s_rounds') and erm['step_s_rounds']:
      # Per device, JAX runs b images per step as PyTorch does: the speed ratio is PyTorch's step over JAX's.
      estimate, lower, upper = unpaired_ratio(torch_result['step_s_rounds'], erm['step_s_rounds'])
      ci = None if lower is None else [lower, upper]
      checks.append((f'{model}: JAX ERM speed per device ≥ PyTorch\'s', interval_text(estimate, ci, '.2f') + ' ×',
                     verdict(lower, upper, 1.0, at_most=False)))
  return checks


# ------------------------------------------------------------------------------------------------ markdown


def _fmt(value, spec='.2f', none='n/a'):
  return none if value is None else format(value, spec)


def _mib(value):
  if value is None:
    return 'n/a'
  return f'{value / _MIB:,.1f}' if value < 100 * _MIB else f'{value / _MIB:,.0f}'


def setting_title(result: dict, backend: str) -> str:
  s = result['setting']
  shape = '×'.join(map(str, s['image_shape']))
  timing = (f"median of {s['rounds']} interleaved rounds × {s['steps']} steps; × erm: geometric mean of the "
            f"paired round ratios [95% CI]" if s['rounds'] else 'compiled only')
  return (f"{s['model']}, b = {s['batch_size']} per device × {result['num_devices']} {backend} device(s), {shape}, "
          f"c = {s['num_classes']}, r = {result['r']}, {s['dtype']}; {timing}")


def markdown_setting(result: dict, backend: str) -> str:
  lines = [f'#### {setting_title(result, backend)}', '',
           '| method | timed | compile (s) | step (ms) | images/s | × erm [95% CI] | XLA step memory (MiB) | '
           'peak device memory (MiB) |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  for row in result['methods']:
    if row['error'] is not None:
      lines.append(f"| {row['method']} | {row['timed']} | failed: {row['error'][:200]} | | | | | |")
      continue
    step_ms = None if row['step_s'] is None else 1e3 * row['step_s']
    ratio = ('—' if row['ratio_to_erm'] is None else interval_text(row['ratio_to_erm'], row['ratio_to_erm_ci']))
    xla = row['xla_memory'] and row['xla_memory']['step_bytes']
    peak = row['peak_memory'] and row['peak_memory'].get('peak_bytes_in_use')
    lines.append(f"| {row['method']} | {row['timed']} | {row['compile_s']:.1f} | {_fmt(step_ms)} | "
                 f"{_fmt(row['images_per_s'], ',.0f')} | {ratio} | {_mib(xla)} | {_mib(peak)} |")
  torch_result = result.get('torch')
  if torch_result is not None:
    jax_erm = next((r for r in result['methods'] if r['method'] == 'erm'), None)
    lines += ['', '| framework (ERM, per device) | step (ms) | images/s | compile (s) |',
              '| --- | ---: | ---: | ---: |']
    if jax_erm is not None and jax_erm['error'] is None:
      per_device = result['global_batch_size'] / result['num_devices']
      lines.append(f"| JAX (this package) | {_fmt(jax_erm['step_s'] and 1e3 * jax_erm['step_s'])} | "
                   f"{_fmt(jax_erm['step_s'] and per_device / jax_erm['step_s'], ',.0f')} | "
                   f"{jax_erm['compile_s']:.1f} |")
    if 'error' in torch_result:
      lines.append(f"| PyTorch | {torch_result['error']} | | |")
    else:
      label = f"PyTorch {torch_result['torch_version']}" + (' (torch.compile)' if torch_result['compiled'] else '')
      lines.append(f"| {label} | {_fmt(torch_result['step_s'] and 1e3 * torch_result['step_s'])} | "
                   f"{_fmt(torch_result['images_per_s'], ',.0f')} | {torch_result['compile_s']:.1f} |")
  return '\n'.join(lines)


def markdown_report(report: dict) -> str:
  """The whole run as markdown: one table per setting, the targets with their verdicts, the input pipeline."""
  backend = report['environment']['backend']
  parts = [f"Environment: {report['environment']['summary']}", '']
  for result in report['settings']:
    parts += [markdown_setting(result, backend), '']
  checks = check_targets(report['settings'], backend)
  if checks:
    parts += ['#### Targets', '',
              'met: the whole 95% interval is on the right side of the target; missed: wholly on the wrong side; '
              'undecided: it straddles the target (more rounds, or a quieter machine, decide).', '',
              '| target | measured [95% CI] | verdict |', '| --- | --- | --- |']
    parts += [f'| {t} | {m} | {v} |' for t, m, v in checks]
    parts.append('')
  if report.get('input'):
    parts += ['#### Input pipeline (per host)', '',
              '| source | data | image shape | batch | cores | images/s | images/s per core | start-up (s) |',
              '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |']
    parts += [f"| {r['dataset']} | {r['source']} | {'×'.join(map(str, r['image_shape']))} | {r['batch_size']} | "
              f"{r['cores']} | {r['images_per_s']:,.0f} | {r['images_per_s'] / r['cores']:,.0f} | "
              f"{r['startup_s']:.1f} |" for r in report['input']]
    parts.append('')
  return '\n'.join(parts)
