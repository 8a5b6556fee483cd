"""WRN-16-8 for 32×32 images, as in the Manifold Mixup / AlignMixup PyTorch code (after meliketoy's wide-resnet).

3×3 stem conv (16, with bias), three stages of two wide pre-activation blocks (128, 256, 512; strides 1, 2, 2),
convolutions with bias, final BN + ReLU. 10,965,866 parameters with 10 classes, 11,012,036 with 100.
As in the authors' `models/WideResnet.py`: the blocks have no dropout layer; the final BN is `BatchNorm2d(512,
momentum=0.9)` (its running statistics keep 10% of the old value per step, Flax momentum 0.1), every other BN
has PyTorch's default momentum 0.1; and the Xavier `conv_init` defined there is never applied, so every
convolution has PyTorch's default initialisation, weights and biases U(±1/sqrt(fan_in)).
"""

import functools
from typing import ClassVar

import flax.linen as nn

from multimix_jax.models import common

STAGES = ((128, 1), (256, 2), (512, 2))  # (width = 16 · 8 · 2^k, stride of the first block)
BLOCKS_PER_STAGE = 2  # (depth 16 - 4) / 6

FINAL_BN_TORCH_MOMENTUM = 0.9  # the authors' `self.bn1 = nn.BatchNorm2d(nStages[3], momentum=0.9)`


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
    c_in = x.shape[-1]
    out = self.conv(self.features, (3, 3), name='conv1', bias_init=common.torch_bias_init(9 * c_in))(
        nn.relu(self.norm(name='bn1')(x)))
    out = self.conv(self.features, (3, 3), self.strides, name='conv2',
                    bias_init=common.torch_bias_init(9 * self.features))(nn.relu(self.norm(name='bn2')(out)))
    if self.strides != 1 or c_in != self.features:
      x = self.conv(self.features, (1, 1), self.strides, padding=0, name='shortcut',
                    bias_init=common.torch_bias_init(c_in))(x)
    return out + x


class WRN16_8(common.Model):
  """WRN-16-8; features are the output of the final BN + ReLU: (b, H/4, W/4, 512), 8×8 on 32×32 inputs."""
  example_input: ClassVar[tuple[int, int, int]] = (32, 32, 3)  # (H, W, C) of CIFAR-100
  example_classes: ClassVar[int] = 100

  @nn.compact
  def __call__(self, x, *, train: bool, dense: bool = False, mix_stage: int | None = None, mix_fn=None):
    """x (b, H, W, C) -> (features (b, H/4, W/4, 512) in dtype, float32 logits (b, c) or dense (b, h, w, c)).

    mix_stage k in {0, 1, 2, 3} replaces the hidden state after stage k (0: the input image; the stem belongs
    to stage 1; 3 is before the final BN) by mix_fn of it.
    """
    norm = common.batch_norm(train, self.dtype, self.bn_axis_name)
    # PyTorch's default init; each call binds the bias bound to its fan_in (c_in · kh · kw).
    conv = functools.partial(nn.Conv, padding=1, use_bias=True, dtype=self.dtype,
                             kernel_init=common.torch_default_init)
    stem = (conv(16, (3, 3), name='stem_conv', bias_init=common.torch_bias_init(9 * x.shape[-1])),)
    stages = [[WideBlock(width, strides if j == 0 else 1, norm, conv, name=f'stage{i}_block{j}')
               for j in range(BLOCKS_PER_STAGE)] for i, (width, strides) in enumerate(STAGES, 1)]
    h = common.run_stages(x, stem, stages, dtype=self.dtype, mix_stage=mix_stage, mix_fn=mix_fn)
    final_norm = common.batch_norm_momentum(train, self.dtype, self.bn_axis_name, FINAL_BN_TORCH_MOMENTUM)
    h = nn.relu(final_norm(name='final_bn')(h))
    return h, common.classify(common.head(self.num_classes), h, dense)
