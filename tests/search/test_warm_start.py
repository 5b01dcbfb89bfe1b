"""Warm starts: a new study seeded with another study's front or the space's named points."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from archsearch.cli.compose import compose_sweep
from archsearch.cli.main import run_sweep
from archsearch.errors import ConfigError
from archsearch.results.front import front_trials
from archsearch.search.space import load_space, space_from_dict
from archsearch.search.warm_start import WarmStartSettings
from archsearch.testing import FixedCostFit


def _run(tmp: Path, *overrides: str) -> object:
    cfg = compose_sweep(tmp, "data.subset=100", "trainer.epochs=1", "sampler=random", *overrides)
    return run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))


def test_a_new_study_starts_from_named_points_and_another_studys_front(tmp_path: Path) -> None:
    old = _run(tmp_path, "study.name=old", "study.n_trials=6").study  # type: ignore[attr-defined]
    front = front_trials(old)
    new = _run(
        tmp_path,
        "study.name=new",
        "study.n_trials=8",
        "warm_start.study=old",
        "warm_start.members=2",
        "warm_start.points=[squeezenet1_1]",
    ).study  # type: ignore[attr-defined]
    trials = new.trials
    points = load_space("fire").points
    assert trials[0].user_attrs["warm_start"] == "point:squeezenet1_1"
    assert trials[0].params == points["squeezenet1_1"]
    seeded = [t for t in trials if str(t.user_attrs.get("warm_start", "")).startswith("study:old#")]
    assert len(seeded) == min(2, len(front))
    by_number = {t.number: t for t in front}
    for t in seeded:
        assert t.params == by_number[int(t.user_attrs["warm_start"].split("#")[1])].params
    assert len(trials) == 8  # the seeds count against study.n_trials
    # Rerunning the command resumes: nothing is enqueued again.
    again = _run(tmp_path, "study.name=new", "study.n_trials=10", "warm_start.points=[squeezenet1_1]")
    assert sum("warm_start" in t.user_attrs for t in again.study.trials) == len(seeded) + 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("warm_start.points=[alexnet]", "names no point 'alexnet'; allowed: squeezenet1_0"),
        ("warm_start.study=missing", "warm_start.study='missing' is not in the storage"),
        ("warm_start.members=0", "warm_start.members must be"),
        ("warm_start.study=fire", "is this study"),
    ],
)
def test_bad_warm_starts_are_one_sentence_and_write_nothing(
    tmp_path: Path, override: str, message: str
) -> None:
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'other.db'}", study_name="x")
    with pytest.raises(ConfigError, match=re.escape(message)):
        _run(tmp_path, "study.n_trials=2", override, f"study.storage=sqlite:///{tmp_path / 'other.db'}")
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'other.db'}") == ["x"]
    assert not (tmp_path / "results").exists()


def test_points_in_a_space_file_are_checked_against_its_parameters() -> None:
    raw = {"depth": {"int": [2, 4]}, "points": {"small": {"depth": 2}}}
    assert space_from_dict(raw, "s").points == {"small": {"depth": 2}}
    with pytest.raises(ConfigError, match=r"points.small.depth = 9 is outside"):
        space_from_dict({"depth": {"int": [2, 4]}, "points": {"small": {"depth": 9}}}, "s")
    with pytest.raises(ConfigError, match=r"points.small.width is not a parameter of the space"):
        space_from_dict({"depth": {"int": [2, 4]}, "points": {"small": {"width": 9}}}, "s")
    # Points are not part of the space: the hash ignores them.
    assert space_from_dict(raw, "s").hash == space_from_dict({"depth": {"int": [2, 4]}}, "s").hash


def test_settings_check_themselves() -> None:
    with pytest.raises(ConfigError, match=r"warm_start\.points must be a list"):
        WarmStartSettings(points="squeezenet1_1")  # type: ignore[arg-type]
    assert not WarmStartSettings().enabled and WarmStartSettings(points=("a",)).enabled


def test_a_missing_warm_start_storage_is_refused_and_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    with pytest.raises(ConfigError, match=r"warm_start\.storage .*typo\.db' does not exist"):
        _run(tmp_path, "study.n_trials=2", "warm_start.study=old", f"warm_start.storage=sqlite:///{typo}")
    assert not typo.exists()
