"""The data-parallel train and eval steps, written once per device with named-axis collectives.

`DataParallel` maps them over the devices with `jax.jit` + `jax.shard_map` (the default) or `jax.pmap`, and says
how state and batches are laid out for each. The optimiser the step applies is built in `optim.py`. Nothing here
imports TensorFlow: the benchmark uses it on synthetic batches.
"""

import copy
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'data'
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}  # config.dtype: the model's compute dtype
_DROPOUT_STREAM = 0x64726F70  # folded into the step's key for the model's 'dropout' stream ('drop')
_AUGMENT_STREAM = 0x61756720  # folded into the step's key for the device's data augmentation ('aug ')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def config_problems(config) -> list[str]:
  """One sentence per bad value of the keys read here: the compute dtype and the data-parallel wrapper."""
  problems = []
  if config.dtype not in DTYPES:
    problems.append(f'dtype={config.dtype!r} must be one of {sorted(DTYPES)}.')
  if config.parallelism not in DataParallel.KINDS:
    problems.append(f'parallelism={config.parallelism!r} must be one of {DataParallel.KINDS}.')
  return problems


def create_train_state(key, model, tx, image_shape):
  """Initialises parameters and BatchNorm statistics on one example of `image_shape` (H, W, C)."""

  @jax.jit
  def init(key):
    variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(variables['params']))

  return init(key)


def _to_varying(tree):
  """`lax.pcast(..., to='varying')`; JAX releases before it (0.7, Colab's today) spell it `lax.pvary`."""
  if hasattr(jax.lax, 'pcast'):
    return jax.lax.pcast(tree, AXIS, to='varying')
  return jax.lax.pvary(tree, AXIS)


def train_step(state, batch, key, *, model, tx, loss_fn, augment=None):
  """One SGD step on this device's batch; gradients and BatchNorm statistics are averaged over devices.

  Args:
    state: TrainState, the same on every device.
    batch: {'image': (b, H, W, C), 'label': (b,) int32}, this device's share of the global batch: float32 model
      inputs, or uint8 pixels that `augment` turns into them.
    key: raw data (jax.random.key_data) of the run's root key, the same on every device; the step's key is folded
      from it with the step, so no key is used twice.
    model, tx: the Flax model (with its `num_classes`) and the optax optimiser.
    loss_fn: one branch of a method's mixing schedule, with its hyperparameters bound (multimix_jax.trainer.methods).
    augment: None, or (key, images (b, H, W, C)) -> float32 inputs: the data augmentation and normalisation done
      on the device (multimix_jax.data.device_augment), with a key of its own per step and device.

  Returns:
    (new state, metrics averaged over devices: 'loss', 'accuracy', and 'finite', 1 where the loss and every
    floating value of the new state (parameters, BatchNorm statistics, optimiser state) are finite on every
    device).
  """
  step_key = jax.random.fold_in(jax.random.wrap_key_data(key), state.step)
  # The model's own randomness (a ViT's stochastic depth): a stream apart from the method's, different per device.
  dropout_key = jax.random.fold_in(jax.random.fold_in(step_key, _DROPOUT_STREAM), jax.lax.axis_index(AXIS))
  targets = jax.nn.one_hot(batch['label'], model.num_classes)
  images = batch['image']
  if augment is not None:
    augment_key = jax.random.fold_in(jax.random.fold_in(step_key, _AUGMENT_STREAM), jax.lax.axis_index(AXIS))
    images = augment(augment_key, images)

  def compute_loss(params):
    def forward(images, **kwargs):
      return model.apply({'params': params, 'batch_stats': state.batch_stats}, images, train=True,
                         mutable=['batch_stats', 'intermediates'], rngs={'dropout': dropout_key}, **kwargs)

    return loss_fn(forward, images, targets, step_key)

  # Parameters enter the step replicated; made device-varying, their gradient is this device's own (shard_map
  # would otherwise sum it over devices), so the mean below is right under shard_map and pmap alike.
  params = _to_varying(state.params)
  (loss, (logits, logit_targets, updates)), grads = jax.value_and_grad(compute_loss, has_aux=True)(params)
  grads = jax.lax.pmean(grads, AXIS)
  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, param_updates)
  state = state.replace(step=state.step + 1, params=new_params,
                        batch_stats=jax.lax.pmean(updates.get('batch_stats', state.batch_stats), AXIS),
                        opt_state=opt_state)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(logit_targets, -1))
  finite = jnp.isfinite(loss) & all_finite(state)
  return state, jax.lax.pmean({'loss': loss, 'accuracy': accuracy, 'finite': finite.astype(jnp.float32)}, AXIS)


