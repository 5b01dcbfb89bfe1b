"""Everything one calibration times, built before anything is timed.

:func:`calibration_cases` builds the cases of every micro-benchmark family
(:mod:`archsearch.hardware.microbench`) and the probe networks
(:mod:`archsearch.hardware.probes`); :meth:`CalibrationCases.groups` hands them to
:func:`archsearch.hardware.timing.time_groups`, which times all of them together in
interleaved rounds, so every figure of a profile describes the machine in the same phase.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from archsearch.hardware.gemm import table_class
from archsearch.hardware.microbench import (
    Case,
    GemmSample,
    call_overhead_case,
    fire_gemm_shapes,
    gemm_cases,
    linear_cases,
    overhead_cases,
    stream_cases,
)
from archsearch.hardware.probes import Probe, probe_cases
from archsearch.hardware.profile import HardwareProfile
from archsearch.hardware.timing import ROUNDS, Group

__all__ = ["CalibrationCases", "calibration_cases"]


@dataclass(frozen=True)
class CalibrationCases:
    """The cases of one calibration, by family.

    Attributes:
        single: every kernel kind on a tiny tensor (its dispatch cost), by kind.
        stream: every streaming kind on ``stream_shape``, by kind.
        stream_shape: (batch, channels, height, width) of the streaming cases.
        gemm: random convolutions of stem and Fire shapes.
        linear: random linear layers.
        probe: random probe networks (some also at a large batch).
        call: ONNX Runtime's fixed cost of one run (None on torch).
        quick: a few-second calibration (smaller budgets).
        block: channels per block of the runtime's blocked layout (0: none) and
        step: the multiple of input channels its convolutions need (0: the block), which
            together sort the convolutions into their GEMM tables.
    """

    single: dict[str, Callable[[], object]]
    stream: dict[str, Case]
    stream_shape: tuple[int, int, int, int]
    gemm: list[Case]
    linear: list[Case]
    probe: list[Probe]
    call: Callable[[], object] | None
    quick: bool
    block: int = 0
    step: int = 0

    @property
    def count(self) -> int:
        """How many cases there are."""
        rest = len(self.gemm) + len(self.linear) + len(self.probe) + (self.call is not None)
        return len(self.single) + len(self.stream) + rest

    def groups(self) -> dict[str, Group]:
        """The families as :func:`archsearch.hardware.timing.time_groups` takes them, with their
        time budgets: about 16 s in all (2 s with ``quick``), which with the untimed calls of
        eight rounds, building the cases and the matmul keeps a calibration at 24-27 s for eager
        torch and 28-30 s for ONNX Runtime (exports) on the 2-core build VM (at 10 s and 6 s for
        the convolutions and probes, four rounds took 29-31 s in a slow hour)."""
        quick = self.quick
        groups = {
            "single": Group(list(self.single.values()), 0.05, 50, 50),
            "stream": Group([c.fn for c in self.stream.values()], 0.1 * len(self.stream), 5, 30),
            "gemm": Group([c.fn for c in self.gemm], 1.0 if quick else 7.0),
            "linear": Group([c.fn for c in self.linear], 0.2 if quick else 1.0),
            # Two untimed calls a round: after one, a probe timed once or twice ran 9-16% slower
            # than a network timed 15 times in a row, as the benchmark times them (now 1-7%).
            "probe": Group([p.fn for p in self.probe if p.batch == 1], probe_budget(quick), warmup=2),
            # A large batch takes milliseconds: one timed call a round is enough.
            "probe_large": Group([p.fn for p in self.probe if p.batch > 1], large_budget(quick), 1, 10),
        }
        if self.call is not None:
            groups["call"] = Group([self.call], 0.01, 50, 50)
        return groups

    def probe_seconds(self, times: Mapping[str, Sequence[float]]) -> list[float]:
        """The probes' times (from :meth:`groups`' groups) in the order of ``probe``."""
        small, large = iter(times["probe"]), iter(times["probe_large"])
        return [next(large) if p.batch > 1 else next(small) for p in self.probe]

    def gemm_samples(
        self, gemm_s: Sequence[float], linear_s: Sequence[float], call_s: float = 0.0
    ) -> dict[str, list[GemmSample]]:
        """The timed convolutions and linear layers by GEMM table
        (:func:`archsearch.hardware.gemm.table_class`: by class, and by layout where the runtime
        has a blocked one), each one's time beyond the runtime's fixed cost per call ``call_s``
        cut to the share that is its kernel (:class:`~archsearch.hardware.microbench.Case`)."""
        by_class: dict[str, list[GemmSample]] = {}
        for case, seconds in [*zip(self.gemm, gemm_s, strict=True), *zip(self.linear, linear_s, strict=True)]:
            table = table_class(case.kernel, self.block, self.step)
            own = call_s + max(seconds - call_s, 0.0) * case.share if case.share < 1 else seconds
            by_class.setdefault(table, []).append(GemmSample(case.kernel, own))
        return by_class


def probe_budget(quick: bool) -> float:
    """Seconds the probe networks' timed calls at batch 1 share."""
    return 0.6 if quick else 5.0


