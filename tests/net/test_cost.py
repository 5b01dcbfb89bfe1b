"""analyze(spec): exact counts, agreement with torch's own counters, bytes and the roofline estimate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from archsearch.errors import ConfigError
from archsearch.hardware.profile import HardwareProfile, load_hardware
from archsearch.net.cost import analyze, node_kernels
from archsearch.net.kernels import Kernel
from archsearch.net.latency_model import LatencyModel
from archsearch.net.model import build, count_params
from archsearch.net.spec import NetSpec

# torchvision's published figures at 3x224x224 with 1000 classes.
PUBLISHED = {
    "squeezenet1_0": (1_248_424, 818_924_576),
    "squeezenet1_1": (1_235_496, 349_151_936),
    "alexnet": (61_100_840, 714_188_480),
}


# Tiny models on a shared 2-core machine run far faster without intra-op threading.
pytestmark = pytest.mark.usefixtures("one_thread")


def torch_counts(spec: NetSpec, batch: int = 2) -> tuple[int, int, dict[str, tuple[int, ...]]]:
    """(params, MACs per image, every node's output shape) measured on the built module."""
    net = build(spec).eval()
    shapes: dict[str, tuple[int, ...]] = {}
    for name in net.order:
        net.ops[name].register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.randn(batch, *spec.input))
    return count_params(net), counter.get_total_flops() // 2 // batch, shapes


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_reference_models_have_torchvisions_published_counts(
    reference_specs: dict[str, NetSpec], name: str
) -> None:
    report = analyze(reference_specs[name])
    assert (report.params, report.macs) == PUBLISHED[name]
    assert report.flops == 2 * report.macs


def test_simple_bypass_is_free_and_complex_bypass_costs_its_projections(
    reference_specs: dict[str, NetSpec],
) -> None:
    plain = analyze(reference_specs["squeezenet1_0"])
    simple = analyze(reference_specs["squeezenet1_0_simple_bypass"])
    complex_ = analyze(reference_specs["squeezenet1_0_complex_bypass"])
    assert (simple.params, simple.macs) == (plain.params, plain.macs)
    assert simple.bytes > plain.bytes  # the sums still read and write feature maps
    proj = {n.name: (n.params, n.macs) for n in complex_.nodes if n.op == "add" and n.params}
    # by2: 96->128 channels at 54x54; by4: 128->256 at 54x54; by6: 256->384 and by8: 384->512 at 27x27.
    assert proj == {
        "by2": (96 * 128 + 128, 128 * 54 * 54 * 96),
        "by4": (128 * 256 + 256, 256 * 54 * 54 * 128),
        "by6": (256 * 384 + 384, 384 * 27 * 27 * 256),
        "by8": (384 * 512 + 512, 512 * 27 * 27 * 384),
    }
    assert complex_.params == plain.params + sum(p for p, _ in proj.values())
    assert complex_.macs == plain.macs + sum(m for _, m in proj.values())


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_0_complex_bypass", "alexnet", "fire_mnist"])
def test_reference_counts_match_torch_parameters_and_flop_counter(
    reference_specs: dict[str, NetSpec], name: str
) -> None:
    spec = reference_specs[name]
    params, macs, shapes = torch_counts(spec, batch=1)
    report = analyze(spec)
    assert (report.params, report.macs) == (params, macs)
    assert shapes == {n: (1, *s) for n, s in spec.validate().items()}


@pytest.mark.parametrize("seed", range(60))
def test_random_spec_counts_and_shapes_match_the_built_module(
    make_random_spec: Callable[[int], NetSpec], seed: int
) -> None:
    spec = make_random_spec(seed)
    params, macs, shapes = torch_counts(spec)
    report = analyze(spec)
    assert report.params == params
    assert report.macs == macs
    assert shapes == {n: (2, *s) for n, s in spec.validate().items()}
    assert [n.name for n in report.nodes] == [n.name for n in spec.nodes]


