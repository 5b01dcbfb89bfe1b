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
- ``latency_est_ms`` is a roofline estimate of eager PyTorch inference. Each node is split
  into the kernels eager mode launches for it (a Fire module: squeeze conv, batch norm and
  activation, the same per expand branch, then the concatenation), and each kernel costs
  ``overhead + max(flops / (peak * efficiency), kernel_bytes / bandwidth)`` with the fixed
  overhead, peak, bandwidth and small-GEMM efficiency of its kind from the hardware profile
  (see :func:`node_kernels` and :meth:`HardwareProfile.kernel_seconds`). ``kernel_bytes``
  differs from ``bytes`` on purpose: eager mode does not fuse batch norm and activation, so
  each re-reads and re-writes the conv output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from archsearch.errors import ConfigError
from archsearch.net import spec as S
from archsearch.resources import CONF_DIR

__all__ = [
    "COST_METRICS",
    "GEMM_DIMS",
    "KERNEL_KINDS",
    "CostReport",
    "HardwareProfile",
    "Kernel",
    "NodeCost",
    "analyze",
    "load_hardware",
    "node_kernels",
]

#: Metric names a sweep may use as an objective or a constraint (all minimised).
COST_METRICS = ("params", "macs", "flops", "bytes", "activations", "latency_est_ms")

#: Op classes with their own peak in a calibrated profile.
OP_CLASSES = ("conv1x1", "convkxk", "linear", "elementwise")

#: Kernel kinds of the latency model: the eager PyTorch kernels a node runs (see ``node_kernels``).
#: The first three are GEMM-like and share their op class's name; the rest are ``elementwise``.
KERNEL_KINDS = (
    "conv1x1",
    "convkxk",
    "linear",
    "batchnorm",
    "relu",
    "relu6",
    "gelu",
    "silu",
    "maxpool",
    "avgpool",
    "global_avgpool",
    "add",
    "concat",
    "identity",
)

