"""The README's compiled TPU/GPU table: every shipped config compiled for a list of targets, on this machine.

    python scripts/compile_targets.py --targets=h100x8,a100-40gbx8,v5e-8,v6e-8,v5e-32 --out=results/compiled_targets.jsonl
    python scripts/compile_targets.py --out=results/compiled_targets.jsonl --markdown   # the table, from what is done

For each (config, target) it runs the run's own preflight (each branch of the config's mixing schedule and the eval
step, as `python -m multimix_jax.main --config=... --compile_for=TARGET`) and compiles ERM's and Dense MultiMix's
train steps on the same config, so that MultiMix's and Dense MultiMix's FLOPs and memory read against ERM's. One JSON
line per (config, target) is appended to --out; a pair already there is skipped, so an interrupted run resumes.
Compiling for a TPU on a CPU is slow (minutes per ResNet-50 step): run it in the background.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax

jax.config.update('jax_platforms', 'cpu')

from multimix_jax import configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from multimix_jax import preflight  # pylint: disable=g-import-not-at-top,wrong-import-position
from multimix_jax.preflight import steps as steps_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from multimix_jax.trainer import methods  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIGS = ('cifar10_r18', 'cifar10_wrn16_8', 'tinyimagenet_r18', 'imagenet_r50', 'imagenet_vit_s16', 'cifar100_vit')
TARGETS = ('h100x8', 'a100-40gbx8', 'v5e-8', 'v6e-8', 'v5e-32')
# The input pipeline's images/s per CPU core for each kind of dataset (benchmark --input --input_cores=1, README):
# the host cores one chip needs are the chip's bound images/s over these.
_CORE_KEYS = {'digits': 'digits', 'cifar10': 'cifar', 'cifar100': 'cifar', 'tiny_imagenet': 'tiny_imagenet',
              'imagenet2012': 'imagenet2012'}


def _load(name):
  return configs.load(name)


def compile_pair(config_name, target_name, log):
  """The preflight of the config's run on the target, plus ERM's and the Dense MultiMix branch's train steps."""
  config = _load(config_name)
  started = time.perf_counter()
  try:
    result = preflight.preflight(config, target_name, log=log)
  except (preflight.DoesNotFit, preflight.StepFailed) as e:
    result = e.args[1]
  rows = result['rows']
  extra = {}
  for method in ('erm', 'dense_multimix'):
    other = _load(config_name)
    other.method = method
    (extra[method],) = steps_lib.compile_branches(other, preflight.resolve(target_name),
                                                  methods.METHODS[method](other)[:1], log=log)
  return {'config': config_name, 'target': target_name, 'target_description': result['target'],
          'method': config.method, 'batch_size': config.batch_size, 'dtype': config.dtype, 'dataset': config.dataset,
          'rows': rows, 'erm': extra['erm'], 'dense_multimix': extra['dense_multimix'],
          'wall_s': time.perf_counter() - started, 'jax': jax.__version__,
          'compiler': preflight.resolve(target_name).compiler, 'commit': _commit()}


def _commit():
  """The checkout's commit, so that a row can be told from one compiled before the code changed."""
  done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=False,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return done.stdout.strip() or None


def _ratio(a, b):
  return '—' if a is None or not b else f'{a / b:.3f}'


