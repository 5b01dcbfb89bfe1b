"""measure_latency (timing a built model) and the kernel-level roofline behind latency_est_ms."""

from __future__ import annotations

import dataclasses
import statistics

import pytest
import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.hardware.latency import measure_latency, prepare_latency
from archsearch.hardware.profile import HardwareProfile
from archsearch.hardware.runtime import stored_in, to_memory_format
from archsearch.net import nodes as S
from archsearch.net.cost import analyze, node_kernels
from archsearch.net.kernels import KERNEL_KINDS, Kernel
from archsearch.net.model import build
from archsearch.net.spec import NetSpec
from archsearch.train.device import model_memory_format

TINY = NetSpec.from_dict(
    {
        "name": "tiny",
        "input": [1, 8, 8],
        "num_classes": 3,
        "nodes": [
            {"name": "conv1", "op": "conv", "out": 4, "kernel": 3, "bn": True},
            {"name": "fire2", "op": "fire", "squeeze": 2, "expand": {1: 3, 3: 5}},
            {"name": "head", "op": "conv", "out": "num_classes", "act": "none"},
            {"name": "gap", "op": "global_avgpool"},
        ],
    }
)


# --------------------------------------------------------------------------- measure_latency


def test_latency_is_the_median_of_positive_repeats_at_the_asked_batch_size() -> None:
    result = measure_latency(build(TINY), TINY.input, batch_size=3, threads=1, warmup=1, repeats=7)
    assert len(result.samples_ms) == 7
    assert all(s > 0 for s in result.samples_ms)
    assert result.median_ms == statistics.median(result.samples_ms)
    assert result.min_ms <= result.median_ms <= result.p90_ms <= max(result.samples_ms)
    assert result.p90_ms in result.samples_ms
    assert (result.batch_size, result.threads, result.device) == (3, 1, "cpu")
    assert result.per_image_ms == pytest.approx(result.median_ms / 3)


def test_thread_count_is_restored_afterwards_even_when_the_forward_fails() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    result = measure_latency(build(TINY), TINY.input, threads=target, warmup=0, repeats=2)
    assert result.threads == target
    assert torch.get_num_threads() == before

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(Broken(), (1, 4, 4), threads=target, warmup=1, repeats=1)
    assert torch.get_num_threads() == before


def test_model_keeps_its_training_flag_and_memory_format() -> None:
    model = build(TINY).train()
    result = measure_latency(model, TINY.input, threads=1, warmup=1, repeats=2)
    # A conv net runs channels-last ("auto", as the trainer), on a converted copy.
    assert result.memory_format == "channels_last"
    assert model.training and all(m.training for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert measure_latency(mlp, (1, 4, 4), warmup=0, repeats=1).memory_format == "contiguous"


def test_a_net_whose_every_weight_fits_both_formats_is_still_measured_channels_last() -> None:
    # 1x1 convs and a stem on one input channel: each weight passes is_contiguous() for both
    # formats, and left with its NCHW strides it made oneDNN run the whole net in NCHW.
    spec = NetSpec.from_dict(
        {
            "name": "pointwise",
            "input": [1, 8, 8],
            "num_classes": 3,
            "nodes": [
                {"name": "stem", "op": "conv", "out": 8, "kernel": 3, "bn": True},
                {"name": "fire2", "op": "fire", "squeeze": 4, "expand": {1: 8}, "bn": True},
                {"name": "head", "op": "conv", "out": "num_classes", "act": "none"},
                {"name": "gap", "op": "global_avgpool"},
            ],
        }
    )
    model = build(spec)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    seen: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    result = measure_latency(model, spec.input, batch_size=2, threads=1, warmup=0, repeats=1)
    assert result.memory_format == "channels_last" and len(seen) == 3
    assert all(stored_in(t, torch.channels_last) and not stored_in(t, torch.contiguous_format) for t in seen)
    assert all(stored_in(p, torch.contiguous_format) for p in model.parameters() if p.dim() == 4)
    assert model_memory_format(to_memory_format(model, torch.channels_last)) == torch.channels_last
    assert model_memory_format(build(spec)) == torch.contiguous_format


def test_cpu_clock_times_the_thread_and_needs_one_thread() -> None:
    result = measure_latency(build(TINY), TINY.input, threads=1, warmup=1, repeats=3, clock="cpu")
    assert result.clock == "cpu" and result.median_ms > 0
    with pytest.raises(ConfigError, match=r"clock=cpu .* needs device=cpu and threads=1"):
        measure_latency(build(TINY), TINY.input, threads=2, clock="cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"repeats": 0}, "repeats must be an integer >= 1"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"threads": 0}, "threads must be a positive integer"),
        ({"memory_format": "nhwc"}, "memory_format is 'nhwc'; allowed: auto, channels_last, contiguous"),
        ({"clock": "tsc"}, "clock is 'tsc'; allowed: wall, cpu"),
        ({"device": "warp:0"}, r"^device is 'warp:0'; allowed: auto, cpu, cuda, cuda:N, mps\.$"),
    ],
)
def test_bad_measurement_settings_are_one_sentence_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        measure_latency(build(TINY), TINY.input, **kwargs)


