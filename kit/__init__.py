"""The build side of the kit: sweeps, Kaggle kernels, the Kaggle cycle and the results table.

Nothing here travels to Kaggle; `petals/` is the package the notebooks carry.
"""
