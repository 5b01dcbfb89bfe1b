"""The allowed values of the measurement settings, in a module that imports nothing heavy.

Settings classes check their keys against these when a config is read, long before (and often
without) anything imports torch; :mod:`archsearch.hardware.runtime` and
:mod:`archsearch.hardware.latency` use the same tuples.
"""

from __future__ import annotations

__all__ = ["CLOCKS", "MEMORY_FORMATS", "RUNTIMES"]

#: Activation layouts: ``auto`` (channels-last for conv nets, as the trainer runs them) or a fixed one.
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
#: ``wall``: elapsed time; ``cpu``: the calling thread's CPU time (one thread only).
CLOCKS = ("wall", "cpu")
#: ``torch``: eager PyTorch, as trained; ``onnxruntime``: the model exported to ONNX (fp32) and
#: run by ONNX Runtime's CPU provider, as deployed (:mod:`archsearch.hardware.ort`).
RUNTIMES = ("torch", "onnxruntime")
