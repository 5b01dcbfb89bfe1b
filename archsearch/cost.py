"""Analytic cost of a NetSpec: parameters, MACs, bytes moved and a roofline latency estimate.

No forward pass and no torch: everything is computed from the inferred shapes, so costing
a candidate takes microseconds and happens before a trial decides whether to train it.

Conventions (what the numbers mean):
- ``params`` counts learnable parameters as ``sum(p.numel())`` does (batch-norm weight and
  bias included, running statistics not).
- ``macs`` counts multiply-accumulates of convolutions and linear layers per image, the
  convention of torchvision's published "GFLOPS" column and of
  ``torch.utils.flop_counter`` (which reports 2 x MACs). Bias adds, batch norm,
  activations, pooling and sums are not counted as MACs; they are counted as bytes.
- ``bytes`` is the memory traffic of one inference batch as eager PyTorch runs it:
  every weight read once, every op's inputs read and outputs written, with batch norm and
  activation fused into their conv. Inside a Fire module the squeeze output is written
  once and read by each expand branch, and the concatenation reads the branch outputs
  and writes the module output. A sum's 1x1 projections write and re-read their output.
  Dropout (identity at inference) and flatten (a view) move nothing.
- ``latency_est_ms`` is a roofline estimate: the sum over nodes of
  ``max(flops / peak, bytes / bandwidth) + overhead`` for a hardware profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from archsearch import spec as S
from archsearch.errors import ConfigError
from archsearch.paths import CONF_DIR

__all__ = [
    "COST_METRICS",
    "CostReport",
    "HardwareProfile",
    "NodeCost",
    "analyze",
    "load_hardware",
]

#: Metric names a sweep may use as an objective or a constraint (all minimised).
COST_METRICS = ("params", "macs", "flops", "bytes", "activations", "latency_est_ms")

#: Op classes with their own peak in a calibrated profile.
OP_CLASSES = ("conv1x1", "convkxk", "linear", "elementwise")


@dataclass(frozen=True)
class HardwareProfile:
    """Peak compute and memory bandwidth of a device, for the roofline estimate.

    Args:
        name: profile name (the ``hardware=`` choice).
        peak_gflops: sustained fp32 GFLOP/s used where no per-class peak is given.
        bandwidth_gbs: sustained memory bandwidth in GB/s (1e9 bytes per second).
        overhead_us: fixed cost per executed op (dispatch / kernel launch), microseconds.
        peaks: optional per-op-class GFLOP/s (keys from ``OP_CLASSES``).
    """

    name: str
    peak_gflops: float
    bandwidth_gbs: float
    overhead_us: float = 0.0
    peaks: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    calibrated: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "hardware") -> HardwareProfile:
        known = {"name", "peak_gflops", "bandwidth_gbs", "overhead_us", "peaks", "description", "calibrated"}
        try:
            peak = float(raw["peak_gflops"])
            bw = float(raw["bandwidth_gbs"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{source} must give numeric 'peak_gflops' and 'bandwidth_gbs'.") from None
        if peak <= 0 or bw <= 0:
            raise ConfigError(f"{source} keys 'peak_gflops' and 'bandwidth_gbs' must be > 0.")
        peaks = dict(raw.get("peaks") or {})
        bad = set(peaks) - set(OP_CLASSES)
        if bad:
            raise ConfigError(
                f"{source} key 'peaks' has unknown op class(es) {sorted(bad)}; "
                f"allowed: {', '.join(OP_CLASSES)}."
            )
        return cls(
            name=str(raw.get("name", "hardware")),
            peak_gflops=peak,
            bandwidth_gbs=bw,
            overhead_us=float(raw.get("overhead_us", 0.0) or 0.0),
            peaks={k: float(v) for k, v in peaks.items()},
            description=str(raw.get("description", "")),
            calibrated=bool(raw.get("calibrated", False)),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["peaks"] = dict(self.peaks)
        extra = out.pop("extra")
        out.update(extra)
        return out

    def peak_for(self, op_class: str) -> float:
        """FLOP/s for an op class (the class peak if calibrated, else the general one)."""
        return float(self.peaks.get(op_class, self.peak_gflops)) * 1e9


def load_hardware(name_or_path: str | Path) -> HardwareProfile:
    """A profile by name (``conf/hardware/NAME.yaml``) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = CONF_DIR / "hardware" / f"{name_or_path}.yaml"
    if not p.is_file():
        choices = ", ".join(sorted(f.stem for f in (CONF_DIR / "hardware").glob("*.yaml")))
        raise ConfigError(
            f"hardware profile {str(name_or_path)!r} not found; choose one of {choices} or a YAML path."
        )
    return HardwareProfile.from_dict(yaml.safe_load(p.read_text()) or {}, source=str(p))


