"""The options of a calibration and their defaults: one source for the command and the function.

:class:`CalibrateConfig`'s field defaults are the defaults of both ``python -m
archsearch.calibrate`` (whose Hydra node lists them, :mod:`archsearch.cli.calibrate`) and
:func:`archsearch.hardware.calibrate.calibrate` (whose keyword defaults read them), so the two
cannot drift apart. :func:`check_options` refuses bad ones before anything is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from archsearch.checks import check_choice, check_flag
from archsearch.errors import ConfigError
from archsearch.hardware.choices import CLOCKS, MEMORY_FORMATS, RUNTIMES
from archsearch.hardware.ort import import_deploy

__all__ = ["CalibrateConfig", "check_options"]


@dataclass(frozen=True)
class CalibrateConfig:
    """Options of ``python -m archsearch.calibrate`` (each one a ``key=value`` override) and the
    defaults of :func:`~archsearch.hardware.calibrate.calibrate`.

    Attributes:
        out: YAML file to write (``conf/hardware/NAME.yaml`` makes ``hardware=NAME``); None
            prints the profile and stores it as ``hardware=auto``'s cached profile for these
            threads, memory format, clock and device (:mod:`archsearch.hardware.auto`).
        name: profile name; None takes the stem of ``out`` (or ``auto``): see :attr:`profile_name`.
        threads: torch intra-op threads to measure with; None keeps torch's default.
        quick: a few-second run with smaller sizes and fewer shapes (for tests and smoke runs).
        seed: seeds the random Fire-module shapes.
        memory_format: tensor layout to measure in (``auto`` = channels-last, as the trainer
            and ``measure_latency`` use for conv nets; or ``contiguous``).
        clock: ``wall`` or ``cpu`` (thread CPU time; needs ``threads=1``).
        device: ``auto`` (the GPU when torch sees one, except with ``clock=cpu`` or
            ``runtime=onnxruntime``: the device ``latency_ms`` runs on), ``cpu``, ``cuda`` or
            ``cuda:N`` (:func:`archsearch.hardware.latency.profile_device`).
        runtime: what the probe networks run on: ``torch`` (eager) or ``onnxruntime`` (CPU),
            as ``latency.runtime`` measures.
    """

    out: str | None = None
    name: str | None = None
    threads: int | None = None
    quick: bool = False
    seed: int = 0
    memory_format: str = "auto"
    clock: str = "wall"
    device: str = "auto"
    runtime: str = "torch"

    @property
    def profile_name(self) -> str:
        """The profile's name: ``name``, else the stem of ``out``, else ``auto``."""
        return self.name or (Path(self.out).stem if self.out else "auto")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CalibrateConfig:
        """Check the types of parsed overrides (Hydra hands over strings it cannot type); a key
        left out takes its field's default.

        Raises:
            ConfigError: naming the key and what it accepts.
        """
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r}; allowed: {', '.join(f.name for f in fields(cls))}."
            )
        cfg = cls(**{f.name: raw.get(f.name, f.default) for f in fields(cls)})
        for key, value in (("out", cfg.out), ("name", cfg.name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{key} must be a non-empty string or null, got {value!r}.")
        threads = cfg.threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer or null, got {threads!r}.")
        check_flag("quick", cfg.quick)
        if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
            raise ConfigError(f"seed must be an integer, got {cfg.seed!r}.")
        if not isinstance(cfg.device, str):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}.")
        check_options(threads, cfg.memory_format, cfg.clock, cfg.runtime)
        return cfg


def check_options(threads: int | None, memory_format: str, clock: str, runtime: str) -> torch.memory_format:
    """The tensor layout to measure in, after checking a calibration's options.

    Raises:
        ConfigError: an unknown memory format, clock or runtime, a CPU clock with other than
            one thread, or ``onnxruntime`` without the deploy extra.
    """
    check_choice("runtime", runtime, RUNTIMES)
    if runtime == "onnxruntime":
        import_deploy()  # say which extra is missing before measuring anything
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    check_choice("clock", clock, CLOCKS)
    if clock == "cpu" and threads != 1:
        raise ConfigError(f"clock=cpu times only the calling thread, so it needs threads=1 (got {threads}).")
    return torch.contiguous_format if memory_format == "contiguous" else torch.channels_last
