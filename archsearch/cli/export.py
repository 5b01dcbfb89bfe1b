"""``python -m archsearch.export``: rebuild a stored study's exports (tables, nets, plots)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from archsearch.cli.errors import run_cli, run_hydra
from archsearch.cli.searchpath import use_user_config_dirs
from archsearch.resources import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def _entry(cfg: DictConfig) -> None:
    def go() -> None:
        from rich.console import Console

        from archsearch.results.export import export_study, load_stored_study

        study = load_stored_study(str(cfg.study.name), cfg.study.storage, cfg.tracking.dir)
        result = export_study(study, str(cfg.export.dir), plots=bool(cfg.export.plots))
        console = Console()
        front = len(result.front)
        console.print(
            f"study {study.study_name!r}: {front} trials on the front, written to {result.directory}"
        )
        for key, path in sorted(result.files.items()):
            console.print(f"  {key:<16} {path}")

    run_cli(go)


def main() -> None:
    use_user_config_dirs()
    run_hydra(_entry)
