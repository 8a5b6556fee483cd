"""ResNet-50 for 224×224 ImageNet images: torchvision's v1.5 definition (stride on the bottleneck's 3×3 conv).

7×7 stem conv (64, stride 2) + BN + ReLU + 3×3 max-pool (stride 2), four stages of 3, 4, 6, 3 bottlenecks
(64, 128, 256, 512 wide, ×4 out; strides 1, 2, 2, 2), downsample = 1×1 conv + BN, convolutions without bias.
25,557,032 parameters with 1000 classes.
"""

import functools
from typing import ClassVar

import flax.linen as nn

from multimix_jax.models import common

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride of the first block)
EXPANSION = 4

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class Bottleneck(nn.Module):
  """conv1×1-BN-ReLU-conv3×3(stride)-BN-ReLU-conv1×1(4·features)-BN, plus the (downsampled) input, ReLU.
  (b, h, w, c_in) -> (b, h/stride, w/stride, 4·features)."""
  features: int
  strides: int
  norm: common.ModuleDef
  conv: common.ModuleDef

  @nn.compact
  def __call__(self, x):
    out = nn.relu(self.norm(name='bn1')(self.conv(self.features, (1, 1), padding=0, name='conv1')(x)))
    out = nn.relu(self.norm(name='bn2')(self.conv(self.features, (3, 3), self.strides, name='conv2')(out)))
    out = self.norm(name='bn3')(self.conv(self.features * EXPANSION, (1, 1), padding=0, name='conv3')(out))
    if self.strides != 1 or x.shape[-1] != self.features * EXPANSION:
      x = self.conv(self.features * EXPANSION, (1, 1), self.strides, padding=0, name='downsample_conv')(x)
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(out + x)


class ResNet50(common.Model):
  """ResNet-50; features are the output of stage 4: (b, H/32, W/32, 2048), 7×7 on 224×224 inputs."""
  example_input: ClassVar[tuple[int, int, int]] = (224, 224, 3)  # (H, W, C) of ImageNet
  example_classes: ClassVar[int] = 1000

  @nn.compact
  def __call__(self, x, *, train: bool, dense: bool = False, mix_stage: int | None = None, mix_fn=None):
    """x (b, H, W, C) -> (features (b, H/32, W/32, 2048) in dtype, float32 logits (b, c) or dense (b, h, w, c)).

    mix_stage k in {0, ..., 4} replaces the hidden state after stage k (0: the input image; the stem and
    max-pool belong to stage 1) by mix_fn of it.
    """
    norm = common.batch_norm(train, self.dtype, self.bn_axis_name)
    conv = functools.partial(nn.Conv, padding=1, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
    stem = (conv(64, (7, 7), 2, padding=3, name='stem_conv'), norm(name='stem_bn'), nn.relu,
            lambda h: nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))))
    stages = [[Bottleneck(width, strides if j == 0 else 1, norm, conv, name=f'stage{i}_block{j}')
               for j in range(blocks)] for i, (width, blocks, strides) in enumerate(STAGES, 1)]
    h = common.run_stages(x, stem, stages, dtype=self.dtype, mix_stage=mix_stage, mix_fn=mix_fn)
    return h, common.classify(common.head(self.num_classes), h, dense)
