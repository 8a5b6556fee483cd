"""PreActResNet-18 for 32×32 and 64×64 images, as in the AlignMixup / Manifold Mixup PyTorch code.

3×3 stem conv (64) + BN + ReLU, four stages of two pre-activation basic blocks (64, 128, 256, 512; strides
1, 2, 2, 2), no BN after the last stage. 11,171,274 parameters with 10 classes, 11,217,444 with 100. Every block's
shortcut starts from its pre-activated input, as in the authors' code (see `PreActBlock`); `torch_reference` holds
the PyTorch network it is checked against.
"""

import functools
from typing import ClassVar

import flax.linen as nn

from multimix_jax.models import common

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, stride of the first block)
BLOCKS_PER_STAGE = 2


class PreActBlock(nn.Module):
  """BN-ReLU-conv3×3(stride)-BN-ReLU-conv3×3 plus a shortcut taken from the pre-activated input a = relu(bn1(x)):
  a itself when the shape is kept, a 1×1 conv (no BN) of it when the shape changes. (b, h, w, c_in) ->
  (b, h/stride, w/stride, features).

  As the authors' `PreActBlock` (AlignMixup `models/resnet.py`: `shortcut = self.shortcut(out)` with `out =
  relu(bn1(x))` and an empty `nn.Sequential()` as the identity shortcut): identity blocks add relu(bn1(x)), not x.
  """
  features: int
  strides: int
  norm: common.ModuleDef
  conv: common.ModuleDef

  @nn.compact
  def __call__(self, x):
    out = nn.relu(self.norm(name='bn1')(x))
    shortcut = out
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = self.conv(self.features, (1, 1), self.strides, padding=0, name='shortcut')(out)
    out = self.conv(self.features, (3, 3), self.strides, name='conv1')(out)
    out = self.conv(self.features, (3, 3), name='conv2')(nn.relu(self.norm(name='bn2')(out)))
    return out + shortcut


class PreActResNet18(common.Model):
  """PreActResNet-18; features are the raw output of stage 4: (b, H/8, W/8, 512), 4×4 on 32×32 inputs."""
  example_input: ClassVar[tuple[int, int, int]] = (32, 32, 3)  # (H, W, C) of CIFAR-100
  example_classes: ClassVar[int] = 100

  @nn.compact
  def __call__(self, x, *, train: bool, dense: bool = False, mix_stage: int | None = None, mix_fn=None):
    """x (b, H, W, C) -> (features (b, H/8, W/8, 512) in dtype, float32 logits (b, c) or dense (b, h, w, c)).

    mix_stage k in {0, ..., 4} replaces the hidden state after stage k (0: the input image; the stem belongs
    to stage 1) by mix_fn of it.
    """
    norm = common.batch_norm(train, self.dtype, self.bn_axis_name)
    # PyTorch's padding (1 for 3×3, 0 for the 1×1 shortcut), no bias, PyTorch's default init.
    conv = functools.partial(nn.Conv, padding=1, use_bias=False, dtype=self.dtype,
                             kernel_init=common.torch_default_init)
    stem = (conv(64, (3, 3), name='stem_conv'), norm(name='stem_bn'), nn.relu)
    stages = [[PreActBlock(width, strides if j == 0 else 1, norm, conv, name=f'stage{i}_block{j}')
               for j in range(BLOCKS_PER_STAGE)] for i, (width, strides) in enumerate(STAGES, 1)]
    h = common.run_stages(x, stem, stages, dtype=self.dtype, mix_stage=mix_stage, mix_fn=mix_fn)
    return h, common.classify(common.head(self.num_classes), h, dense)

