"""Composing sweep configs the way the command line does, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

__all__ = ["compose_sweep"]


def compose_sweep(tmp: Path, *overrides: str, sweep: str = "fire") -> DictConfig:
    """A ``+sweep=NAME`` config on synthetic data whose storage, MLflow and export live in ``tmp``.

    Plots are off (they are tested separately); later ``overrides`` win over these defaults.
    """
    from hydra import compose, initialize_config_dir

    from archsearch.resources import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"+sweep={sweep}",
                "data=synthetic",
                f"tracking.dir={tmp / 'mlruns'}",
                f"export.dir={tmp / 'results'}",
                "export.plots=false",
                *overrides,
            ],
        )
