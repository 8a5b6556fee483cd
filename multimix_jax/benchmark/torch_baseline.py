"""The PyTorch baseline: ERM on the authors' networks in PyTorch, same batch and precision, in its own process.

The networks are `multimix_jax.models.torch_reference`'s transcriptions of the authors' code (PreActResNet-18 with their
`PreActBlock`, WRN-16-8, torchvision's ResNet-50), so the comparison is between two implementations of one
function. PyTorch is imported only inside `measure`, which `run_isolated` calls in a fresh process: the benchmark
itself never imports torch, and the JAX process's device memory is not shared with it.
"""

import platform
import statistics
import time

from multimix_jax.benchmark import timing
from multimix_jax.benchmark.presets import Setting


def run_isolated(setting: Setting, *, compile_model: bool | None = None, timeout: float = 3600) -> dict:
  """`measure` in a fresh Python process; its result, or {'error': ...} (torch missing, no such network, a crash)."""
  kwargs = {'setting': setting.to_json(), 'compile_model': compile_model}
  return timing.call_isolated('torch_baseline', 'measure', kwargs, timeout=timeout)


def measure(setting: dict, compile_model: bool | None = None) -> dict:
  """ERM step time of `setting`'s network in PyTorch, timed as the JAX side is (median over rounds of `steps` steps,
  after one compiling step and `warmup` steps).

  Channels-last, `torch.autocast` bfloat16 when the setting's dtype is bfloat16, SGD (momentum 0.9, weight decay
  1e-4) and cross-entropy on one synthetic batch of b = `batch_size` images. `compile_model`: `torch.compile` the
  network; None compiles on a GPU only (on a CPU it needs a C++ toolchain and takes minutes for little gain).
  """
  setting = Setting.from_json(setting)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from multimix_jax.models import torch_reference  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return {'error': f'torch is not installed ({e})'}
  if setting.model not in torch_reference.MODELS:
    return {'error': f'no PyTorch version of {setting.model}'}
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if compile_model is None:
    compile_model = device == 'cuda'
  # PyTorch's usual fast settings: cuDNN picks its fastest kernels, float32 matmuls may use TF32 (as XLA's do).
  torch.backends.cudnn.benchmark = True
  torch.set_float32_matmul_precision('high')
  torch.manual_seed(0)
  net = torch_reference.create_model(setting.model, num_classes=setting.num_classes)
  net = net.to(device, memory_format=torch.channels_last).train()
  num_params = sum(p.numel() for p in net.parameters())
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  generator = torch.Generator(device=device).manual_seed(0)
  height, width, channels = setting.image_shape
  images = torch.randn(setting.batch_size, channels, height, width, device=device,
                       generator=generator).contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, setting.num_classes, (setting.batch_size,), device=device, generator=generator)
  forward = torch.compile(net) if compile_model else net
  use_bf16 = setting.dtype == 'bfloat16'

  def run(steps):
    loss = None
    for _ in range(steps):
      optimizer.zero_grad(set_to_none=True)
      with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
        _, logits = forward(images)  # the reference networks return (features, logits)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
      loss.backward()
      optimizer.step()
    if device == 'cuda':
      torch.cuda.synchronize()
    return None if loss is None else float(loss)

  started = time.perf_counter()
  run(1)  # compiles, when asked to
  compile_s = time.perf_counter() - started
  run(setting.warmup)
  if device == 'cuda':
    torch.cuda.reset_peak_memory_stats()
  times, loss = [], None
  for _ in range(setting.rounds):
    started = time.perf_counter()
    loss = run(setting.steps)
    times.append((time.perf_counter() - started) / setting.steps)
  step_s = statistics.median(times) if times else None
  return {
      'torch_version': torch.__version__,
      'device': torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu',
      'num_threads': torch.get_num_threads(),
      'compiled': compile_model,
      'num_params': num_params,
      'compile_s': compile_s,
      'step_s': step_s,
      'step_s_rounds': times,
      'images_per_s': setting.batch_size / step_s if step_s else None,
      'peak_bytes': int(torch.cuda.max_memory_allocated()) if device == 'cuda' else None,
      'final_loss': loss,
  }
