"""A three-convolution CNN for tiny images (8×8×1 digits): fast enough to train on a CPU."""

from typing import ClassVar

import flax.linen as nn

from multimix_jax.models import common


# Widths of the stem, stage 1 and stage 2. Measured on 2 CPU cores, a float32 train step at b = 128 on 8×8×1
# takes ~6 ms with these and ~16 ms with (32, 64, 128): XLA's CPU convolutions are compute-bound here.
WIDTHS = (16, 32, 64)


class SmallCNN(common.Model):
  """conv3×3(16)-BN-ReLU | stage 1: conv3×3(32, stride 2)-BN-ReLU | stage 2: conv3×3(64)-BN-ReLU | head.

  On (b, 8, 8, 1) inputs the features are (b, 4, 4, 64). The first convolution belongs to stage 1.
  """
  example_input: ClassVar[tuple[int, int, int]] = (8, 8, 1)  # (H, W, C) of digits
  example_classes: ClassVar[int] = 10

  @nn.compact
  def __call__(self, x, *, train: bool, dense: bool = False, mix_stage: int | None = None, mix_fn=None):
    """x (b, H, W, C) -> (features (b, ⌈H/2⌉, ⌈W/2⌉, 64) in dtype, float32 logits (b, c) or dense (b, h, w, c)).

    mix_stage k in {0, 1, 2} replaces the hidden state after stage k (0: the input image) by mix_fn of it.
    """
    norm = common.batch_norm(train, self.dtype, self.bn_axis_name)

    def conv_bn_relu(features, strides, name):
      return (nn.Conv(features, (3, 3), strides, padding=1, use_bias=False, dtype=self.dtype,
                      kernel_init=common.torch_default_init, name=f'{name}_conv'), norm(name=f'{name}_bn'), nn.relu)

    stem = conv_bn_relu(WIDTHS[0], 1, 'stem')
    stages = [conv_bn_relu(WIDTHS[1], 2, 'stage1'), conv_bn_relu(WIDTHS[2], 1, 'stage2')]
    h = common.run_stages(x, stem, stages, dtype=self.dtype, mix_stage=mix_stage, mix_fn=mix_fn)
    return h, common.classify(common.head(self.num_classes), h, dense)
