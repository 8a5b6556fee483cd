"""What mixing did to a trained model, behind `python -m multimix_jax.analyze`.

`metrics`: calibration and embedding-space figures on host arrays (numpy only). `attacks`: FGSM and PGD in pixel
space (jax only). `plots`: the figures (matplotlib, Agg). The command itself, which restores a run and evaluates
it through the trainer's data-parallel path, is `multimix_jax.analyze`.
"""
