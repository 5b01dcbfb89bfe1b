"""``python -m archsearch.finalize``: retrain a stored study's front at full fidelity and score test."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from archsearch.cli.errors import run_cli, run_hydra
from archsearch.cli.searchpath import use_user_config_dirs
from archsearch.resources import CONF_DIR
from archsearch.storage.database import mask_passwords


def finalize(
    cfg: DictConfig, *, study: Any = None, fit_fn: Callable[..., Any] | None = None, console: Any = None
) -> Any:
    """Check the config's keys, then :func:`archsearch.search.finalize.finalize_study`.

    Args:
        cfg: a composed config with ``finalize``, ``trainer``, ``data``, ``seed``, ``tracking``,
            ``export`` and ``study``.
        study: the study; loaded from ``study.name`` and ``study.storage`` when None.
        fit_fn: replaces the trainer (tests).
        console: where progress goes (a quiet one if None).
    """
    import dataclasses

    from archsearch.cli.config import finalize_plan, plain
    from archsearch.data.datasets import DataSettings, load_dataset
    from archsearch.results.export import load_stored_study
    from archsearch.search.finalize import finalize_study
    from archsearch.search.settings import ExportSettings, TrackingSettings

    raw = plain(cfg)
    settings, trainer = finalize_plan(raw)
    tracking = TrackingSettings.from_mapping(raw.get("tracking"))
    export = ExportSettings.from_mapping(raw.get("export"))
    # The full training split: a subset the search trained on is dropped.
    full_split = dataclasses.replace(DataSettings.from_mapping(raw.get("data")), subset=None)
    seed = raw.get("seed", 0)
    if study is None:
        study_cfg = raw.get("study") or {}
        study = load_stored_study(str(study_cfg.get("name")), study_cfg.get("storage"), str(tracking.dir))
    data = load_dataset(full_split, seed=seed)
    return finalize_study(
        study,
        data,
        settings=settings,
        trainer=trainer,
        tracking=tracking,
        export=export,
        seed=seed,
        fit_fn=fit_fn,
        console=console,
        config_yaml=mask_passwords(OmegaConf.to_yaml(cfg, resolve=True)),
    )


#: The top-level keys finalize reads: an override of any other (``model=``, ``hardware=``,
#: ``sampler=``) would be composed and silently ignored.
FINALIZE_KEYS = ("study", "data", "trainer", "finalize", "tracking", "export", "seed")


def check_overrides(overrides: list[str]) -> None:
    """Refuse a command-line override of a key finalize does not read.

    Raises:
        ConfigError: naming the key, what finalize takes instead, and the keys it reads.
    """
    from archsearch.errors import ConfigError

    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~").split(".", 1)[0].split("@", 1)[0]
        if key and key != "hydra" and key not in FINALIZE_KEYS:
            raise ConfigError(
                f"finalize does not read {key!r} (a member's network is its stored spec, and nothing "
                f"is searched or priced); it reads: {', '.join(FINALIZE_KEYS)}."
            )


#: The config groups among FINALIZE_KEYS (``data=fashion_mnist``, ``trainer=long``, ...).
FINALIZE_GROUPS = ("data", "trainer", "finalize", "tracking")


def help_text(overrides: list[str]) -> str:
    """finalize's ``--help``: conf/finalize.yaml's header and footer around the keys and config
    groups finalize reads. Hydra's own help would list the whole composed config, ``model``,
    ``hardware`` and ``sampler`` included, which finalize refuses (:func:`check_overrides`).

    Raises:
        ConfigError: an override of a key finalize does not read.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="finalize"):
        cfg = compose("finalize", overrides=overrides, return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        groups = [f"{g}: {', '.join(loader.get_group_options(g))}" for g in FINALIZE_GROUPS]
    keys = OmegaConf.to_yaml(OmegaConf.create({k: cfg[k] for k in FINALIZE_KEYS if k in cfg}))
    return (
        f"{cfg.hydra.help.header}\n\n== Keys of this command, with their defaults ==\n{keys}\n"
        f"== Config groups (group=option) ==\n" + "\n".join(groups) + f"\n\n{cfg.hydra.help.footer}"
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="finalize")
def _entry(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console

    def go() -> Any:
        check_overrides(list(HydraConfig.get().overrides.task))
        return finalize(cfg, console=Console())

    run_cli(go)


def main() -> None:
    use_user_config_dirs()
    args = sys.argv[1:]
    if "--help" in args or "-h" in args:
        overrides = [a for a in args if not a.startswith("-")]
        run_hydra(lambda: print(run_cli(lambda: help_text(overrides))))  # errors: one sentence, exit 2
        return
    _entry()
