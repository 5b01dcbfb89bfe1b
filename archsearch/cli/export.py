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
        from archsearch.results.export import load_stored_study
        from archsearch.results.relocate import reroot_command
        from archsearch.results.restore import export_project
        from archsearch.results.terminal import print_commands
        from archsearch.search.settings import TrackingSettings

        tracking = TrackingSettings.from_mapping(plain(cfg.tracking))
        study = load_stored_study(str(cfg.study.name), cfg.study.storage, tracking.dir)
        done = export_project(
            study,
            str(cfg.export.dir),
            tracking_uri=tracking.resolved_uri,
            tracking_dir=tracking.dir,
            plots=bool(cfg.export.plots),
        )
        result, weights, artifacts = done.export, done.weights, done.artifacts
        console = Console(soft_wrap=True)
        front = len(result.front)
        console.print(
            f"study {study.study_name!r}: {front} trials on the front, written to {result.directory}"
        )
        for key, path in sorted(result.files.items()):
            console.print(f"  {key:<16} {path}")
        if weights.restored:
            where = result.directory / "weights"
            console.print(f"  {'weights':<16} {len(weights.restored)} restored from MLflow into {where}")
        for number, reason in sorted(weights.missing.items()):
            console.print(f"  weights of trial {number} not restored: {reason}")
        if artifacts is not None and artifacts.moved:
            console.print(
                f"the MLflow store still names the artifacts' old place {artifacts.old}; for `mlflow ui` "
                f"to show them here, run: {reroot_command(tracking.dir)}",
                highlight=False,
            )
        print_commands(console, result)

    run_cli(go)


def main() -> None:
    use_user_config_dirs()
    run_hydra(_entry)
