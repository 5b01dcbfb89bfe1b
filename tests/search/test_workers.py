"""Many workers on one study: an exact budget, crashes retried, Ctrl-C clean, resumes complete.

The command-line tests run ``python -m archsearch`` in subprocesses; trials use either a tiny
synthetic training or ``archsearch.testing.FixedCostFit`` (a fixed sleep), whichever keeps the
trial at the point the test needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from archsearch.search.workers import (
    StaleTrialCallback,
    budget,
    run_trials,
    worker_seed,
    worker_threads,
)
from archsearch.storage.database import StorageLock, open_storage

SWEEP = ("+sweep=fire", "data=synthetic", "export.plots=false")
FIXED_COST = "+sweep.fit._target_=archsearch.testing.FixedCostFit"


def ready_mlruns(cwd: Path, template: Path) -> None:
    """Start ``cwd/mlruns`` with an already migrated, empty MLflow database."""
    (cwd / "mlruns").mkdir()
    shutil.copy(template, cwd / "mlruns" / "mlflow.db")


def sqlite_study(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}")


def mlflow_runs(cwd: Path, study: str) -> list[Any]:
    """Every run of the study's experiment, deleted ones included."""
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"archsearch/{study}")
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000))


def wait_for(condition: Any, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value is not None:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def running_trial_with_run(db: Path, pid: int | None = None) -> int | None:
    """Number of a RUNNING trial that has its MLflow run (of worker ``pid`` if given), read raw."""
    if not db.is_file():
        return None
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id AND a.key = 'worker' WHERE t.state = 'RUNNING' AND EXISTS "
                "(SELECT 1 FROM trial_user_attributes r WHERE r.trial_id = t.trial_id "
                "AND r.key = 'mlflow_run_id')"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    for number, worker in rows:
        if pid is None or str(worker).strip('"').endswith(f":{pid}"):
            return int(number)
    return None


# -- the budget rule, in process ------------------------------------------------------------


def frozen(number: int, state: TrialState, retry_of: int | None = None) -> optuna.trial.FrozenTrial:
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=[1.0] if state == TrialState.COMPLETE else None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={} if retry_of is None else {"failed_trial": retry_of, "retry_history": [retry_of]},
        intermediate_values={},
        trial_id=number,
    )


def test_budget_counts_a_retried_trial_once_through_its_retry() -> None:
    trials = [
        frozen(0, TrialState.COMPLETE),
        frozen(1, TrialState.FAIL),  # its worker died ...
        frozen(2, TrialState.RUNNING),
        frozen(3, TrialState.WAITING, retry_of=1),  # ... and this retry holds its slot
        frozen(4, TrialState.FAIL),  # an ordinary failure is an outcome
    ]
    b = budget(trials, n_trials=5)
    assert (b.finished, b.running, b.waiting, b.free, b.done) == (2, 1, 1, 2, False)
    trials[3] = frozen(3, TrialState.COMPLETE, retry_of=1)
    trials[2] = frozen(2, TrialState.COMPLETE)
    b = budget(trials, n_trials=4)
    assert (b.finished, b.free, b.done) == (4, 0, True)


def test_worker_threads_share_the_cores_and_seeds_differ_per_worker() -> None:
    assert worker_threads(16, 4) == 4
    assert worker_threads(2, 3) == 1  # never zero
    assert worker_threads(16, -1) == 1  # joblib: one job per core
    assert worker_threads(16, -2) == 16 // 15
    assert worker_seed(7, 0) == 7  # a single worker keeps the configured seed
    assert len({worker_seed(7, i) for i in range(100)}) == 100