TINY_CONV = NetSpec.from_dict(
    {
        "name": "tiny_conv",
        "input": [2, 5, 5],
        "num_classes": 3,
        "nodes": [
            {"name": "conv", "op": "conv", "out": 3, "kernel": 3, "act": "none"},
            {"name": "gap", "op": "global_avgpool"},
        ],
    }
)
TINY_FIRE = NetSpec.from_dict(
    {
        "name": "tiny_fire",
        "input": [4, 3, 3],
        "num_classes": 8,
        "nodes": [
            {"name": "fire", "op": "fire", "squeeze": 2, "expand": {1: 3, 3: 5}},
            {"name": "gap", "op": "global_avgpool"},
        ],
    }
)


@pytest.mark.parametrize(("batch", "conv_bytes", "gap_bytes"), [(1, 728, 312), (2, 1228, 624)])
def test_conv_bytes_are_weights_once_plus_input_and_output_per_image(
    batch: int, conv_bytes: int, gap_bytes: int
) -> None:
    # Conv 2->3, 3x3, "same" on 5x5: 57 params, input 50 and output 75 elements per image, fp32.
    # batch 1: 4 * (57 + 50 + 75) = 728; batch 2: 4 * (57 + 100 + 150) = 1228.
    # Global pool reads 75 and writes 3 per image: 4 * 78 = 312 per image.
    report = analyze(TINY_CONV, batch_size=batch)
    conv, gap = report.nodes
    assert (conv.params, conv.macs, conv.bytes, conv.activations) == (57, 75 * 2 * 9, conv_bytes, 75)
    assert gap.bytes == gap_bytes
    assert report.bytes == conv_bytes + gap_bytes
    assert analyze(TINY_CONV, batch_size=batch, bytes_per_element=2).bytes == (conv_bytes + gap_bytes) // 2


@pytest.mark.parametrize(("batch", "expected"), [(1, 1680), (2, 2904)])
def test_fire_bytes_count_the_squeeze_map_per_branch_and_the_concat(batch: int, expected: int) -> None:
    # Fire 4 -> squeeze 2 -> expand {1: 3, 3: 5} on 3x3: params 10 + 9 + 95 = 114.
    # Per image: input 36, squeeze map 18 written once and read by 2 branches (54),
    # output 72 written by the branches, read and written by the concat (216).
    # batch 1: 4 * (114 + 36 + 54 + 216) = 1680; batch 2: 4 * (114 + 72 + 108 + 432) = 2904.
    fire = analyze(TINY_FIRE, batch_size=batch).nodes[0]
    assert (fire.params, fire.macs, fire.op_class) == (114, 72 + 54 + 810, "convkxk")
    assert fire.bytes == expected


def test_dropout_and_flatten_move_no_bytes(reference_specs: dict[str, NetSpec]) -> None:
    costs = {n.name: n for n in analyze(reference_specs["alexnet"]).nodes}
    assert costs["flatten"].bytes == costs["drop6"].bytes == costs["drop7"].bytes == 0
    assert costs["flatten"].activations == 256 * 6 * 6


def test_roofline_latency_is_max_of_compute_and_memory_plus_overhead_per_node() -> None:
    # Single-kernel nodes (a conv without activation, a pool) on a datasheet-only profile.
    toy = HardwareProfile(name="toy", peak_gflops=2.0, bandwidth_gbs=1.0, overhead_us=5.0)
    conv, gap = analyze(TINY_CONV, hardware=toy).nodes
    # conv: 2700 FLOPs / 2e9 = 1.35 us vs 728 B / 1e9 = 0.728 us -> compute-bound, + 5 us.
    assert conv.bound == "compute"
    assert conv.latency_s == pytest.approx(1.35e-6 + 5e-6)
    assert conv.intensity == pytest.approx(2700 / 728)
    # global pool: no FLOPs, 312 B -> memory-bound, 0.312 us + 5 us.
    assert gap.bound == "memory"
    assert gap.latency_s == pytest.approx(0.312e-6 + 5e-6)
    report = analyze(TINY_CONV, hardware=toy)
    assert report.latency_est_ms == pytest.approx(1e-3 * (6.35 + 5.312))
    assert report.metrics()["latency_est_ms"] == report.latency_est_ms
    assert analyze(TINY_CONV).latency_est_ms == 0.0  # no profile, no estimate


