"""``python -m archsearch.export``: rebuild a stored study's exports (tables, nets, plots, weights)."""

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

        from archsearch.cli.config import plain
        from archsearch.results.export import export_study, load_stored_study
        from archsearch.results.restore import restore_weights
        from archsearch.search.settings import TrackingSettings

        tracking = TrackingSettings.from_mapping(plain(cfg.tracking))
        study = load_stored_study(str(cfg.study.name), cfg.study.storage, tracking.dir)
        result = export_study(study, str(cfg.export.dir), plots=bool(cfg.export.plots))
        console = Console(soft_wrap=True)
        front = len(result.front)
        console.print(
            f"study {study.study_name!r}: {front} trials on the front, written to {result.directory}"
        )
        for key, path in sorted(result.files.items()):
            console.print(f"  {key:<16} {path}")
        weights = restore_weights(result.front, result.directory, tracking.resolved_uri)
        if weights.restored:
            where = result.directory / "weights"
            console.print(f"  {'weights':<16} {len(weights.restored)} restored from MLflow into {where}")
        for number, reason in sorted(weights.missing.items()):
            console.print(f"  weights of trial {number} not restored: {reason}")

    run_cli(go)


def main() -> None:
    use_user_config_dirs()
    run_hydra(_entry)
