"""What a benchmark run times: presets, one-model settings from the options, and method names with suffixes.

Shapes come from the model itself: every class of `multimix_jax.models.MODELS` declares the input it is built for
(`example_input` (H, W, C) and `example_classes`), so a new model is benchmarkable without touching this package.
"""

import dataclasses
import re

import ml_collections

from multimix_jax import mixing
from multimix_jax import models
from multimix_jax.configs import default as default_config_module
from multimix_jax.trainer import methods
from multimix_jax.trainer import step as step_lib

# The methods of the paper's comparison, at its n, and the input-space baselines; the default of --methods with
# --model. Models that sow attention (the ViTs) add ATTENTION_METHODS, which need it.
ALL_METHODS = ('erm', 'input_mixup', 'manifold_mixup', 'multimix_n1000', 'multimix_n10000', 'dense_multimix_n1000',
               'saliencymix', 'fmix', 'resizemix')
ATTENTION_METHODS = methods.NEEDS_ATTENTION


def default_methods(model: str) -> tuple[str, ...]:
  """ALL_METHODS, and ATTENTION_METHODS where `model` sows the attention they read."""
  return ALL_METHODS + (ATTENTION_METHODS if models.sows_attention(model) else ())


class BenchmarkError(ValueError):
  """A value that cannot work (unknown method, a suffix it does not take, a size < 1); the message says why."""


@dataclasses.dataclass(frozen=True)
class Setting:
  """One table: a model on (b per device, H, W, C) images with c classes, a dtype, and the methods timed."""
  model: str
  batch_size: int  # b, per device
  image_shape: tuple[int, int, int]  # (H, W, C)
  num_classes: int
  dtype: str
  methods: tuple[str, ...]
  steps: int  # consecutive steps per method per round
  rounds: int  # 0: compile and report memory only
  warmup: int
  torch: bool = False  # also time ERM on the same network, batch and precision in PyTorch

  def to_json(self) -> dict:
    return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

  @classmethod
  def from_json(cls, d: dict) -> 'Setting':
    return cls(**{**d, 'image_shape': tuple(d['image_shape']), 'methods': tuple(d['methods'])})


@dataclasses.dataclass(frozen=True)
class Options:
  """The command line's values (multimix_jax.benchmark.cli); None means the preset's or the model's own."""
  preset: str | None = None
  model: str | None = None
  batch_size: int | None = None
  image_size: int | None = None
  channels: int | None = None
  num_classes: int | None = None
  dtype: str | None = None
  methods: str | None = None
  steps: int | None = None
  rounds: int | None = None
  warmup: int | None = None
  chunk_size: int = -1
  parallelism: str = 'shard_map'
  prng_impl: str | None = None
  torch: bool | None = None
  torch_compile: bool | None = None
  peak_memory: bool | None = None
  json: str = 'benchmark.json'
  target: str | None = None
  input: bool = False
  attacks: bool = False
  pgd_steps: int = 10
  input_datasets: str = 'digits,cifar10'
  input_batches: int = 200
  mock_examples: int = 2048
  input_cores: int | None = None
  data_dir: str | None = None


def example_shape(model: str) -> tuple[tuple[int, int, int], int]:
  """((H, W, C), c) the model class declares it is built for (its `example_input` and `example_classes`)."""
  cls = models.MODELS[model]
  if not hasattr(cls, 'example_input') or not hasattr(cls, 'example_classes'):
    raise BenchmarkError(f'model {model!r} ({cls.__name__}) declares no example_input / example_classes; add them as '
                         'ClassVars to its class, e.g. example_input: ClassVar[tuple[int, int, int]] = (32, 32, 3).')
  return tuple(cls.example_input), int(cls.example_classes)


def _preset_cpu():
  # About three minutes on 2 cores. Rounds × steps are chosen so that the 95% interval of a ratio to ERM is a few
  # percent wide on a quiet machine: every method on the small CNN (steps of 5-200 ms), and the paper's CIFAR
  # network at a small batch (steps of ~1.5 s), where the cost of MultiMix relative to a real network shows.
  def setting(model, b, methods_, steps, rounds, warmup):
    shape, classes = example_shape(model)
    return Setting(model, b, shape, classes, 'float32', methods_, steps=steps, rounds=rounds, warmup=warmup)

  return [setting('small_cnn', 128, ALL_METHODS, steps=10, rounds=20, warmup=3),
          setting('preact_resnet18', 32, ('erm', 'multimix_n1000', 'dense_multimix_n1000'), steps=2, rounds=12,
                  warmup=1)]


def _preset_gpu():
  gpu_methods = ALL_METHODS + ('dense_multimix_n10000',)

  def setting(model, steps, warmup):
    shape, classes = example_shape(model)
    return Setting(model, 128, shape, classes, 'bfloat16', gpu_methods, steps=steps, rounds=10, warmup=warmup,
                   torch=True)

  return [setting('resnet50', steps=20, warmup=5), setting('preact_resnet18', steps=50, warmup=10)]


PRESETS = {'cpu': _preset_cpu, 'gpu': _preset_gpu}


