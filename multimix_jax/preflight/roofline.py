"""Per-chip figures of compiled steps: memory against HBM, FLOPs, bytes, a roofline bound, and the markdown table.

The roofline bound is the shortest time a step can take on the chip: the larger of FLOPs / peak FLOP/s and bytes /
HBM bandwidth. It is a bound from compiled figures, never a measurement: real steps are slower.
"""

from multimix_jax.preflight import hardware
from multimix_jax.preflight.compile import StepCost

_GIB = 2**30


def bound_s(flops: float, traffic: float, chip: hardware.Chip, dtype: str) -> float:
  """The roofline bound of a step doing `flops` and moving `traffic` bytes on one chip, computing in `dtype`."""
  return max(flops / chip.peak(dtype), traffic / chip.hbm_bytes_per_s)


def chip_row(cost: StepCost, target: hardware.Target, dtype: str) -> dict:
  """`cost` (one device) as per-chip figures on `target`, with the fit verdict and the roofline bound of a step
  computing in `dtype`."""
  per = target.chip.devices_per_chip  # devices of one chip run the same program: a chip holds `per` of them
  usable = target.usable_bytes_per_device * per
  row = {'step': cost.name, 'images_per_chip': cost.images_per_device * per, 'compile_s': cost.compile_s,
         'usable_hbm_bytes': usable, 'error': cost.error, 'cost_source': cost.cost_source,
         'compiler_options': cost.compiler_options,
         'arguments_bytes': None, 'temporaries_bytes': None, 'total_bytes': None, 'headroom_bytes': None,
         'flops': None, 'bytes_accessed': None, 'bytes_are_minimum': False, 'bound_s': None,
         'bound_images_per_s': None}
  out_of_memory = cost.error is not None and 'RESOURCE_EXHAUSTED' in cost.error
  if cost.memory is not None:
    total = cost.memory['step_bytes'] * per
    row.update(arguments_bytes=cost.memory['argument_size_in_bytes'] * per,
               temporaries_bytes=cost.memory['temp_size_in_bytes'] * per, total_bytes=total,
               headroom_bytes=usable - total)
  row['fits'] = False if out_of_memory else None if cost.memory is None else row['total_bytes'] <= usable
  if cost.flops is not None:
    traffic = cost.bytes_accessed if cost.bytes_accessed is not None else cost.min_bytes
    row.update(flops=cost.flops * per, bytes_accessed=traffic * per, bytes_are_minimum=cost.bytes_accessed is None)
    bound = bound_s(row['flops'], row['bytes_accessed'], target.chip, dtype)
    if bound > 0:
      row.update(bound_s=bound, bound_images_per_s=row['images_per_chip'] / bound)
  return row


def size(value):
  """Bytes as GiB (or MiB below a tenth of a GiB), '—' for None."""
  if value is None:
    return '—'
  return f'{value / _GIB:.2f} GiB' if abs(value) >= _GIB / 10 else f'{value / 2**20:.1f} MiB'


def count(value, unit=''):
  """1.23e12 -> '1.23 T' + unit; '—' for None."""
  if value is None:
    return '—'
  for scale, prefix in ((1e15, 'P'), (1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(value) >= scale:
      return f'{value / scale:.3g} {prefix}{unit}'
  return f'{value:.3g} {unit}'.strip()


def markdown(rows: list[dict], target: hardware.Target, title: str, dtype: str) -> str:
  """The table of a preflight for `target`: one row a compiled step, computing in `dtype`."""
  chip = target.chip
  lines = [f'### {title}', '',
           f'{target.describe()}. Compiled, not run: memory and FLOPs are the compiler\'s figures for one chip, and '
           f'"bound" is a roofline bound (the step cannot be faster), not a measured speed. HBM usable per chip: '
           f'{size(target.usable_bytes_per_device * chip.devices_per_chip)}'
           + (f' ({chip.usable_fraction:.0%} of {chip.hbm_bytes / _GIB:.1f} GiB, JAX\'s default GPU memory fraction)'
              if chip.usable_fraction < 1 else '') + f'; peak {count(chip.peak(dtype))}FLOP/s for {dtype} matmuls.', '',
           '| step | images / chip | arguments | temporaries | total | headroom | fits | FLOPs | '
           'bytes accessed | bound ms | bound images/s/chip | compile s |',
           '| --- | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: |']
  for row in rows:
    fits = {True: 'yes', False: '**no**', None: '?'}[row['fits']]
    traffic = count(row['bytes_accessed'], 'B')
    if row['bytes_are_minimum'] and row['bytes_accessed'] is not None:
      traffic = f'≥ {traffic}'
    bound_ms = '—' if row['bound_s'] is None else f'{1e3 * row["bound_s"]:.3g}'
    images = '—' if row['bound_images_per_s'] is None else f'{row["bound_images_per_s"]:,.0f}'
    compile_s = '—' if row['compile_s'] is None else f'{row["compile_s"]:.1f}'
    lines.append(f'| {row["step"]} | {row["images_per_chip"]} | {size(row["arguments_bytes"])} | '
                 f'{size(row["temporaries_bytes"])} | {size(row["total_bytes"])} | {size(row["headroom_bytes"])} | '
                 f'{fits} | {count(row["flops"])} | {traffic} | {bound_ms} | {images} | {compile_s} |')
  notes = []
  if chip.devices_per_chip > 1:
    notes.append(f'{chip.name}: compiled as {chip.devices_per_chip} devices a chip (one a TensorCore, as the '
                 'compile-only topology gives them); per-chip figures are theirs added up.')
  if any(row['bytes_are_minimum'] for row in rows):
    notes.append('≥: XLA:GPU reports no bytes accessed ahead of time; the bound uses the least traffic a step does '
                 '(reading its arguments, writing its outputs), and FLOPs are counted on the program before XLA\'s '
                 'optimisations.')
  for row in rows:
    if row['compiler_options']:
      options = ', '.join(f'{k}={v}' for k, v in row['compiler_options'].items())
      notes.append(f'{row["step"]}: compiled with {options}: XLA:GPU could not tile one of its matmuls for Triton '
                   'ahead of time (no GPU to autotune on), so cuBLAS computes them in this compilation.')
    if row['error']:
      notes.append(f'{row["step"]}: {row["error"]}')
  return '\n'.join(lines + ([''] + [f'- {n}' for n in notes] if notes else []))
