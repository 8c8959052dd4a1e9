"""The local side of the kit: the notebook runner and launcher, the demo data, sweeps, Kaggle
kernels, the Kaggle cycle and the results table.

Nothing here travels to Kaggle; `petals/` is the package the notebooks carry.
"""
