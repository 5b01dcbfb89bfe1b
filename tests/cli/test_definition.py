"""A study name reused for another search is refused, naming what changed; workers may differ in threads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archsearch.cli.compose import compose_sweep
from archsearch.cli.main import run_sweep
from archsearch.errors import ConfigError
from archsearch.testing import FixedCostFit


def _run(tmp: Path, *overrides: str) -> object:
    cfg = compose_sweep(
        tmp, "data.subset=100", "trainer.epochs=1", "sampler=random", "study.n_trials=2", *overrides
    )
    return run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep.space=sr_grid", "was run with other search space (space: "),
        ("data.shape=[3,16,16]", "was run with other data (data.shape: [1, 8, 8] -> [3, 16, 16])"),
        ("constraints.params.max=20000", "was run with other constraints"),
        (
            "trainer.optimizer.lr=0.05",
            "was run with other trainer settings (trainer.optimizer.lr: 0.1 -> 0.05)",
        ),
        ("sweep.fidelity.enabled=true", "was run with other fidelity"),
    ],
)
def test_a_study_continued_as_another_search_is_refused_before_any_trial(
    tmp_path: Path, override: str, message: str
) -> None:
    first = _run(tmp_path).study  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=re.escape(message)):
        _run(tmp_path, override, "study.n_trials=4")
    assert len(first.trials) == 2  # nothing was added


def test_worker_settings_and_budget_do_not_define_a_study(tmp_path: Path) -> None:
    _run(tmp_path)
    again = _run(tmp_path, "trainer.threads=2", "study.n_trials=3", "trainer.device=cpu")
    assert len(again.study.trials) == 3  # type: ignore[attr-defined]


def test_allow_changes_continues_with_a_warning(tmp_path: Path) -> None:
    from rich.console import Console

    _run(tmp_path)
    console = Console(record=True, width=300)
    cfg = compose_sweep(
        tmp_path,
        "data.subset=100",
        "trainer.epochs=1",
        "sampler=random",
        "study.n_trials=3",
        "constraints.params.max=20000",
        "study.allow_changes=true",
    )
    result = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1), console=console)
    assert len(result.study.trials) == 3
    assert "was run with other constraints" in console.export_text()


@pytest.mark.slow
def test_a_net_file_is_data_the_environment_is_never_read_into_it(
    tmp_path: Path, archsearch_cli: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHSEARCH_TEST_SECRET", "sekret-4711")
    net = tmp_path / "net.yaml"
    net.write_text(
        "name: leak-${oc.env:ARCHSEARCH_TEST_SECRET}\ninput: [1, 8, 8]\nnum_classes: 10\nnodes:\n"
        "  - {name: c1, op: conv, out: 10, kernel: 3}\n  - {name: gap, op: global_avgpool}\n"
    )
    done = archsearch_cli.run(tmp_path, f"model_file={net}", "trainer.epochs=1", "data.subset=100")  # type: ignore[attr-defined]
    assert done.returncode == 0, done.stderr
    assert "leak-${oc.env:ARCHSEARCH_TEST_SECRET}" in done.stdout
    assert "sekret-4711" not in done.stdout + done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and b"sekret-4711" in p.read_bytes()]
    assert written == []
