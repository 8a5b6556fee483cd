"""The work: one run evaluated over the whole test split, through the trainer's data-parallel path, and its figures.

`analyze_run` restores the latest checkpoint, runs `evaluation.evaluate_fn` (and `attack_fn` for robustness) on
every test batch over all devices, drops the padding with the batch masks, and computes the figures asked for:
accuracy and NLL from the trainer's own eval sums, calibration and embedding figures (`metrics`), FGSM and PGD
errors, a t-SNE projection with MultiMix interpolations, and the training curves.
"""

import dataclasses
import os
import time

import jax
import numpy as np

from multimix_jax import mixing
from multimix_jax.analysis import evaluation
from multimix_jax.analysis import metrics as metrics_lib
from multimix_jax.analysis import runs as runs_lib
from multimix_jax.analysis.options import AnalysisError, Options, attack_settings
from multimix_jax.trainer import step as step_lib


def analyze_run(run: runs_lib.Run, options: Options = Options()) -> tuple[dict, dict]:
  """Evaluates `run` and computes the asked figures.

  Returns:
    (figures for analysis.json, arrays for the plots: reliability bins, projection coordinates, curves).
  """
  from multimix_jax import data  # pylint: disable=g-import-not-at-top  # the input pipeline (seconds to import)
  from multimix_jax.data import device_augment  # pylint: disable=g-import-not-at-top

  config = run.config
  timings = {}
  started = time.perf_counter()
  try:
    info = data.dataset_info(config)
  except (ValueError, data.DatasetNotFoundError) as e:
    raise AnalysisError(f'{run.workdir}: {e}') from e
  mean, std = tuple(config.augment.mean), tuple(config.augment.std)  # as the run normalised (filled from the data)
  dp = step_lib.DataParallel(config.get('parallelism', 'shard_map'))
  model = runs_lib.create_model(config)
  params, batch_stats = runs_lib.restore(run)
  state = dp.put_state(step_lib.TrainState(step=np.zeros((), np.int32), params=params, batch_stats=batch_stats,
                                           opt_state=()))
  attacking = 'robustness' in options.metrics
  evaluate = evaluation.evaluate_fn(dp, model)
  if attacking:
    attack = attack_settings(config, options)
    attack_fn = evaluation.attack_fn(dp, model, mean, std, pgd_steps=attack.pgd_steps,
                                     pgd_random_start=attack.pgd_random_start)
    budgets = tuple(np.float32(x) for x in (attack.fgsm_eps, attack.pgd_eps, attack.pgd_step_size))
  timings['setup_s'] = time.perf_counter() - started

  started = time.perf_counter()
  totals, outputs, attacked = None, [], []
  for i, batch in enumerate(data.eval_batches(config, local_batch_size=config.eval_batch_size // jax.process_count())):
    # uint8 pixels, normalised here as the trainer's step does on the device.
    global_batch = dp.put_batch({**batch, 'image': np.asarray(device_augment.normalise(batch['image'], mean, std))})
    pooled, logits, labels, mask, sums = evaluate(state, global_batch)
    sums = dp.metrics(sums)  # the trainer's arithmetic: float32 sums per batch, added as Python floats
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
    outputs.append((pooled, logits, labels, mask))
    seen = sum(int(o[3].sum()) for o in outputs[:-1])
    if attacking and (not options.attack_examples or seen < options.attack_examples):
      batch_key = dp.put_state(np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(options.seed), i))))
      fgsm, pgd = attack_fn(state, global_batch, batch_key, *budgets)
      attacked.append((fgsm, pgd, labels, mask))
  timings['evaluation_and_attacks_s'] = time.perf_counter() - started
  count = int(totals['count'])
  if count != info.num_eval:
    raise RuntimeError(f'evaluation saw {count} examples, the split has {info.num_eval}')
  keep = np.concatenate([o[3] for o in outputs]).astype(bool)
  pooled, logits, labels = (np.concatenate([o[k] for o in outputs])[keep] for k in range(3))

  figures = {'workdir': os.path.abspath(run.workdir), 'label': run.label, 'checkpoint_step': run.step,
             'method': config.get('method'), 'dataset': config.dataset, 'model': config.model,
             'seed': config.get('seed'), 'examples': count, 'devices': jax.device_count(),
             'parallelism': dp.parallelism}
  arrays = {'num_classes': config.num_classes}
  figures['top1'] = 100 * totals['top1'] / count
  figures['top5'] = 100 * totals['top5'] / count
  figures['nll'] = totals['loss'] / count
  started = time.perf_counter()
  if 'calibration' in options.metrics:
    cal = metrics_lib.calibration(metrics_lib.softmax(logits), labels)
    figures['ece'] = 100 * cal['ece']
    figures['calibration_bins'] = cal['bins']
    arrays['calibration'] = cal
  if 'embedding' in options.metrics:
    figures['alignment'] = metrics_lib.alignment(pooled, labels, alpha=2.0)
    pairwise = metrics_lib.pairwise_figures(pooled, labels, t=2.0, seed=options.seed)
    figures['uniformity'] = pairwise['uniformity']
    figures['intra_class_distance'] = pairwise['intra_class_distance']
    figures['inter_class_distance'] = pairwise['inter_class_distance']
    figures['intra_inter_ratio'] = pairwise['intra_inter_ratio']
    figures['pairwise_points'] = pairwise['points']
  timings['figures_s'] = time.perf_counter() - started
  if attacking:
    a_keep = np.concatenate([a[3] for a in attacked]).astype(bool)
    fgsm, pgd, a_labels = (np.concatenate([a[k] for a in attacked])[a_keep] for k in range(3))
    figures.update({
        'attack': {**dataclasses.asdict(attack), 'source': run.attack_source}, 'attack_examples': int(a_keep.sum()),
        'clean_error': 100 * float(np.mean(logits.argmax(-1)[:len(a_labels)] != a_labels)),
        'fgsm_error': 100 * float(np.mean(fgsm != a_labels)), 'pgd_error': 100 * float(np.mean(pgd != a_labels))})
  if 'projection' in options.metrics:
    started = time.perf_counter()
    arrays['projection'] = projection(pooled, labels, config, options)
    figures['projection'] = {k: v for k, v in arrays['projection'].items() if not isinstance(v, np.ndarray)}
    timings['tsne_s'] = time.perf_counter() - started
  if 'curves' in options.metrics:
    arrays['curves'] = runs_lib.curves(run.workdir)
    figures['curves'] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in arrays['curves'].items()}
  figures['timings_s'] = timings
  return figures, arrays


