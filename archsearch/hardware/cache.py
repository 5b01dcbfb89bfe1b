"""Where ``hardware=auto`` profiles are cached, and the key that tells one host setting from another.

Kept apart from :mod:`archsearch.hardware.auto` so that ``python -m archsearch.calibrate``
(:mod:`archsearch.hardware.calibrate`) can refresh an entry without importing what calibrates.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CACHE_ENV", "QUICK_ENV", "cache_dir", "cache_key", "cache_path", "cpu_name"]

#: Folder of the cached profiles (overrides the XDG location; tests point it at a temp dir).
CACHE_ENV = "ARCHSEARCH_HARDWARE_CACHE"
#: ``quick``: calibrate a missing entry coarsely in ~2 s (tests, smoke runs).
QUICK_ENV = "ARCHSEARCH_AUTO_CALIBRATION"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    """Where auto profiles are cached (see the module docstring for the order of choices)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from archsearch.resources import user_cache_dir

    return user_cache_dir() / "hardware"


#: Bumped when the calibration's model changes, so older cached profiles are measured again.
MODEL_VERSION = 6


def cache_key(
    threads: int | None, memory_format: str, clock: str, device: str = "cpu", runtime: str = "torch"
) -> dict[str, Any]:
    """Everything a calibrated profile depends on, as a plain mapping (stored in the profile).

    ``runtime`` is the one ``latency_ms`` is measured on (``torch`` or ``onnxruntime``, which
    runs on the CPU whatever ``device`` says).
    """
    from archsearch.hardware.cuda import device_name
    from archsearch.hardware.latency import profile_device

    dev = profile_device(device, clock, runtime)
    return {
        "model": MODEL_VERSION,
        "runtime": runtime,
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "device": device_name(dev),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "memory_format": "contiguous" if memory_format == "contiguous" else "channels_last",
        "clock": clock,
        "torch": str(torch.__version__),
    }


def cache_path(key: Mapping[str, Any]) -> Path:
    """The cache file of one key: readable settings plus a hash of the whole key."""
    digest = hashlib.sha1(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:12]
    dev = "cuda" if str(key.get("device", "cpu")).startswith("cuda") else "cpu"
    ort = "-onnxruntime" if key.get("runtime") == "onnxruntime" else ""
    name = f"{dev}{ort}-t{key['threads']}-{key['memory_format']}-{key['clock']}-{digest}.yaml"
    return cache_dir() / name
