"""A three-convolution CNN for tiny images (8×8×1 digits): fast enough to train on a CPU."""

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from multimix_jax.models import common


# Widths of the stem, stage 1 and stage 2. Measured on 2 CPU cores, a float32 train step at b = 128 on 8×8×1
# takes ~6 ms with these and ~16 ms with (32, 64, 128): XLA's CPU convolutions are compute-bound here.
WIDTHS = (16, 32, 64)


class SmallCNN(nn.Module):
  """conv3×3(16)-BN-ReLU | stage 1: conv3×3(32, stride 2)-BN-ReLU | stage 2: conv3×3(64)-BN-ReLU | head.

  On (b, 8, 8, 1) inputs the features are (b, 4, 4, 64). The first convolution belongs to stage 1.
  """
  example_input: ClassVar[tuple[int, int, int]] = (8, 8, 1)  # (H, W, C) of digits
  example_classes: ClassVar[int] = 10
  num_classes: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool, dense: bool = False, mix_stage: int | None = None, mix_fn=None):
    """x (b, H, W, C) -> (features (b, ⌈H/2⌉, ⌈W/2⌉, 64) in dtype, float32 logits (b, c) or dense (b, h, w, c)).

    mix_stage k in {0, 1, 2} replaces the hidden state after stage k (0: the input image) by mix_fn of it.
    """
    common.check_mix(mix_stage, mix_fn, 2)
    norm = common.batch_norm(train, self.dtype, self.bn_axis_name)

    def conv_bn_relu(h, features, strides, name):
      h = nn.Conv(features, (3, 3), strides, padding=1, use_bias=False, dtype=self.dtype,
                  kernel_init=common.torch_default_init, name=f'{name}_conv')(h)
      return nn.relu(norm(name=f'{name}_bn')(h))

    h = mix_fn(x) if mix_stage == 0 else x
    h = conv_bn_relu(h.astype(self.dtype), WIDTHS[0], 1, 'stem')
    h = conv_bn_relu(h, WIDTHS[1], 2, 'stage1')
    h = mix_fn(h) if mix_stage == 1 else h
    h = conv_bn_relu(h, WIDTHS[2], 1, 'stage2')
    h = mix_fn(h) if mix_stage == 2 else h
    return h, common.classify(common.head(self.num_classes), h, dense)
