"""Each command's --help says what the command does and lists its own keys, not Hydra's generic text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("command", "says", "keys"),
    [
        (["archsearch"], "train one network", ["model_file: null", "trainer:"]),
        (["archsearch", "+sweep=fire"], "train one network", ["objectives:", "n_trials: 30"]),
        (["archsearch.export"], "rebuild a stored study's exports", ["study:", "plots: true"]),
        (["archsearch.finalize"], "retrain every member", ["finalize:", "epochs:"]),
        (["archsearch.report"], "per-layer cost table", ["compare: null", "batch_sizes:"]),
        (["archsearch.calibrate"], "time this host's kernels", ["quick: false", "runtime: torch"]),
    ],
)
def test_help_is_the_commands_own(tmp_path: Path, command: list[str], says: str, keys: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"python -m {command[0]}:") and says in done.stdout
    assert "powered by Hydra" not in done.stdout
    assert "== Keys of this command, with their defaults ==" in done.stdout
    for key in keys:
        assert key in done.stdout
    assert list(tmp_path.iterdir()) == []  # --help writes nothing
