"""The public Python API: search, export and finalize from a notebook, with no Hydra anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import archsearch as A
from archsearch.errors import ConfigError
from archsearch.resources import ROOT

#: Runs in a fresh interpreter, so nothing a test imported earlier can hide a hydra import.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import numpy as np
    import optuna

    import archsearch as A
    from archsearch.testing import FixedCostFit

    tmp = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 1, 8, 8)).astype("float32")
    y = (np.arange(240) % 4).astype("int64")
    data = A.dataset_from_arrays("mine", x, y, test_x=x[:40], test_y=y[:40])
    space = A.load_space("fire")
    settings = A.SearchSettings(
        study=A.StudySettings(name="api", n_trials=4),
        trainer=A.TrainerSettings(epochs=2, batch_size=32, threads=1),
        tracking=A.TrackingSettings(dir=tmp / "mlruns"),
        export=A.ExportSettings(dir=tmp / "results", plots=False),
        constraints=(A.Constraint("params", max=1e6),),
    )
    fit = FixedCostFit(seconds=0.0, epochs=2)
    result = A.run_search(
        space, data, settings, sampler=optuna.samplers.RandomSampler(seed=1),
        storage=f"sqlite:///{tmp / 'own.db'}", fit_fn=fit,
    )
    again = A.export_study(result.study, tmp / "again", plots=False)
    final = A.finalize_study(
        result.study, data, settings=A.FinalizeSettings(epochs=3), trainer=settings.trainer,
        tracking=settings.tracking, export=settings.export, fit_fn=fit,
    )
    print(json.dumps({
        "hydra": sorted(m for m in sys.modules if m.split(".")[0] in ("hydra", "omegaconf")),
        "trials": len(result.study.trials),
        "members": result.members,
        "files": sorted(result.files),
        "again": sorted(again.files),
        "final": [m.test_acc for m in final.members],
        "stored": (tmp / "own.db").is_file(),
    }, default=str))
    """
)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("api")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_search_export_and_finalize_run_without_hydra(outcome: dict) -> None:
    assert outcome["hydra"] == []
    assert outcome["trials"] == 4 and outcome["stored"]
    assert {"csv", "json"} <= set(outcome["files"]) and outcome["again"] == outcome["files"]
    assert len(outcome["final"]) == len(outcome["members"]) >= 1


def test_front_members_carry_spec_values_costs_weights_and_run(outcome: dict) -> None:
    for member in outcome["members"]:
        assert A.NetSpec.from_dict(member["spec"]).hash == member["spec_hash"]
        assert set(member["values"]) == {"val_acc", "params", "macs"}
        assert member["costs"]["params"] == member["values"]["params"]
        assert member["mlflow_run_id"]
        assert Path(member["weights"]).is_file()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: A.StudySettings(n_trials=0), "study.n_trials must be a positive integer, got 0"),
        (lambda: A.CostSettings(batch_size=0), "cost.batch_size must be an integer >= 1, got 0"),
        (lambda: A.LatencySettings(repeats=0), "latency.repeats must be an integer >= 1, got 0"),
        (lambda: A.SearchSettings(objectives=(("speed", "maximize"),)), "objectives.speed is not a known"),
        (lambda: A.Constraint("params", max=1, min=2), "constraints.params has min 2 > max 1"),
        (lambda: A.TrackingSettings(log_weights="some"), "tracking.log_weights is 'some'"),
        (lambda: A.TrainerSettings(batch_size=0), "trainer.batch_size must be an integer >= 1, got 0"),
        (
            lambda: A.TrainerSettings(label_smoothing=1.5),
            r"trainer.label_smoothing must be a number in \[0, 1\)",
        ),
        (lambda: A.TrainerSettings(device="gpu"), "trainer.device is 'gpu'"),
        (
            lambda: A.SearchSettings(
                trainer=A.TrainerSettings(epochs=4), fidelity=A.FidelitySettings(enabled=True, rungs=(2, 5))
            ),
            r"sweep.fidelity.rungs must be null or increasing epochs in \[1, 4\)",
        ),
    ],
)
def test_settings_refuse_bad_values_on_construction(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]


