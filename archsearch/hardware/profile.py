"""A device's roofline for the latency estimate: :class:`HardwareProfile`, read by
:func:`load_hardware` and written by :func:`write_profile`.

``latency_est_ms`` (:mod:`archsearch.net.cost`) prices every :class:`~archsearch.net.kernels.Kernel`
a network launches with :meth:`HardwareProfile.kernel_seconds`; ``python -m archsearch.calibrate``
(:mod:`archsearch.hardware.calibrate`) measures a profile.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from archsearch.errors import ConfigError
from archsearch.hardware.gemm import check_lines, check_rates, interpolate_rate, line_seconds, table_class
from archsearch.net.kernels import GEMM_KINDS, KERNEL_KINDS, OP_CLASSES, Kernel, op_class
from archsearch.resources import find_config

__all__ = [
    "GEMM_DIMS",
    "HardwareProfile",
    "check_profile_path",
    "interpolate_rate",
    "load_hardware",
    "profile_yaml",
    "write_profile",
]

#: GEMM dimensions an efficiency curve may name (see ``HardwareProfile.efficiency``).
GEMM_DIMS = ("m", "n", "k")


@dataclass(frozen=True)
class HardwareProfile:
    """Peak compute, memory bandwidth and per-kernel costs of a device, for the latency estimate.

    Only ``peak_gflops`` and ``bandwidth_gbs`` are required (a datasheet profile); the rest
    refine the estimate and are what ``python -m archsearch.calibrate`` measures. A kernel
    kind missing from a mapping falls back to its op class's entry, then to the scalar.

    Args:
        name: profile name (the ``hardware=`` choice).
        peak_gflops: sustained fp32 GFLOP/s used where no per-class peak is given.
        bandwidth_gbs: sustained memory bandwidth in GB/s (1e9 bytes per second).
        overhead_us: fixed cost per launched kernel (dispatch / kernel launch), microseconds.
        peaks: optional per-op-class GFLOP/s (keys from ``OP_CLASSES``).
        overheads_us: per-kernel-kind fixed cost, microseconds (keys from ``KERNEL_KINDS`` or
            ``OP_CLASSES``).
        bandwidths: per-kernel-kind streaming rate in GB/s of bytes read plus written (same keys).
        efficiency: per GEMM class (``conv1x1``, ``convkxk``, ``linear``), half-performance
            sizes of the GEMM dimensions ``m`` (output channels), ``n`` (output pixels times
            batch) and ``k`` (input channels times kernel area): a GEMM reaches the fraction
            ``prod(d / (d + half_d))`` of its class peak (Hockney's n-half, per dimension).
        gemm_rates: per GEMM class, measured kernels as ``[m, n, k, gflops, batch]`` rows (the
            achieved GFLOP/s of a timed conv or linear layer of that GEMM shape, its dispatch
            overhead taken off). Where a class has them, a kernel's compute rate is interpolated
            from its nearest measured shapes (:func:`interpolate_rate`) instead of the class
            peak times its ``efficiency`` curve, which no three half-sizes fit well: a 1-channel
            stem conv runs at a rate the curve puts 3-5x too low.
        gemm_lines: per GEMM class, lines fitted to its timed kernels, one per kernel area, as
            ``[taps, block, fixed_us, per_image_us, gflops, operand_gbs]`` rows (``operand_gbs``
            may be left out; :func:`archsearch.hardware.gemm.line_seconds`); where a class has
            them they price its kernels instead of ``gemm_rates``. With ``nchwc_block``, both
            tables may also have ``conv1x1_nchw`` and ``convkxk_nchw`` entries: the convolutions
            the runtime runs outside its blocked layout (:func:`archsearch.hardware.gemm.table_class`).
        per_image_us: per-kernel-kind cost per image of the batch, microseconds: what a kernel
            pays in a network beyond its roofline and dispatch for every image it runs on (its
            activations stream through caches its neighbours' outputs evicted). Calibrated from
            probe networks timed at batch 1 and at a large batch; 0 where absent.
        cold_start: what every kernel pays in a network, whatever the batch, as a fraction of
            its roofline (busy) time at batch 1 (:meth:`cold_seconds`): amid other ops its
            weights and code are no longer in cache, which a hot loop never shows and a large
            batch amortises. Eager torch's probe networks put it at 0.1-0.5 on the build VM (beside
            a roofline scale of 1.2-1.5).
        nchwc_block: channels per block of the runtime's blocked layout (ONNX Runtime's NCHWc on
            x86: 16 with AVX-512, 8 with AVX2), which decides each convolution's GEMM table;
            0 (eager torch, or no blocked layout): every convolution by its class's tables.
        nchwc_step: a convolution of a block or more input channels runs in the blocked layout
            when they are a multiple of this (4 in ONNX Runtime 1.32; 0: the block itself).
        description: one line for humans.
        calibrated: whether the numbers were measured on the device.
        extra: any other keys of the YAML (kept, not interpreted; e.g. ``measured``).
    """

    name: str
    peak_gflops: float
    bandwidth_gbs: float
    overhead_us: float = 0.0
    peaks: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    calibrated: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    overheads_us: Mapping[str, float] = field(default_factory=dict)
    bandwidths: Mapping[str, float] = field(default_factory=dict)
    efficiency: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    gemm_rates: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)
    per_image_us: Mapping[str, float] = field(default_factory=dict)
    gemm_lines: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)
    nchwc_block: int = 0
    nchwc_step: int = 0
    cold_start: float = 0.0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "hardware") -> HardwareProfile:
        """Validate a profile mapping (parsed YAML or an OmegaConf container).

        Raises:
            ConfigError: naming the source and the key that is missing or out of range.
        """
        known = {
            "name",
            "peak_gflops",
            "bandwidth_gbs",
            "overhead_us",
            "peaks",
            "description",
            "calibrated",
            "overheads_us",
            "bandwidths",
            "efficiency",
            "gemm_rates",
            "per_image_us",
            "gemm_lines",
            "nchwc_block",
            "nchwc_step",
            "cold_start",
        }
        try:
            peak = float(raw["peak_gflops"])
            bw = float(raw["bandwidth_gbs"])
            overhead = float(raw.get("overhead_us", 0.0) or 0.0)
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{source} must give numeric 'peak_gflops' and 'bandwidth_gbs'.") from None
        if peak <= 0 or bw <= 0:
            raise ConfigError(f"{source} keys 'peak_gflops' and 'bandwidth_gbs' must be > 0.")
        if overhead < 0:
            raise ConfigError(f"{source} key 'overhead_us' must be >= 0, got {overhead}.")
        block, step = (_count(raw, key, source) for key in ("nchwc_block", "nchwc_step"))
        curves = _mapping(raw, "efficiency", source)
        bad = set(curves) - set(GEMM_KINDS)
        if bad:
            raise ConfigError(
                f"{source} key 'efficiency' has unknown class(es) {sorted(map(str, bad))}; "
                f"allowed: {', '.join(GEMM_KINDS)}."
            )
        efficiency = {
            str(c): _numbers(
                _mapping(curves, c, source, "efficiency."), f"efficiency.{c}", GEMM_DIMS, source, 0.0
            )
            for c in curves
        }
        kinds = tuple(dict.fromkeys((*KERNEL_KINDS, *OP_CLASSES)))
        return cls(
            name=str(raw.get("name", "hardware")),
            peak_gflops=peak,
            bandwidth_gbs=bw,
            overhead_us=overhead,
            peaks=_numbers(_mapping(raw, "peaks", source), "peaks", OP_CLASSES, source),
            description=str(raw.get("description", "")),
            calibrated=bool(raw.get("calibrated", False)),
            extra={k: v for k, v in raw.items() if k not in known},
            overheads_us=_numbers(
                _mapping(raw, "overheads_us", source), "overheads_us", kinds, source, minimum=0.0
            ),
            bandwidths=_numbers(_mapping(raw, "bandwidths", source), "bandwidths", kinds, source),
            efficiency=efficiency,
            gemm_rates=check_rates(_mapping(raw, "gemm_rates", source), source),
            gemm_lines=check_lines(_mapping(raw, "gemm_lines", source), source),
            per_image_us=_numbers(
                _mapping(raw, "per_image_us", source), "per_image_us", kinds, source, minimum=0.0
            ),
            nchwc_block=block,
            nchwc_step=step,
            cold_start=_non_negative(raw, "cold_start", source),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping in the YAML layout; ``HardwareProfile.from_dict(p.to_dict()) == p``."""
        out = asdict(self)
        out["peaks"] = dict(self.peaks)
        out["overheads_us"] = dict(self.overheads_us)
        out["bandwidths"] = dict(self.bandwidths)
        out["efficiency"] = {k: dict(v) for k, v in self.efficiency.items()}
        out["gemm_rates"] = {k: [list(row) for row in v] for k, v in self.gemm_rates.items()}
        out["per_image_us"] = dict(self.per_image_us)
        out["gemm_lines"] = {k: [list(row) for row in v] for k, v in self.gemm_lines.items()}
        for key in ("gemm_rates", "per_image_us", "gemm_lines", "nchwc_block", "nchwc_step", "cold_start"):
            if not out[key]:
                del out[key]
        extra = out.pop("extra")
        out.update(extra)
        return out

    @property
    def provenance(self) -> str:
        """Where the numbers come from, for every place an estimate is shown.

        ``calibrated on <CPU or GPU>, host <name>`` for a measured profile; ``datasheet-only
        estimate`` for one built from published peaks, which knows nothing of per-kernel costs.
        """
        if not self.calibrated:
            return "datasheet-only estimate, not measured on any host"
        m = self.extra.get("measured") or {}
        where = [str(m.get("cpu") or m.get("device") or "")]
        where += [f"host {m['host']}"] if m.get("host") else []
        return "calibrated on " + ", ".join(w for w in where if w) if any(where) else "calibrated"

    def peak_for(self, op_class: str) -> float:
        """FLOP/s for an op class (the class peak if calibrated, else the general one)."""
        return float(self.peaks.get(op_class, self.peak_gflops)) * 1e9

    def overhead_for(self, kind: str) -> float:
        """Fixed seconds per launched kernel of ``kind``."""
        us = self.overheads_us.get(kind, self.overheads_us.get(op_class(kind), self.overhead_us))
        return float(us) * 1e-6

    def per_image_for(self, kind: str) -> float:
        """Seconds a kernel of ``kind`` adds in a network per image of its batch."""
        return float(self.per_image_us.get(kind, self.per_image_us.get(op_class(kind), 0.0))) * 1e-6

    def bandwidth_for(self, kind: str) -> float:
        """Bytes per second a kernel of ``kind`` streams (read plus written)."""
        gbs = self.bandwidths.get(kind, self.bandwidths.get(op_class(kind), self.bandwidth_gbs))
        return float(gbs) * 1e9

    def gemm_efficiency(self, kind: str, m: int, n: int, k: int) -> float:
        """Fraction of the class peak a GEMM of ``m x n x k`` reaches (1 without a curve)."""
        halves = self.efficiency.get(kind, {})
        eff = 1.0
        for dim, size in zip(GEMM_DIMS, (m, n, k), strict=True):
            half = halves.get(dim, 0.0)
            eff *= size / (size + half) if size > 0 else 1.0
        return eff

    @cached_property
    def _rate_tables(self) -> dict[str, np.ndarray]:
        """``gemm_rates`` as arrays, converted once per profile rather than once per kernel."""
        return {kind: np.asarray(rows, dtype=float) for kind, rows in self.gemm_rates.items()}

    @cached_property
    def _rate_memo(self) -> dict[tuple[str, tuple[int, int, int], int], float]:
        return {}

    def _measured_rate(self, kind: str, gemm: tuple[int, int, int], batch: int) -> float:
        """:func:`interpolate_rate` of ``kind``'s table, remembered per shape (searches repeat them)."""
        key = (kind, gemm, batch)
        if key not in self._rate_memo:
            self._rate_memo[key] = interpolate_rate(self._rate_tables[kind], gemm, batch)
        return self._rate_memo[key]

    def kernel_seconds(self, kernel: Kernel) -> tuple[float, float, float]:
        """(latency, compute, memory) seconds of one kernel on this device.

        ``latency = overhead + per_image * batch + max(compute, memory)``: a fixed cost, one per
        image, and the roofline of the kernel's FLOPs at its class's peak scaled by its GEMM
        efficiency (or at the rate measured for its nearest GEMM shapes, see ``gemm_rates``, or
        on the line fitted to them, ``gemm_lines``) and of its bytes at its kind's rate. A
        convolution takes the tables of its layout where the profile has them (``nchwc_block``).
        """
        compute = 0.0
        table = table_class(kernel, self.nchwc_block, self.nchwc_step) if kernel.flops else kernel.kind
        if table not in self.gemm_lines and table not in self.gemm_rates:
            table = kernel.kind
        if kernel.flops and table in self.gemm_lines:
            compute = line_seconds(self.gemm_lines[table], kernel)
        elif kernel.flops and table in self.gemm_rates:
            compute = kernel.flops / (self._measured_rate(table, kernel.gemm, kernel.batch) * 1e9)
        elif kernel.flops:
            eff = self.gemm_efficiency(kernel.kind, *kernel.gemm)
            compute = kernel.flops / (self.peak_for(op_class(kernel.kind)) * eff)
        memory = kernel.bytes / self.bandwidth_for(kernel.kind)
        fixed = self.overhead_for(kernel.kind) + self.per_image_for(kernel.kind) * kernel.batch
        return fixed + max(compute, memory), compute, memory

    def cold_seconds(self, kernel: Kernel) -> float:
        """What ``kernel`` (at batch 1) pays in a network at any batch for running amid other
        ops: ``cold_start`` times its roofline time (:attr:`cold_start`)."""
        if not self.cold_start:
            return 0.0
        _, compute, memory = self.kernel_seconds(kernel)
        return self.cold_start * max(compute, memory)


