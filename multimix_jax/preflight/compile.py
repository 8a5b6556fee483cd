"""Compiling the trainer's own steps for a target, ahead of time: per-device memory, FLOPs and bytes, compile time.

The steps are `DataParallel.train_step` and `DataParallel.eval_step` (jit of shard_map over every device of the
target), lowered on abstract inputs (`jax.ShapeDtypeStruct`: no array is made, no device runs) and compiled by the
target's own compiler. What comes back is what that compiler says:

- memory: `compiled.memory_analysis()` for one device: arguments, outputs, donated outputs (aliases) and
  temporaries; the step holds arguments + outputs − aliases + temporaries at once.
- FLOPs and bytes accessed: the TPU compiler's `compiled.cost_analysis()`, after its optimisations. XLA:GPU gives
  none ahead of time, so on GPUs FLOPs come from the same per-device program lowered for the CPU over the mesh's
  abstract twin (XLA's HLO cost analysis before optimisation), and bytes accessed are not known; the traffic every
  step must do at least (read its arguments, write its outputs) stands in for them in the roofline bound.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from multimix_jax.trainer import step as step_lib


@dataclasses.dataclass(frozen=True)
class StepCost:
  """One compiled step on one device of a target. Sizes in bytes, per device; None where the compiler says nothing."""
  name: str
  images_per_device: int
  compile_s: float | None = None
  memory: dict | None = None
  flops: float | None = None
  bytes_accessed: float | None = None
  cost_source: str | None = None  # 'compiled' (the target's compiler) or 'lowered' (HLO before optimisation)
  compiler_options: dict | None = None  # XLA options this step needed to compile (see compile_step)
  error: str | None = None  # the compiler's refusal (RESOURCE_EXHAUSTED: the step cannot fit), or another failure

  @property
  def min_bytes(self) -> float | None:
    """Traffic every step does at least: reading its arguments and writing its outputs once."""
    if self.memory is None:
      return None
    return self.memory['argument_size_in_bytes'] + self.memory['output_size_in_bytes']

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def memory_analysis(compiled) -> dict | None:
  """XLA's memory figures for one device of a compiled step (bytes), or None where the backend gives none."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not implemented by every backend
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if analysis is None:
    return None
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes', 'temp_size_in_bytes',
            'generated_code_size_in_bytes')
  out = {f: int(getattr(analysis, f, 0) or 0) for f in fields}
  # Live at once during the step: inputs, outputs that do not reuse (donated) inputs, and scratch.
  out['step_bytes'] = (out['argument_size_in_bytes'] + out['output_size_in_bytes'] - out['alias_size_in_bytes'] +
                       out['temp_size_in_bytes'])
  return out


def _cost_figures(analysis) -> tuple[float | None, float | None]:
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis:
    return None, None
  return analysis.get('flops'), analysis.get('bytes accessed')


def _abstract(tree, dp, specs):
  """ShapeDtypeStructs of `tree` laid out on `dp`'s mesh with `specs` (one PartitionSpec per top-level entry)."""
  return tuple(jax.tree.map(lambda x, s=spec: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dp.sharding(s)), t)
               for t, spec in zip(tree, specs))


# Ahead of time, with no GPU to autotune on, XLA:GPU (jax 0.10) can fail to tile a large bf16 matmul for Triton
# ("Couldn't find output tile sizes that satisfy hlo", ViT-S/16's attention output at b = 128). Such a step is
# compiled again with the matmuls left to cuBLAS, and its row says so.
_TRITON_TILING_FAILURE = "Couldn't find output tile sizes"
_NO_TRITON_GEMM = {'xla_gpu_enable_triton_gemm': False}


def _error_text(e: Exception) -> str:
  message = ' '.join(str(e).split())
  return f'{type(e).__name__}: {message[:600]}{"..." if len(message) > 600 else ""}'


