"""WRN-16-8 for 32×32 images, as in the Manifold Mixup / AlignMixup PyTorch code (after meliketoy's wide-resnet).

3×3 stem conv (16, with bias), three stages of two wide pre-activation blocks (128, 256, 512; strides 1, 2, 2),
convolutions with bias, final BN + ReLU. 10,965,866 parameters with 10 classes, 11,012,036 with 100.
The authors' dropout rate is 0, so there is no dropout layer.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from multimix_jax.models import common

STAGES = ((128, 1), (256, 2), (512, 2))  # (width = 16 · 8 · 2^k, stride of the first block)
BLOCKS_PER_STAGE = 2  # (depth 16 - 4) / 6

# The authors' conv_init: Xavier-uniform with gain sqrt(2), bias 0.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')


class WideBlock(nn.Module):
  """BN-ReLU-conv3×3-BN-ReLU-conv3×3(stride), plus the input, or a 1×1 conv of the (raw) input when the shape
  changes. The stride is on the second convolution, as in the authors' code. (b, h, w, c_in) ->
  (b, h/stride, w/stride, features)."""
  features: int
  strides: int
  norm: common.ModuleDef
  conv: common.ModuleDef

  @nn.compact
  def __call__(self, x):
    out = self.conv(self.features, (3, 3), name='conv1')(nn.relu(self.norm(name='bn1')(x)))
    out = self.conv(self.features, (3, 3), self.strides, name='conv2')(nn.relu(self.norm(name='bn2')(out)))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = self.conv(self.features, (1, 1), self.strides, padding=0, name='shortcut')(x)
    return out + x


class WRN16_8(nn.Module):
  """WRN-16-8; features are the output of the final BN + ReLU: (b, H/4, W/4, 512), 8×8 on 32×32 inputs."""
  num_classes: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool, dense: bool = False, mix_stage: int | None = None, mix_fn=None):
    """x (b, H, W, C) -> (features (b, H/4, W/4, 512) in dtype, float32 logits (b, c) or dense (b, h, w, c)).

    mix_stage k in {0, 1, 2, 3} replaces the hidden state after stage k (0: the input image; the stem belongs
    to stage 1; 3 is before the final BN) by mix_fn of it.
    """
    common.check_mix(mix_stage, mix_fn, len(STAGES))
    norm = common.batch_norm(train, self.dtype, self.bn_axis_name)
    conv = functools.partial(nn.Conv, padding=1, use_bias=True, dtype=self.dtype, kernel_init=conv_init)
    h = mix_fn(x) if mix_stage == 0 else x
    h = conv(16, (3, 3), name='stem_conv')(h.astype(self.dtype))
    for i, (width, strides) in enumerate(STAGES, 1):
      for j in range(BLOCKS_PER_STAGE):
        h = WideBlock(width, strides if j == 0 else 1, norm, conv, name=f'stage{i}_block{j}')(h)
      h = mix_fn(h) if mix_stage == i else h
    h = nn.relu(norm(name='final_bn')(h))
    return h, common.classify(common.head(self.num_classes), h, dense)
