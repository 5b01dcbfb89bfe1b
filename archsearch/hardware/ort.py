"""The deploy runtime: a built model exported to ONNX in memory and timed on ONNX Runtime.

``latency.runtime=onnxruntime`` measures what ships rather than eager PyTorch: ONNX Runtime
fuses batch norm into convolutions and runs its own kernels, so its latency (and its ranking
of networks) differs from torch's. The export uses torch's TorchScript-based exporter, which
works offline with a plain torch install (the dynamo exporter needs ``onnxscript``), with a
dynamic batch axis so one file serves any batch size.
"""

from __future__ import annotations

import io
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.errors import ConfigError

__all__ = ["OPSET", "import_deploy", "nchwc_block", "onnx_session", "time_session", "to_onnx_bytes"]

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


def nchwc_block() -> int:
    """Channels per block of ONNX Runtime's NCHWc layout on this CPU; 0 where it has none.

    Asked of ONNX Runtime itself: a one-output 1x1 convolution's session writes its optimized
    graph, whose NCHWc convolution pads the weights' output channels to one block (16 with
    AVX-512, 8 with AVX2; ARM CPUs keep NCHW).
    """
    onnx = import_deploy("onnx")
    ort = import_deploy("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="archsearch-nchwc-") as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3  # it warns that the file is for this CPU only: so it is
        ort.InferenceSession(
            to_onnx_bytes(nn.Conv2d(3, 1, 1), (3, 4, 4)), options, providers=["CPUExecutionProvider"]
        )
        graph = onnx.load(options.optimized_model_filepath).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.domain == NCHWC_DOMAIN and node.op_type == "Conv":
            return int(weights[node.input[1]][0])
    return 0
