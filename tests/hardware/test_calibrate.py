"""python -m archsearch.calibrate: the profile it writes, what it leaves alone, and its fits."""

from __future__ import annotations

import dataclasses
import inspect
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from archsearch.errors import ConfigError
from archsearch.hardware.calibrate import CalibrateConfig, calibrate, run
from archsearch.hardware.fitting import (
    ContextFit,
    fit_context_overheads,
    fit_gemm_class,
    fit_gemm_lines,
    fit_gemm_tables,
)
from archsearch.hardware.gemm import LINE_FIELDS
from archsearch.hardware.microbench import GemmSample
from archsearch.hardware.probes import RUNTIME_FUSED, fire_probe_spec, in_networks, probe_spec, spec_kernels
from archsearch.hardware.profile import HardwareProfile, interpolate_rate, load_hardware
from archsearch.net.cost import node_kernels
from archsearch.net.kernels import GEMM_KINDS, KERNEL_KINDS, Kernel
from archsearch.net.model import build
from archsearch.net.nodes import ConvNode
from archsearch.resources import ROOT


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.slow
def test_quick_cli_run_writes_only_the_named_yaml_which_load_hardware_reads_back(tmp_path: Path) -> None:
    work, outdir = tmp_path / "cwd", tmp_path / "conf"
    work.mkdir()
    outdir.mkdir()
    (work / "keep.txt").write_text("untouched")
    out = outdir / "mybox.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "archsearch.calibrate", f"out={out}", "quick=true", "threads=1"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _tree(work) == {"keep.txt"}  # no outputs/, .hydra/ or logs
    assert _tree(outdir) == {"mybox.yaml"}  # no temp file left behind
    assert yaml.safe_load(done.stdout) == yaml.safe_load(out.read_text())  # printed too
    profile = load_hardware(out)
    assert profile.name == "mybox" and profile.calibrated
    assert set(profile.overheads_us) == set(KERNEL_KINDS)
    assert set(profile.peaks) == set(profile.efficiency) == set(GEMM_KINDS)
    assert all(v > 0 for v in profile.bandwidths.values())
    measured = profile.extra["measured"]
    assert measured["threads"] == 1 and measured["memory_format"] == "channels_last"
    scale = measured["in_network_overhead"]["busy_scale"]
    assert measured["matmul_gflops"]["fp32"] / scale == pytest.approx(profile.peak_gflops, rel=0.01)
    assert profile.peak_gflops > 0 and scale > 0


def test_unknown_key_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "archsearch.calibrate", "thread=2"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown key 'thread'; allowed: out, name, threads, quick, seed, memory_format, clock, "
        "device, runtime."
    ]
    assert _tree(tmp_path) == set()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"out": "conf/hardware/box.txt"}, "must be a .yaml or .yml path"),
        ({"out": "no/such/dir/box.yaml"}, "folder no/such/dir does not exist"),
        ({"threads": "two"}, "threads must be a positive integer or null, got 'two'"),
        ({"quick": "yes"}, "quick must be true or false"),
        ({"clock": "cpu", "threads": 2, "quick": True}, r"clock=cpu .* needs threads=1 \(got 2\)"),
        ({"memory_format": "nhwc"}, "memory_format is 'nhwc'"),
    ],
)
def test_bad_settings_fail_before_measuring_and_write_nothing(
    raw: dict, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "hardware").mkdir(parents=True)
    with pytest.raises(ConfigError, match=message):
        run(CalibrateConfig.from_mapping(raw))
    assert _tree(tmp_path) == {"conf", "conf/hardware"}


