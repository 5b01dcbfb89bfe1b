"""Cost report of declared networks: a per-layer table of one, or several side by side.

``python -m archsearch.report model=squeezenet1_0 [hardware=a100] [batch_size=8] [out=report.csv]``
prints, for every node, its output shape, params, MACs, bytes moved, arithmetic intensity,
whether it is compute- or memory-bound on the hardware profile and its estimated latency.
``python -m archsearch.report 'compare=[alexnet,squeezenet1_0]' [batch_sizes=[1,64]]`` prints
the networks' totals side by side with their ratios to the first. Nothing is built or run:
every figure comes from :func:`archsearch.net.cost.analyze`.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archsearch.errors import ConfigError
from archsearch.hardware.auto import is_auto, resolve_profile
from archsearch.hardware.profile import HardwareProfile
from archsearch.net.cost import analyze
from archsearch.net.spec import NetSpec, load_spec
from archsearch.resources import available, find_config

__all__ = [
    "ReportSettings",
    "available_models",
    "compare_table",
    "layer_table",
    "load_model",
    "print_compare_table",
    "print_layer_table",
    "report",
    "write_table",
]

TABLE_SUFFIXES = (".csv", ".md")


def available_models() -> list[str]:
    """Names of the declared networks: ``model/*.yaml`` across the config directories."""
    return available("model")


def load_model(name: str) -> NetSpec:
    """A declared network by name (the first ``model/NAME.yaml`` of the config directories) or by path.

    Raises:
        ConfigError: the name is neither a declared network nor an existing YAML file.
    """
    return load_spec(find_config("model", name))


def layer_table(
    spec: NetSpec, hardware: HardwareProfile, batch_size: int = 1, bytes_per_element: int = 4
) -> list[dict[str, Any]]:
    """One row per node, then a ``total`` row summing them.

    Columns: ``node``, ``op``, ``output_shape`` (per image, e.g. ``96x109x109``), ``params``,
    ``macs`` (per image), ``bytes`` (for the batch), ``intensity`` (FLOPs per byte for the
    batch), ``bound`` (``compute``, ``memory``, or ``-`` for nodes that move nothing) and
    ``latency_ms`` (the roofline estimate for the batch on ``hardware``).
    """
    report = analyze(spec, hardware, batch_size, bytes_per_element)
    rows: list[dict[str, Any]] = [
        {
            "node": n.name,
            "op": n.op,
            "output_shape": "x".join(map(str, n.out_shape)),
            "params": n.params,
            "macs": n.macs,
            "bytes": n.bytes,
            "intensity": n.intensity,
            "bound": n.bound,
            "latency_ms": 1e3 * n.latency_s,
        }
        for n in report.nodes
    ]
    compute_s = sum(n.compute_s for n in report.nodes)
    memory_s = sum(n.memory_s for n in report.nodes)
    rows.append(
        {
            "node": "total",
            "op": "",
            "output_shape": rows[-1]["output_shape"],
            "params": report.params,
            "macs": report.macs,
            "bytes": report.bytes,
            "intensity": report.intensity,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "latency_ms": report.latency_est_ms,
        }
    )
    return rows


def compare_table(
    specs: Sequence[NetSpec],
    hardware: HardwareProfile,
    batch_sizes: Sequence[int] = (1, 64),
    bytes_per_element: int = 4,
) -> list[dict[str, Any]]:
    """One row per network: totals at each batch size and their ratios to the first network.

    Columns: ``model``, ``hash``, ``params``, ``macs`` (per image), then per batch size ``B``
    ``bytes_bB`` and ``latency_ms_bB``; every numeric column ``X`` also has ``X_ratio``,
    the value divided by the first network's (so the first row's ratios are all 1).
    """
    if not specs:
        raise ConfigError("compare needs at least one model name.")
    if not batch_sizes:
        raise ConfigError("batch_sizes must list at least one batch size, e.g. [1, 64].")
    rows: list[dict[str, Any]] = []
    for spec in specs:
        row: dict[str, Any] = {"model": spec.name, "hash": spec.hash}
        for batch in batch_sizes:
            report = analyze(spec, hardware, int(batch), bytes_per_element)
            row.setdefault("params", report.params)
            row.setdefault("macs", report.macs)
            row[f"bytes_b{batch}"] = report.bytes
            row[f"latency_ms_b{batch}"] = report.latency_est_ms
        rows.append(row)
    metrics = [k for k in rows[0] if k not in ("model", "hash")]
    first = rows[0]
    for row in rows:
        for key in metrics:
            row[f"{key}_ratio"] = row[key] / first[key] if first[key] else float("nan")
    return rows


def write_table(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows to ``path`` (``.csv``, or ``.md`` for a Markdown table) atomically.

    The table goes to a temporary file in the same directory that is then renamed over
    ``path``, so a reader never sees half a file and a failure leaves no file behind.

    Raises:
        ConfigError: the suffix is not ``.csv`` or ``.md``, or the directory does not exist.
    """
    target = Path(path)
    if target.suffix not in TABLE_SUFFIXES:
        raise ConfigError(f"out must end in .csv or .md, got {str(path)!r}.")
    if not target.parent.is_dir():
        raise ConfigError(f"out directory {str(target.parent)!r} does not exist; create it first.")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            if target.suffix == ".csv":
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            else:
                fh.write(_markdown(rows, columns))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _markdown(rows: Sequence[Mapping[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _ratio(value: float) -> str:
    """2.0 -> 'x2.00', 0.0204 -> '/48.9': how many times more, or fewer, than the first."""
    if value != value:  # NaN: the first network's value is zero
        return ""
    return f"x{value:.2f}" if value >= 1 else f"/{1 / value:.1f}" if value > 0 else "x0"


def print_layer_table(
    console: Console, rows: Sequence[Mapping[str, Any]], title: str, hardware: HardwareProfile
) -> None:
    """Render :func:`layer_table` rows; the ``total`` row becomes the footer."""
    *body, total = rows
    table = Table(title=escape(title), show_footer=True, caption=_caption(hardware))
    table.add_column("node", footer="total", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("output", footer=str(total["output_shape"]), no_wrap=True)
    table.add_column("params", footer=f"{total['params']:,}", justify="right", no_wrap=True)
    macs = f"{total['macs'] / 1e9:.3f} G" if total["macs"] >= 1e7 else f"{total['macs'] / 1e6:.3f} M"
    table.add_column("MACs", footer=macs, justify="right", no_wrap=True)
    table.add_column("MB", footer=f"{total['bytes'] / 1e6:.2f} MB", justify="right", no_wrap=True)
    table.add_column("FLOP/B", footer=f"{total['intensity']:.1f}", justify="right", no_wrap=True)
    table.add_column("bound", footer=str(total["bound"]), no_wrap=True)
    table.add_column("est. ms", footer=f"{total['latency_ms']:.3f} ms", justify="right", no_wrap=True)
    for r in body:
        table.add_row(
            escape(str(r["node"])),
            str(r["op"]),
            str(r["output_shape"]),
            f"{r['params']:,}",
            f"{r['macs']:,}",
            f"{r['bytes'] / 1e6:.3f}",
            f"{r['intensity']:.1f}",
            str(r["bound"]),
            f"{r['latency_ms']:.4f}",
        )
    console.print(table)


def print_compare_table(
    console: Console, rows: Sequence[Mapping[str, Any]], batch_sizes: Sequence[int], hardware: HardwareProfile
) -> None:
    """Render :func:`compare_table` rows with one column per network, ratios to the first in brackets."""
    table = Table(
        title=escape(f"costs side by side, ratios to {rows[0]['model']}"), caption=_caption(hardware)
    )
    table.add_column("metric", no_wrap=True)
    for row in rows:
        table.add_column(escape(str(row["model"])), justify="right", no_wrap=True)
    metrics: list[tuple[str, str, str]] = [("params", "params", "{:,}"), ("macs", "GMACs / image", "{:.3f}")]
    for b in batch_sizes:
        metrics.append((f"bytes_b{b}", f"MB at batch {b}", "{:.2f}"))
    for b in batch_sizes:
        metrics.append((f"latency_ms_b{b}", f"est. ms at batch {b}", "{:.3f}"))
    scale = {"macs": 1e-9, **{f"bytes_b{b}": 1e-6 for b in batch_sizes}}
    for key, label, fmt in metrics:
        cells = []
        for i, row in enumerate(rows):
            value = row[key] * scale[key] if key in scale else row[key]
            ratio = _ratio(row[f"{key}_ratio"]) if i else ""
            cells.append(fmt.format(value) + (f" ({ratio})" if ratio else ""))
        table.add_row(label, *cells)
    console.print(table)


def _caption(hardware: HardwareProfile) -> str:
    about = f"; {hardware.description}" if hardware.description else ""
    return escape(f"est. ms: roofline estimate on {hardware.name} ({hardware.provenance}){about}")


@dataclass(frozen=True)
class ReportSettings:
    """The validated keys of ``python -m archsearch.report`` (``conf/report.yaml``).

    Attributes:
        model: the network of the per-layer table: a declared model's name or a model mapping.
        compare: model names shown side by side instead (None: the per-layer table of ``model``).
        batch_size: the per-layer table's batch (bytes and latency scale with it).
        batch_sizes: the compare table's batches.
        bytes_per_element: 4 = fp32, 2 = fp16/bf16, 1 = int8.
        out: also write the table to this ``.csv`` or ``.md`` file.
        hardware: the roofline profile: a profile's name (``"auto"``: this host, calibrated
            once and cached, when the report runs) or a :class:`HardwareProfile`.
    """

    model: str | Mapping[str, Any] = "squeezenet1_0"
    compare: tuple[str, ...] | None = None
    batch_size: int = 1
    batch_sizes: tuple[int, ...] = (1, 64)
    bytes_per_element: int = 4
    out: Path | None = None
    hardware: str | HardwareProfile = "laptop_cpu"

    def __post_init__(self) -> None:
        for key in ("batch_size", "bytes_per_element"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}.")
        sizes = self.batch_sizes
        if not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes):
            raise ConfigError(f"batch_sizes must be a list of positive integers, got {list(sizes)!r}.")
        if self.out is not None and self.out.suffix not in TABLE_SUFFIXES:
            raise ConfigError(f"out must be null or a path ending in .csv or .md, got {str(self.out)!r}.")
        if not isinstance(self.model, str | Mapping):
            raise ConfigError(
                f"model must be a declared model's name or a model mapping, got {self.model!r}."
            )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ReportSettings:
        """Read ``conf/report.yaml``'s keys (those left out take the defaults above).

        ``hardware`` may also be a profile mapping (a ``hardware=`` config node): it is read
        here, except the ``auto`` marker, which stays ``"auto"`` until the report runs.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise ConfigError(f"report has no key {unknown[0]!r}; known keys: {', '.join(sorted(known))}.")
        values = dict(raw)
        compare = values.get("compare")
        if compare is not None:
            values["compare"] = (compare,) if isinstance(compare, str) else tuple(str(n) for n in compare)
        sizes = values.get("batch_sizes")
        if sizes is not None:
            if isinstance(sizes, int | str) or not isinstance(sizes, Sequence):
                raise ConfigError(f"batch_sizes must be a list of positive integers, got {sizes!r}.")
            values["batch_sizes"] = tuple(sizes)
        if values.get("out") is not None:
            values["out"] = Path(str(values["out"]))
        hardware = values.get("hardware")
        if isinstance(hardware, Mapping):
            values["hardware"] = "auto" if is_auto(hardware) else resolve_profile(hardware)
        return cls(**values)


def report(
    settings: ReportSettings | Mapping[str, Any] | None = None, console: Console | None = None
) -> list[dict[str, Any]]:
    """What ``python -m archsearch.report`` does: print (and write to ``out``) a cost table.

    The per-layer table of ``settings.model``, or the compare table of ``settings.compare`` when
    that is set. From Python, a plain mapping of the same keys is read with
    :meth:`ReportSettings.from_mapping` first: ``A.cost_report({"compare": ["alexnet",
    "squeezenet1_0"]})``.

    Returns:
        The printed rows (:func:`layer_table` or :func:`compare_table`).

    Raises:
        ConfigError / SpecError: one sentence naming the key or node that is wrong.
    """
    if not isinstance(settings, ReportSettings):
        settings = ReportSettings.from_mapping(settings or {})
    console = console or Console()
    hardware = _hardware(settings.hardware)
    width = settings.bytes_per_element
    if settings.compare is not None:
        sizes = list(settings.batch_sizes)
        rows = compare_table([load_model(n) for n in settings.compare], hardware, sizes, width)
        print_compare_table(console, rows, sizes, hardware)
    else:
        model = settings.model
        spec = load_model(model) if isinstance(model, str) else NetSpec.from_dict(model, source="model")
        batch = settings.batch_size
        rows = layer_table(spec, hardware, batch, width)
        title = f"{spec.name} (hash {spec.hash}) at batch {batch}, {width} bytes per element"
        print_layer_table(console, rows, title, hardware)
    if settings.out is not None:
        console.print(f"wrote {write_table(rows, str(settings.out))}")
    return rows


def _hardware(name_or_profile: str | HardwareProfile) -> HardwareProfile:
    """A profile from its name (``auto``: calibrated on this host, once and cached) or itself."""
    from archsearch.hardware.profile import load_hardware

    if isinstance(name_or_profile, HardwareProfile):
        return name_or_profile
    if name_or_profile == "auto":
        # hardware=auto is calibrated for latency_ms's default setting (auto_profile's defaults).
        return resolve_profile({"auto": True})
    return load_hardware(name_or_profile)
