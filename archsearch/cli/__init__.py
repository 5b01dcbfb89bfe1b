"""The command line: the only package that imports hydra or omegaconf."""
