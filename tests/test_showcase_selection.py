"""The showcase's choice of front members to finalize (benchmarks/showcase_report.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "showcase_report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("showcase_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_members_are_spread_over_log_sizes_not_over_ranks(report: ModuleType) -> None:
    # The earlier run's 16-member front: dense under 4K. Ranks 0, 5, 10, 15 picked 1.0K, 2.0K,
    # 10.5K and 90.5K; log-spaced targets (1.0K, 4.5K, 20K, 90.5K) pick 4.5K and 14K instead.
    sizes = [1014, 1088, 1128, 1451, 1762, 2018, 2984, 3326, 3636, 4537, 10483, 11117, 14038, 32526]
    sizes += [54331, 90516]
    picked = [sizes[i] for i in report.spread_by_size(sizes, 4)]
    assert picked == [1014, 4537, 14038, 90516]


def test_selection_keeps_the_ends_and_never_picks_twice(report: ModuleType) -> None:
    sizes = [100.0, 101.0, 102.0, 103.0, 10_000.0]
    picked = report.spread_by_size(sizes, 3)
    assert picked[0] == 0 and picked[-1] == 4 and len(set(picked)) == 3
    # Targets 100, 1000, 10000: the middle one is nearest 103, the only size left near it.
    assert report.spread_by_size(sizes, 3) == [0, 3, 4]
    assert report.spread_by_size(sizes, 5) == [0, 1, 2, 3, 4]
    assert report.spread_by_size(sizes, 9) == [0, 1, 2, 3, 4]
    assert report.spread_by_size(sizes, 1) == [4]
