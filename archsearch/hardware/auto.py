"""``hardware=auto``: calibrate this host once per setting, cache the profile, reuse it.

The latency estimate is only as good as its profile, and a datasheet profile knows neither
this host's per-kernel overheads nor its small-GEMM efficiency (it predicts microseconds for
nets that take milliseconds). So the default profile is measured here: the first run with a
given setting calibrates (:func:`archsearch.hardware.calibrate.calibrate`, 20-30 s on a 2-core
machine, announced on stderr) and stores the profile as YAML under
``$ARCHSEARCH_HARDWARE_CACHE``, else ``$XDG_CACHE_HOME/archsearch/hardware/``, else
``~/.cache/archsearch/hardware/``. Later runs read it. The cache key is everything a profile
depends on: CPU model, logical core count, threads, memory format, clock, device and torch
version. ``python -m archsearch.calibrate`` without ``out=`` refreshes the entry for its settings.

``ARCHSEARCH_AUTO_CALIBRATION=quick`` makes a missing entry a ~2 s coarse calibration instead:
for test suites and smoke runs (with the cache pointed at a temporary folder).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from archsearch.errors import ConfigError
from archsearch.hardware.cache import CACHE_ENV, QUICK_ENV, cache_dir, cache_key, cache_path
from archsearch.hardware.profile import HardwareProfile

__all__ = [
    "CACHE_ENV",
    "QUICK_ENV",
    "auto_profile",
    "auto_profile_for",
    "cache_dir",
    "cache_key",
    "cache_path",
    "is_auto",
    "resolve_profile",
    "store_profile",
]


def is_auto(raw: Mapping[str, Any] | None) -> bool:
    """Whether a ``hardware`` config node is the ``auto`` marker (``conf/hardware/auto.yaml``)."""
    return raw is not None and raw.get("auto") is True


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _read(path: Path) -> HardwareProfile | None:
    """A cached profile, or None when it is missing or unreadable (then it is measured again)."""
    try:
        raw = yaml.safe_load(path.read_text())
        return HardwareProfile.from_dict(raw or {}, source=str(path))
    except (OSError, yaml.YAMLError, ConfigError):
        return None


def store_profile(profile: HardwareProfile, key: Mapping[str, Any]) -> Path:
    """Write ``profile`` as the cache entry of ``key`` (atomically); its path."""
    from archsearch.hardware.profile import write_profile

    path = cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_profile(profile, path)


def auto_profile(
    threads: int | None = 1,
    memory_format: str = "auto",
    clock: str = "wall",
    *,
    device: str = "auto",
    refresh: bool = False,
    quick: bool | None = None,
    log: Callable[[str], None] | None = _stderr,
    runtime: str = "torch",
) -> HardwareProfile:
    """This host's calibrated profile for a measurement setting: cached, or measured now.

    The defaults are ``LatencySettings``' (a test keeps them equal), for callers without one.

    Args:
        threads: torch intra-op threads the latency is measured with (``latency.threads``).
        memory_format: ``latency.memory_format``.
        clock: ``latency.clock`` (``cpu`` needs ``threads=1``).
        device: ``auto`` (the GPU when there is one), ``cpu`` or a CUDA device.
        refresh: calibrate even if a cached profile exists.
        quick: a coarse ~2 s calibration; None reads ``$ARCHSEARCH_AUTO_CALIBRATION``.
        log: one line on calibrating and one when done (stderr by default); None is silent.
        runtime: ``latency.runtime``: the networks the calibration times run on it.

    Returns:
        The profile, named ``auto``; ``extra["auto_key"]`` holds its cache key.
    """
    from archsearch.hardware.calibrate import calibrate

    key = cache_key(threads, memory_format, clock, device, runtime)
    path = cache_path(key)
    if not refresh and (cached := _read(path)) is not None:
        return cached
    quick = os.environ.get(QUICK_ENV, "") == "quick" if quick is None else quick
    say = log or (lambda _line: None)
    say(
        f"hardware=auto: calibrating this host once for {key['threads']} thread(s), {key['memory_format']}, "
        f"{clock} clock on {key['device']}, {runtime}{' (quick)' if quick else ''}; cached in {path.parent}"
    )
    started = time.perf_counter()
    profile = calibrate(threads, quick, "auto", 0, memory_format, clock, device=device, runtime=runtime)
    profile = HardwareProfile.from_dict({**profile.to_dict(), "auto_key": key}, source="hardware=auto")
    store_profile(profile, key)
    say(f"hardware=auto: calibrated in {time.perf_counter() - started:.1f} s; later runs reuse {path.name}")
    return profile


def resolve_profile(
    raw: Mapping[str, Any] | None,
    threads: int | None = 1,
    memory_format: str = "auto",
    clock: str = "wall",
    device: str = "auto",
    log: Callable[[str], None] | None = _stderr,
) -> HardwareProfile:
    """A ``hardware`` config node as a profile: ``auto`` resolved on this host, else validated.

    The one place the CLI commands and the Python API turn ``hardware=auto`` into numbers.

    Raises:
        ConfigError: a profile node that is not valid (see ``HardwareProfile.from_dict``).
    """
    if is_auto(raw):
        return auto_profile(threads, memory_format, clock, device=device, log=log)
    return HardwareProfile.from_dict(raw or {}, source="hardware")


def auto_profile_for(latency: Any, log: Callable[[str], None] | None = _stderr) -> HardwareProfile:
    """:func:`auto_profile` for a ``LatencySettings`` (threads, memory format, clock, device, runtime).

    The profile is calibrated on the device ``latency_ms`` would run on, so the estimate and
    the measurement describe the same thing.
    """
    from archsearch.hardware.latency import latency_device

    device = latency_device(latency.device, latency.clock, latency.runtime)
    return auto_profile(
        latency.threads, latency.memory_format, latency.clock, device=device, log=log, runtime=latency.runtime
    )