def test_settings_read_back_their_own_mapping() -> None:
    settings = A.SearchSettings(
        study=A.StudySettings(name="x", n_trials=7),
        constraints=(A.Constraint("macs", max=1e6),),
        fidelity=A.FidelitySettings(enabled=True, eta=2),
    )
    assert A.SearchSettings.from_mapping(settings.to_mapping()) == settings


def test_unknown_keys_are_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"latency has unknown key\(s\) repeat; allowed: batch_size"):
        A.LatencySettings.from_mapping({"repeat": 3})


def test_arrays_with_bad_labels_are_one_sentence() -> None:
    import numpy as np

    x = np.zeros((10, 8, 8), dtype="float32")
    with pytest.raises(A.DataError, match=r"y must lie in 0\.\.2"):
        A.dataset_from_arrays("bad", x, np.array([0, 1, 2, 3, 0, 1, 2, 0, 1, 2]), num_classes=3)
    with pytest.raises(A.DataError, match=r"class indices 0\.\.K-1, got labels from -1 to 0"):
        A.dataset_from_arrays("neg", x, np.arange(10) % 2 - 1)
    with pytest.raises(A.ConfigError, match=r"data\.num_classes must be an integer >= 2 or null, got 2\.5"):
        A.dataset_from_arrays("frac", x, np.arange(10) % 2, num_classes=2.5)  # type: ignore[arg-type]
    with pytest.raises(A.DataError, match="NaN or infinite"):
        A.dataset_from_arrays("nan", np.full((10, 8, 8), np.nan), np.arange(10) % 2)


def _tiny_search(tmp: Path, name: str, n_trials: int, **kwargs: object) -> A.SearchResult:
    import numpy as np

    from archsearch.testing import FixedCostFit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 1, 8, 8)).astype("float32")
    y = (np.arange(120) % 3).astype("int64")
    settings = A.SearchSettings(
        study=A.StudySettings(name=name, n_trials=n_trials),
        trainer=A.TrainerSettings(epochs=1, batch_size=32, threads=1),
        tracking=A.TrackingSettings(dir=tmp / "mlruns", enabled=False),
        export=A.ExportSettings(dir=tmp / name, plots=False),
    )
    space = kwargs.pop("space", None) or A.load_space("fire")
    return A.run_search(
        space,  # type: ignore[arg-type]
        A.dataset_from_arrays("mine", x, y),
        settings,
        storage=f"sqlite:///{tmp / 'optuna.db'}",
        fit_fn=kwargs.pop("fit_fn", None) or FixedCostFit(seconds=0.0, epochs=1),
        **kwargs,  # type: ignore[arg-type]
    )


def test_callbacks_see_every_trial_and_study_stop_ends_the_search(tmp_path: Path) -> None:
    import optuna

    seen: list[int] = []

    def stop_after_three(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen.append(trial.number)
        if len(seen) == 3:
            study.stop()

    result = _tiny_search(tmp_path, "cb", 10, callbacks=[stop_after_three])
    assert seen == [0, 1, 2]
    assert len(result.study.trials) == 3
    assert (tmp_path / "cb" / "pareto.csv").is_file()  # stopped searches export as always
    # The flag does not outlive the search: the study resumes to its budget.
    again = _tiny_search(tmp_path, "cb", 5)
    assert len(again.study.trials) == 5


def test_grid_sampler_stops_cleanly_when_its_grid_is_exhausted(tmp_path: Path) -> None:
    import optuna

    space = A.load_space("sr_grid")
    grid = space.grid()
    size = 1
    for values in grid.values():
        size *= len(values)
    result = _tiny_search(
        tmp_path, "grid", size + 5, space=space, sampler=optuna.samplers.GridSampler(grid, seed=0)
    )
    assert len(result.study.trials) == size


def test_a_search_whose_every_trial_failed_says_so(tmp_path: Path) -> None:
    from archsearch.cli.errors import EXIT_ALL_FAILED, run_cli
    from archsearch.errors import SearchFailed

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the trainer is broken")

    with pytest.raises(
        SearchFailed, match=r"every one of the study's 3 trials failed.*the trainer is broken"
    ):
        _tiny_search(tmp_path, "failing", 3, fit_fn=broken)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: _tiny_search(tmp_path, "failing", 3, fit_fn=broken))
    assert exit_info.value.code == EXIT_ALL_FAILED == 3


