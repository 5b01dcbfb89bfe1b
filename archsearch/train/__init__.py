"""Training one network: typed trainer settings, the fit loop, Dense-Sparse-Dense."""
