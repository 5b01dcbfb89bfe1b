"""archsearch: declarative architecture search for small, fast Fire-module networks.

The public Python API (the CLI calls exactly these functions)::

    import archsearch as A

    space = A.load_space("fire")                          # or a path to a space file
    data = A.load_dataset("digits")                       # a data config, a mapping, or A.DataSettings
    settings = A.SearchSettings(
        study=A.StudySettings(name="nb", n_trials=10),
        trainer=A.TrainerSettings(epochs=3, threads=1),
        tracking=A.TrackingSettings(enabled=False),
    )
    result = A.run_search(space, data, settings)          # -> SearchResult
    result.members                                        # spec, values, costs, weights, run

Names are imported on first use, so ``import archsearch`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from archsearch.errors import ArchsearchError, ConfigError, DataError, SpecError

__version__ = "0.1.0"

#: Public name -> the module that is its one home (``module:attr`` where the names differ).
_HOMES = {
    "NetSpec": "archsearch.net.spec",
    "load_spec": "archsearch.net.spec",
    "analyze": "archsearch.net.cost",
    "build": "archsearch.net.model",
    "HardwareProfile": "archsearch.hardware.profile",
    "load_hardware": "archsearch.hardware.profile",
    "CalibrateConfig": "archsearch.hardware.calibrate",
    # `archsearch.calibrate` and `archsearch.report` are the commands' modules, hence these names.
    "calibrate_hardware": "archsearch.hardware.calibrate:run",
    "Dataset": "archsearch.data.datasets",
    "DataSettings": "archsearch.data.settings",
    "load_dataset": "archsearch.data.datasets",
    "dataset_from_arrays": "archsearch.data.arrays",
    "dataset_from_folder": "archsearch.data.image_folder",
    "TrainerSettings": "archsearch.train.settings",
    "OptimizerSettings": "archsearch.train.settings",
    "ScheduleSettings": "archsearch.train.settings",
    "DsdSettings": "archsearch.train.settings",
    "fit": "archsearch.train.fit",
    "train_single": "archsearch.train.single",
    "SearchSpace": "archsearch.search.space_core",
    "GraphSpace": "archsearch.search.graph_space",
    "TemplateSpace": "archsearch.search.space",
    "InfeasibleArchitecture": "archsearch.search.space_core",
    "load_space": "archsearch.search.space",
    "SearchSettings": "archsearch.search.settings",
    "StudySettings": "archsearch.search.settings",
    "TrackingSettings": "archsearch.search.settings",
    "ExportSettings": "archsearch.search.settings",
    "CostSettings": "archsearch.search.settings",
    "LatencySettings": "archsearch.search.settings",
    "Constraint": "archsearch.search.settings",
    "FidelitySettings": "archsearch.search.fidelity",
    "SupernetSettings": "archsearch.supernet.settings",
    "Supernet": "archsearch.supernet.network",
    "plan_banks": "archsearch.supernet.plan",
    "corner_specs": "archsearch.search.supernet_space",
    "train_supernet": "archsearch.supernet.training",
    "Scorer": "archsearch.supernet.scoring",
    "run_search": "archsearch.search.sweep",
    "SearchResult": "archsearch.search.sweep",
    "default_sampler": "archsearch.search.samplers",
    "CostAwareSampler": "archsearch.search.cost_aware",
    "WarmStartSettings": "archsearch.search.warm_start",
    "grid_sampler": "archsearch.search.samplers",
    "FinalizeSettings": "archsearch.search.finalize",
    "finalize_study": "archsearch.search.finalize",
    "export_study": "archsearch.results.export",
    "load_stored_study": "archsearch.results.export",
    "cost_report": "archsearch.results.report:report",
}

__all__ = ["ArchsearchError", "ConfigError", "DataError", "SpecError", *sorted(_HOMES)]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'archsearch' has no attribute {name!r}")
    module, _, attr = home.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