# ------------------------------------------------------------------------------------------------ method names


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A benchmarked method: a METHODS name with the overrides its suffixes ask for (None: the run's own)."""
  name: str
  base: str
  n: int | None = None  # _n<N>: multimix.n
  chunk_size: int | None = None  # _chunk<K>: multimix.chunk_size
  stage: int | None = None  # _stage<k>: the schedule entry timed
  confidence: str | None = None  # _conf_<kind>: multimix.confidence (Dense MultiMix), e.g. _conf_attention


_SUFFIXES = re.compile(r'(?P<base>[a-z0-9_]+?)(?:_n(?P<n>\d+))?(?:_chunk(?P<chunk>\d+))?(?:_conf_(?P<conf>[a-z_]+?))?'
                       r'(?:_stage(?P<stage>\d+))?')


def parse_method(name: str) -> MethodSpec:
  """'dense_multimix_n1000_chunk250' -> MethodSpec; raises BenchmarkError naming the known methods.

  A name of `methods.METHODS` is taken whole first, so a method whose own name ends like a suffix still parses.
  Whether the method reads n or the chunk size is checked when it is built (`timing.make_branch`).
  """
  if name in methods.METHODS:
    return MethodSpec(name=name, base=name)
  match = _SUFFIXES.fullmatch(name)
  if not match or match['base'] not in methods.METHODS:
    raise BenchmarkError(f'unknown method {name!r}; known methods: {", ".join(sorted(methods.METHODS))}, with '
                         'optional suffixes _n<N> (MultiMix\'s n), _chunk<K> (the dense loss\'s chunk over n) and '
                         '_conf_<kind> (Dense MultiMix\'s confidence, e.g. dense_multimix_n1000_conf_attention) and '
                         '_stage<k> (an entry of the mixing schedule, e.g. manifold_mixup_stage2).')
  n, chunk, stage = (None if match[g] is None else int(match[g]) for g in ('n', 'chunk', 'stage'))
  if n is not None and n < 1:
    raise BenchmarkError(f'method {name!r}: _n<N> needs N >= 1.')
  if match['conf'] is not None and match['conf'] not in mixing.CONFIDENCE_KINDS:
    raise BenchmarkError(f'method {name!r}: _conf_{match["conf"]} is no confidence kind; choose from '
                         f'{", ".join(mixing.CONFIDENCE_KINDS)}.')
  return MethodSpec(name=name, base=match['base'], n=n, chunk_size=chunk, stage=stage, confidence=match['conf'])


def default_config() -> ml_collections.ConfigDict:
  """The trainer's default config (multimix_jax/configs/default.py), the schema every method is built from."""
  return default_config_module.get_config()


# ------------------------------------------------------------------------------------------------ options


def settings_from_options(options: Options, backend: str) -> list[Setting]:
  """The settings the options ask for; raises BenchmarkError on any value that cannot work, before any work.

  With a model, one setting on the model's own example shapes (flags may change them). Without, a preset (default:
  'cpu' on a CPU backend, else 'gpu'), of which --methods, --steps, --rounds, --warmup and --torch override the
  values given; its shapes and dtype are fixed.
  """
  o = options
  for name in ('batch_size', 'steps', 'image_size', 'channels'):
    value = getattr(o, name)
    if value is not None and value < 1:
      raise BenchmarkError(f'--{name}={value} must be >= 1.')
  if o.num_classes is not None and o.num_classes < 2:
    raise BenchmarkError(f'--num_classes={o.num_classes} must be >= 2.')
  for name in ('rounds', 'warmup'):
    if getattr(o, name) is not None and getattr(o, name) < 0:
      raise BenchmarkError(f'--{name}={getattr(o, name)} must be >= 0.')
  if o.chunk_size < -1:
    raise BenchmarkError(f'--chunk_size={o.chunk_size} must be -1 (automatic), 0 (no chunks) or positive.')
  if o.model is not None and o.model not in models.MODELS:
    raise BenchmarkError(f'--model={o.model!r} is unknown; choose from {", ".join(sorted(models.MODELS))}.')
  if o.preset is not None and o.preset not in PRESETS:
    raise BenchmarkError(f'--preset={o.preset!r} is unknown; choose from {", ".join(PRESETS)}.')
  if o.dtype is not None and o.dtype not in step_lib.DTYPES:
    raise BenchmarkError(f'--dtype={o.dtype!r} is unknown; choose from {", ".join(step_lib.DTYPES)}.')
  if o.model is not None and o.preset is not None:
    raise BenchmarkError('--preset and --model exclude each other: a preset names its own models.')
  method_names = None
  if o.methods is not None:
    method_names = tuple(m.strip() for m in o.methods.split(',') if m.strip())
    if not method_names:
      raise BenchmarkError('--methods is empty; give comma-separated method names, e.g. --methods=erm,multimix_n1000.')
  overrides = {k: getattr(o, k) for k in ('steps', 'rounds', 'warmup') if getattr(o, k) is not None}
  if method_names:
    overrides['methods'] = method_names
  if o.model is None:
    shaped = [f'--{k}' for k in ('batch_size', 'image_size', 'channels', 'num_classes', 'dtype')
              if getattr(o, k) is not None]
    if shaped:
      raise BenchmarkError(f'{", ".join(shaped)} need --model: a preset fixes its own shapes and dtype.')
    preset = o.preset or ('cpu' if backend == 'cpu' else 'gpu')
    settings = [dataclasses.replace(s, **overrides) for s in PRESETS[preset]()]
  else:
    (height, width, channels), classes = example_shape(o.model)
    if o.image_size is not None:
      height = width = o.image_size
    shape = (height, width, o.channels or channels)
    settings = [Setting(o.model, o.batch_size or 128, shape, o.num_classes or classes, o.dtype or 'float32',
                        method_names or default_methods(o.model), steps=overrides.get('steps', 10),
                        rounds=overrides.get('rounds', 10), warmup=overrides.get('warmup', 3))]
  # PyTorch runs where asked, or by default with the gpu preset on a GPU (elsewhere it would time a CPU).
  settings = [dataclasses.replace(s, torch=s.torch and backend == 'gpu' if o.torch is None else o.torch)
              for s in settings]
  for setting in settings:
    for name in setting.methods:
      parse_method(name)
    if len(set(setting.methods)) != len(setting.methods):
      raise BenchmarkError(f'--methods lists a method twice: {",".join(setting.methods)}.')
  return settings
