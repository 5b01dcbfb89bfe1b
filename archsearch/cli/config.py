"""The edge: a composed Hydra config becomes typed, frozen settings and real objects, once.

Everything below the CLI takes these objects; nothing below it imports hydra or omegaconf.
Every key is checked here, before anything is written (storage, MLflow, export directory).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from archsearch.checks import check_flag
from archsearch.data.settings import DataSettings
from archsearch.errors import ConfigError
from archsearch.hardware.auto import is_auto, resolve_profile
from archsearch.search.settings import SearchSettings
from archsearch.search.space import load_space
from archsearch.storage.database import mask_passwords
from archsearch.targets import check_target
from archsearch.train.settings import TrainerSettings

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.search.samplers import SamplerFactory
    from archsearch.search.space import SearchSpace

__all__ = ["SWEEP_KEYS", "SweepPlan", "check_top_keys", "plain", "sampler_factory", "sweep_plan"]


def plain(node: Any) -> dict[str, Any]:
    """A config node as a plain, resolved dict ({} for None)."""
    if node is None:
        return {}
    value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items()}


@dataclass(frozen=True)
class SweepPlan:
    """A validated ``+sweep=`` run: the arguments of :func:`archsearch.search.sweep.run_search`."""

    settings: SearchSettings
    space: SearchSpace
    data: DataSettings
    hardware: HardwareProfile | None  # None: hardware=auto, resolved by run_search
    sampler: SamplerFactory
    fit_fn: Callable[..., Any] | None
    config_yaml: str
    finalize: bool  # sweep.finalize: retrain the front at full fidelity after the search

    def search(
        self,
        data: DatasetLike,
        *,
        console: Any = None,
        fit_fn: Callable[..., Any] | None = None,
        callbacks: Sequence[Callable[..., None]] = (),
    ) -> Any:
        """:func:`archsearch.search.sweep.run_search` on ``data`` (loaded from :attr:`data`) as planned.

        ``fit_fn`` replaces the planned trainer (``sweep.fit``, else the real one); ``callbacks``
        are Optuna-style trial callbacks.
        """
        from archsearch.search.sweep import run_search

        return run_search(
            self.space,
            data,
            self.settings,
            sampler=self.sampler,
            hardware=self.hardware,
            fit_fn=fit_fn or self.fit_fn,
            console=console,
            config_yaml=self.config_yaml,
            data_settings=self.data,
            callbacks=callbacks,
        )


def sweep_plan(cfg: DictConfig) -> SweepPlan:
    """Check every key of a sweep config and build what the search takes; write nothing.

    Raises:
        ConfigError / SpecError: one sentence naming the key (or file and node) that is wrong.
    """
    raw = plain(cfg)
    check_top_keys(raw)
    settings = SearchSettings.from_mapping(raw)
    sweep = raw.get("sweep") or {}
    space = load_space(str(sweep.get("space", "fire")))
    hw_raw = raw.get("hardware") or {}
    # hardware=auto (None here) is calibrated by run_search once the data and backends are known
    # good, so a bad key or path is reported at once, not after a calibration.
    hardware = None if is_auto(hw_raw) else resolve_profile(hw_raw)
    sampler = sampler_factory(cfg.get("sampler"), space)
    sampler(settings.seed)  # a bad sampler config is refused before any write
    finalize = sweep.get("finalize", False)
    check_flag("sweep.finalize", finalize)
    if finalize:
        finalize_plan(raw)  # checked now, before any write; the finalize command reads it again
    return SweepPlan(
        settings=settings,
        space=space,
        data=DataSettings.from_mapping(raw.get("data")),
        hardware=hardware,
        sampler=sampler,
        fit_fn=_configured_fit(sweep.get("fit")),
        config_yaml=mask_passwords(OmegaConf.to_yaml(cfg, resolve=True)),
        finalize=finalize,
    )


#: The top-level keys a composed sweep config may have (tests/test_cli_keys.py composes every shipped sweep).
SWEEP_KEYS = (
    "constraints",
    "cost",
    "data",
    "export",
    "finalize",
    "hardware",
    "latency",
    "model",
    "model_file",
    "objectives",
    "sampler",
    "seed",
    "study",
    "sweep",
    "tracking",
    "trainer",
    "warm_start",
    "workers",
)


def check_top_keys(raw: Mapping[str, Any]) -> None:
    """Refuse a top-level key no setting reads (``+studdy.n_trials=3`` was silently ignored).

    Raises:
        ConfigError: naming the key, with the closest known key when one is close.
    """
    import difflib

    for key in raw:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(str(key), SWEEP_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"key {key!r} is not a setting of a sweep{hint}; allowed: {', '.join(SWEEP_KEYS)}."
            )


def finalize_plan(raw: Mapping[str, Any]) -> tuple[Any, TrainerSettings]:
    """The ``finalize`` block as FinalizeSettings, and the trainer members are retrained with.

    The trainer is ``trainer`` at ``finalize.epochs``, so DSD splits those epochs into its
    phases, not the search's.
    """
    from archsearch.search.settings import FinalizeSettings

    settings = FinalizeSettings.from_mapping(raw.get("finalize"))
    return settings, TrainerSettings.from_mapping({**(raw.get("trainer") or {}), "epochs": settings.epochs})


def sampler_factory(node: Any, space: SearchSpace) -> SamplerFactory:
    """The ``sampler`` group (a ``_target_``) as a function of the worker's seed.

    ``seed: null`` takes the worker's seed; a grid sampler gets the space's grid and the
    variant several workers can share.
    """
    cfg = plain(node)
    target = str(cfg.get("_target_", ""))
    if not target:
        raise ConfigError(
            "sampler must name an Optuna sampler with _target_, e.g. optuna.samplers.TPESampler."
        )
    check_target("sampler", target)
    grid = target.endswith("GridSampler")
    if grid:
        cfg["_target_"] = "archsearch.search.workers.WorkerGridSampler"

    def make(seed: int) -> optuna.samplers.BaseSampler:
        node = dict(cfg)
        if "seed" in node and node["seed"] is None:
            node["seed"] = seed
        kwargs: dict[str, Any] = {"search_space": space.grid()} if grid else {}
        try:
            with warnings.catch_warnings():
                # Our progress lines report what matters; TPE's `group` is flagged experimental.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = instantiate(node, **kwargs)
        except Exception as exc:
            # Hydra puts the cause on the lines after "Error in call to target ...:".
            why = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()).rstrip(".")
            raise ConfigError(f"sampler config could not be instantiated ({target}): {why}.") from None
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            raise ConfigError(f"sampler._target_ {target!r} is not an Optuna sampler.")
        return cast(optuna.samplers.BaseSampler, sampler)

    return make


def _configured_fit(node: Any) -> Callable[..., Any] | None:
    """``sweep.fit``: a ``_target_`` that replaces the trainer, e.g. ``archsearch.testing.FixedCostFit``.

    A hook for benchmarks and command-line tests, which cannot pass ``fit_fn``; absent normally.
    """
    if node is None:
        return None
    check_target("sweep.fit", plain(node).get("_target_"))
    try:
        fit = instantiate(node)
    except Exception as exc:
        raise ConfigError(f"sweep.fit could not be instantiated: {str(exc).splitlines()[0]}") from None
    if not callable(fit):
        raise ConfigError(f"sweep.fit must make a callable like archsearch.train.fit.fit, got {fit!r}.")
    return cast(Callable[..., Any], fit)


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    """``trainer`` as typed settings."""
    return TrainerSettings.from_mapping(plain(cfg.get("trainer")))
