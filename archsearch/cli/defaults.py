"""The settings classes' defaults, registered with Hydra: the config tree reads them, not copies.

The typed settings (``TrainerSettings``, ``TrackingSettings``, ``SearchSettings``' blocks,
``FinalizeSettings``, ``DataSettings``) are the one source of defaults. Their values are stored
in Hydra's ConfigStore under names the YAML files pull in through their defaults lists
(``trainer/base``, ``trainer/base_without_optimizer``, ``data/base``, ``tracking/base``,
``finalize/base``, ``sampler/tpe_base``, ``archsearch_base`` and ``archsearch_sweep_base``), so
``--cfg job`` shows every key and ``key=value`` overrides work without a ``+``.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from archsearch.checks import plain_fields
from archsearch.data.settings import base_mapping
from archsearch.search.fidelity import FidelitySettings
from archsearch.search.settings import (
    DEFAULT_TPE,
    CostSettings,
    ExportSettings,
    FinalizeSettings,
    LatencySettings,
    StudySettings,
    TrackingSettings,
)
from archsearch.search.warm_start import WarmStartSettings
from archsearch.train.settings import TrainerSettings

__all__ = ["register_defaults"]


def register_defaults() -> None:
    """Store the defaults nodes (idempotent: storing again replaces them)."""
    store = ConfigStore.instance()
    trainer = TrainerSettings().to_mapping()
    store.store(group="trainer", name="base", node=trainer)
    # For a trainer config with another optimizer: Hydra merges blocks key by key, so SGD's
    # momentum would stay under, say, AdamW, which takes none.
    without = {key: value for key, value in trainer.items() if key != "optimizer"}
    store.store(group="trainer", name="base_without_optimizer", node=without)
    # val_fraction, subset and augment, which every data config has (the others state their own).
    store.store(group="data", name="base", node=base_mapping())
    store.store(group="tracking", name="base", node=plain_fields(TrackingSettings()))
    store.store(group="finalize", name="base", node=plain_fields(FinalizeSettings()))
    store.store(
        group="sampler",
        name="tpe_base",
        node={"_target_": "optuna.samplers.TPESampler", "seed": None, **DEFAULT_TPE},
    )
    store.store(name="archsearch_base", node={"seed": 0, "cost": plain_fields(CostSettings())})
    store.store(
        name="archsearch_sweep_base",
        node={
            # A sweep names its own study; the rest of the study block is the settings' defaults.
            "study": plain_fields(StudySettings(), drop=("name",)),
            "sweep": {"fidelity": FidelitySettings().to_mapping(), "finalize": False},
            "latency": plain_fields(LatencySettings()),
            "export": plain_fields(ExportSettings()),
            "warm_start": {**plain_fields(WarmStartSettings()), "points": []},
        },
    )
