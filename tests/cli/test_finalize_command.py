"""``python -m archsearch.finalize`` refuses overrides of keys it never reads, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from archsearch.cli.finalize import FINALIZE_KEYS, check_overrides
from archsearch.errors import ConfigError


def test_the_keys_finalize_reads_pass() -> None:
    check_overrides(
        ["study.name=s", "data=digits", "+data.subset=100", "trainer.lr=0.1", "finalize.epochs=3", "seed=1"]
    )
    check_overrides(["tracking.dir=/x", "export.dir=/y", "hydra.run.dir=.", "~trainer.optimizer"])


@pytest.mark.parametrize(
    "override", ["model=alexnet", "hardware=a100", "sampler=random", "cost.batch_size=64"]
)
def test_a_key_finalize_never_reads_is_refused(override: str) -> None:
    key = override.split("=")[0].split(".")[0]
    with pytest.raises(
        ConfigError, match=rf"finalize does not read '{key}'.*it reads: {', '.join(FINALIZE_KEYS)}\."
    ):
        check_overrides([override])


def test_the_command_exits_2_with_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "archsearch.finalize", "study.name=none", "model=alexnet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: finalize does not read 'model' (a member's network is its stored spec, and nothing is "
        "searched or priced); it reads: study, data, trainer, finalize, tracking, export, seed."
    ]
    assert list(tmp_path.iterdir()) == []
