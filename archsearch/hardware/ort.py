"""The deploy runtime: a built model exported to ONNX in memory and timed on ONNX Runtime.

``latency.runtime=onnxruntime`` measures what ships rather than eager PyTorch: ONNX Runtime
fuses batch norm into convolutions and runs its own kernels, so its latency (and its ranking
of networks) differs from torch's. The export uses torch's TorchScript-based exporter, which
works offline with a plain torch install (the dynamo exporter needs ``onnxscript``), with a
dynamic batch axis so one file serves any batch size.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archsearch.errors import ConfigError

__all__ = [
    "NCHWC_DOMAIN",
    "OPSET",
    "import_deploy",
    "nchwc_layout",
    "node_share",
    "onnx_session",
    "time_session",
    "to_onnx_bytes",
]

#: ONNX opset of every export: supported by onnxruntime >= 1.14 and torch's legacy exporter.
OPSET = 17


def import_deploy(module: str = "onnxruntime") -> Any:
    """Import ``onnx`` or ``onnxruntime`` (or a submodule), or say which extra installs it.

    Raises:
        ConfigError: the package is missing: one sentence naming ``pip install 'archsearch[deploy]'``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{module.split('.')[0]} is not installed; ONNX export and latency.runtime=onnxruntime need "
            "the deploy extra: pip install 'archsearch[deploy]'."
        ) from None


def to_onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``model`` (eval mode, on the CPU, fp32) as an ONNX file in memory, batch axis dynamic.

    Input ``x``, output ``y``; the model's training flag is restored afterwards.
    """
    import_deploy("onnx")  # the exporter imports onnx; say which extra is missing instead
    training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter announces its deprecation on every call.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, *input_shape),),
                buffer,  # type: ignore[arg-type]  # the exporter writes to any binary file object
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                opset_version=OPSET,
            )
    finally:
        model.train(training)
    return buffer.getvalue()


def onnx_session(model: bytes | str, threads: int | None = 1) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (None: its default).

    Inter-op parallelism is off (sequential execution), as a deployed single-stream model runs.
    """
    ort = import_deploy("onnxruntime")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def time_session(
    session: Any, x: Any, warmup: int, repeats: int, now: Callable[[], float] = time.perf_counter
) -> list[float]:
    """Milliseconds of each of ``repeats`` runs of ``session`` on ``x`` after ``warmup`` untimed ones."""
    feed = {session.get_inputs()[0].name: x}
    for _ in range(warmup):
        session.run(None, feed)
    samples = []
    for _ in range(repeats):
        start = now()
        session.run(None, feed)
        samples.append(1e3 * (now() - start))
    return samples


#: The ONNX domain of ONNX Runtime's blocked-layout (NCHWc) kernels.
NCHWC_DOMAIN = "com.microsoft.nchwc"


def nchwc_layout() -> tuple[int, int]:
    """ONNX Runtime's NCHWc layout on this CPU: channels per block, and the multiple of input
    channels (a block or more) that a convolution needs to run in it; ``(0, 0)`` where it has none.

    Asked of ONNX Runtime itself, whose rules change between versions and CPUs: a 1x1
    convolution's session writes its optimized graph, whose NCHWc convolution pads its weights'
    output channels to one block (16 with AVX-512, 8 with AVX2; ARM CPUs keep NCHW); then the
    least ``step`` for which one of ``block + step`` input channels is rewritten too (4 in
    ONNX Runtime 1.32, a whole block in older versions).
    """
    block = _blocked_outputs(3)
    if not block:
        return 0, 0
    step = next((s for s in (1, 2, 4, 8, 16, 32) if s < block and _blocked_outputs(block + s)), block)
    return block, step


def _blocked_outputs(channels: int) -> int:
    """The padded output channels of a ``channels``-input 1x1 convolution in ONNX Runtime's
    optimized graph, if it runs in NCHWc; else 0."""
    onnx = import_deploy("onnx")
    ort = import_deploy("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="archsearch-nchwc-") as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3  # it warns that the file is for this CPU only: so it is
        model = to_onnx_bytes(nn.Conv2d(channels, 1, 1), (channels, 4, 4))
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.domain == NCHWC_DOMAIN and node.op_type == "Conv":
            return int(weights[node.input[1]][0])
    return 0


def node_share(model: bytes, x: Any, op_type: str = "Conv", seconds: float = 0.02) -> float:
    """The share of a model's node time that ONNX Runtime's profiler puts on its ``op_type`` nodes.

    A convolution timed alone in the NCHWc layout runs between a reorder of its input into the
    layout and one of its output back, which in a network its neighbours mostly spare it: for a
    1x1 convolution they take as long as the convolution itself. Runs ``model`` on ``x`` (one
    thread, its profiler on, in a temporary folder) at least 5 times and for about ``seconds``,
    and compares the median time of each node.
    """
    ort = import_deploy("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="archsearch-profile-") as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "run")
        options.log_severity_level = 3
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)  # warm-up, left out below
        started, runs = time.perf_counter(), 0
        while runs < 5 or (time.perf_counter() - started < seconds and runs < 50):
            session.run(None, feed)
            runs += 1
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            durations.setdefault(event["name"], []).append(float(event["dur"]))
    ops = {e["name"]: e.get("args", {}).get("op_name") for e in events if e.get("cat") == "Node"}
    medians = {name: float(np.median(d[-runs:])) for name, d in durations.items()}
    total = sum(medians.values())
    mine = sum(t for name, t in medians.items() if ops.get(name) == op_type)
    return mine / total if total > 0 and mine > 0 else 1.0
