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


def test_finalize_help_lists_only_the_keys_and_groups_it_reads(tmp_path: Path) -> None:
    from archsearch.cli.finalize import FINALIZE_GROUPS, FINALIZE_KEYS

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "archsearch.finalize", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = run("data=fashion_mnist", "--help")
    assert done.returncode == 0, done.stderr
    keys_part = done.stdout.split("== Keys of this command, with their defaults ==")[1]
    keys_part, groups_part = keys_part.split("== Config groups (group=option) ==")
    top = [line.split(":")[0] for line in keys_part.splitlines() if line and not line.startswith(" ")]
    assert top == list(FINALIZE_KEYS)  # no model, hardware, sampler or cost: finalize refuses them
    assert "name: fashion_mnist" in keys_part  # the overrides given are applied
    groups = [line.split(":")[0] for line in groups_part.strip().splitlines()[: len(FINALIZE_GROUPS)]]
    assert groups == list(FINALIZE_GROUPS)
    assert "Every key above is overridable" in done.stdout

    refused = run("--help", "model=alexnet")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: finalize does not read 'model'")
    unknown = run("--help", "trainer=nope")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