def test_a_prepared_model_is_converted_once_and_timed_at_any_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from archsearch.hardware import latency

    model = build(TINY)  # contiguous weights: timing channels-last needs a converted copy
    copies: list[object] = []
    real_copy = latency.copy.deepcopy

    def counted(obj: object, *args: object) -> object:
        copies.extend([obj] if obj is model else [])
        return real_copy(obj, *args)

    monkeypatch.setattr(latency.copy, "deepcopy", counted)
    prepared = prepare_latency(model, TINY.input, threads=1, clock="cpu")
    one, four = prepared.measure(1, warmup=0, repeats=3), prepared.measure(4, warmup=1, repeats=5)
    assert len(copies) == 1  # converted once, not once per measurement
    assert (one.batch_size, len(one.samples_ms), four.batch_size, len(four.samples_ms)) == (1, 3, 4, 5)
    assert (four.threads, four.device, four.memory_format, four.clock) == (1, "cpu", "channels_last", "cpu")
    assert all(s > 0 for s in one.samples_ms + four.samples_ms)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        prepared.measure(0)


# --------------------------------------------------------------------------- kernels of a node


def test_fire_node_runs_squeeze_expand_branches_and_a_concat_each_with_bn_and_activation() -> None:
    fire = S.FireNode("f", squeeze=2, expand=((1, 3), (3, 5)), bn=True)
    kernels = node_kernels(fire, [(4, 3, 3)], (8, 3, 3), batch_size=2, bytes_per_element=4)
    kinds = [k.kind for k in kernels]
    assert kinds == ["conv1x1", "batchnorm", "relu"] * 2 + ["convkxk", "batchnorm", "relu", "concat"]
    squeeze, _, _, expand1, _, _, expand3, bn3, relu3, cat = kernels
    # squeeze: 2 images x 9 pixels x 2 out x 4 in MACs; weights 8 + input 72 + output 36 elements.
    assert squeeze == Kernel(
        "conv1x1", flops=2 * 18 * 2 * 4, bytes=4 * (8 + 72 + 36), gemm=(2, 18, 4), batch=2
    )
    assert expand1.gemm == (3, 18, 2)
    assert expand3 == Kernel(
        "convkxk", flops=2 * 18 * 5 * 18, bytes=4 * (90 + 36 + 90), gemm=(5, 18, 18), batch=2, taps=9
    )
    assert all(k.batch == 2 for k in kernels)
    assert bn3.bytes == relu3.bytes == 4 * 2 * 90  # read and write the branch output
    assert cat.bytes == 4 * 2 * 2 * 72  # read the branches, write the module output


def test_sum_projects_mismatched_inputs_then_adds_and_pools_stream_in_and_out() -> None:
    add = S.AddNode("a", project=True)
    kernels = node_kernels(add, [(2, 4, 4), (6, 4, 4), (6, 4, 4)], (6, 4, 4), bytes_per_element=1)
    assert [k.kind for k in kernels] == ["conv1x1", "add", "add"]
    assert kernels[0] == Kernel("conv1x1", flops=2 * 96 * 2, bytes=12 + 32 + 96, gemm=(6, 16, 2))
    assert kernels[1].bytes == 3 * 96
    pool = node_kernels(S.MaxPoolNode("p"), [(6, 4, 4)], (6, 2, 2), batch_size=3, bytes_per_element=1)
    assert pool == (Kernel("maxpool", bytes=3 * (96 + 24), batch=3),)
    assert node_kernels(S.DropoutNode("d"), [(6, 2, 2)], (6, 2, 2)) == (Kernel("identity"),)


