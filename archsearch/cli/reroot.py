"""``python -m archsearch.reroot``: point a moved or copied project's MLflow store at its own artifacts."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from archsearch.cli.errors import run_cli, run_hydra
from archsearch.cli.searchpath import use_user_config_dirs
from archsearch.resources import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="reroot")
def _entry(cfg: DictConfig) -> None:
    def go() -> None:
        from rich.console import Console

        from archsearch.results.relocate import reroot_store

        done = reroot_store(str(cfg.tracking.dir))
        console = Console(soft_wrap=True, highlight=False)
        if not done.old_roots:
            console.print(
                f"the MLflow store {done.store} keeps its artifacts in {done.root}: nothing to re-root"
            )
        else:
            console.print(
                f"re-rooted the MLflow store {done.store}: {done.experiments} experiment(s) and {done.runs} "
                f"run(s) now keep their artifacts in {done.root} (before: {', '.join(done.old_roots)})"
            )
            if done.missing:
                console.print(
                    f"  {done.missing} of these runs have no artifact folder there (a run that logged no "
                    "artifact has none)"
                )
        console.print(f"review the runs: mlflow ui --backend-store-uri sqlite:///{done.store}")

    run_cli(go)


def main() -> None:
    use_user_config_dirs()
    run_hydra(_entry)