def test_run_search_leaves_the_callers_log_levels_as_they_were(tmp_path: Path) -> None:
    import logging

    import mlflow  # noqa: F401  (it sets its own loggers on import: a user configures them after)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.DEBUG)
    try:
        _tiny_search(tmp_path, "levels", 1)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        assert logging.getLogger("mlflow").level == logging.DEBUG
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("mlflow").setLevel(logging.NOTSET)


def test_pareto_csv_writes_counts_as_integers(tmp_path: Path) -> None:
    import csv

    _tiny_search(tmp_path, "ints", 3)
    with (tmp_path / "ints" / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["params"].isdigit() and r["macs"].isdigit() for r in rows)


def test_a_reporter_of_ones_own_sees_the_search_and_tracking_off_logs_nothing(tmp_path: Path) -> None:
    """run_search(reporter=...) takes any SearchReporter; tracking off is the NullTracker."""
    from archsearch.results.tracking import NullTracker, open_tracker

    events: list[str] = []

    class Recorder:
        def start(self, study: object, done: int) -> None:
            events.append(f"start {done}")

        def trial_done(self, study: object, trial: object, outcome: dict[str, object]) -> None:
            events.append("trial")

        def finish(
            self, study: object, exported: object, seconds: float, *, storage: str, tracking_uri: str
        ) -> None:
            events.append(f"finish {len(exported.front)}")  # type: ignore[attr-defined]

    result = _tiny_search(tmp_path, "reported", 3, reporter=Recorder())
    assert events == ["start 0", "trial", "trial", "trial", f"finish {len(result.front)}"]
    assert not (tmp_path / "mlruns").exists()  # tracking.enabled=false: no MLflow store written
    off = open_tracker("sqlite:///never.db", "x", None, enabled=False)
    assert isinstance(off, NullTracker) and off.start_trial(0, {}, {}) == "" and off.trial_runs("s") == {}
    assert not Path("never.db").exists()


def test_a_search_takes_any_object_with_a_datasets_members(tmp_path: Path) -> None:
    """DatasetLike is a Protocol: nothing below run_search asks for the Dataset class itself."""
    import dataclasses

    import numpy as np

    from archsearch.data.base import describe
    from archsearch.testing import FixedCostFit

    rng = np.random.default_rng(0)
    made = A.dataset_from_arrays("mine", rng.normal(size=(90, 1, 8, 8)).astype("float32"), np.arange(90) % 3)

    class Mine:  # the same members, not a Dataset (nor a subclass of one)
        def __init__(self) -> None:
            for f in dataclasses.fields(made):
                setattr(self, f.name, getattr(made, f.name))

    data = Mine()
    assert not isinstance(data, A.Dataset) and describe(data) == made.summary()  # type: ignore[arg-type]
    settings = A.SearchSettings(
        study=A.StudySettings(name="mine", n_trials=2),
        trainer=A.TrainerSettings(epochs=1, batch_size=32, threads=1),
        tracking=A.TrackingSettings(dir=tmp_path / "mlruns", enabled=False),
        export=A.ExportSettings(dir=tmp_path / "mine", plots=False),
    )
    result = A.run_search(
        A.load_space("fire"),
        data,  # type: ignore[arg-type]
        settings,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        fit_fn=FixedCostFit(seconds=0.0, epochs=1),
    )
    assert len(result.study.trials) == 2 and result.front


