"""ImageNet, ResNet-50 v1.5: the paper's protocol with ImageNet's network, schedule and augmentation.

The training augmentation (random-resized crop 224, flip, colour jitter 0.4 and PCA lighting 0.1, as in the
authors' code) and the evaluation resize 256 / center crop 224 follow from the dataset, in the input pipeline.
"""

from multimix_jax.configs import cifar10_r18


def get_config():
  config = cifar10_r18.get_config()

  config.dataset = 'imagenet2012'
  config.num_classes = 1000
  config.image_size = 224

  config.model = 'resnet50'
  config.dtype = 'bfloat16'  # compute only; parameters, BN statistics and logits stay float32

  # The authors' ImageNet run: batch 1024 (128 per GPU on 8), lr 0.1 (not scaled with the batch), Nesterov, ×0.1
  # every 75 of 300 epochs. With another device count keep 128 per device: batch_size = 128 × devices.
  config.batch_size = 1024
  config.num_epochs = 300
  config.nesterov = True
  config.lr_boundaries_epochs = (75, 150, 225)
  # Dense MultiMix: n·r·c = 1000·49·1000 logits per device, 196 MB and as much again for their gradient; in
  # chunks of 250 rows a quarter of that.
  config.multimix.chunk_size = 250

  config.log_every_steps = 100
  config.eval_batch_size = 1024
  # Evaluation and checkpoints once per epoch (the defaults, 0): 1,251 steps at batch 1024. SIGTERM (a preempted
  # VM, a SLURM time limit) saves a checkpoint as well.
  return config
