"""Start-up cuts: a fresh project's MLflow store comes from a cached empty one; digits skip sklearn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archsearch.resources import ROOT
from archsearch.results.tracking import Tracker, _store_template


def test_a_fresh_store_is_seeded_from_the_empty_one_mlflow_made_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = _store_template()
    assert not template.exists()
    first = Tracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", "archsearch/a", tmp_path / "a" / "artifacts")
    first.start_study("a", {}, "a: 1\n")
    first.end_study("FINISHED")
    assert template.is_file()  # kept right after MLflow created the first store

    seeded = tmp_path / "b" / "mlflow.db"
    seeded.parent.mkdir()
    second = Tracker(f"sqlite:///{seeded}", "archsearch/b", tmp_path / "b" / "artifacts")
    run = second.start_study("b", {"x": 1}, "b: 2\n")
    second.end_study("FINISHED")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{seeded}")
    names = {e.name for e in client.search_experiments()}
    assert names == {"Default", "archsearch/b"}  # nothing of the first project came along
    assert client.get_run(run).data.params == {"x": "1"}


def test_a_store_that_exists_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "archsearch/kept", tmp_path / "artifacts").start_study("kept", {}, "")
    Tracker(f"sqlite:///{tmp_path / 'other.db'}", "archsearch/other", tmp_path / "artifacts")
    again = Tracker(uri, "archsearch/kept", tmp_path / "artifacts")
    assert again.experiment_id  # the same experiment, found again, not a new store

    from mlflow import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs([again.experiment_id])
    assert len(runs) == 1


def test_digits_are_read_without_importing_scikit_learn() -> None:
    code = (
        "import sys; from archsearch.data.datasets import load_dataset; "
        "d = load_dataset({'name': 'digits'}); "
        "print(len(d.train_y) + len(d.val_y) + len(d.test_y), 'sklearn' in sys.modules)"
    )
    assert _run_python(code) == ["1797", "False"]


def test_digits_match_scikit_learns_loader() -> None:
    from sklearn.datasets import load_digits

    from archsearch.data.datasets import _digits_table

    table, bunch = _digits_table(), load_digits()
    assert np.array_equal(table[:, :-1].reshape(-1, 8, 8), bunch.images)
    assert np.array_equal(table[:, -1], bunch.target)


def test_the_command_line_entry_points_load_without_torch() -> None:
    # report, export and the sweep's own dispatch read configs and settings first; torch (1-3 s
    # of imports) loads only when something is built, trained or timed.
    code = (
        "import sys; import archsearch.cli.main, archsearch.cli.report, archsearch.cli.export, "
        "archsearch.cli.finalize; from archsearch.train.settings import TrainerSettings; "
        "TrainerSettings(); print('torch' in sys.modules)"
    )
    assert _run_python(code) == ["False"]


def _run_python(code: str) -> list[str]:
    """The words ``python -c code`` prints in a fresh interpreter that sees this checkout."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()
