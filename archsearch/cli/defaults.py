"""The settings classes' defaults, registered with Hydra: the config tree reads them, not copies.

The typed settings (``TrainerSettings``, ``TrackingSettings``, ``SearchSettings``' blocks,
``FinalizeSettings``) are the one source of defaults. Their values are stored in Hydra's
ConfigStore under names the YAML files pull in through their defaults lists
(``trainer/base``, ``tracking/base``, ``finalize/base``, ``sampler/tpe_base``, ``archsearch_base`` and
``archsearch_sweep_base``), so ``--cfg job`` shows every key and ``key=value`` overrides work
without a ``+``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from archsearch.search.fidelity import FidelitySettings
from archsearch.search.finalize import FinalizeSettings
from archsearch.search.settings import (
    CostSettings,
    ExportSettings,
    LatencySettings,
    StudySettings,
    TrackingSettings,
)
from archsearch.search.sweep import DEFAULT_TPE
from archsearch.train.settings import TrainerSettings

__all__ = ["register_defaults"]


def _plain(settings: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(settings):
        if f.name in drop:
            continue
        value = getattr(settings, f.name)
        out[f.name] = (
            str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        )
    return out


def register_defaults() -> None:
    """Store the defaults nodes (idempotent: storing again replaces them)."""
    store = ConfigStore.instance()
    store.store(group="trainer", name="base", node=TrainerSettings().to_mapping())
    store.store(group="tracking", name="base", node=_plain(TrackingSettings()))
    store.store(group="finalize", name="base", node=_plain(FinalizeSettings()))
    store.store(
        group="sampler",
        name="tpe_base",
        node={"_target_": "optuna.samplers.TPESampler", "seed": None, **DEFAULT_TPE},
    )
    store.store(name="archsearch_base", node={"seed": 0, "cost": _plain(CostSettings())})
    store.store(
        name="archsearch_sweep_base",
        node={
            # A sweep names its own study; the rest of the study block is the settings' defaults.
            "study": _plain(StudySettings(), drop=("name",)),
            "sweep": {"fidelity": _plain(FidelitySettings()), "finalize": False},
            "latency": _plain(LatencySettings()),
            "export": _plain(ExportSettings()),
        },
    )
