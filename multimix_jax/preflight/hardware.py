"""Hardware targets by the names users rent them under, and the facts a preflight judges a step against.

Cloud TPU accelerator types (`v4-8` … `v4-4096`, `v5litepod-N` or its alias `v5e-N`, `v5p-N`, `v6e-N`) and GPUs as
`NAMExCOUNT` (`h100x8`, `h200x8`, `a100-40gbx8`, `a100-80gbx8`; 8 GPUs a node) resolve to a `Target`: the chip, how
many, on how many hosts, and the topology. `Target.devices()` gives compile-only devices of that slice (no
accelerator needed): JAX's `jax.experimental.topologies.get_topology_desc`, with libtpu (`pip install 'jax[tpu]'`)
for TPUs and the CUDA plugin (`pip install 'jax[cuda12-local]'`: no CUDA libraries needed) for GPUs,
whose compiler is described by the XLA GPU target config shipped in `gpu_specs/`.

Every number in `CHIPS` has its source beside it. Peak FLOP/s are dense (no structured sparsity), for bf16 and, on
GPUs, for float32 matmuls as JAX computes them by default (TF32).
"""

import contextlib
import dataclasses
import functools
import importlib.metadata
import os
import re

_GIB = 2**30
_GB = 10**9

# The pages every figure below comes from.
_TPU_V4 = 'https://cloud.google.com/tpu/docs/v4'
_TPU_V5E = 'https://cloud.google.com/tpu/docs/v5e'
_TPU_V5P = 'https://cloud.google.com/tpu/docs/v5p'
_TPU_V6E = 'https://cloud.google.com/tpu/docs/v6e'
_TPU_VM = 'https://cloud.google.com/tpu/docs/system-architecture-tpu-vm'  # one VM per 4 chips on multi-host v5e/v6e
_H100 = 'https://www.nvidia.com/en-us/data-center/h100/'
_H200 = 'https://www.nvidia.com/en-us/data-center/h200/'
_A100 = ('https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/'
         'nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf')
# NVIDIA prints bf16 tensor-core throughput with 2:4 sparsity; the dense figure is half of it.


class TargetError(ValueError):
  """An unknown target name, or a size the family does not come in; the message lists the known names."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: memory, peak compute and bandwidth, and how JAX compiles for it."""

  def peak(self, dtype: str) -> float:
    """Dense matmul FLOP/s for a step computing in `dtype` ('bfloat16' or 'float32')."""
    return self.peak_flops_float32 if dtype == 'float32' and self.peak_flops_float32 else self.peak_flops

  name: str
  platform: str  # 'tpu' or 'cuda'
  hbm_bytes: int
  peak_flops: float  # dense bf16 FLOP/s
  hbm_bytes_per_s: float
  sources: tuple[str, ...]
  # Dense FLOP/s of float32 matmuls at JAX's default precision: TF32 tensor cores on NVIDIA GPUs; None on TPUs,
  # whose default precision computes float32 matmuls in bfloat16 passes (the bf16 peak).
  peak_flops_float32: float | None = None
  tpu_family: str | None = None  # libtpu's topology prefix ('v5e'), TPUs only
  # JAX devices per chip in the compile-only topology: libtpu gives v4 one device per TensorCore (2 a chip), where a
  # v4 VM in megacore mode shows one device a chip. Per-chip figures are this many devices' worth.
  devices_per_chip: int = 1
  gpu_spec: str | None = None  # XLA GPU target config in gpu_specs/, GPUs only
  usable_fraction: float = 1.0  # of HBM that a JAX program may use (GPUs: JAX preallocates 75% by default)
  usable_source: str | None = None


_JAX_GPU_MEMORY = 'https://docs.jax.dev/en/latest/gpu_memory_allocation.html'

