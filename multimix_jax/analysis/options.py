"""What an analysis computes: the figures asked for, the options of the command line, and each run's attacks.

The attacks' settings are part of a run's config (`config.attack`, per dataset in `multimix_jax/configs/`); an
option given here overrides them for every run analysed.
"""

import dataclasses
import importlib

import ml_collections

METRICS = ('accuracy', 'calibration', 'embedding', 'projection', 'robustness', 'curves')

# The config whose `attack` keys a run gets when its config.json was written before those keys existed.
_DATASET_CONFIGS = {'digits': 'default', 'cifar10': 'cifar10_r18', 'cifar100': 'cifar100_r18',
                    'tiny_imagenet': 'tinyimagenet_r18', 'imagenet2012': 'imagenet_r50'}


class AnalysisError(ValueError):
  """A workdir, checkpoint or option the analysis cannot use; raised before any work, printed as one line."""


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """FGSM and PGD under L∞ budgets in pixel units [0, 1]: a run's `config.attack`, after the options' overrides."""
  fgsm_eps: float
  pgd_eps: float
  pgd_steps: int
  pgd_step_size: float
  pgd_random_start: bool = True

  @classmethod
  def from_config(cls, attack: ml_collections.ConfigDict) -> 'AttackSettings':
    return cls(**{f.name: attack[f.name] for f in dataclasses.fields(cls)})

  def problems(self) -> list[str]:
    """One sentence per value that cannot work, naming the config key and the option that overrides it."""
    problems = []
    for name in ('fgsm_eps', 'pgd_eps'):
      if not 0 < getattr(self, name) <= 1:
        problems.append(f'attack.{name}={getattr(self, name)} must be in (0, 1] (pixel units; --{name}).')
    if not isinstance(self.pgd_steps, int) or self.pgd_steps < 1:
      problems.append(f'attack.pgd_steps={self.pgd_steps!r} must be an int >= 1 (--pgd_steps).')
    if not self.pgd_step_size > 0:
      problems.append(f'attack.pgd_step_size={self.pgd_step_size} must be > 0 (pixel units; --pgd_step_size).')
    return problems


@dataclasses.dataclass(frozen=True)
class Options:
  """The command line's values besides --workdir and --out (multimix_jax.analysis.cli); every field is a flag of
  the same name."""
  metrics: tuple[str, ...] = METRICS
  # None: the run's config.attack.
  fgsm_eps: float | None = None
  pgd_eps: float | None = None
  pgd_steps: int | None = None
  pgd_step_size: float | None = None
  pgd_random_start: bool | None = None
  attack_examples: int = 0  # 0: the whole split
  tsne_points: int = 2000
  tsne_iterations: int = 1000
  interpolations: int = 200
  data_dir: str | None = None
  eval_batch_size: int = 0  # 0: the run's
  seed: int = 0


def check_metrics(names) -> tuple[str, ...]:
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise AnalysisError(f'unknown metric {", ".join(map(repr, unknown))}; choose from {", ".join(METRICS)}.')
  if not names:
    raise AnalysisError(f'no metric asked for; choose from {", ".join(METRICS)}.')
  return tuple(n for n in METRICS if n in names)


def check_options(options: Options, workdirs, out) -> Options:
  """The options with their metrics in canonical order; raises AnalysisError on a value that cannot work."""
  options = dataclasses.replace(options, metrics=check_metrics(options.metrics))
  if not workdirs:
    raise AnalysisError('give at least one --workdir.')
  if len(workdirs) > 1 and not out:
    raise AnalysisError('several workdirs are compared into --out: give --out=DIR.')
  if options.tsne_iterations < 250:
    raise AnalysisError(f'--tsne_iterations={options.tsne_iterations} must be >= 250 (scikit-learn).')
  for name in ('attack_examples', 'tsne_points', 'interpolations', 'eval_batch_size'):
    if getattr(options, name) < 0:
      raise AnalysisError(f'--{name}={getattr(options, name)} must be >= 0.')
  return options


def default_attack(dataset: str) -> ml_collections.ConfigDict:
  """`config.attack` of the shipped config of `dataset`, for runs whose config.json predates the attack keys."""
  if dataset not in _DATASET_CONFIGS:
    raise AnalysisError(f'no attack settings for dataset {dataset!r}; the run\'s config has no `attack` keys.')
  return importlib.import_module(f'multimix_jax.configs.{_DATASET_CONFIGS[dataset]}').get_config().attack


def attack_settings(config: ml_collections.ConfigDict, options: Options) -> AttackSettings:
  """The run's `config.attack` with the options' overrides; raises AnalysisError listing every bad value."""
  saved = AttackSettings.from_config(config.attack)
  overrides = {f.name: getattr(options, f.name) for f in dataclasses.fields(AttackSettings)
               if getattr(options, f.name) is not None}
  settings = dataclasses.replace(saved, **overrides)
  problems = settings.problems()
  if problems:
    raise AnalysisError(' '.join(problems))
  return settings
