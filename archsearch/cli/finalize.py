"""``python -m archsearch.finalize``: retrain a stored study's front at full fidelity and score test."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from archsearch.cli.errors import run_cli
from archsearch.cli.searchpath import use_user_config_dirs
from archsearch.resources import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="finalize")
def _entry(cfg: DictConfig) -> None:
    def go() -> object:
        from rich.console import Console

        from archsearch.results.export import load_stored_study
        from archsearch.search.finalize import finalize_study

        study = load_stored_study(str(cfg.study.name), cfg.study.storage, cfg.tracking.dir)
        return finalize_study(study, cfg, console=Console())

    run_cli(go)


def main() -> None:
    use_user_config_dirs()
    _entry()
