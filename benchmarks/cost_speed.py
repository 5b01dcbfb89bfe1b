"""Analytic costing against counting with torch: ``analyze(squeezenet1_0)`` versus one forward pass
of the built model under ``torch.utils.flop_counter.FlopCounterMode``, in the same process.

    .venv/bin/python benchmarks/cost_speed.py [repeats]

Prints the median time of each, the ratio, and checks that both give the same MACs. Target: the
analytic cost is at least 10x faster (it needs no model, no weights and no tensors; a search
costs every candidate before deciding whether to build it). The model is built once, outside
the timed region, so the ratio is a lower bound on what analyze saves.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from archsearch.hardware.profile import load_hardware
from archsearch.net.cost import analyze
from archsearch.net.model import build
from archsearch.net.spec import load_spec
from archsearch.resources import CONF_DIR

TARGET = 10.0


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports, allocator, first-call dispatch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeats: int = 200) -> None:
    spec = load_spec(CONF_DIR / "model" / "squeezenet1_0.yaml")
    hardware = load_hardware("laptop_cpu")
    net = build(spec).eval()
    x = torch.randn(1, *spec.input)

    def counted_forward() -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
        return int(counter.get_total_flops()) // 2

    analytic = median_seconds(lambda: analyze(spec, hardware), repeats)
    measured = median_seconds(counted_forward, max(5, repeats // 20))
    macs_analytic, macs_torch = analyze(spec).macs, counted_forward()
    ratio = measured / analytic
    verdict = "met" if ratio >= TARGET else "MISSED"
    same = "equal" if macs_analytic == macs_torch else "DIFFERENT"
    print(f"squeezenet1_0 at 3x224x224, batch 1, {torch.get_num_threads()} torch threads")
    print(f"analyze(spec, laptop_cpu):      {analytic * 1e3:9.3f} ms  (median of {repeats})")
    print(f"forward under FlopCounterMode:  {measured * 1e3:9.3f} ms  (median of {max(5, repeats // 20)})")
    print(f"ratio: analytic is {ratio:.1f}x faster (target >= {TARGET:.0f}x: {verdict})")
    print(f"MACs: analytic {macs_analytic:,}, FlopCounterMode {macs_torch:,} ({same})")
    if macs_analytic != macs_torch:
        raise SystemExit(1)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