class _PerKernel:
    """A LatencyModel that is no hardware profile: a fixed time per kernel, and a cold start."""

    name = "per-kernel"

    def __init__(self, cold_start: float = 0.0) -> None:
        self.cold_start = cold_start
        self.cold_batches: list[int] = []

    def kernel_seconds(self, kernel: Kernel) -> tuple[float, float, float]:
        return 1e-6 + kernel.bytes * 1e-12, kernel.flops * 1e-12, kernel.bytes * 1e-12

    def cold_seconds(self, kernel: Kernel) -> float:
        self.cold_batches.append(kernel.batch)
        return 1e-3


def test_any_latency_model_prices_the_kernels_not_only_a_hardware_profile() -> None:
    model: LatencyModel = _PerKernel()
    report = analyze(TINY_CONV, hardware=model, batch_size=4)
    kernels = [k for n in report.nodes for k in _kernels(TINY_CONV, n.name, 4)]
    assert report.hardware == "per-kernel"
    assert report.latency_est_ms == pytest.approx(1e3 * sum(1e-6 + k.bytes * 1e-12 for k in kernels))
    cold = _PerKernel(cold_start=0.5)
    warm_ms = report.latency_est_ms
    assert analyze(TINY_CONV, hardware=cold, batch_size=4).latency_est_ms == pytest.approx(
        warm_ms + 1e3 * 1e-3 * len(kernels)
    )
    assert cold.cold_batches == [1] * len(kernels)  # once a call, priced at batch 1


def _kernels(spec: NetSpec, name: str, batch: int) -> tuple[Kernel, ...]:
    shapes = {"input": spec.input, **spec.validate()}
    node = next(n for n in spec.nodes if n.name == name)
    return node_kernels(node, [shapes[s] for s in spec.input_names()[name]], shapes[name], batch)


def test_squeezenet_has_49x_fewer_params_than_alexnet_but_more_macs(
    reference_specs: dict[str, NetSpec],
) -> None:
    alex, squeeze = analyze(reference_specs["alexnet"]), analyze(reference_specs["squeezenet1_0"])
    assert alex.params / squeeze.params == pytest.approx(48.94, abs=0.01)
    assert squeeze.macs > alex.macs


def test_alexnet_moves_more_bytes_at_batch_1_and_squeezenet_more_at_batch_64(
    reference_specs: dict[str, NetSpec],
) -> None:
    def moved(name: str, batch: int) -> int:
        return analyze(reference_specs[name], batch_size=batch).bytes

    assert moved("alexnet", 1) > 3 * moved("squeezenet1_0", 1)  # AlexNet's 244 MB of weights dominate
    assert moved("squeezenet1_0", 64) > moved("alexnet", 64)  # then feature maps do


def test_shipped_hardware_profiles_load_and_unknown_one_is_a_config_error() -> None:
    laptop = load_hardware("laptop_cpu")
    assert (laptop.peak_gflops, laptop.bandwidth_gbs) == (384.0, 51.2)
    with pytest.raises(ConfigError, match=r"hardware 'nope' not found in .*; available: .*laptop_cpu"):
        load_hardware("nope")


@pytest.mark.parametrize(("batch", "width"), [(0, 4), (1, 0)])
def test_non_positive_batch_or_element_width_is_a_config_error(batch: int, width: int) -> None:
    with pytest.raises(ConfigError, match="must be >= 1"):
        analyze(TINY_CONV, batch_size=batch, bytes_per_element=width)