def test_the_best_member_by_a_named_objective_loads_as_a_network_that_takes_raw_images(
    tmp_path: Path,
) -> None:
    import torch

    result = _tiny_search(tmp_path, "members", 6)
    members = result.members
    assert {"params", "net_file", "weights", "spec", "values"} <= set(members[0])
    assert all(Path(m["net_file"]).is_file() for m in members)
    best = result.best_member("val_acc")
    assert best["values"]["val_acc"] == max(m["values"]["val_acc"] for m in members)
    smallest = result.best_member("params")
    assert smallest["costs"]["params"] == min(m["costs"]["params"] for m in members)
    net = result.load_member()  # the best on val_acc, normalisation built in
    assert result.normalisation is not None
    mean, std = result.normalisation
    raw = torch.randn(4, 1, 8, 8) * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    bare = result.load_member(best["trial"])
    assert bare.training is False and net(raw).shape == (4, 3)
    assert torch.allclose(net(raw), bare(raw))
    plain = A.build(A.NetSpec.from_dict(best["spec"]))
    plain.load_state_dict(torch.load(best["weights"], weights_only=True))
    plain.eval()
    normalised = (raw - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(net(raw), plain(normalised), atol=1e-5)
    with pytest.raises(A.ConfigError, match="is not a front member"):
        result.load_member(10_000)
    with pytest.raises(A.ConfigError, match="objective must be one of"):
        result.best_member("latency_ms")


def test_progress_bar_counts_the_trials_and_names_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _tiny_search(tmp_path, "bar", 4, progress_bar=True)
    err = capsys.readouterr().err
    assert "bar" in err and "4/4" in err and "best val_acc" in err
    assert f"front {len(result.front)}" in err


def test_every_public_name_is_typed_for_mypy_from_its_one_home() -> None:
    """`import archsearch as A` loads names lazily; the TYPE_CHECKING imports give mypy and IDEs
    their real types. Each public name must be imported there, from the home _HOMES gives it."""
    import ast

    import archsearch

    tree = ast.parse(Path(archsearch.__file__).read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                for alias in imp.names:
                    name = alias.asname or alias.name
                    typed[name] = imp.module + ("" if alias.name == name else f":{alias.name}")
    assert typed == archsearch._HOMES
    assert (Path(archsearch.__file__).parent / "py.typed").is_file()


def test_export_project_restores_the_weights_as_the_export_command_does(tmp_path: Path) -> None:
    """A.export_study writes the files; A.export_project also brings the weights back from MLflow."""
    import shutil

    import numpy as np

    from archsearch.testing import FixedCostFit

    rng = np.random.default_rng(0)
    data = A.dataset_from_arrays("mine", rng.normal(size=(90, 1, 8, 8)).astype("float32"), np.arange(90) % 3)
    tracking = A.TrackingSettings(dir=tmp_path / "mlruns")
    settings = A.SearchSettings(
        study=A.StudySettings(name="proj", n_trials=3),
        trainer=A.TrainerSettings(epochs=1, batch_size=32, threads=1),
        tracking=tracking,
        export=A.ExportSettings(dir=tmp_path / "proj", plots=False),
    )
    result = A.run_search(
        A.load_space("fire"),
        data,
        settings,
        hardware=A.load_hardware("laptop_cpu"),
        fit_fn=FixedCostFit(seconds=0.0, epochs=1),
    )
    shutil.rmtree(tmp_path / "proj")  # the export, weights included, is gone; MLflow kept them
    again = A.export_study(result.study, tmp_path / "files_only", plots=False)
    assert not (again.directory / "weights").exists()
    done = A.export_project(
        result.study,
        tmp_path / "again",
        tracking_uri=tracking.resolved_uri,
        tracking_dir=tracking.dir,
        plots=False,
    )
    assert (
        sorted(done.weights.restored) == sorted(t.number for t in result.front) and not done.weights.missing
    )
    assert all(path.is_file() for path in done.weights.restored.values())