def test_gemm_fit_recovers_the_roofline_that_generated_the_times() -> None:
    rng = random.Random(0)
    truth = HardwareProfile(
        name="truth",
        peak_gflops=100.0,
        bandwidth_gbs=10.0,
        peaks={"convkxk": 80.0},
        overheads_us={"convkxk": 5.0},
        bandwidths={"convkxk": 12.0},
        efficiency={"convkxk": {"m": 16.0, "n": 50.0, "k": 30.0}},
    )
    samples = []
    for _ in range(40):
        m, n, k = rng.randint(8, 256), rng.choice((16, 49, 196, 3136, 12544)), 9 * rng.randint(1, 128)
        kernel = Kernel(
            "convkxk", flops=2 * m * n * k, bytes=4 * (m * k + n * k // 9 + m * n), gemm=(m, n, k)
        )
        samples.append(GemmSample(kernel, truth.kernel_seconds(kernel)[0]))
    fit = fit_gemm_class(samples, overhead_us=5.0, peak_gflops=100.0, bandwidth_gbs=10.0)
    assert fit["median_ape"] < 0.01
    assert fit["gflops"] == pytest.approx(80.0, rel=0.05)
    assert fit["half"]["m"] == pytest.approx(16.0, rel=0.1)


def test_in_network_fit_recovers_scale_factor_and_extra_per_kernel() -> None:
    rng = np.random.default_rng(0)
    single = {kind: float(i + 1) for i, kind in enumerate(KERNEL_KINDS)}
    counts = rng.integers(0, 6, size=(30, len(KERNEL_KINDS))).astype(float)
    busy = rng.uniform(1e-5, 5e-3, size=30)  # batch-1 probes and large-batch ones alike
    per_kernel = np.array([2.5 * single[k] + 4.0 for k in KERNEL_KINDS]) * 1e-6
    fit = fit_context_overheads(counts, single, busy, 1.3 * busy + counts @ per_kernel)
    assert (fit.factor, fit.extra_us) == (pytest.approx(2.5, rel=1e-3), pytest.approx(4.0, rel=1e-3))
    assert fit.busy_scale == pytest.approx(1.3, rel=1e-3)
    assert fit.overheads_us["batchnorm"] == pytest.approx(2.5 * single["batchnorm"] + 4.0, rel=1e-3)
    assert fit.median_ape < 1e-6


@pytest.mark.parametrize("joint", [False, True])
@pytest.mark.parametrize("fit_scale", [False, True])
def test_large_batch_probes_fit_what_each_kernel_adds_per_image(fit_scale: bool, joint: bool) -> None:
    # In turns (eager torch) or all together (ONNX Runtime), the fit recovers every term.
    rng = np.random.default_rng(2)
    single = {kind: float(i + 1) for i, kind in enumerate(KERNEL_KINDS)}
    counts = rng.integers(0, 6, size=(40, len(KERNEL_KINDS))).astype(float)
    batch = np.where(np.arange(40) % 4 == 0, 16, 1)
    busy = rng.uniform(1e-5, 1e-4, size=40) * batch
    per_kernel = np.array([1.5 * single[k] + 2.0 for k in KERNEL_KINDS]) * 1e-6
    scale = 1.2 if fit_scale else 1.0
    measured = scale * busy + counts @ per_kernel + counts.sum(axis=1) * batch * 0.7e-6
    fit = fit_context_overheads(counts, single, busy, measured, fit_scale, batch, joint)
    assert (fit.factor, fit.extra_us) == (pytest.approx(1.5, rel=1e-2), pytest.approx(2.0, rel=2e-2))
    assert fit.per_image_us == pytest.approx(0.7, rel=1e-2)
    assert fit.busy_scale == pytest.approx(scale, rel=1e-2)
    # Without large-batch probes there is nothing to fit it from.
    small = batch == 1
    assert fit_context_overheads(counts[small], single, busy[small], measured[small]).per_image_us == 0.0


def test_without_a_cost_per_kernel_every_overhead_is_a_multiple_of_the_single_op_cost() -> None:
    # Probes whose overheads are 2 x single + 0.5 us: nearly collinear columns, on which a
    # free fit may put everything on the fixed cost; per_kernel=False keeps that at 0.
    rng = np.random.default_rng(4)
    single = {kind: 5.0 + 0.1 * i for i, kind in enumerate(KERNEL_KINDS)}
    counts = rng.integers(0, 6, size=(30, len(KERNEL_KINDS))).astype(float)
    busy = rng.uniform(1e-5, 1e-4, size=30)
    measured = busy + counts @ np.array([2.0 * single[k] + 0.5 for k in KERNEL_KINDS]) * 1e-6
    fit = fit_context_overheads(counts, single, busy, measured, fit_scale=False, per_kernel=False)
    assert fit.extra_us == 0.0
    assert fit.factor == pytest.approx(2.1, rel=0.03)  # the 0.5 us folded into the factor
    assert fit.overheads_us == {k: pytest.approx(fit.factor * single[k], rel=1e-3) for k in KERNEL_KINDS}


@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_the_staged_fit_recovers_a_cold_start_paid_once_a_call_at_every_batch(scale: float) -> None:
    # Eager torch's model: kernels at batch 1 run 1.6x their roofline time (with a roofline
    # scale: 1.3 + 0.6 - 1), and a large batch pays the 0.6 x batch-1 time once, not per image.
    rng = np.random.default_rng(5)
    single = {kind: float(i + 1) for i, kind in enumerate(KERNEL_KINDS)}
    counts = rng.integers(0, 6, size=(48, len(KERNEL_KINDS))).astype(float)
    batch = np.where(np.arange(48) % 4 == 0, 16, 1)
    busy1 = rng.uniform(2e-5, 2e-4, size=48)
    busy = busy1 * batch * rng.uniform(0.6, 1.0, size=48)  # GEMMs grow less than the batch
    per_call = counts @ np.array([1.5 * single[k] for k in KERNEL_KINDS]) * 1e-6
    measured = scale * busy + (1.6 - scale) * busy1 + per_call + counts.sum(axis=1) * batch * 0.4e-6
    fit = fit_context_overheads(
        counts, single, busy, measured, scale > 1, batch, per_kernel=False, busy1_s=busy1
    )
    assert (fit.cold_start, fit.factor) == (
        pytest.approx(1.6 - scale, rel=3e-2),
        pytest.approx(1.5, rel=2e-2),
    )
    assert (fit.per_image_us, fit.busy_scale) == (
        pytest.approx(0.4, rel=3e-2),
        pytest.approx(scale, rel=1e-2),
    )
    assert fit.extra_us == 0.0
    assert fit_context_overheads(counts, single, busy, measured, False, batch).cold_start == 0.0


def test_a_profile_charges_each_kernel_its_cost_per_image_of_the_batch() -> None:
    profile = HardwareProfile("p", 100.0, 10.0, overheads_us={"relu": 2.0}, per_image_us={"relu": 0.5})
    assert HardwareProfile.from_dict(profile.to_dict()) == profile
    one, many = (profile.kernel_seconds(Kernel("relu", batch=b))[0] for b in (1, 64))
    assert (one, many) == (pytest.approx(2.5e-6), pytest.approx(34e-6))
    assert profile.kernel_seconds(Kernel("add", batch=64))[0] == 0.0  # no entry: no cost per image
    with pytest.raises(ConfigError, match=r"'per_image_us.relu' must be >= 0"):
        HardwareProfile.from_dict({**profile.to_dict(), "per_image_us": {"relu": -1}})


def test_a_probe_faster_than_its_roofline_does_not_collapse_the_fit() -> None:
    rng = np.random.default_rng(1)
    single = {kind: float(i + 1) for i, kind in enumerate(KERNEL_KINDS)}
    counts = rng.integers(1, 6, size=(30, len(KERNEL_KINDS))).astype(float)
    busy = rng.uniform(1e-5, 1e-4, size=30)
    per_kernel = np.array([2.5 * single[k] + 4.0 for k in KERNEL_KINDS]) * 1e-6
    measured = busy + counts @ per_kernel
    measured[7] = 0.5 * busy[7]  # measured faster than its roofline alone
    fit = fit_context_overheads(counts, single, busy, measured)
    # Fitting residuals (measured - roofline) once weighed such a probe a million-fold: factor 0.002.
    assert fit.factor == pytest.approx(2.5, rel=0.05)
    assert fit.median_ape < 0.01


def test_a_fit_whose_roofline_explains_nothing_keeps_the_micro_benchmark_rates() -> None:
    single = {kind: 1.0 for kind in KERNEL_KINDS}
    counts = np.eye(len(KERNEL_KINDS)) + 1
    busy = np.full(len(KERNEL_KINDS), 1e-9)  # negligible next to the overheads
    fit = fit_context_overheads(counts, single, busy, counts @ np.full(len(KERNEL_KINDS), 3e-6))
    assert fit.busy_scale == 1.0
    assert fit.factor + fit.extra_us == pytest.approx(3.0, rel=0.01)


def test_probe_networks_build_and_together_run_every_kernel_kind() -> None:
    rng = random.Random(3)
    seen: set[str] = set()
    for i in range(40):
        net = probe_spec(rng, i, (4, 64), rng.choice((7, 14)))
        build(net)  # every probe is a valid, buildable network
        seen |= {k.kind for k in spec_kernels(net)}
    assert seen == set(KERNEL_KINDS)


def test_fire_probes_are_fire_module_networks_that_build() -> None:
    rng = random.Random(5)
    ops: set[str] = set()
    for i in range(30):
        net = fire_probe_spec(rng, i, rng.choice((8, 28, 32)))
        build(net)
        ops |= {n.op for n in net.nodes}
        assert net.nodes[0].op == "conv" and any(n.op == "fire" for n in net.nodes)
    assert ops == {"conv", "fire", "maxpool", "add", "dropout", "global_avgpool"}


def test_an_onnxruntime_calibration_times_probes_there_and_prices_fused_kernels_at_nothing() -> None:
    pytest.importorskip("onnxruntime")
    profile = calibrate(threads=1, quick=True, clock="cpu", runtime="onnxruntime")
    measured = profile.extra["measured"]
    assert measured["runtime"] == "onnxruntime" and "runtime=onnxruntime" in measured["tool"]
    assert "onnxruntime" in profile.description
    for kind in RUNTIME_FUSED["onnxruntime"]:  # folded into the conv: no launch, no traffic
        assert profile.overheads_us[kind] == 0.0
        assert profile.kernel_seconds(Kernel(kind, bytes=10**6))[0] < 1e-8
    assert profile.kernel_seconds(Kernel("add", bytes=10**6))[0] > 1e-6  # not fused: still costs
    assert 0 < measured["in_network_overhead"]["busy_scale"] <= 20


def test_the_function_and_the_command_share_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    command = {f.name: f.default for f in dataclasses.fields(CalibrateConfig)}
    function = inspect.signature(calibrate).parameters
    assert {k: function[k].default for k in command if k != "out"} == {
        k: v for k, v in command.items() if k != "out"
    }
    assert command["device"] == "auto" and CalibrateConfig().profile_name == "auto"
    assert CalibrateConfig(out="conf/hardware/mybox.yaml").profile_name == "mybox"
    assert CalibrateConfig.from_mapping({}) == CalibrateConfig()  # a key left out: its field's default
    # calibrate() names its profile as a bare `python -m archsearch.calibrate` does.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen: list[tuple[str, bool]] = []

    class Seen(Exception):
        pass

    def stop(name: str, quick: bool, *_: Any) -> Any:
        seen.append((name, quick))
        raise Seen  # nothing measured

    monkeypatch.setattr("archsearch.hardware.calibrate.measure_cpu", stop)
    with pytest.raises(Seen):
        calibrate(quick=True)
    assert seen == [("auto", True)]


def test_calibrate_refuses_an_unknown_runtime_before_measuring() -> None:
    with pytest.raises(ConfigError, match="runtime is 'tflite'; allowed: torch, onnxruntime"):
        calibrate(threads=1, quick=True, runtime="tflite")


def test_a_gemm_is_priced_at_the_rate_of_its_nearest_measured_shapes() -> None:
    rows = [[16, 784, 9, 2.0], [64, 50176, 25, 40.0], [32, 196, 288, 20.0], [128, 12544, 576, 80.0]]
    profile = HardwareProfile.from_dict(
        {"peak_gflops": 100, "bandwidth_gbs": 1e6, "gemm_rates": {"convkxk": rows}}, source="test"
    )
    assert HardwareProfile.from_dict(profile.to_dict()) == profile  # the YAML round trip keeps them
    exact = Kernel("convkxk", flops=2 * 64 * 50176 * 25, gemm=(64, 50176, 25))
    assert profile.kernel_seconds(exact)[1] == pytest.approx(exact.flops / 40e9, rel=0.02)
    between = interpolate_rate(rows, (48, 20000, 40))
    assert min(r[3] for r in rows) < between < max(r[3] for r in rows)
    # A class without measured rows keeps the peak-and-curve model.
    linear = Kernel("linear", flops=2 * 10**6, gemm=(10, 1000, 100))
    assert profile.kernel_seconds(linear)[1] == pytest.approx(2e6 / 100e9)


def _timed_convs(seconds: Callable[[int, int, int, int, int], float]) -> list[GemmSample]:
    """Convs of random Fire shapes (batch, cin, cout, kernel, side) with the times ``seconds`` gives."""
    rng = random.Random(4)
    samples = []
    for _ in range(60):
        batch, cin, cout = rng.choice((1, 8, 64)), rng.randint(2, 128), rng.randint(2, 128)
        kernel, side = rng.choice((3, 5)), rng.choice((4, 7, 14, 28))
        node = ConvNode("k", out=cout, kernel=kernel, act="none")
        k = node_kernels(node, [(cin, side, side)], (cout, side, side), batch)[0]
        samples.append(GemmSample(k, seconds(batch, cin, cout, kernel, side)))
    return samples


def test_lines_recover_fixed_and_per_image_costs_and_the_vector_block_of_the_output_channels() -> None:
    def seconds(batch: int, cin: int, cout: int, kernel: int, side: int) -> float:
        # 5 us dispatch (priced apart), then 3 us + 0.5 us an image + 16-padded flops at 50 GFLOP/s
        padded = 2 * batch * side * side * cin * kernel * kernel * 16 * -(-cout // 16)
        return 5e-6 + 3e-6 * (kernel == 3) + 4e-6 * (kernel == 5) + 0.5e-6 * batch + padded / 50e9

    samples = _timed_convs(seconds)
    rows, error = fit_gemm_lines(samples, overhead_us=5.0)
    assert error < 1e-3
    assert [r[:2] for r in rows] == [[9.0, 16.0], [25.0, 16.0]]
    assert [r[2] for r in rows] == [pytest.approx(3.0, rel=0.01), pytest.approx(4.0, rel=0.01)]
    assert all(r[3] == pytest.approx(0.5, rel=0.01) and r[4] == pytest.approx(50.0, rel=0.01) for r in rows)
    # A 17-channel conv costs what a 32-channel one does; the rate table cannot know that.
    tables = fit_gemm_tables({"convkxk": samples}, {"convkxk": 5.0}, 100.0, 10.0)
    assert tables.lines["convkxk"] == rows
    assert tables.errors["convkxk"]["lines"] < tables.errors["convkxk"]["rates"]
    profile = HardwareProfile("p", 100.0, 10.0, gemm_lines=tables.lines)
    assert HardwareProfile.from_dict(profile.to_dict()) == profile
    node = ConvNode("k", out=17, kernel=3, act="none")
    k17 = node_kernels(node, [(8, 7, 7)], (17, 7, 7), 8)[0]
    k32 = node_kernels(dataclasses.replace(node, out=32), [(8, 7, 7)], (32, 7, 7), 8)[0]
    assert profile.kernel_seconds(k17)[1] == pytest.approx(profile.kernel_seconds(k32)[1])
    assert profile.kernel_seconds(k17)[1] == pytest.approx(seconds(8, 8, 17, 3, 7) - 5e-6, rel=0.01)


def test_lines_recover_the_operand_term_and_price_it_apart_from_the_images() -> None:
    # A plain-layout convolution builds its k x n im2col matrix: 4-byte elements at 2 GB/s,
    # next to 1 us + 0.2 us an image and unpadded flops at 80 GFLOP/s.
    def seconds(batch: int, cin: int, cout: int, kernel: int, side: int) -> float:
        k, n = cin * kernel * kernel, batch * side * side
        return 5e-6 + 1e-6 + 0.2e-6 * batch + 2 * cout * n * k / 80e9 + 4 * k * n / 2e9

    samples = _timed_convs(seconds)
    rows, error = fit_gemm_lines(samples, overhead_us=5.0)
    assert error < 1e-3
    for row in rows:
        assert row[1] == 1.0 and len(row) == len(LINE_FIELDS)
        assert row[2:] == [pytest.approx(v, rel=0.01) for v in (1.0, 0.2, 80.0, 2.0)]
    profile = HardwareProfile("p", 100.0, 10.0, gemm_lines={"convkxk": rows})
    wide = node_kernels(ConvNode("k", out=16, kernel=5, act="none"), [(30, 14, 14)], (16, 14, 14), 64)[0]
    assert profile.kernel_seconds(wide)[1] == pytest.approx(seconds(64, 30, 16, 5, 14) - 5e-6, rel=0.01)
    # A profile written before the term (five numbers a row) prices without it.
    old = HardwareProfile("p", 100.0, 10.0, gemm_lines={"convkxk": [r[:5] for r in rows]})
    assert old.kernel_seconds(wide)[1] == pytest.approx(
        seconds(64, 30, 16, 5, 14) - 5e-6 - 4 * 750 * 64 * 196 / 2e9, rel=0.01
    )


@pytest.mark.parametrize("row", [[9.0, 16.0, 3.0, 0.5, 50.0], [9.0, 16.0, 3.0, 0.5, 50.0, 2.0]])
def test_the_in_network_scale_stretches_every_term_of_a_line(row: list[float]) -> None:
    roofline = HardwareProfile("p", 100.0, 10.0, gemm_lines={"convkxk": [row]})
    context = ContextFit(0.0, 0.0, dict.fromkeys(KERNEL_KINDS, 0.0), 0.0, busy_scale=2.0, per_image_us=0.0)
    scaled, _ = in_networks(roofline, context, ())
    conv = node_kernels(ConvNode("k", out=24, kernel=3, act="none"), [(30, 14, 14)], (24, 14, 14), 64)[0]
    assert scaled.kernel_seconds(conv)[1] == pytest.approx(2 * roofline.kernel_seconds(conv)[1], rel=1e-3)


def test_the_rate_table_is_kept_where_the_timings_follow_no_line() -> None:
    shuffled = random.Random(9)
    samples = _timed_convs(lambda *_shape: shuffled.uniform(1e-5, 1e-3))
    tables = fit_gemm_tables({"convkxk": samples}, {"convkxk": 1.0}, 100.0, 10.0)
    assert "convkxk" in tables.rates
    assert ("convkxk" in tables.lines) == (
        tables.errors["convkxk"]["lines"] < tables.errors["convkxk"]["rates"]
    )


@pytest.mark.parametrize(
    "lines, words",
    [
        ({"conv3d": [[9, 16, 1, 0, 50]]}, "unknown class 'conv3d'"),
        ({"convkxk": [[9, 16, 1, 0]]}, f"[{', '.join(LINE_FIELDS)}] rows"),
        ({"convkxk": [[9, 16, 1, 0, 50, 2, 1]]}, f"[{', '.join(LINE_FIELDS)}] rows"),
        ({"convkxk": [[9, 16, 1, 0, 50, -2]]}, "the times and operand_gbs >= 0"),
        ({"convkxk": [[9, 0, 1, 0, 50]]}, "taps, block and gflops > 0"),
        ({"convkxk": [[9, 16, -1, 0, 50]]}, "the times and operand_gbs >= 0"),
    ],
)
def test_bad_gemm_lines_name_the_key(lines: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        HardwareProfile.from_dict({"peak_gflops": 1, "bandwidth_gbs": 1, "gemm_lines": lines}, source="p")


def test_rows_with_a_batch_price_a_gemm_from_shapes_run_at_its_batch() -> None:
    # The same GEMM (64 output channels, 3136 pixels, 64 deep) as one 56x56 image and as 64
    # images of 7x7: the per-image loop makes the second slower, so rows keep their batch.
    rows = [[64, 3136, 64, 100.0, 1], [64, 3136, 64, 60.0, 64], [64, 49, 64, 20.0, 1]]
    assert interpolate_rate(rows, (64, 3136, 64), batch=64) == pytest.approx(60.0, rel=1e-3)
    assert interpolate_rate(rows, (64, 3136, 64), batch=1) == pytest.approx(100.0, rel=1e-3)
    # Rows without a batch (older profiles) cannot tell the two apart.
    blind = interpolate_rate([r[:4] for r in rows], (64, 3136, 64), batch=64)
    assert blind == pytest.approx((100.0 * 60.0) ** 0.5, rel=1e-2)
    profile = HardwareProfile("p", 100.0, 10.0, gemm_rates={"conv1x1": rows})
    kernel = Kernel("conv1x1", flops=2 * 64 * 3136 * 64, gemm=(64, 3136, 64))
    one, many = (profile.kernel_seconds(dataclasses.replace(kernel, batch=b))[1] for b in (1, 64))
    assert many / one == pytest.approx(100.0 / 60.0, rel=1e-3)


@pytest.mark.parametrize(
    "rates, words",
    [
        ({"conv7x7": [[1, 1, 1, 1.0]]}, "unknown class 'conv7x7'"),
        ({"conv1x1": [[1, 1, 1]]}, "'gemm_rates.conv1x1' must be a non-empty list of [m, n, k, gflops]"),
        ({"conv1x1": [[1, 1, 1, 0]]}, "rows (all alike) of positive numbers"),
        ({"conv1x1": [[1, 1, 1, 1.0], [1, 1, 1, 1.0, 8]]}, "or [m, n, k, gflops, batch] rows (all alike)"),
    ],
)
def test_bad_gemm_rates_name_the_key(rates: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        HardwareProfile.from_dict({"peak_gflops": 1, "bandwidth_gbs": 1, "gemm_rates": rates}, source="p")


def test_a_calibration_whose_fit_puts_no_time_on_the_roofline_is_refused() -> None:
    """On a busy machine the network fit can put the roofline's scale at ~0: dividing the peaks by
    it crashed (ZeroDivisionError); it is refused with one sentence instead."""
    from archsearch.errors import ArchsearchError
    from archsearch.hardware.fitting import ContextFit
    from archsearch.hardware.probes import in_networks
    from archsearch.hardware.profile import load_hardware

    with pytest.raises(ArchsearchError, match=r"roofline scale of 0, .* too busy to time kernels"):
        context = ContextFit(factor=1.0, extra_us=0.0, overheads_us={}, median_ape=0.0, busy_scale=0.0)
        in_networks(load_hardware("laptop_cpu"), context, ())