# --------------------------------------------------------------------------- refined roofline


def _profile() -> HardwareProfile:
    return HardwareProfile.from_dict(
        {
            "name": "hand",
            "peak_gflops": 100.0,
            "bandwidth_gbs": 10.0,
            "overhead_us": 1.0,
            "peaks": {"conv1x1": 1.0, "convkxk": 2.0},
            "overheads_us": {"conv1x1": 10.0, "convkxk": 20.0, "batchnorm": 5.0, "elementwise": 3.0},
            "bandwidths": {"relu": 1.0, "elementwise": 0.5},
            "efficiency": {"convkxk": {"m": 5.0, "k": 0.0}},
        }
    )


def test_every_kernel_pays_its_kinds_overhead_plus_its_roofline_on_its_own_peak() -> None:
    hw = _profile()
    net = NetSpec.from_dict(
        {
            "name": "hand",
            "input": [2, 2, 2],
            "num_classes": 5,
            "nodes": [
                {"name": "c", "op": "conv", "out": 5, "kernel": 3, "bn": True},
                {"name": "h", "op": "conv", "out": "num_classes", "kernel": 1, "act": "none"},
                {"name": "g", "op": "global_avgpool"},
            ],
        }
    )
    c, h, g = analyze(net, hw, batch_size=2).nodes
    # c: 3x3 conv 2->5 on 2 images of 2x2: m=5, n=8, k=18 -> 1440 FLOPs at 2 GFLOP/s x 5/(5+5)
    #    = 1.44 us (bytes 4*(90+16+40) = 584 at 10 GB/s = 0.0584 us) + 20 us overhead;
    #    batch norm: 320 B at 0.5 GB/s (elementwise) = 0.64 us + 5 us;
    #    relu: 320 B at 1 GB/s = 0.32 us + 3 us (elementwise overhead).
    assert c.latency_s == pytest.approx(((1.44 + 20) + (0.64 + 5) + (0.32 + 3)) * 1e-6)
    assert c.compute_s == pytest.approx(1.44e-6)
    assert c.memory_s == pytest.approx((0.0584 + 0.64 + 0.32) * 1e-6)
    # h: 1x1 conv 5->5 on 8 pixels: 400 FLOPs at 1 GFLOP/s = 0.4 us vs 4*(25+40+40) = 420 B
    #    at 10 GB/s = 0.042 us, + 10 us.
    assert h.latency_s == pytest.approx(10.4e-6)
    # g: 4*(40+10) = 200 B at 0.5 GB/s = 0.4 us + 3 us.
    assert g.latency_s == pytest.approx(3.4e-6)
    assert analyze(net, hw, batch_size=2).latency_est_ms == pytest.approx(1e-3 * (30.4 + 10.4 + 3.4))


def test_datasheet_profile_falls_back_to_its_scalars_for_every_kernel_kind() -> None:
    hw = HardwareProfile(name="sheet", peak_gflops=4.0, bandwidth_gbs=2.0, overhead_us=7.0)
    for kind in KERNEL_KINDS:
        assert hw.overhead_for(kind) == pytest.approx(7e-6)
        assert hw.bandwidth_for(kind) == pytest.approx(2e9)
        assert hw.gemm_efficiency(kind, 1, 1, 1) == 1.0
    assert hw.kernel_seconds(Kernel("linear", flops=8000, bytes=1000, gemm=(1, 1, 1)))[0] == pytest.approx(
        9e-6
    )


def test_a_cold_start_charges_every_batch_the_kernels_batch1_roofline_time_once() -> None:
    hw = _profile()
    cold = dataclasses.replace(hw, cold_start=0.6)
    assert HardwareProfile.from_dict(cold.to_dict()) == cold and "cold_start" not in hw.to_dict()
    kernels = [k for n, s, o in _node_shapes(TINY) for k in node_kernels(n, [s], o)]
    busy1_ms = 1e3 * sum(max(hw.kernel_seconds(k)[1:]) for k in kernels)
    for batch in (1, 64):  # the same 0.6 x batch-1 roofline time at both batches
        extra = (
            analyze(TINY, cold, batch_size=batch).latency_est_ms
            - analyze(TINY, hw, batch_size=batch).latency_est_ms
        )
        assert extra == pytest.approx(0.6 * busy1_ms, rel=1e-9)
    assert cold.cold_seconds(kernels[0]) == pytest.approx(0.6 * max(hw.kernel_seconds(kernels[0])[1:]))
    for bad in (-0.1, "lots"):
        with pytest.raises(ConfigError, match=r"key 'cold_start' must be a number >= 0"):
            HardwareProfile.from_dict({**hw.to_dict(), "cold_start": bad})