CHIPS = {
    'v4': Chip('TPU v4', 'tpu', 32 * _GIB, 275e12, 1200 * _GB, (_TPU_V4,), tpu_family='v4', devices_per_chip=2),
    'v5e': Chip('TPU v5e', 'tpu', 16 * _GIB, 197e12, 819 * _GB, (_TPU_V5E,), tpu_family='v5e'),
    'v5p': Chip('TPU v5p', 'tpu', 95 * _GIB, 459e12, 2765 * _GB, (_TPU_V5P,), tpu_family='v5p'),
    'v6e': Chip('TPU v6e', 'tpu', 32 * _GB, 918e12, 1638 * _GB, (_TPU_V6E,), tpu_family='v6e'),
    'h100': Chip('NVIDIA H100 SXM 80GB', 'cuda', 80 * _GB, 989e12, 3.35e12, (_H100,), 494.7e12,
                 gpu_spec='h100_sxm.txtpb', usable_fraction=0.75, usable_source=_JAX_GPU_MEMORY),
    'h200': Chip('NVIDIA H200 SXM 141GB', 'cuda', 141 * _GB, 989e12, 4.8e12, (_H200,), 494.7e12,
                 gpu_spec='h200.txtpb', usable_fraction=0.75, usable_source=_JAX_GPU_MEMORY),
    'a100-40gb': Chip('NVIDIA A100 SXM 40GB', 'cuda', 40 * _GB, 312e12, 1555 * _GB, (_A100,), 156e12,
                      gpu_spec='a100_sxm_40.txtpb', usable_fraction=0.75, usable_source=_JAX_GPU_MEMORY),
    'a100-80gb': Chip('NVIDIA A100 SXM 80GB', 'cuda', 80 * _GB, 312e12, 2039 * _GB, (_A100,), 156e12,
                      gpu_spec='a100_sxm_80.txtpb', usable_fraction=0.75, usable_source=_JAX_GPU_MEMORY),
}

# Slice shapes (chips along each axis) by chip count, as Cloud TPU lists them.
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
              256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16)}  # v4, v5p
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
              256: (16, 16)}  # v5e, v6e
# Accelerator type -> (chip, what its number counts). v4 and v5p count TensorCores (2 a chip), v5e and v6e chips.
_TPU_TYPES = {'v4': ('v4', 2), 'v5p': ('v5p', 2), 'v5litepod': ('v5e', 1), 'v5e': ('v5e', 1), 'v6e': ('v6e', 1)}
_GPUS_PER_NODE = 8


@dataclasses.dataclass(frozen=True)
class Target:
  """A slice or a set of GPU nodes: `chips` chips of `chip` on `hosts` hosts, laid out as `topology`."""
  name: str
  chip: Chip
  chips: int
  hosts: int
  topology: tuple[int, ...]

  @property
  def num_devices(self) -> int:
    return self.chips * self.chip.devices_per_chip

  @property
  def usable_bytes_per_device(self) -> int:
    return int(self.chip.hbm_bytes * self.chip.usable_fraction) // self.chip.devices_per_chip

  def describe(self) -> str:
    shape = 'x'.join(map(str, self.topology))
    return (f'{self.name}: {self.chips} × {self.chip.name} ({shape}) on {self.hosts} '
            f'host{"s" if self.hosts > 1 else ""}')

  @property
  def compiler(self) -> str:
    """The compiler this machine has for the target, as its package and version: 'libtpu 0.0.52'. Compiled figures
    (and whether a step compiles at all) can change with it."""
    package = 'libtpu' if self.chip.platform == 'tpu' else 'jax-cuda12-plugin'
    try:
      installed = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
      installed = None
    override = os.environ.get('TPU_LIBRARY_PATH') if package == 'libtpu' else None  # JAX loads this one instead
    if override and (installed is None or os.path.realpath(os.path.dirname(override))
                     != os.path.realpath(installed.locate_file('libtpu'))):
      return f'libtpu at {override}'
    return f'{package} {installed.version}' if installed else f'{package}: not installed'

  def devices(self) -> list:
    """Compile-only JAX devices of this target (no accelerator is used or needed)."""
    return list(_topology(self.name, self.chip.platform, self.topology, self.hosts, self.chip.gpu_spec,
                          self.chip.tpu_family).devices)


def known_names() -> list[str]:
  """Every accepted name pattern with its sizes, for messages and `--help`."""
  tpus = [f'{prefix}-{{{",".join(str(c * per) for c in (_SHAPES_3D if per == 2 else _SHAPES_2D))}}}'
          for prefix, (_, per) in _TPU_TYPES.items()]
  gpus = [f'{name}x{{1,2,4,8,16,...}}' for name, chip in CHIPS.items() if chip.platform == 'cuda']
  return tpus + gpus


