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
from typing import TYPE_CHECKING, Any

from archsearch.errors import ArchsearchError, ConfigError, DataError, SpecError

if TYPE_CHECKING:  # the names' types for mypy and IDEs; at run time they load on first use
    from archsearch.data.arrays import dataset_from_arrays
    from archsearch.data.base import Dataset, DatasetLike
    from archsearch.data.datasets import load_dataset
    from archsearch.data.image_folder import dataset_from_folder
    from archsearch.data.settings import DataSettings
    from archsearch.hardware.calibrate import CalibrateConfig
    from archsearch.hardware.calibrate import run as calibrate_hardware
    from archsearch.hardware.profile import HardwareProfile, load_hardware
    from archsearch.net.cost import analyze
    from archsearch.net.model import build
    from archsearch.net.spec import NetSpec, load_spec
    from archsearch.results.export import export_study, load_stored_study
    from archsearch.results.members import load_member
    from archsearch.results.progress import ProgressBarReporter
    from archsearch.results.relocate import reroot_store
    from archsearch.results.report import ReportSettings
    from archsearch.results.report import report as cost_report
    from archsearch.results.restore import export_project
    from archsearch.results.terminal import SearchReporter
    from archsearch.results.tracking import NullTracker, TrialTracker
    from archsearch.search.cost_aware import CostAwareSampler
    from archsearch.search.fidelity import FidelitySettings
    from archsearch.search.finalize import finalize_study
    from archsearch.search.graph_space import GraphSpace
    from archsearch.search.samplers import default_sampler, grid_sampler
    from archsearch.search.session import SearchResult
    from archsearch.search.settings import (
        Constraint,
        CostSettings,
        ExportSettings,
        FinalizeSettings,
        LatencySettings,
        SearchSettings,
        StudySettings,
        TrackingSettings,
    )
    from archsearch.search.space import TemplateSpace, load_space
    from archsearch.search.space_core import InfeasibleArchitecture, SearchSpace
    from archsearch.search.supernet_space import corner_specs
    from archsearch.search.sweep import run_search
    from archsearch.search.warm_start import WarmStartSettings
    from archsearch.supernet.network import Supernet
    from archsearch.supernet.plan import plan_banks
    from archsearch.supernet.scoring import Scorer
    from archsearch.supernet.settings import SupernetSettings
    from archsearch.supernet.training import train_supernet
    from archsearch.train.fit import FitFn, fit
    from archsearch.train.settings import DsdSettings, OptimizerSettings, ScheduleSettings, TrainerSettings
    from archsearch.train.single import train_single

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
    "Dataset": "archsearch.data.base",
    "DatasetLike": "archsearch.data.base",
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
    "SearchResult": "archsearch.search.session",
    "SearchReporter": "archsearch.results.terminal",
    "ProgressBarReporter": "archsearch.results.progress",
    "default_sampler": "archsearch.search.samplers",
    "CostAwareSampler": "archsearch.search.cost_aware",
    "WarmStartSettings": "archsearch.search.warm_start",
    "grid_sampler": "archsearch.search.samplers",
    "FinalizeSettings": "archsearch.search.settings",
    "finalize_study": "archsearch.search.finalize",
    "export_study": "archsearch.results.export",
    "export_project": "archsearch.results.restore",
    "load_stored_study": "archsearch.results.export",
    "cost_report": "archsearch.results.report:report",
    "ReportSettings": "archsearch.results.report",
    "load_member": "archsearch.results.members",
    "TrialTracker": "archsearch.results.tracking",
    "NullTracker": "archsearch.results.tracking",
    "FitFn": "archsearch.train.fit",
    "reroot_store": "archsearch.results.relocate",
}

__all__ = ["ArchsearchError", "ConfigError", "DataError", "SpecError", *sorted(_HOMES)]


if not TYPE_CHECKING:  # hidden from mypy, so that `A.misspelt_name` is an error, not Any

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