def test_efficiency_is_the_product_of_hockney_half_sizes_per_gemm_dimension() -> None:
    hw = HardwareProfile.from_dict(
        {"peak_gflops": 1, "bandwidth_gbs": 1, "efficiency": {"conv1x1": {"m": 16, "n": 8, "k": 4}}}
    )
    assert hw.gemm_efficiency("conv1x1", 16, 8, 4) == pytest.approx(1 / 8)
    assert hw.gemm_efficiency("conv1x1", 48, 24, 12) == pytest.approx(0.75**3)
    assert hw.gemm_efficiency("convkxk", 1, 1, 1) == 1.0


def test_batch_scales_the_roofline_part_while_the_fixed_overheads_stay() -> None:
    hw = _profile()
    kernels = [k for n, s, o in _node_shapes(TINY) for k in node_kernels(n, [s], o)]
    assert len(kernels) == 12  # conv+bn+relu, fire (3 convs, 3 relus, concat), head conv, pool
    fixed_ms = 1e3 * sum(hw.overhead_for(k.kind) for k in kernels)
    assert fixed_ms == pytest.approx(1e-3 * (20 + 5 + 3 + 10 + 3 + 10 + 3 + 20 + 3 + 3 + 10 + 3))
    one, many = analyze(TINY, hw, batch_size=1), analyze(TINY, hw, batch_size=64)
    assert one.latency_est_ms > fixed_ms
    assert (many.latency_est_ms - fixed_ms) / (one.latency_est_ms - fixed_ms) == pytest.approx(64, rel=0.01)
    # With an efficiency curve over n (pixels x batch), 8x8-pixel GEMMs run at half speed and
    # 64-image ones at 98.5%: their time grows 64 x 0.5 / 0.985 = 32.5x, streaming kernels' 64x.
    curved = dataclasses.replace(hw, efficiency={"conv1x1": {"n": 64}, "convkxk": {"n": 64}})
    one, many = analyze(TINY, curved, batch_size=1), analyze(TINY, curved, batch_size=64)
    assert 32.5 < (many.latency_est_ms - fixed_ms) / (one.latency_est_ms - fixed_ms) < 64
    gemm_one = sum(n.compute_s for n in one.nodes)
    assert sum(n.compute_s for n in many.nodes) == pytest.approx(gemm_one * 64 * 0.5 / (4096 / 4160))


def _node_shapes(net: NetSpec) -> list[tuple[S.Node, S.Shape, S.Shape]]:
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    return [(n, shapes[sources[n.name][0]], shapes[n.name]) for n in net.nodes]


def test_profile_round_trips_and_rejects_unknown_kinds_and_bad_numbers() -> None:
    hw = _profile()
    assert HardwareProfile.from_dict(hw.to_dict()) == hw
    base = {"peak_gflops": 1, "bandwidth_gbs": 1}
    with pytest.raises(ConfigError, match=r"key 'overheads_us' has unknown name\(s\) \['conv7x7'\]"):
        HardwareProfile.from_dict({**base, "overheads_us": {"conv7x7": 1}})
    with pytest.raises(ConfigError, match=r"key 'efficiency' has unknown class\(es\) \['relu'\]"):
        HardwareProfile.from_dict({**base, "efficiency": {"relu": {"m": 1}}})
    with pytest.raises(ConfigError, match=r"key 'efficiency.conv1x1' has unknown name\(s\) \['x'\]"):
        HardwareProfile.from_dict({**base, "efficiency": {"conv1x1": {"x": 1}}})
    with pytest.raises(ConfigError, match=r"key 'bandwidths.relu' must be > 0, got 0.0"):
        HardwareProfile.from_dict({**base, "bandwidths": {"relu": 0}})
    with pytest.raises(ConfigError, match=r"key 'overheads_us.add' must be a number, got 'fast'"):
        HardwareProfile.from_dict({**base, "overheads_us": {"add": "fast"}})