def profile_yaml(profile: HardwareProfile) -> str:
    """The profile as YAML text, with a header saying how it was made and how to redo it."""
    m = profile.extra.get("measured", {})
    header = (
        f"# Written by `{m.get('tool', 'python -m archsearch.calibrate')}` on {m.get('date', '?')},\n"
        f"# {m.get('threads', '?')} thread(s), {m.get('clock', 'wall')} clock, "
        f"{m.get('memory_format', '?')}. Every figure is a median over repeats;\n"
        "# rerun it with out=<this file> to refresh. Raw figures are under `measured` at the end.\n"
    )
    return header + yaml.safe_dump(profile.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def check_profile_path(out: str | Path) -> Path:
    path = Path(out)
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"out={out} must be a .yaml or .yml path, e.g. conf/hardware/mybox.yaml.")
    if not path.parent.is_dir():
        raise ConfigError(f"out={out}: folder {path.parent} does not exist.")
    return path


def write_profile(profile: HardwareProfile, out: str | Path) -> Path:
    """Write ``profile_yaml(profile)`` to ``out`` atomically (a temp file renamed into place).

    Raises:
        ConfigError: ``out`` does not end in .yaml/.yml or its folder does not exist.
    """
    path = check_profile_path(out)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(profile_yaml(profile))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _mapping(raw: Mapping[str, Any], key: str, source: str, prefix: str = "") -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source} key '{prefix}{key}' must be a mapping, got {value!r}.")
    return value


