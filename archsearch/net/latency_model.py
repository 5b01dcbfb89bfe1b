"""What cost analysis needs to turn a network's kernels into seconds: a :class:`LatencyModel`.

:func:`archsearch.net.cost.analyze` prices every kernel a node launches (:mod:`archsearch.net.kernels`)
with whatever estimates a kernel's time. The calibrated roofline,
:class:`archsearch.hardware.profile.HardwareProfile`, is one such model and satisfies this Protocol
structurally (it never names it); a test double or another estimator needs only these four members.
Keeping the Protocol here lets ``net`` stay below ``hardware`` in the package's layers: net/ imports
nothing from hardware/.
"""

from __future__ import annotations

from typing import Protocol

from archsearch.net.kernels import Kernel

__all__ = ["LatencyModel"]


class LatencyModel(Protocol):
    """Anything that estimates how long one kernel takes on some machine.

    Attributes:
        name: the model's name, recorded in :attr:`archsearch.net.cost.CostReport.hardware`.
        cold_start: what each kernel pays in a network whatever the batch, as a fraction of its
            roofline time at batch 1; 0 when the model has no such term (then
            :meth:`cold_seconds` is not called).
    """

    @property
    def name(self) -> str: ...

    @property
    def cold_start(self) -> float: ...

    def kernel_seconds(self, kernel: Kernel) -> tuple[float, float, float]:
        """``(latency, compute, memory)`` seconds of ``kernel`` (its FLOPs and bytes are for its
        whole batch): the time it takes, and the compute and memory parts of its roofline."""
        ...

    def cold_seconds(self, kernel: Kernel) -> float:
        """What ``kernel``, at batch 1, adds once per call at any batch for running amid other ops."""
        ...