def large_budget(quick: bool) -> float:
    """Seconds the probe networks' timed calls at the large batch share."""
    return 0.4 if quick else 3.5


def calibration_cases(
    quick: bool,
    seed: int,
    fmt: torch.memory_format,
    runtime: str,
    guess: HardwareProfile,
    layout: tuple[int, int] = (0, 0),
) -> CalibrationCases:
    """Build every case of a calibration on ``runtime`` (``torch`` or ``onnxruntime``).

    ``guess`` (a roofline from the large matmul and copy) decides which probes are too slow to
    time at the large batch within their share of the budget; ``layout`` is the runtime's
    blocked layout, ``(block, step)`` (:func:`archsearch.hardware.ort.nchwc_layout`; ``(0, 0)``:
    none), whose convolutions the GEMM cases cover in and out of it.

    Every fourth probe also runs at a large batch: 32 on eager torch, 64 on ONNX Runtime, whose
    fitted cost per image and roofline scale at 16 left small networks at batch 64 up to 1.4x
    high and large ones 0.9x low on the build VM (its profile is fitted jointly). Eager torch's
    in-network slowdown falls with the batch (~1.6x at 1, 1.3-1.5x at 16): fitted at 16, three
    runs put its batch-64 estimates 1.00-1.19x the measured latency, at 32 1.03-1.10x; at 64
    only five or six probes fit the budget.
    """
    ort = runtime == "onnxruntime"
    count = (12 if quick else 40) if ort else (30 if quick else 96)  # ONNX export: ~0.1 s a probe
    large_batch = 8 if quick else (64 if ort else 32)
    # A large-batch probe whose guessed time is over half its share a round is not timed there.
    share = large_budget(quick) / (count // 4) / ROUNDS
    stream_shape = (8, 64, 14, 14) if quick else (64, 64, 14, 14)
    return CalibrationCases(
        single=overhead_cases(fmt),
        stream=stream_cases(stream_shape, fmt, runtime),
        stream_shape=stream_shape,
        gemm=gemm_cases(
            fire_gemm_shapes(10 if quick else 96, seed, 0.05 if quick else 3.0, *layout), fmt, runtime, layout
        ),
        linear=linear_cases(4 if quick else 12, seed),
        probe=probe_cases(
            count,
            seed,
            fmt,
            (2, 12) if quick else (4, 64),
            (6, 8) if quick else (7, 14, 28),
            large_batch,
            lambda kernels: sum(guess.kernel_seconds(k)[0] for k in kernels) * 2 > share,
            runtime,
            fire_only=ort,
        ),
        call=call_overhead_case(fmt, runtime) if ort else None,
        quick=quick,
        block=layout[0],
        step=layout[1],
    )
