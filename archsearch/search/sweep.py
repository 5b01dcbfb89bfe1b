"""Run a search: a study whose trials sample, cost, bound, train and log networks, then the export.

:func:`run_search` is the one entry point, for the CLI and for notebooks alike: typed
settings and real objects in (a search space, a dataset, an Optuna sampler, a storage), a
:class:`SearchResult` out. Every setting has been checked before the storage or MLflow is
written to (constructing :class:`~archsearch.search.settings.SearchSettings` checks it; the
backends are checked here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from archsearch.errors import ConfigError
from archsearch.results.commands import Commands, finalize_command, retrain_command
from archsearch.results.progress import search_reporter
from archsearch.search.preflight import prepare
from archsearch.search.samplers import SamplerArg, SamplerFactory, default_sampler
from archsearch.search.session import SearchResult, SearchSession
from archsearch.search.settings import SearchSettings
from archsearch.search.study import quiet_libraries
from archsearch.storage.database import mask_passwords

if TYPE_CHECKING:
    from rich.console import Console

    from archsearch.data.base import DatasetLike
    from archsearch.data.settings import DataSettings
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.results.terminal import SearchReporter
    from archsearch.search.space import SearchSpace
    from archsearch.train.fit import FitFn

__all__ = ["SamplerArg", "SamplerFactory", "SearchResult", "default_sampler", "retrain_command", "run_search"]


def run_search(
    space: SearchSpace,
    data: DatasetLike,
    settings: SearchSettings | None = None,
    *,
    sampler: SamplerArg = None,
    storage: str | optuna.storages.RDBStorage | None = None,
    hardware: HardwareProfile | None = None,
    fit_fn: FitFn | None = None,
    console: Console | None = None,
    reporter: SearchReporter | None = None,
    progress_bar: bool = False,
    config_yaml: str | None = None,
    data_settings: DataSettings | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> SearchResult:
    """Run (or resume, or join) a search and export its front.

    Args:
        space: what to search (:func:`archsearch.search.space.load_space`, or a space object).
        data: the dataset (:func:`archsearch.data.datasets.load_dataset`): its ``shape`` and
            ``num_classes`` shape the sampled networks.
        settings: objectives, constraints, study, trainer, fidelity, tracking, export (or defaults).
        sampler: an Optuna sampler, or a function making one from this worker's seed; None is
            :func:`default_sampler` (cost-aware where the objectives allow, else TPE).
        storage: a storage URL or an ``optuna.storages.RDBStorage`` (overrides ``study.storage``).
        hardware: the profile ``latency_est_ms`` is estimated on (None: ``hardware=auto``, this
            host calibrated for ``settings.latency`` once and cached; see archsearch.hardware.auto).
        fit_fn: replaces :func:`archsearch.train.fit.fit` (same signature; tests pass a fake).
        console: a ``rich.console.Console`` for progress; a quiet one if None.
        reporter: told of the search's start, each finished trial and the published front
            (:class:`~archsearch.results.terminal.SearchReporter`); None prints to ``console``.
        progress_bar: with no ``reporter``, show a progress bar on stderr
            (:class:`~archsearch.results.progress.ProgressBarReporter`), as ``study.optimize``'s
            ``show_progress_bar`` does.
        config_yaml: the study's config as logged (the CLI's composed one; None: the settings).
        data_settings: the :class:`~archsearch.data.settings.DataSettings` ``data`` was loaded
            from with ``settings.seed``; the retrain commands start from their ``data=`` config.
            Without them (a dataset built from arrays, say) no retrain command is printed: none
            could work.
        callbacks: called with the study and each finished trial, as ``study.optimize`` calls
            them; ``study.stop()`` in one ends this process's search (the front is exported).

    Returns the study, its front and the exported files.

    Raises:
        ConfigError: a backend does not answer, or the study exists with other objectives.
        SearchFailed: every trial of the study failed (exported and logged first).
    """
    from rich.console import Console

    from archsearch.train.fit import fit

    settings = settings or SearchSettings()
    console = console or Console(quiet=True)
    if storage is not None:
        url = storage if isinstance(storage, str) else str(storage.url)
        settings = _with_storage(settings, url)
    # Every check before the first write; the supernet refuses a space it cannot share here.
    ready = prepare(settings, space, data, sampler, hardware, console.print)
    name = data_settings.name if data_settings is not None else str(getattr(data, "name", ""))
    session = SearchSession(
        settings=settings,
        space=space,
        data=data,
        hardware=ready.hardware,
        fit_fn=fit_fn or fit,
        reporter=reporter
        or search_reporter(
            console, settings.metric_names, settings.study.n_trials, ready.hardware, progress_bar
        ),
        log=console.print,
        config_yaml=_settings_yaml(settings) if config_yaml is None else config_yaml,
        fidelity=ready.fidelity,
        supernet=ready.supernet,
        storage=storage if isinstance(storage, optuna.storages.RDBStorage) else None,
        commands=Commands(
            retrain=retrain_command(settings, data_settings, "" if hardware is None else hardware.name),
            finalize=finalize_command(settings, data_settings),
        ),
        data_name=name,
        callbacks=tuple(callbacks),
        seeds=ready.seeds,
    )
    with quiet_libraries():
        return session.run(sampler)


def _settings_yaml(settings: SearchSettings) -> str:
    import yaml

    return mask_passwords(str(yaml.safe_dump(settings.to_mapping(), sort_keys=False)))


def _with_storage(settings: SearchSettings, url: str) -> SearchSettings:
    import dataclasses

    if not url:
        raise ConfigError("storage must be a database URL such as sqlite:///optuna.db or an RDBStorage.")
    return dataclasses.replace(settings, study=dataclasses.replace(settings.study, storage=url))