#: Kernel kinds that are GEMMs (convolutions and linear layers), with FLOPs and an efficiency curve.
GEMM_KINDS = KERNEL_KINDS[:3]

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
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping in the YAML layout; ``HardwareProfile.from_dict(p.to_dict()) == p``."""
        out = asdict(self)
        out["peaks"] = dict(self.peaks)
        out["overheads_us"] = dict(self.overheads_us)
        out["bandwidths"] = dict(self.bandwidths)
        out["efficiency"] = {k: dict(v) for k, v in self.efficiency.items()}
        extra = out.pop("extra")
        out.update(extra)
        return out

    def peak_for(self, op_class: str) -> float:
        """FLOP/s for an op class (the class peak if calibrated, else the general one)."""
        return float(self.peaks.get(op_class, self.peak_gflops)) * 1e9

    def overhead_for(self, kind: str) -> float:
        """Fixed seconds per launched kernel of ``kind``."""
        us = self.overheads_us.get(kind, self.overheads_us.get(_op_class(kind), self.overhead_us))
        return float(us) * 1e-6

    def bandwidth_for(self, kind: str) -> float:
        """Bytes per second a kernel of ``kind`` streams (read plus written)."""
        gbs = self.bandwidths.get(kind, self.bandwidths.get(_op_class(kind), self.bandwidth_gbs))
        return float(gbs) * 1e9

    def gemm_efficiency(self, kind: str, m: int, n: int, k: int) -> float:
        """Fraction of the class peak a GEMM of ``m x n x k`` reaches (1 without a curve)."""
        halves = self.efficiency.get(kind, {})
        eff = 1.0
        for dim, size in zip(GEMM_DIMS, (m, n, k), strict=True):
            half = halves.get(dim, 0.0)
            eff *= size / (size + half) if size > 0 else 1.0
        return eff

    def kernel_seconds(self, kernel: Kernel) -> tuple[float, float, float]:
        """(latency, compute, memory) seconds of one kernel on this device.

        ``latency = overhead + max(compute, memory)``: the roofline of the kernel's FLOPs at
        its class's peak scaled by its GEMM efficiency, and of its bytes at its kind's rate.
        """
        compute = 0.0
        if kernel.flops:
            eff = self.gemm_efficiency(kernel.kind, *kernel.gemm)
            compute = kernel.flops / (self.peak_for(_op_class(kernel.kind)) * eff)
        memory = kernel.bytes / self.bandwidth_for(kernel.kind)
        return self.overhead_for(kernel.kind) + max(compute, memory), compute, memory


def _op_class(kind: str) -> str:
    return kind if kind in OP_CLASSES else "elementwise"


def _mapping(raw: Mapping[str, Any], key: str, source: str, prefix: str = "") -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source} key '{prefix}{key}' must be a mapping, got {value!r}.")
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


@dataclass(frozen=True)
class Kernel:
    """One kernel eager PyTorch launches for a node, for the whole batch.

    Attributes:
        kind: one of ``KERNEL_KINDS``.
        flops: floating-point operations (2 x MACs for GEMM-like kinds, 0 for the rest).
        bytes: bytes the kernel reads plus writes.
        gemm: (m, n, k) of the GEMM for GEMM-like kinds, else (0, 0, 0).
    """

    kind: str
    flops: int = 0
    bytes: int = 0
    gemm: tuple[int, int, int] = (0, 0, 0)


def _conv_kernels(
    cin: int, cout: int, kernel: int, groups: int, in_elems: int, pixels: int, bn: bool, act: str
) -> list[Kernel]:
    """A conv over ``pixels`` output positions (all images), then its unfused batch norm and activation."""
    k = (cin // groups) * kernel * kernel
    out_elems = cout * pixels
    kernels = [
        Kernel(
            "conv1x1" if kernel == 1 else "convkxk",
            flops=2 * out_elems * k,
            bytes=cout * k + in_elems + out_elems,
            gemm=(cout // groups, pixels, k),
        )
    ]
    if bn:
        kernels.append(Kernel("batchnorm", bytes=2 * out_elems))
    if act != "none":
        kernels.append(Kernel(act, bytes=2 * out_elems))
    return kernels


def node_kernels(
    node: S.Node, in_shapes: list[S.Shape], out: S.Shape, batch_size: int = 1, bytes_per_element: int = 4
) -> tuple[Kernel, ...]:
    """The kernels eager PyTorch runs for ``node`` (as ``archsearch.net.model.build`` makes it).

    Batch norm and activations are separate kernels that read and write the conv output; a
    Fire module always ends in a concatenation (``torch.cat`` copies even a single branch);
    a sum runs its 1x1 projections, then one add per extra input; dropout (eval mode) and
    flatten (a view) cost only their dispatch.

    Args:
        node: the node.
        in_shapes: shapes of its inputs, per image.
        out: its output shape, per image.
        batch_size: images per batch.
        bytes_per_element: element width.

    Returns:
        The kernels in launch order, with FLOPs and bytes for the whole batch.
    """
    b = batch_size
    in_elems = [b * _prod(s) for s in in_shapes]
    out_elems = b * _prod(out)
    pixels = b * _prod(out[1:])
    kernels: list[Kernel]
    if isinstance(node, S.ConvNode):
        kernels = _conv_kernels(
            in_shapes[0][0], out[0], node.kernel, node.groups, in_elems[0], pixels, node.bn, node.act
        )
    elif isinstance(node, S.FireNode):
        kernels = _conv_kernels(in_shapes[0][0], node.squeeze, 1, 1, in_elems[0], pixels, node.bn, node.act)
        for k, ch in node.expand:
            kernels += _conv_kernels(node.squeeze, ch, k, 1, node.squeeze * pixels, pixels, node.bn, node.act)
        kernels.append(Kernel("concat", bytes=2 * out_elems))
    elif isinstance(node, S.LinearNode):
        fin = in_shapes[0][0]
        gemm = Kernel("linear", flops=2 * b * fin * out[0], bytes=fin * out[0] + in_elems[0] + out_elems)
        kernels = [dataclasses.replace(gemm, gemm=(out[0], b, fin))]
        if node.act != "none":
            kernels.append(Kernel(node.act, bytes=2 * out_elems))
    elif isinstance(node, S.AddNode):
        kernels = []
        for shape, elems in zip(in_shapes, in_elems, strict=True):
            if node.project and shape[0] != out[0]:
                kernels += _conv_kernels(shape[0], out[0], 1, 1, elems, pixels, False, "none")
        kernels += [Kernel("add", bytes=3 * out_elems) for _ in in_shapes[1:]]
    elif isinstance(node, S.MaxPoolNode | S.AvgPoolNode | S.GlobalAvgPoolNode):
        kernels = [Kernel(node.op, bytes=in_elems[0] + out_elems)]
    elif isinstance(node, S.ConcatNode):
        kernels = [Kernel("concat", bytes=2 * out_elems)]
    else:  # dropout (identity in eval mode) and flatten (a view)
        kernels = [Kernel("identity")]
    return tuple(dataclasses.replace(k, bytes=bytes_per_element * k.bytes) for k in kernels)


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
        raise ConfigError(
            f"bytes_per_element must be >= 1 (4 fp32, 2 fp16, 1 int8), got {bytes_per_element}."
        )
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    rows: list[NodeCost] = []
    for node in net.nodes:
        in_shapes = [shapes[s] for s in sources[node.name]]
        out = shapes[node.name]
        params, macs, moved, op_class = _node_cost(node, in_shapes, out, batch_size, bytes_per_element)
        compute_s = memory_s = latency = 0.0
        if hardware is not None:
            for kernel in node_kernels(node, in_shapes, out, batch_size, bytes_per_element):
                seconds, compute, memory = hardware.kernel_seconds(kernel)
                latency += seconds
                compute_s += compute
                memory_s += memory
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