def compile_step(name, make_step, shapes, specs, *, dp, images_per_device, count_on_cpu) -> StepCost:
  """Compiles `make_step(dp)` (a DataParallel step) on abstract `shapes` laid out by `specs`; a failure is kept.

  `count_on_cpu`: take FLOPs from the program lowered for the CPU over the mesh's abstract twin (for compilers that
  report no cost ahead of time, XLA:GPU's).
  """
  started = time.perf_counter()
  lowered = make_step(dp).lower(*_abstract(shapes, dp, specs))
  options = None
  try:
    try:
      compiled = lowered.compile()
    except Exception as e:  # pylint: disable=broad-except
      if not (count_on_cpu and _TRITON_TILING_FAILURE in str(e)):
        raise
      options = _NO_TRITON_GEMM
      compiled = lowered.compile(compiler_options=options)
  except Exception as e:  # pylint: disable=broad-except  # the row says why; the other steps go on
    return StepCost(name, images_per_device, compile_s=time.perf_counter() - started, compiler_options=options,
                    error=_error_text(e))
  compile_s = time.perf_counter() - started
  memory = memory_analysis(compiled)
  if count_on_cpu:
    twin = dp.on_abstract_mesh()
    lowered = make_step(twin).trace(*_abstract(shapes, twin, specs)).lower(lowering_platforms=('cpu',))
    flops, _ = _cost_figures(lowered.cost_analysis())
    return StepCost(name, images_per_device, compile_s, memory, flops, None, 'lowered', options)
  flops, bytes_accessed = _cost_figures(compiled.cost_analysis())
  return StepCost(name, images_per_device, compile_s, memory, flops, bytes_accessed, 'compiled', options)


def state_shapes(model, tx, image_shape):
  """The TrainState's shapes and dtypes (nothing is initialised)."""
  return jax.eval_shape(lambda: step_lib.create_train_state(jax.random.key(0), model, tx, image_shape))


def train_shapes(model, tx, image_shape, global_batch, image_dtype=jnp.float32):
  """(state, batch, key) shapes as `DataParallel.train_step` takes them, and their PartitionSpecs."""
  batch = {'image': jax.ShapeDtypeStruct((global_batch, *image_shape), image_dtype),
           'label': jax.ShapeDtypeStruct((global_batch,), jnp.int32)}
  key = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  return (state_shapes(model, tx, image_shape), batch, key), (P(), P(step_lib.AXIS), P())


def eval_shapes(model, tx, image_shape, global_batch, image_dtype=jnp.float32):
  """(state, batch) shapes as `DataParallel.eval_step` takes them, and their PartitionSpecs."""
  batch = {'image': jax.ShapeDtypeStruct((global_batch, *image_shape), image_dtype),
           'label': jax.ShapeDtypeStruct((global_batch,), jnp.int32),
           'mask': jax.ShapeDtypeStruct((global_batch,), jnp.bool_)}
  return (state_shapes(model, tx, image_shape), batch), (P(), P(step_lib.AXIS))


def compile_train_step(name, dp, *, model, tx, loss_fn, image_shape, global_batch, count_on_cpu,
                       augment=None) -> StepCost:
  """`augment`: the trainer's device augmentation (uint8 batches in), or None (float32 batches in)."""
  shapes, specs = train_shapes(model, tx, image_shape, global_batch, jnp.float32 if augment is None else jnp.uint8)
  return compile_step(name, lambda d: d.train_step(model=model, tx=tx, loss_fn=loss_fn, augment=augment), shapes,
                      specs, dp=dp, images_per_device=global_batch // len(dp.devices), count_on_cpu=count_on_cpu)


def compile_eval_step(name, dp, *, model, tx, image_shape, global_batch, count_on_cpu, normalise=None) -> StepCost:
  shapes, specs = eval_shapes(model, tx, image_shape, global_batch, jnp.float32 if normalise is None else jnp.uint8)
  return compile_step(name, lambda d: d.eval_step(model=model, normalise=normalise), shapes, specs, dp=dp,
                      images_per_device=global_batch // len(dp.devices), count_on_cpu=count_on_cpu)