def projection(pooled, labels, config, options: Options) -> dict:
  """t-SNE (scikit-learn) of the pooled test embeddings and a MultiMix sample of them, fitted on their union."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top  # a dependency of scikit-learn
  from sklearn import manifold  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(options.seed)
  shown = np.sort(rng.choice(len(pooled), min(options.tsne_points, len(pooled)), replace=False))
  b = min(config.batch_size, len(pooled))
  batch = rng.choice(len(pooled), b, replace=False)
  m = min(config.multimix.m or b, b)
  alpha = config.multimix.alpha
  n = options.interpolations
  if n:
    mixed, mixed_targets = mixing.sample_interpolation(
        jax.random.key(options.seed), pooled[batch], jax.nn.one_hot(labels[batch], config.num_classes), m, alpha,
        n=n)
    mixed, mixed_labels = np.asarray(mixed), np.asarray(mixed_targets).argmax(-1)
  else:
    mixed, mixed_labels = np.zeros((0, pooled.shape[1]), np.float32), np.zeros((0,), int)
  points = np.concatenate([pooled[shown], mixed]).astype(np.float64)
  tsne = manifold.TSNE(n_components=2, perplexity=min(30.0, (len(points) - 1) / 3), init='pca',
                       max_iter=options.tsne_iterations, random_state=options.seed)
  # One OpenMP thread: beside JAX's threads, more oversubscribe a small host (2 cores: 9 s against 70 s).
  with threadpoolctl.threadpool_limits(1):
    xy = tsne.fit_transform(points)
  return {'test_xy': xy[:len(shown)], 'test_labels': labels[shown], 'mixed_xy': xy[len(shown):],
          'mixed_labels': mixed_labels, 'test_points': int(len(shown)), 'interpolations': int(n),
          'interpolation_batch': int(b), 'm': int(m), 'alpha': float(alpha), 'space': 'pooled embedding',
          'tsne': {'perplexity': float(tsne.perplexity), 'init': 'pca', 'iterations': options.tsne_iterations,
                   'random_state': options.seed}}
