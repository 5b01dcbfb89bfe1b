"""``python -m archsearch.report``: per-layer cost table of one net, or nets side by side."""

from __future__ import annotations

import sys
from typing import Any, cast

import hydra
from omegaconf import DictConfig, OmegaConf

from archsearch.cli.errors import run_cli, run_hydra
from archsearch.cli.searchpath import use_user_config_dirs
from archsearch.resources import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def _entry(cfg: DictConfig) -> None:
    from rich.console import Console

    from archsearch.results.report import ReportSettings, report

    plain = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    # A terminal sets its own width; a pipe or file gets one wide enough for every column.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    run_cli(lambda: report(ReportSettings.from_mapping(plain), console))


def main() -> None:
    use_user_config_dirs()
    run_hydra(_entry)