def _count(raw: Mapping[str, Any], key: str, source: str) -> int:
    """An integer >= 0 under ``key`` (0 when absent)."""
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{source} key '{key}' must be an integer >= 0, got {value!r}.")
    return value


def _non_negative(raw: Mapping[str, Any], key: str, source: str) -> float:
    """A number >= 0 under ``key`` (0 when absent or null)."""
    try:
        value = float(raw.get(key) or 0.0)
    except (TypeError, ValueError):
        value = math.nan
    if not value >= 0:
        raise ConfigError(f"{source} key '{key}' must be a number >= 0, got {raw.get(key)!r}.")
    return value


def _numbers(
    raw: Mapping[str, Any],
    key: str,
    allowed: tuple[str, ...],
    source: str,
    minimum: float | None = None,
) -> dict[str, float]:
    """Validate a name -> number mapping; values must be > 0 (or >= ``minimum`` when given)."""
    bad = set(raw) - set(allowed)
    if bad:
        raise ConfigError(
            f"{source} key {key!r} has unknown name(s) {sorted(map(str, bad))}; "
            f"allowed: {', '.join(allowed)}."
        )
    out: dict[str, float] = {}
    for name, value in raw.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source} key '{key}.{name}' must be a number, got {value!r}.") from None
        if (number < minimum) if minimum is not None else (number <= 0):
            floor = f">= {minimum}" if minimum is not None else "> 0"
            raise ConfigError(f"{source} key '{key}.{name}' must be {floor}, got {number}.")
        out[str(name)] = number
    return out


def load_hardware(name_or_path: str | Path) -> HardwareProfile:
    """A profile by name (the first ``hardware/NAME.yaml`` of the config directories) or by path."""
    p = find_config("hardware", name_or_path)
    return HardwareProfile.from_dict(yaml.safe_load(p.read_text()) or {}, source=str(p))
