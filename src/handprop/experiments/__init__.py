"""Experiments: sweeps (grid, random, coarse-to-fine), multi-seed runs, executors, plots.

Kept import-light: executors pin worker threads before NumPy or Numba load,
so nothing here imports them at module level.
"""