def markdown(entries, per_core):
  lines = ['| config | target | batch / chip | fits | memory / chip (largest step) | MultiMix FLOPs × ERM | '
           'Dense FLOPs × ERM | Dense memory × ERM | ERM bound images/s/chip | host cores / chip | compile (s) |',
           '| --- | --- | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  from multimix_jax.preflight import roofline  # pylint: disable=g-import-not-at-top
  for e in entries:
    rows = e['rows']
    multimix = next((r for r in rows if r['step'].startswith('train: multimix ')), None)
    erm, dense = e['erm'], e['dense_multimix']
    every = rows + [erm, dense]
    fits = 'yes' if all(r['fits'] for r in every) else '**no**'
    largest = max((r['total_bytes'] or 0) for r in every)
    chip = preflight.resolve(e['target']).chip  # the bound from the stored figures, with today's chip facts
    bound = (erm['images_per_chip'] / roofline.bound_s(erm['flops'], erm['bytes_accessed'], chip, e['dtype'])
             if erm['flops'] else None)
    cores = per_core.get(_CORE_KEYS[e['dataset']])
    compile_s = sum(r['compile_s'] or 0 for r in every)
    lines.append(f"| {e['config']} ({e['dtype']}) | {e['target']} | {rows[0]['images_per_chip']} | {fits} | "
                 f"{roofline.size(largest)} | {_ratio(multimix and multimix['flops'], erm['flops'])} | "
                 f"{_ratio(dense['flops'], erm['flops'])} | {_ratio(dense['total_bytes'], erm['total_bytes'])} | "
                 f"{'—' if bound is None else f'{bound:,.0f}'} | "
                 f"{'—' if bound is None or not cores else f'{bound / cores:.1f}'} | {compile_s:.0f} |")
  compilers = {}  # compiler -> targets compiled with it, in table order
  for e in entries:
    compiler = e.get('compiler') or _unrecorded_compiler(e)
    compilers.setdefault(compiler, [])
    if e['target'] not in compilers[compiler]:
      compilers[compiler].append(e['target'])
  lines += ['', 'Compilers: ' + '; '.join(f'{c} for {", ".join(t)}' for c, t in compilers.items()) + '.']
  return '\n'.join(lines)


def _unrecorded_compiler(entry):
  """Rows from before the compiler was recorded: what the extras install with that row's jax."""
  jax_version = entry.get('jax')
  if preflight.resolve(entry['target']).chip.platform == 'tpu':
    pinned = {'0.10.2': '0.0.42.x'}.get(jax_version)  # jax[tpu]'s libtpu pin, for the jax these rows were made with
    return f'libtpu {pinned} (not recorded; jax[tpu] {jax_version} pins it)' if pinned else 'libtpu (not recorded)'
  # jax[cuda12-local] pins the plugin to jax's own version
  return f'jax-cuda12-plugin {jax_version}' if jax_version else 'jax-cuda12-plugin (not recorded)'


def not_compiled(entries, config_names, target_names):
  """The (config, target) pairs asked for that `entries` lack, target by target."""
  have = {(e['config'], e['target']) for e in entries}
  return [(c, t) for t in target_names for c in config_names if (c, t) not in have]


def missing(entries, config_names, target_names):
  """The (config, target) pairs asked for that `entries` lack, as one sentence, or ''."""
  pairs = not_compiled(entries, config_names, target_names)
  if not pairs:
    return ''
  by_target = {}
  for c, t in pairs:
    by_target.setdefault(t, []).append(c)
  return (f'Not compiled yet ({len(pairs)} of {len(config_names) * len(target_names)} pairs): '
          + '; '.join(f'{t}: {", ".join(cs)}' for t, cs in by_target.items()) + '.')


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--targets', default=','.join(TARGETS))
  parser.add_argument('--out', default='results/compiled_targets.jsonl')
  parser.add_argument('--markdown', action='store_true', help='Print the table of what --out holds, compile nothing.')
  parser.add_argument('--per_core', default='',
                      help='Input images/s per CPU core, e.g. cifar=1000,tiny_imagenet=500,imagenet2012=90.')
  args = parser.parse_args()
  done = []
  if os.path.exists(args.out):
    with open(args.out, encoding='utf-8') as f:
      done = [json.loads(line) for line in f if line.strip()]
  config_names, target_names = args.configs.split(','), args.targets.split(',')
  if args.markdown:
    per_core = {k: float(v) for k, v in (p.split('=') for p in args.per_core.split(',') if p)}
    order = {(c, t): i for i, (c, t) in enumerate((c, t) for t in target_names for c in CONFIGS)}
    print(markdown(sorted(done, key=lambda e: order.get((e['config'], e['target']), len(order))), per_core))
    gaps = missing(done, config_names, target_names)
    if gaps:
      print('\n' + gaps)
    return
  for config, target in not_compiled(done, config_names, target_names):
    entry = compile_pair(config, target, log=lambda m: print(m, file=sys.stderr, flush=True))
    with open(args.out, 'a', encoding='utf-8') as f:
      f.write(json.dumps(entry) + '\n')
    print(f'{config} on {target}: {entry["wall_s"]:.0f} s', file=sys.stderr, flush=True)


if __name__ == '__main__':
  main()
