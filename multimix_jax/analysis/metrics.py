"""Calibration and embedding-space figures of a classifier, on host (numpy) arrays.

Shapes: logits (N, c) float, labels (N,) int in [0, c), embeddings (N, d) float. Every function is exact on its
inputs except where `max_points` subsamples the pairwise figures (stated in what it returns).
"""

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
  """(N, c) logits -> (N, c) float64 probabilities."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def calibration(probs: np.ndarray, labels: np.ndarray, num_bins: int = ECE_BINS) -> dict:
  """Expected calibration error over `num_bins` equal-width bins of confidence (Guo et al., ICML 2017).

  The confidence of an example is its largest probability; bin k holds confidences in (k/B, (k+1)/B] (the first
  also holds 0). ECE = Σ_k (n_k / N) |accuracy_k − mean confidence_k|.

  Args:
    probs: (N, c) probabilities.
    labels: (N,) true classes.
    num_bins: B.

  Returns:
    {'ece': float in [0, 1], 'bins': [{'lower', 'upper', 'count', 'accuracy', 'confidence'}] (accuracy and
    confidence None for empty bins)}.

  >>> calibration(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]), num_bins=10)['ece']  # conf .9, acc .5
  0.4
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  confidence = probs.max(-1)
  correct = probs.argmax(-1) == labels
  index = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
  ece, bins = 0.0, []
  for k in range(num_bins):
    members = index == k
    count = int(members.sum())
    acc = float(correct[members].mean()) if count else None
    conf = float(confidence[members].mean()) if count else None
    if count:
      ece += count / len(labels) * abs(acc - conf)
    bins.append({'lower': k / num_bins, 'upper': (k + 1) / num_bins, 'count': count, 'accuracy': acc,
                 'confidence': conf})
  return {'ece': round(ece, 12), 'bins': bins}


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
  x = np.asarray(embeddings, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def alignment(embeddings: np.ndarray, labels: np.ndarray, alpha: float = 2.0) -> float:
  """Alignment (Wang & Isola, ICML 2020): E ||f(x) − f(y)||^α over positive pairs of L2-normalised embeddings.

  Positives are the ordered pairs (i, j), i ≠ j, of the same class (there are no augmented views at evaluation).
  Lower is better. For α = 2 it is computed in O(N d) from the class sums.

  >>> float(alignment(np.array([[1.0, 0], [0, 1.0], [1.0, 0]]), np.array([0, 0, 1])))  # one pair, at distance √2
  2.0
  """
  z, labels = l2_normalise(embeddings), np.asarray(labels)
  total, pairs = 0.0, 0
  for c in np.unique(labels):
    zc = z[labels == c]
    n = len(zc)
    if n < 2:
      continue
    if alpha == 2.0:  # Σ_{i≠j} ||z_i − z_j||² = 2n Σ||z_i||² − 2||Σ z_i||²
      total += 2 * n * float((zc**2).sum()) - 2 * float((zc.sum(0)**2).sum())
    else:
      d = np.sqrt(np.maximum(_sq_distances(zc, zc), 0.0))
      total += float((d**alpha).sum())  # the diagonal is 0
    pairs += n * (n - 1)
  if not pairs:
    raise ValueError('alignment needs a class with at least two examples.')
  return max(total, 0.0) / pairs


def pairwise_figures(embeddings: np.ndarray, labels: np.ndarray, *, t: float = 2.0, max_points: int = 20000,
                     seed: int = 0, block: int = 2048) -> dict:
  """Uniformity and the intra/inter-class distance ratio of L2-normalised embeddings, in one blocked pass.

  uniformity = log E exp(−t ||f(x) − f(y)||²) over distinct pairs (Wang & Isola 2020; lower is more uniform).
  intra_inter_ratio = mean Euclidean distance of same-class pairs / mean distance of different-class pairs
  (lower: classes tighter relative to their separation). Beyond `max_points` examples both are computed on a
  uniform random subset of that size (seeded), reported as 'points'.

  >>> figures = pairwise_figures(np.array([[1.0, 0], [0, 1.0], [-1.0, 0]]), np.array([0, 0, 1]))
  >>> round(figures['intra_inter_ratio'], 4)  # √2 / mean(2, √2)
  0.8284
  """
  z, labels = l2_normalise(embeddings), np.asarray(labels)
  if len(z) > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(len(z), max_points, replace=False))
    z, labels = z[keep], labels[keep]
  n = len(z)
  log_terms, intra, intra_n, inter, inter_n = [], 0.0, 0, 0.0, 0
  for start in range(0, n, block):
    rows = slice(start, min(start + block, n))
    sq = np.maximum(_sq_distances(z[rows], z), 0.0)
    index = np.arange(rows.start, rows.stop)[:, None]
    upper = np.arange(n)[None, :] > index  # each unordered pair once
    same = labels[rows][:, None] == labels[None, :]
    log_terms.append(_logsumexp(-t * sq[upper]))
    dist = np.sqrt(sq)
    intra += float(dist[upper & same].sum())
    intra_n += int((upper & same).sum())
    inter += float(dist[upper & ~same].sum())
    inter_n += int((upper & ~same).sum())
  pairs = n * (n - 1) // 2
  if not pairs or not intra_n or not inter_n:
    raise ValueError('pairwise figures need two classes and a class with two examples.')
  return {'uniformity': _logsumexp(np.array(log_terms)) - np.log(pairs),
          'intra_class_distance': intra / intra_n, 'inter_class_distance': inter / inter_n,
          'intra_inter_ratio': (intra / intra_n) / (inter / inter_n), 'points': n}


def _sq_distances(a, b):
  return (a**2).sum(-1)[:, None] + (b**2).sum(-1)[None, :] - 2 * a @ b.T


def _logsumexp(x):
  x = np.asarray(x, np.float64)
  if x.size == 0:
    return -np.inf
  top = x.max()
  return float(top + np.log(np.exp(x - top).sum()))