def resolve(name: str) -> Target:
  """The target of a name such as 'v5e-32', 'v4-8', 'v5litepod-8', 'h100x8'; TargetError if there is none."""
  unknown = TargetError(f'unknown target {name!r}; known targets: {"; ".join(known_names())}.')
  match = re.fullmatch(r'(v4|v5p|v5litepod|v5e|v6e)-(\d+)', name)
  if match:
    chip_name, per_chip = _TPU_TYPES[match[1]]
    count = int(match[2])
    shapes = _SHAPES_3D if per_chip == 2 else _SHAPES_2D
    if count % per_chip or count // per_chip not in shapes:
      raise unknown
    chips = count // per_chip
    chip = CHIPS[chip_name]
    # v5e and v6e: one host up to 8 chips, else a VM (a JAX process) per 4 chips; v4 and v5p: 4 chips a host.
    hosts = 1 if chip_name in ('v5e', 'v6e') and chips <= 8 else max(1, chips // 4)
    return Target(name, chip, chips, hosts, shapes[chips])
  match = re.fullmatch(r'([a-z0-9-]+?)x(\d+)', name)
  if match and match[1] in CHIPS and CHIPS[match[1]].platform == 'cuda':
    count = int(match[2])
    if count < 1 or (count > _GPUS_PER_NODE and count % _GPUS_PER_NODE):
      raise TargetError(f'target {name!r}: {count} GPUs must be 1 to {_GPUS_PER_NODE} (one node) or a multiple of '
                        f'{_GPUS_PER_NODE} (full nodes).')
    hosts = max(1, count // _GPUS_PER_NODE)
    return Target(name, CHIPS[match[1]], count, hosts, (1, hosts, count // hosts))
  raise unknown


def _spec_text(filename: str) -> str:
  return open(os.path.join(os.path.dirname(__file__), 'gpu_specs', filename), encoding='utf-8').read()


@contextlib.contextmanager
def _environment(values):
  """The variables a plugin reads as it loads and describes a target, set for that call only: they describe the
  target, not this machine, so they must not outlive it (the next target has another accelerator type, and a child
  process, a notebook's kernel say, would take this machine for a TPU VM)."""
  saved = {key: os.environ.get(key) for key in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value


@functools.lru_cache(maxsize=None)
def _topology(name, platform, topology, hosts, gpu_spec, tpu_family):
  # Imported here: jax's TPU and CUDA plugins load on first use, and the variables below must be set before they do.
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    if platform == 'tpu':
      # libtpu takes a lock per machine unless told that several processes may load it (tests, a second preflight),
      # and looks for a TPU VM's metadata unless told it is not on one.
      environment = {'ALLOW_MULTIPLE_LIBTPU_LOAD': os.environ.get('ALLOW_MULTIPLE_LIBTPU_LOAD', '1'),
                     'TPU_SKIP_MDS_QUERY': os.environ.get('TPU_SKIP_MDS_QUERY', '1'),
                     'TPU_ACCELERATOR_TYPE': name.replace('v5e-', 'v5litepod-'), 'TPU_WORKER_HOSTNAMES': 'localhost'}
      kwargs = {}
      if hosts == 1:  # a one-host slice: every chip on that host (libtpu's default splits 2x4 over two)
        kwargs['chips_per_host_bounds'] = (*topology, 1)[:3] if len(topology) == 2 else topology
      with _environment(environment):
        return topologies.get_topology_desc(
            platform='tpu', topology_name=f'{tpu_family}:{"x".join(map(str, topology))}', **kwargs)
    # No CUDA driver or toolkit is needed to compile.
    with _environment({'JAX_SKIP_CUDA_CONSTRAINTS_CHECK': os.environ.get('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')}):
      return topologies.get_topology_desc(platform='cuda', target_config=_spec_text(gpu_spec),
                                          topology='x'.join(map(str, topology)))
  except Exception as e:  # pylint: disable=broad-except  # a missing plugin, or one too old for the target
    install = "pip install 'jax[tpu]'" if platform == 'tpu' else "pip install 'jax[cuda12-local]'"
    raise TargetError(f'cannot make compile-only devices for {name} ({type(e).__name__}: '
                      f'{" ".join(str(e).split())[:300]}). The {platform.upper()} compiler comes with '
                      f'`{install}` (same version as jax).') from e
