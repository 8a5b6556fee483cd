"""The authors' PyTorch networks, transcribed, and `copy_flax_to_torch` to load a Flax model's variables into them.

What it is for: checking that the Flax models compute what the authors' networks compute (the tests copy a Flax
model's weights across and compare outputs), and a PyTorch baseline of the same networks. It imports torch, so it
is imported only where PyTorch is wanted: `import multimix_jax` never imports it. It needs no torchvision.

- PreActResNet-18: AlignMixup's `cifar10_100/models/resnet.py` (`ResNet(PreActBlock, [2, 2, 2, 2])`, identical in
  `tiny_imgnet/models/resnet.py`) with the `nn.Linear(512, c)` classifier of `resnet18_classifier.py`.
- WRN-16-8: AlignMixup's `cifar10_100/models/WideResnet.py` (`Wide_ResNet(16, 8)`) with the `nn.Linear(512, c)`
  classifier of `wrn16x8_classifier.py`.
- ResNet-50: AlignMixup's `imagenet/models/resnet.py` (CutMix-PyTorch's copy of torchvision's v1.5 `resnet50`:
  the same layers, the same convolution init) with the `nn.Linear(2048, c)` classifier of `resnet50_classifier.py`.

Every network maps NCHW images (b, C, H, W) to `(features, logits)`: features (b, d, h, w) the map before pooling,
logits (b, c) of its spatial mean (the authors' `F.avg_pool2d(out, k)` with k the map's size). Module names follow
the authors' files, so their checkpoints' keys (under their `encoder.` / `model.` prefixes) line up.
"""

from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class PreActBlock(nn.Module):
  """The authors' pre-activation basic block: the shortcut starts from relu(bn1(x)), the identity included."""
  expansion = 1

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out)
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    return out + shortcut


class PreActResNet18(nn.Module):
  """3×3 stem conv + BN + ReLU, layer1..layer4 of two PreActBlocks (64, 128, 256, 512; strides 1, 2, 2, 2)."""

  def __init__(self, num_classes: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    in_planes, layers = 64, []
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
      layers.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)))
      in_planes = planes
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return out, self.classifier(out.mean(dim=(2, 3)))


class WideBasic(nn.Module):
  """The authors' `wide_basic`: BN-ReLU-conv3×3-BN-ReLU-conv3×3(stride), plus x or a 1×1 conv of the raw x."""

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

  def forward(self, x):
    out = self.conv1(F.relu(self.bn1(x)))
    out = self.conv2(F.relu(self.bn2(out)))
    return out + self.shortcut(x)


class WRN16_8(nn.Module):
  """3×3 stem conv (16), layer1..layer3 of two WideBasic blocks (128, 256, 512; strides 1, 2, 2), final BN (PyTorch
  momentum 0.9) + ReLU. PyTorch's default initialisation throughout: the authors never apply their `conv_init`."""

  def __init__(self, num_classes: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=True)
    in_planes, layers = 16, []
    for planes, stride in ((128, 1), (256, 2), (512, 2)):
      layers.append(nn.Sequential(WideBasic(in_planes, planes, stride), WideBasic(planes, planes, 1)))
      in_planes = planes
    self.layer1, self.layer2, self.layer3 = layers
    self.bn1 = nn.BatchNorm2d(512, momentum=0.9)
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x):
    out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
    out = F.relu(self.bn1(out))
    return out, self.classifier(out.mean(dim=(2, 3)))


class Bottleneck(nn.Module):
  """conv1×1-BN-ReLU-conv3×3(stride)-BN-ReLU-conv1×1(4·planes)-BN, plus x or downsample(x), ReLU (v1.5)."""
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu(out + residual)


class ResNet50(nn.Module):
  """7×7 stem conv (stride 2) + BN + ReLU + 3×3 max-pool, layer1..layer4 of 3, 4, 6, 3 Bottlenecks (64, 128, 256,
  512; strides 1, 2, 2, 2). Convolutions initialised N(0, 2 / (kh · kw · c_out)), as the authors' (and
  torchvision's kaiming_normal_ with mode='fan_out'); the classifier keeps nn.Linear's default."""

  def __init__(self, num_classes: int):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    self.layer1 = self._make_layer(64, 3)
    self.layer2 = self._make_layer(128, 4, stride=2)
    self.layer3 = self._make_layer(256, 6, stride=2)
    self.layer4 = self._make_layer(512, 3, stride=2)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(0, np.sqrt(2.0 / n))
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.fill_(1)
        m.bias.data.zero_()
    self.classifier = nn.Linear(512 * Bottleneck.expansion, num_classes)

  def _make_layer(self, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
          nn.BatchNorm2d(planes * Bottleneck.expansion))
    layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * Bottleneck.expansion
    layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return out, self.classifier(out.mean(dim=(2, 3)))


MODELS = {'preact_resnet18': PreActResNet18, 'wrn16_8': WRN16_8, 'resnet50': ResNet50}


def create_model(name: str, *, num_classes: int) -> nn.Module:
  """The PyTorch network registered as `name` (the Flax model of the same name in `multimix_jax.models`)."""
  if name not in MODELS:
    raise ValueError(f'No PyTorch reference for {name!r}; known: {", ".join(sorted(MODELS))}.')
  return MODELS[name](num_classes)


# ------------------------------------------------------------------------------------------- Flax -> PyTorch