@dataclass(frozen=True)
class NodeCost:
    """Cost of one node for one batch (``macs`` and ``activations`` are per image)."""

    name: str
    op: str
    out_shape: tuple[int, ...]
    params: int
    macs: int
    activations: int
    bytes: int
    op_class: str
    latency_s: float = 0.0
    compute_s: float = 0.0
    memory_s: float = 0.0
    batch_factor: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        """Arithmetic intensity of the batch: FLOPs per byte moved."""
        return 0.0 if self.bytes == 0 else self.flops * self.batch_factor / self.bytes

    @property
    def bound(self) -> str:
        if self.bytes == 0 and self.macs == 0:
            return "-"
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass(frozen=True)
class CostReport:
    """Per-node costs and totals of a network at one batch size and element width."""

    spec_name: str
    spec_hash: str
    batch_size: int
    bytes_per_element: int
    hardware: str
    nodes: tuple[NodeCost, ...]

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def activations(self) -> int:
        return sum(n.activations for n in self.nodes)

    @property
    def bytes(self) -> int:
        return sum(n.bytes for n in self.nodes)

    @property
    def latency_est_ms(self) -> float:
        return 1e3 * sum(n.latency_s for n in self.nodes)

    @property
    def intensity(self) -> float:
        return self.flops * self.batch_size / self.bytes if self.bytes else 0.0

    def metrics(self) -> dict[str, float]:
        """The scalar metrics a sweep can optimise or bound, by name (see ``COST_METRICS``)."""
        return {
            "params": float(self.params),
            "macs": float(self.macs),
            "flops": float(self.flops),
            "bytes": float(self.bytes),
            "activations": float(self.activations),
            "latency_est_ms": self.latency_est_ms,
        }


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _conv_params(cin: int, cout: int, k: int, groups: int, bias: bool, bn: bool) -> int:
    return cout * (cin // groups) * k * k + (cout if bias else 0) + (2 * cout if bn else 0)


def _node_cost(
    node: S.Node, in_shapes: list[S.Shape], out: S.Shape, batch: int, width: int
) -> tuple[int, int, int, str]:
    """(params, macs per image, bytes for the batch, op class) of one node."""
    in_elems = [batch * _prod(s) for s in in_shapes]
    out_elems = batch * _prod(out)
    if isinstance(node, S.ConvNode):
        cin = in_shapes[0][0]
        params = _conv_params(cin, out[0], node.kernel, node.groups, node.bias, node.bn)
        macs = _prod(out) * (cin // node.groups) * node.kernel * node.kernel
        op_class = "conv1x1" if node.kernel == 1 else "convkxk"
        return params, macs, width * (params + in_elems[0] + out_elems), op_class
    if isinstance(node, S.FireNode):
        cin, h, w = in_shapes[0]
        s = node.squeeze
        params = _conv_params(cin, s, 1, 1, True, node.bn)
        macs = s * h * w * cin
        for k, ch in node.expand:
            params += _conv_params(s, ch, k, 1, True, node.bn)
            macs += ch * h * w * s * k * k
        squeeze_elems = batch * s * h * w
        moved = (
            params
            + in_elems[0]
            + squeeze_elems * (1 + len(node.expand))  # written once, read by each branch
            + 3 * out_elems  # branches write, concat reads and writes
        )
        has_kxk = any(k > 1 for k, _ in node.expand)
        return params, macs, width * moved, "convkxk" if has_kxk else "conv1x1"
    if isinstance(node, S.LinearNode):
        fin = in_shapes[0][0]
        params = fin * out[0] + (out[0] if node.bias else 0)
        macs = fin * out[0]
        return params, macs, width * (params + in_elems[0] + out_elems), "linear"
    if isinstance(node, S.AddNode):
        params, macs, moved = 0, 0, out_elems
        for shape, elems in zip(in_shapes, in_elems, strict=True):
            moved += elems
            if node.project and shape[0] != out[0]:
                params += shape[0] * out[0] + out[0]
                macs += _prod(out) * shape[0]
                moved += 2 * out_elems  # the projection writes, the sum reads
        moved += params
        return params, macs, width * moved, "conv1x1" if macs else "elementwise"
    if isinstance(node, S.DropoutNode | S.FlattenNode):
        return 0, 0, 0, "elementwise"
    # Pools, global pooling and concat: read the inputs, write the output.
    return 0, 0, width * (sum(in_elems) + out_elems), "elementwise"


def analyze(
    net: S.NetSpec,
    hardware: HardwareProfile | None = None,
    batch_size: int = 1,
    bytes_per_element: int = 4,
) -> CostReport:
    """Cost every node of a spec, with a roofline latency estimate if a profile is given.

    Args:
        net: a NetSpec (validated here; raises SpecError if invalid).
        hardware: peaks for the latency estimate; without one, latencies are zero.
        batch_size: images per inference batch (scales bytes of activations, not weights).
        bytes_per_element: 4 for fp32, 2 for fp16/bf16, 1 for int8.

    Returns:
        A CostReport with one NodeCost per node, in spec order.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if bytes_per_element < 1:
        raise ConfigError(f"bytes_per_element must be >= 1 (4 fp32, 2 fp16, 1 int8), got {bytes_per_element}.")
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    rows: list[NodeCost] = []
    for node in net.nodes:
        in_shapes = [shapes[s] for s in sources[node.name]]
        out = shapes[node.name]
        params, macs, moved, op_class = _node_cost(node, in_shapes, out, batch_size, bytes_per_element)
        compute_s = memory_s = latency = 0.0
        if hardware is not None and (moved or macs):
            compute_s = 2 * macs * batch_size / hardware.peak_for(op_class)
            memory_s = moved / (hardware.bandwidth_gbs * 1e9)
            latency = max(compute_s, memory_s) + hardware.overhead_us * 1e-6
        rows.append(
            NodeCost(
                name=node.name,
                op=node.op,
                out_shape=out,
                params=params,
                macs=macs,
                activations=_prod(out),
                bytes=moved,
                op_class=op_class,
                latency_s=latency,
                compute_s=compute_s,
                memory_s=memory_s,
                batch_factor=batch_size,
            )
        )
    return CostReport(
        spec_name=net.name,
        spec_hash=net.hash,
        batch_size=batch_size,
        bytes_per_element=bytes_per_element,
        hardware=hardware.name if hardware is not None else "",
        nodes=tuple(rows),
    )