def test_racing_workers_run_exactly_n_trials(tmp_path: Path) -> None:
    """Five workers (threads, each with its own storage and lock, like processes) on one study."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    name = "race"
    n_trials = 12
    optuna.create_study(study_name=name, storage=url)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            storage = open_storage(url, 1, 3, StaleTrialCallback(retries=1))
            study = optuna.load_study(study_name=name, storage=storage)
            run_trials(
                study,
                lambda trial: time.sleep(0.05) or trial.suggest_float("x", 0, 1),
                storage=storage,
                lock=StorageLock(url),
                n_trials=n_trials,
            )
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.number for t in trials] == list(range(n_trials))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 1  # threads share a pid


# -- the command line ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_three_local_workers_share_one_postgres_study(
    tmp_path: Path, postgres_url: str, archsearch_cli: Any, mlflow_db_template: Path
) -> None:
    """+workers=local: three joblib processes, real (tiny) training, one study, one parent run."""
    ready_mlruns(tmp_path, mlflow_db_template)
    name = f"workers_{uuid.uuid4().hex[:8]}"
    n_trials = 7
    done = archsearch_cli.run(
        tmp_path,
        *SWEEP,
        "+workers=local",
        "workers.n=3",
        "trainer.epochs=1",
        "trainer.threads=null",
        "data.train_size=256",
        "data.test_size=64",
        f"study.storage={postgres_url}",
        f"study.name={name}",
        f"study.n_trials={n_trials}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (saved,) = (tmp_path / "multirun").glob("*/*/multirun.yaml")
    password = make_url(postgres_url).password
    assert password and f":{password}@" not in saved.read_text() and ":***@" in saved.read_text()
    study = optuna.load_study(study_name=name, storage=postgres_url)
    trials = study.trials
    assert [t.number for t in trials] == list(range(n_trials))  # exactly n_trials, unique numbers
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert study.user_attrs["workers_started"] == 3
    runs = mlflow_runs(tmp_path, name)
    parents = [r for r in runs if r.data.tags.get("archsearch.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("archsearch.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.lifecycle_stage == "active"
    assert sorted(int(r.data.tags["archsearch.trial"]) for r in children) == list(range(n_trials))
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in children}
    # trainer.threads was null, so each of the 3 workers got its share of the cores.
    config = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").download_artifacts(
        children[0].info.run_id, "config.yaml", str(tmp_path)
    )
    threads = yaml.safe_load(Path(config).read_text())["trainer"]["threads"]
    assert threads == max(1, len(os.sched_getaffinity(0)) // 3)


@pytest.mark.slow
def test_killed_worker_trial_is_failed_retried_and_the_study_completes(
    tmp_path: Path, archsearch_cli: Any, mlflow_db_template: Path
) -> None:
    """SIGKILL one of two workers mid-trial; the other fails its trial after the grace period,
    closes its MLflow run as FAILED, runs the retry, and completes the study."""
    ready_mlruns(tmp_path, mlflow_db_template)
    common = (*SWEEP, "study.name=crash", "study.n_trials=3", FIXED_COST)
    short = ("study.heartbeat_interval=1", "study.grace_period=3")
    doomed = archsearch_cli.start(tmp_path, *common, *short, "+sweep.fit.seconds=120")
    db = tmp_path / "mlruns" / "optuna.db"
    number = wait_for(lambda: running_trial_with_run(db, doomed.pid), "the doomed worker's trial")
    survivor = archsearch_cli.start(tmp_path, *common, *short, "+sweep.fit.seconds=0.5")
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    out, err = survivor.communicate(timeout=180)
    assert survivor.returncode == 0, err[-3000:]

    trials = sqlite_study(tmp_path, "crash").trials
    dead = trials[number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params  # the same architecture, run again
    others = [t for t in trials if t is not dead]
    assert len(others) == 3 and all(t.state == TrialState.COMPLETE for t in others)
    runs = {r.info.run_id: r for r in mlflow_runs(tmp_path, "crash")}
    dead_run = runs[dead.user_attrs["mlflow_run_id"]]
    assert dead_run.info.status == "FAILED"
    assert "heartbeats" in dead_run.data.tags["archsearch.fail_reason"]
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    assert f"trial {retries[0].number:>4}  complete" in out


@pytest.mark.slow
def test_ctrl_c_closes_everything_and_a_restart_redoes_the_interrupted_trial(
    tmp_path: Path, archsearch_cli: Any, mlflow_db_template: Path
) -> None:
    ready_mlruns(tmp_path, mlflow_db_template)
    common = (*SWEEP, "study.name=stop", "study.n_trials=3", FIXED_COST)
    proc = archsearch_cli.start(tmp_path, *common, "+sweep.fit.seconds=120", interruptible=True)
    db = tmp_path / "mlruns" / "optuna.db"
    number = wait_for(lambda: running_trial_with_run(db), "a trial in progress")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "interrupted" and "Traceback" not in out + err
    assert (tmp_path / "results" / "stop" / "pareto.csv").is_file()  # the export of what exists
    runs = mlflow_runs(tmp_path, "stop")
    assert {r.info.status for r in runs} == {"KILLED"}  # the trial's run and the parent run
    trials = sqlite_study(tmp_path, "stop").trials
    assert trials[number].state == TrialState.FAIL
    assert trials[number].user_attrs["state"] == "interrupted"
    (queued,) = (t for t in trials if t.state == TrialState.WAITING)
    assert queued.system_attrs["failed_trial"] == number

    resumed = archsearch_cli.run(tmp_path, *common, "+sweep.fit.seconds=0.2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = sqlite_study(tmp_path, "stop").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len(trials) == 4  # the interrupted trial counted once, via its retry
    assert queued.number in {t.number for t in complete} and queued.params == trials[number].params
    runs = mlflow_runs(tmp_path, "stop")
    assert sum(r.data.tags.get("archsearch.role") == "parent" for r in runs) == 1
    assert sorted(r.info.status for r in runs if r.data.tags.get("archsearch.role") == "trial") == [
        "FINISHED",
        "FINISHED",
        "FINISHED",
        "KILLED",
    ]
