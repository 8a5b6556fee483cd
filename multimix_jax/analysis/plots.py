"""The analysis's figures, drawn with matplotlib's Agg backend (no display needed) and saved as PNG."""

import matplotlib
import matplotlib.ticker

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

_DPI = 120


def _save(fig, path):
  fig.savefig(path, dpi=_DPI, bbox_inches='tight')
  plt.close(fig)


def reliability(bins: list[dict], ece: float, title: str, path) -> None:
  """Reliability diagram: accuracy against confidence in equal-width bins, with the share of examples per bin."""
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
  width = bins[0]['upper'] - bins[0]['lower']
  lefts = np.array([b['lower'] for b in bins])
  accuracy = np.array([b['accuracy'] if b['count'] else 0.0 for b in bins])
  confidence = np.array([b['confidence'] if b['count'] else 0.0 for b in bins])
  counts = np.array([b['count'] for b in bins])
  top.bar(lefts, accuracy, width, align='edge', color='tab:blue', edgecolor='black', label='accuracy')
  top.bar(lefts, confidence - accuracy, width, bottom=accuracy, align='edge', color='tab:red', alpha=0.35,
          edgecolor='tab:red', hatch='//', label='gap to mean confidence')
  top.plot([0, 1], [0, 1], 'k--', label='perfect calibration')
  top.set(ylabel='accuracy in bin', xlim=(0, 1), ylim=(0, 1), title=f'{title}\nECE ({len(bins)} bins) = {ece:.4f}')
  top.legend(loc='upper left')
  bottom.bar(lefts, counts / max(counts.sum(), 1), width, align='edge', color='gray', edgecolor='black',
             label='share of examples')
  bottom.set(xlabel='confidence (largest softmax probability)', ylabel='share', yscale='log')
  bottom.legend(loc='upper left')
  _save(fig, path)


def _projection_axes(ax, test_xy, test_labels, mixed_xy, mixed_labels, num_classes, title):
  cmap = plt.get_cmap('tab10' if num_classes <= 10 else 'tab20' if num_classes <= 20 else 'turbo')
  colours = lambda labels: cmap(np.asarray(labels) / max(num_classes - 1, 1)) if num_classes > 20 else cmap(
      np.asarray(labels) % cmap.N)
  ax.scatter(test_xy[:, 0], test_xy[:, 1], c=colours(test_labels), s=8, alpha=0.7, linewidths=0)
  if len(mixed_xy):
    ax.scatter(mixed_xy[:, 0], mixed_xy[:, 1], c=colours(mixed_labels), s=22, marker='X', edgecolors='black',
               linewidths=0.5)
  ax.set(xlabel='t-SNE 1', ylabel='t-SNE 2', title=title)
  ax.set_xticks([])
  ax.set_yticks([])
  handles = [plt.Line2D([], [], marker='o', ls='', color='gray', label='test embedding (colour: class)'),
             plt.Line2D([], [], marker='X', ls='', color='gray', markeredgecolor='black',
                        label='MultiMix interpolation (colour: largest weight)')]
  if num_classes <= 10:
    handles += [plt.Line2D([], [], marker='o', ls='', color=colours([k])[0], label=f'class {k}')
                for k in range(num_classes)]
  return handles


def projection(test_xy, test_labels, mixed_xy, mixed_labels, num_classes: int, title: str, path) -> None:
  """t-SNE of the test embeddings coloured by class, the MultiMix-interpolated sample drawn over them."""
  fig, ax = plt.subplots(figsize=(7, 6))
  handles = _projection_axes(ax, test_xy, test_labels, mixed_xy, mixed_labels, num_classes, title)
  ax.legend(handles=handles, loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8)
  _save(fig, path)


def projection_grid(panels: list[dict], num_classes: int, title: str, path) -> None:
  """One projection per panel ({'test_xy', 'test_labels', 'mixed_xy', 'mixed_labels', 'title'}), one legend."""
  cols = min(4, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
  handles = []
  for ax, panel in zip(axes.flat, panels):
    handles = _projection_axes(ax, panel['test_xy'], panel['test_labels'], panel['mixed_xy'],
                               panel['mixed_labels'], num_classes, panel['title'])
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  fig.suptitle(title)
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # the title's line stays clear of the panels'
  fig.legend(handles=handles, loc='upper center', ncol=min(len(handles), 6), fontsize=8, bbox_to_anchor=(0.5, 0.0))
  _save(fig, path)


def curves(series: list[dict], title: str, path) -> None:
  """Top-1 and loss against step: one colour per series ({'label', 'eval_steps', 'top1', 'eval_loss',
  'train_steps', 'train_loss'}, each value a (runs, points) array: the mean is drawn, the band is ± sd)."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, s in enumerate(series):
    colour = f'C{i % 10}'
    _band(left, s['eval_steps'], s['top1'], colour, s['label'])
    _band(right, s['eval_steps'], s['eval_loss'], colour, f"{s['label']}: test NLL")
    if len(s.get('train_steps', [])):
      _band(right, s['train_steps'], s['train_loss'], colour, f"{s['label']}: train loss", ls=':')
  left.set(xlabel='training step', ylabel='test top-1 (%)', title='Test top-1 accuracy')
  right.set(xlabel='training step', ylabel='loss (nats)', yscale='log', title="Loss (train: on the method's targets)")
  right.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter('{x:g}'))
  right.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  left.legend(fontsize=8)
  right.legend(fontsize=8)
  lo = min(np.nanmin(np.mean(s['top1'], 0)) for s in series)
  left.set_ylim(max(0.0, min(lo, 100 - 1e-6) - 2), 100.5)
  fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def _band(ax, steps, values, colour, label, ls='-'):
  values = np.atleast_2d(np.asarray(values, np.float64))
  mean = values.mean(0)
  ax.plot(steps, mean, ls, color=colour, label=label + (f' (mean of {len(values)})' if len(values) > 1 else ''))
  if len(values) > 1:
    sd = values.std(0, ddof=1)
    ax.fill_between(steps, mean - sd, mean + sd, color=colour, alpha=0.2, linewidth=0)
