"""Datasets: built-in registry entries and user data, as tensors with shape and classes."""