def _blocks(layers, flax_stage_names) -> Iterator[tuple[str, nn.Module]]:
  for i, layer in enumerate(layers, 1):
    for j, block in enumerate(layer):
      yield flax_stage_names.format(i=i, j=j), block


def _pairs(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
  """(Flax module path 'a/b', PyTorch module) for every layer that holds parameters."""
  if isinstance(model, PreActResNet18):
    yield from (('stem_conv', model.conv1), ('stem_bn', model.bn1), ('head', model.classifier))
    for name, block in _blocks((model.layer1, model.layer2, model.layer3, model.layer4), 'stage{i}_block{j}'):
      yield from ((f'{name}/{part}', getattr(block, part)) for part in ('bn1', 'conv1', 'bn2', 'conv2'))
      if len(block.shortcut):
        yield f'{name}/shortcut', block.shortcut[0]
  elif isinstance(model, WRN16_8):
    yield from (('stem_conv', model.conv1), ('final_bn', model.bn1), ('head', model.classifier))
    for name, block in _blocks((model.layer1, model.layer2, model.layer3), 'stage{i}_block{j}'):
      yield from ((f'{name}/{part}', getattr(block, part)) for part in ('bn1', 'conv1', 'bn2', 'conv2'))
      if len(block.shortcut):
        yield f'{name}/shortcut', block.shortcut[0]
  elif isinstance(model, ResNet50):
    yield from (('stem_conv', model.conv1), ('stem_bn', model.bn1), ('head', model.classifier))
    for name, block in _blocks((model.layer1, model.layer2, model.layer3, model.layer4), 'stage{i}_block{j}'):
      yield from ((f'{name}/{part}', getattr(block, part)) for part in ('conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3'))
      if block.downsample is not None:
        yield from ((f'{name}/downsample_conv', block.downsample[0]), (f'{name}/downsample_bn', block.downsample[1]))
  else:
    raise ValueError(f'copy_flax_to_torch does not know {type(model).__name__}; use a network of this module.')


def _flat(tree: Any, prefix: str = '') -> dict[str, np.ndarray]:
  if not hasattr(tree, 'items'):
    return {prefix: np.asarray(tree)}
  return {k: v for name, sub in tree.items() for k, v in _flat(sub, f'{prefix}/{name}' if prefix else name).items()}


@torch.no_grad()
def copy_flax_to_torch(torch_model: nn.Module, variables: Any) -> nn.Module:
  """Loads a Flax model's {'params', 'batch_stats'} into the PyTorch network of the same name, in place.

  Conv kernels (kh, kw, c_in, c_out) become weights (c_out, c_in, kh, kw), dense kernels (d, c) become (c, d);
  BatchNorm scale/bias/mean/var become weight/bias/running_mean/running_var. Values are cast to each tensor's dtype
  (call `.double()` first for a float64 comparison).

  Raises:
    ValueError: a Flax variable without a PyTorch counterpart or the reverse, or a shape that does not match.

  Returns:
    torch_model.
  """
  params, stats = _flat(variables['params']), _flat(variables.get('batch_stats', {}))
  flax_names = {f'params/{k}' for k in params} | {f'batch_stats/{k}' for k in stats}
  used, loaded = set(), set()
  torch_names = {id(m): name for name, m in torch_model.named_modules()}

  def load(tensor, flax_kind, flax_path, value, torch_name):
    if tensor.shape != value.shape:
      raise ValueError(f'{flax_kind}/{flax_path} of shape {value.shape} does not fit {torch_name} of shape '
                       f'{tuple(tensor.shape)}.')
    tensor.copy_(torch.from_numpy(np.array(value, copy=True)).to(tensor.dtype))  # a writable copy
    used.add(f'{flax_kind}/{flax_path}')
    loaded.add(torch_name)

  def get(table, path):
    if path not in table:
      raise ValueError(f'The Flax variables have no {path!r} for the PyTorch network {type(torch_model).__name__}.')
    return table[path]

  for path, module in _pairs(torch_model):
    prefix = torch_names[id(module)]
    if isinstance(module, nn.Conv2d):
      load(module.weight, 'params', f'{path}/kernel', get(params, f'{path}/kernel').transpose(3, 2, 0, 1),
           f'{prefix}.weight')
    elif isinstance(module, nn.Linear):
      load(module.weight, 'params', f'{path}/kernel', get(params, f'{path}/kernel').T, f'{prefix}.weight')
    if isinstance(module, nn.BatchNorm2d):
      load(module.weight, 'params', f'{path}/scale', get(params, f'{path}/scale'), f'{prefix}.weight')
      load(module.running_mean, 'batch_stats', f'{path}/mean', get(stats, f'{path}/mean'), f'{prefix}.running_mean')
      load(module.running_var, 'batch_stats', f'{path}/var', get(stats, f'{path}/var'), f'{prefix}.running_var')
    if getattr(module, 'bias', None) is not None:
      load(module.bias, 'params', f'{path}/bias', get(params, f'{path}/bias'), f'{prefix}.bias')

  expected = {name for name, _ in torch_model.named_parameters()}
  expected |= {name for name, _ in torch_model.named_buffers() if not name.endswith('num_batches_tracked')}
  if flax_names != used or expected != loaded:
    raise ValueError(f'Flax variables left over: {sorted(flax_names - used)}; PyTorch tensors not loaded: '
                     f'{sorted(expected - loaded)}.')
  return torch_model
