"""ONNX Runtime's blocked (NCHWc) layout in the latency model: which convolutions run in it,
the tables that price the rest, and the calibration that measures both."""

from __future__ import annotations

import random
import re
import tempfile
from pathlib import Path

import pytest

from archsearch.errors import ConfigError
from archsearch.hardware.gemm import runs_blocked, table_class
from archsearch.hardware.microbench import fire_gemm_shapes
from archsearch.hardware.probes import fire_probe_spec, probe_cases, probe_spec, spec_kernels
from archsearch.hardware.profile import HardwareProfile
from archsearch.net.cost import node_kernels
from archsearch.net.kernels import Kernel
from archsearch.net.model import build
from archsearch.net.nodes import ConvNode


def _conv(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> Kernel:
    node = ConvNode("k", out=cout, kernel=kernel, groups=groups, act="none")
    return node_kernels(node, [(cin, 8, 8)], (cout, 8, 8))[0]


@pytest.mark.parametrize(
    "cin, cout, groups, step, blocked",
    [
        (1, 32, 1, 4, True),  # fewer inputs than a block: read from the plain tensor
        (15, 7, 1, 4, True),
        (16, 5, 1, 4, True),  # a multiple of the step; outputs are padded
        (20, 32, 1, 4, True),  # ONNX Runtime 1.32 pads inputs in steps of 4
        (20, 32, 1, 0, False),  # older versions need whole blocks (step 0: the block)
        (48, 24, 1, 0, True),
        (71, 32, 1, 4, False),  # neither: plain NCHW (im2col and a GEMM)
        (32, 32, 32, 4, True),  # depthwise, outputs a multiple of the block
        (24, 24, 24, 4, False),  # depthwise, outputs not a multiple
        (32, 64, 2, 4, True),  # 16 in and 32 out per group
        (32, 48, 4, 4, False),  # 8 in per group
    ],
)
def test_which_convolutions_run_in_a_16_channel_blocked_layout(
    cin: int, cout: int, groups: int, step: int, blocked: bool
) -> None:
    kernel = _conv(cin, cout, 3, groups)
    assert runs_blocked(kernel, 16, step) is blocked
    assert table_class(kernel, 16, step) == ("convkxk" if blocked else "convkxk_nchw")
    assert table_class(kernel, 0) == "convkxk" and not runs_blocked(kernel, 0)  # eager torch


def test_a_linear_layer_keeps_its_table_whatever_the_layout() -> None:
    linear = Kernel("linear", flops=2 * 20 * 10, gemm=(10, 1, 20))
    assert table_class(linear, 16) == "linear"


def test_a_blocked_runtime_prices_plain_convolutions_by_their_own_table() -> None:
    rows = {"conv1x1": [[32, 64, 32, 100.0, 1]], "conv1x1_nchw": [[32, 64, 32, 50.0, 1]]}
    profile = HardwareProfile("p", 100.0, 10.0, gemm_rates=rows, nchwc_block=16, nchwc_step=4)
    assert HardwareProfile.from_dict(profile.to_dict()) == profile
    blocked, plain = _conv(36, 32), _conv(34, 32)
    rate = {k: k.flops / profile.kernel_seconds(k)[1] / 1e9 for k in (blocked, plain)}
    assert (rate[blocked], rate[plain]) == (pytest.approx(100.0), pytest.approx(50.0))
    # Without a plain table (or without a block) every convolution takes its class's table.
    only_class = HardwareProfile("p", 100.0, 10.0, gemm_rates={"conv1x1": rows["conv1x1"]}, nchwc_block=16)
    torch_like = HardwareProfile("p", 100.0, 10.0, gemm_rates=rows)
    for profile in (only_class, torch_like):
        assert plain.flops / profile.kernel_seconds(plain)[1] / 1e9 == pytest.approx(100.0)
    assert "nchwc_block" not in torch_like.to_dict()


@pytest.mark.parametrize("key", ["nchwc_block", "nchwc_step"])
@pytest.mark.parametrize("value", [-1, 2.5, True, "16"])
def test_a_bad_block_names_the_key(key: str, value: object) -> None:
    raw = {"peak_gflops": 1, "bandwidth_gbs": 1, key: value}
    with pytest.raises(ConfigError, match=re.escape(f"p key '{key}' must be an integer >= 0")):
        HardwareProfile.from_dict(raw, source="p")


def test_aligned_input_widths_cover_both_layouts_and_leave_eager_shapes_alone() -> None:
    assert fire_gemm_shapes(40, 3, 3.0) == fire_gemm_shapes(40, 3, 3.0, block=0)
    for step in (4, 0):
        shapes = fire_gemm_shapes(96, 0, 3.0, 16, step)
        blocked = sum(runs_blocked(_conv(cin, cout, kernel), 16, step) for _, cin, cout, kernel, _ in shapes)
        assert 0.5 * len(shapes) < blocked < 0.8 * len(shapes)


def test_fire_only_probes_are_all_fire_networks() -> None:
    import torch

    probes = probe_cases(8, 0, torch.channels_last, large_batch=4, fire_only=True)
    kinds = {k.kind for p in probes for k in p.kernels}
    assert kinds <= {"conv1x1", "convkxk", "batchnorm", "relu", "maxpool", "add", "concat", "identity"} | {
        "global_avgpool"
    }
    assert sum(p.batch == 4 for p in probes) == 2  # every fourth also at the large batch


def _blocked_convs_in_onnxruntime(net_spec: object) -> int:
    """How many convolutions ONNX Runtime's optimized graph of ``net_spec`` runs as NCHWc."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from archsearch.hardware.ort import NCHWC_DOMAIN, to_onnx_bytes

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "o.onnx")
        options.log_severity_level = 3
        model = to_onnx_bytes(build(net_spec), net_spec.input)  # type: ignore[attr-defined]
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    # Batch norm after an addition becomes a depthwise NCHWc conv too; our spaces fold all theirs.
    return sum(n.domain == NCHWC_DOMAIN and n.op_type == "Conv" for n in graph.node)


def test_the_blocked_convolutions_are_the_ones_onnxruntime_runs_in_nchwc() -> None:
    pytest.importorskip("onnxruntime")
    from archsearch.hardware.ort import nchwc_layout

    block, step = nchwc_layout()
    if not block:
        pytest.skip("ONNX Runtime has no blocked layout on this CPU")
    rng = random.Random(7)
    nets = [fire_probe_spec(rng, i, rng.choice((8, 28))) for i in range(8)]
    nets += [probe_spec(rng, i, (4, 40), 7) for i in range(8)]
    plain = 0
    for net in nets:
        convs = [k for k in spec_kernels(net) if k.kind in ("conv1x1", "convkxk")]
        blocked = sum(runs_blocked(k, block, step) for k in convs)
        assert _blocked_convs_in_onnxruntime(net) == blocked, net.name
        plain += len(convs) - blocked
    assert plain > 10  # the check saw both kinds


def test_an_onnxruntime_calibration_records_its_block_and_keeps_plain_tables_apart() -> None:
    pytest.importorskip("onnxruntime")
    from archsearch.hardware.calibrate import calibrate
    from archsearch.hardware.ort import nchwc_layout

    profile = calibrate(threads=1, quick=True, clock="cpu", runtime="onnxruntime")
    assert (profile.nchwc_block, profile.nchwc_step) == nchwc_layout()
    tables = set(profile.gemm_rates)
    assert tables <= {"conv1x1", "convkxk", "linear", "conv1x1_nchw", "convkxk_nchw"}
    assert set(profile.peaks) <= {"conv1x1", "convkxk", "linear"}  # plain fits: under `measured`
    assert HardwareProfile.from_dict(profile.to_dict()) == profile


def test_onnxruntime_streaming_cases_run_its_own_kernels_on_the_same_work() -> None:
    pytest.importorskip("onnxruntime")
    import numpy as np
    import torch

    from archsearch.hardware.microbench import STREAM_KINDS, stream_cases

    shape = (2, 8, 6, 6)
    eager = stream_cases(shape, torch.channels_last)
    exported = stream_cases(shape, torch.channels_last, "onnxruntime")
    assert set(exported) == set(STREAM_KINDS)
    for kind, case in exported.items():
        assert case.kernel == eager[kind].kernel, kind
        (out,) = case.fn()  # a session's outputs: numpy arrays, not eager tensors
        assert isinstance(out, np.ndarray), kind
        assert out.shape[0] == 2 and out.shape[1] == (16 if kind == "concat" else 8), kind
