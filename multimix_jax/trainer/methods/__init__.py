"""Mixing methods of the trainer: each is built from a run's config into the schedule a step draws from.

`METHODS[name](config)` returns the method's mixing schedule, a list of `Branch(probability, loss_fn)`. Building
binds every hyperparameter the method reads (n, m, α or its range, scope, confidence, label smoothing, ...) as
plain Python values, so no config object reaches traced code and the step knows nothing about any method. The host
draws one branch per step and runs a step compiled for it: each compiled step holds one branch only, since a
`lax.cond` between the branches made a small CNN step 18× slower on CPU.

A loss function runs inside the per-device train step (`multimix_jax.trainer.step.train_step`):

    loss_fn(forward, images, targets, key) -> (loss, (logits, logit_targets, updates))

- `forward(images, **kwargs) -> ((features, logits), updates)`: the model in training mode (the keyword
  arguments of `multimix_jax.models`: `dense`, `mix_stage`, `mix_fn`); `updates` are the model's new mutable
  collections (BatchNorm statistics, sown intermediates), returned as they are.
- images (b, H, W, C) and one-hot targets (b, c) of this device.
- `key`: this step's key, the same on every device; `common.split(key)` gives the step-wide and per-device keys.
- It returns the scalar loss and, for the training-accuracy metric, logits (b, c) of the examples it forwarded
  with the targets they are scored against.

One module per family holds, for its methods, the loss functions, the builders and the checks of the keys they
read: `pairwise` (ERM, input mixup, manifold mixup, the alternatives MultiMix alternates with), `pasting` (CutMix,
SaliencyMix, FMix, ResizeMix, TransMix), `multimix` (MultiMix, Dense MultiMix), `alignmixup`; `common` holds what
they share. Each builder is a `common.Method`: the builder, its checks, and whether it needs the attention a Vision
Transformer sows. Adding a method is one `Method` in its family's module and one line in `METHODS`.
"""

import ml_collections

from multimix_jax import models
from multimix_jax.trainer.methods import alignmixup
from multimix_jax.trainer.methods import common
from multimix_jax.trainer.methods import multimix
from multimix_jax.trainer.methods import pairwise
from multimix_jax.trainer.methods import pasting

Branch = common.Branch  # an entry of a schedule: (probability, loss_fn)
HyperparameterError = common.HyperparameterError  # what a builder raises: one sentence per bad value
Method = common.Method
ALTERNATIVES = pairwise.ALTERNATIVES  # what MultiMix alternates with (multimix.alternative)

# Each method refuses bad values of the keys it reads with a HyperparameterError (the trainer's `error:` line).
METHODS: dict[str, Method] = {
    'erm': pairwise.ERM,
    'input_mixup': pairwise.INPUT_MIXUP,
    'cutmix': pasting.CUTMIX,
    'manifold_mixup': pairwise.MANIFOLD_MIXUP,
    'multimix': multimix.MULTIMIX,
    'dense_multimix': multimix.DENSE_MULTIMIX,
    'erm_or_input_mixup': pairwise.ERM_OR_INPUT_MIXUP,
    'alignmixup': alignmixup.ALIGNMIXUP,
    'saliencymix': pasting.SALIENCYMIX,
    'fmix': pasting.FMIX,
    'resizemix': pasting.RESIZEMIX,
    'transmix': pasting.TRANSMIX,
}

# Methods that read the attention a Vision Transformer sows: config validation refuses them with other models.
NEEDS_ATTENTION = tuple(name for name, method in METHODS.items() if method.needs_attention)


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """One sentence per bad value of the keys `config.method` reads (its `Method`'s checks); then, once they all
  passed, what the method needs of a known `config.model`: the attention a Vision Transformer sows, for a method
  that reads it and for multimix.confidence='attention' (refused with any method, as it names the attention)."""
  if config.method not in METHODS:
    return [f'method={config.method!r} is unknown; choose one of {sorted(METHODS)}.']
  method = METHODS[config.method]
  problems = method.problems(config)
  if problems or config.model not in models.MODELS:  # an unknown model is models.config_problems' to tell
    return problems
  problems += multimix.confidence_problems(config)
  if method.needs_attention:
    problems += common.attention_problems(config, f'method={config.method!r}', 'choose cutmix, or a vit_* model')
  return problems