def all_finite(tree) -> jax.Array:
  """True when every floating leaf of `tree` is finite: what a checkpoint of it would save is usable."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.array([jnp.isfinite(x).all() for x in leaves])) if leaves else jnp.array(True)


def eval_step(state, batch, *, model, normalise=None):
  """Sums over devices of top-1 and top-5 hits, cross-entropy and the number of real (unmasked) examples.

  `normalise`: None, or images (b, H, W, C) -> float32 inputs (uint8 pixels normalised on the device)."""
  images = batch['image'] if normalise is None else normalise(batch['image'])
  logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats}, images, train=False)[1]
  mask = batch['mask'].astype(jnp.float32)
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  hits = top5 == batch['label'][:, None]
  targets = jax.nn.one_hot(batch['label'], logits.shape[-1])
  sums = {
      'top1': jnp.sum(hits[:, 0] * mask),
      'top5': jnp.sum(hits.any(-1) * mask),
      'loss': jnp.sum(optax.softmax_cross_entropy(logits, targets) * mask),
      'count': jnp.sum(mask),
  }
  return jax.lax.psum(sums, AXIS)


class DataParallel:
  """Maps the per-device steps over a 1-D 'data' mesh with shard_map (under jit) or pmap.

  shard_map: state is replicated (P()), batches are global arrays sharded on 'data'.
  pmap: state carries a leading axis of local devices, batches are reshaped to (local devices, b, ...).
  """

  KINDS = ('shard_map', 'pmap')

  def __init__(self, parallelism, devices=None):
    if parallelism not in self.KINDS:
      raise ValueError(f'parallelism must be one of {self.KINDS}, got {parallelism!r}.')
    self.parallelism = parallelism
    self.devices = list(devices or jax.devices())
    self.mesh = jax.sharding.Mesh(np.array(self.devices), (AXIS,))
    self.num_local_devices = sum(d.process_index == jax.process_index() for d in self.devices)

  def sharding(self, spec):
    """The NamedSharding of `spec` (P() replicated, P(AXIS) split over devices) on this mapping's mesh."""
    return NamedSharding(self.mesh, spec)

  def on_abstract_mesh(self):
    """This mapping (shard_map) over its mesh's abstract twin: axis names and sizes, no devices. Its steps lower
    for any platform (`.trace(...).lower(lowering_platforms=('cpu',))`), e.g. to count a step's FLOPs where the
    target's own compiler reports none."""
    twin = copy.copy(self)
    twin.mesh = self.mesh.abstract_mesh
    return twin

  def put_state(self, tree):
    """Host or device pytree (the same on every process) -> fresh device buffers, replicated for the step."""
    if self.parallelism == 'pmap':  # one copy per local device, placed by an identity pmap
      copies = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (self.num_local_devices, *np.shape(x))), tree)
      return jax.pmap(lambda x: x, axis_name=AXIS, devices=self.devices)(copies)
    return jax.device_put(tree, self.sharding(P()))

  def put_batch(self, batch):
    """This process's batch {name: (local b, ...)} -> the step's layout."""
    if self.parallelism == 'pmap':
      return jax.tree.map(lambda x: x.reshape(self.num_local_devices, -1, *x.shape[1:]), batch)
    sharding = self.sharding(P(AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def get_state(self, tree):
    """The step's state -> one host copy (numpy), for checkpoints and summaries."""
    if self.parallelism == 'pmap':
      tree = jax.tree.map(lambda x: x[0], tree)
    return jax.device_get(tree)

  def map(self, body, *, in_specs, out_specs, pmap_in_axes=0, donate_argnums=()):
    """`body`, written per device with collectives over AXIS, compiled over every device.

    shard_map: jit(shard_map(body)) with `in_specs`/`out_specs` (P() replicated, P(AXIS) split over devices).
    pmap: pmap(body); every argument carries a leading device axis (put_state, put_batch) except those that
    `pmap_in_axes` marks None (a host value, the same everywhere), and outputs keep that axis.
    """
    if self.parallelism == 'pmap':
      return jax.pmap(body, axis_name=AXIS, devices=self.devices, in_axes=pmap_in_axes, donate_argnums=donate_argnums)
    return jax.jit(jax.shard_map(body, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs),
                   donate_argnums=donate_argnums)

  def train_step(self, **kwargs):
    """(state, batch, key) -> (state, metrics), compiled; kwargs are train_step's model, tx, loss_fn, augment."""
    return self.map(functools.partial(train_step, **kwargs), in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()),
                    donate_argnums=0)

  def eval_step(self, **kwargs):
    """(state, batch) -> summed eval counts, compiled; kwargs are eval_step's model and normalise."""
    return self.map(functools.partial(eval_step, **kwargs), in_specs=(P(), P(AXIS)), out_specs=P())

  def metrics(self, tree):
    """Step outputs (replicated) -> host floats."""
    return jax.tree.map(float, self.get_state(tree))
