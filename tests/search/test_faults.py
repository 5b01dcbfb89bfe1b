"""Faults a worker must survive: a database that goes away for a while, a local worker killed outright.

The outage runs through :class:`archsearch.testing.OutageProxy` (refuses and drops every
connection to the PostgreSQL server CI starts, as a restart would) so that the shared server is
never stopped; the killed worker is one of ``+workers=local``'s processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from archsearch.errors import StorageUnreachable
from archsearch.storage.outage import BACKOFF_S, ride_out_outages
from archsearch.testing import OutageProxy
from tests.search.test_workers import (
    FIXED_COST,
    SWEEP,
    mlflow_runs,
    ready_mlruns,
    running_trial_with_run,
    sqlite_study,
    wait_for,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_refused_connection_is_retried_with_backoff_then_given_up_in_one_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 1 on the loopback refuses at once: a server that is down.
    engine = create_engine("postgresql+psycopg://u:secret@127.0.0.1:1/db", pool_pre_ping=True)
    clock = FakeClock()
    ride_out_outages(engine, 20, "postgresql://u:***@127.0.0.1:1/db", sleep=clock.sleep, clock=clock)
    with pytest.raises(StorageUnreachable) as caught:
        engine.connect()
    assert clock.sleeps[:5] == list(BACKOFF_S)  # 0.5, 1, 2, 4, 5 ...
    assert set(clock.sleeps[5:-1]) == {5.0} and sum(clock.sleeps) == pytest.approx(20)
    message = str(caught.value)
    assert message.startswith("the study storage 'postgresql://u:***@127.0.0.1:1/db' has refused")
    assert "secret" not in message and "storage_outage_s is 20" in message
    err = capsys.readouterr().err
    assert err.count("warning: the study storage") == 1  # one line per outage, not one per attempt


def test_sqlite_and_a_zero_budget_are_left_as_sqlalchemy_has_them(tmp_path: Path) -> None:
    from sqlalchemy import event

    sqlite = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    ride_out_outages(sqlite, 60, "x")
    assert not event.contains(sqlite, "do_connect", lambda *a: None)
    server = create_engine("postgresql+psycopg://u:p@127.0.0.1:1/db")
    ride_out_outages(server, 0, "x")
    with pytest.raises(Exception) as caught:
        server.connect()
    assert not isinstance(caught.value, StorageUnreachable)  # fails at once, as before


def test_storage_outage_s_is_checked() -> None:
    from archsearch.errors import ConfigError
    from archsearch.search.settings import StudySettings

    assert StudySettings().storage_outage_s == 120
    for bad in (-1, "soon", True, 10**9):
        with pytest.raises(ConfigError, match=r"study\.storage_outage_s must be a number of seconds"):
            StudySettings(storage_outage_s=bad)


def proxied(postgres_url: str) -> tuple[OutageProxy, str]:
    url = make_url(postgres_url)
    proxy = OutageProxy(url.host or "127.0.0.1", url.port or 5432).start()
    return proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def postgres_states(url: str, name: str) -> list[TrialState]:
    return [t.state for t in optuna.load_study(study_name=name, storage=url).trials]


@pytest.mark.slow
@pytest.mark.postgres
def test_a_short_database_outage_is_ridden_out(
    tmp_path: Path, postgres_url: str, archsearch_cli: Any, mlflow_db_template: Path
) -> None:
    """The server refuses everything for 6 s mid-study: the worker waits, says so twice, and
    finishes every trial; nothing is failed, lost or left RUNNING."""
    ready_mlruns(tmp_path, mlflow_db_template)
    proxy, url = proxied(postgres_url)
    name = f"outage_{uuid.uuid4().hex[:8]}"
    common = (*SWEEP, FIXED_COST, "+sweep.fit.seconds=1", f"study.name={name}", "study.n_trials=8")
    try:
        proc = archsearch_cli.start(tmp_path, *common, f"study.storage={url}")
        wait_for(lambda: 1 if _complete(postgres_url, name) >= 2 else None, "two finished trials")
        proxy.cut(6)
        _, err = proc.communicate(timeout=180)
    finally:
        proxy.stop()
    assert proc.returncode == 0, err[-3000:]
    assert "refuses connections" in err and "answers again after" in err and "Traceback" not in err
    assert postgres_states(postgres_url, name) == [TrialState.COMPLETE] * 8
    assert {r.info.status for r in mlflow_runs(tmp_path, name)} == {"FINISHED"}


@pytest.mark.slow
@pytest.mark.postgres
def test_a_long_outage_exits_4_and_the_next_start_recovers_everything(
    tmp_path: Path, postgres_url: str, archsearch_cli: Any, mlflow_db_template: Path
) -> None:
    ready_mlruns(tmp_path, mlflow_db_template)
    proxy, url = proxied(postgres_url)
    name = f"outage_{uuid.uuid4().hex[:8]}"
    common = (
        *SWEEP,
        FIXED_COST,
        f"study.name={name}",
        "study.n_trials=5",
        "study.heartbeat_interval=1",
        "study.grace_period=3",
    )
    try:
        proc = archsearch_cli.start(
            tmp_path, *common, "+sweep.fit.seconds=2", f"study.storage={url}", "study.storage_outage_s=2"
        )
        wait_for(lambda: 1 if _complete(postgres_url, name) >= 1 else None, "a finished trial")
        cutter = threading.Thread(target=proxy.cut, args=(20,))
        cutter.start()
        _, err = proc.communicate(timeout=120)
        cutter.join()
    finally:
        proxy.stop()
    assert proc.returncode == 4, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "has refused connections for 2 s" in lines[0] and "Traceback" not in err
    time.sleep(3)  # the lost trial's heartbeat goes stale
    again = archsearch_cli.run(tmp_path, *common, "+sweep.fit.seconds=0.2", f"study.storage={postgres_url}")
    assert again.returncode == 0, again.stderr[-3000:]
    states = postgres_states(postgres_url, name)
    assert states.count(TrialState.COMPLETE) == 5 and TrialState.RUNNING not in states
    assert "RUNNING" not in {r.info.status for r in mlflow_runs(tmp_path, name)}


def _complete(url: str, name: str) -> int:
    try:
        return sum(s == TrialState.COMPLETE for s in postgres_states(url, name))
    except KeyError:  # not created yet
        return 0


@pytest.mark.slow
def test_a_local_worker_killed_outright_takes_no_other_worker_with_it(
    tmp_path: Path, archsearch_cli: Any, mlflow_db_template: Path
) -> None:
    """``+workers=local workers.n=2`` and ``kill -9`` of one worker: the other runs on, retries
    the dead one's trial once its heartbeat is stale and completes the study; the launcher says
    which worker died and exits 128 + 9. Nothing is RUNNING afterwards, in Optuna or MLflow."""
    ready_mlruns(tmp_path, mlflow_db_template)
    common = (*SWEEP, FIXED_COST, "+sweep.fit.seconds=1", "study.name=kill", "study.n_trials=8")
    short = ("study.heartbeat_interval=1", "study.grace_period=3")
    launcher = archsearch_cli.start(tmp_path, *common, *short, "+workers=local", "workers.n=2")
    db = tmp_path / "mlruns" / "optuna.db"
    wait_for(lambda: _running(db), "both workers running trials")
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    # The launcher's children: its two workers and multiprocessing's resource tracker.
    workers = [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2
    # Killed while its trial has an MLflow run, so that there is a run to close as FAILED.
    wait_for(lambda: running_trial_with_run(db, workers[1]), "the doomed worker's trial with its run")
    os.kill(workers[1], signal.SIGKILL)
    try:
        _, err = launcher.communicate(timeout=180)
    finally:  # a hung launcher must not outlive the test with its worker
        if launcher.poll() is None:
            for pid in (launcher.pid, workers[0]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert launcher.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert f"error: worker 1 (pid {workers[1]}) was killed by SIGKILL" in err
    states = [t.state for t in sqlite_study(tmp_path, "kill").trials]
    assert states.count(TrialState.COMPLETE) == 8 and states.count(TrialState.FAIL) == 1
    assert TrialState.RUNNING not in states
    statuses = [r.info.status for r in mlflow_runs(tmp_path, "kill")]
    assert "RUNNING" not in statuses and statuses.count("FAILED") == 1


def _running(db: Path) -> int | None:
    import sqlite3

    if not db.is_file():
        return None
    try:
        with sqlite3.connect(db) as conn:
            (n,) = conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()
    except sqlite3.OperationalError:
        return None
    return 1 if n >= 2 else None


def test_a_full_disk_is_told_from_a_failed_architecture() -> None:
    import errno

    from mlflow.exceptions import MlflowException

    from archsearch.errors import DiskFull
    from archsearch.search.recovery import disk_full

    found = disk_full(OSError(errno.ENOSPC, "No space left on device", "/mnt/w/trial_3.pt"))
    assert isinstance(found, DiskFull) and "writing /mnt/w/trial_3.pt" in str(found)
    sqlite_full = MlflowException("(sqlite3.OperationalError) database or disk is full")
    assert isinstance(disk_full(sqlite_full), DiskFull)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("logging failed") from inner
    except RuntimeError as outer:
        assert disk_full(outer) is not None  # found through the cause
    assert disk_full(ValueError("loss is nan")) is None
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None


class FullOnce:
    """A trainer whose second call meets a full disk (then the disk has space again)."""

    def __init__(self) -> None:
        from archsearch.testing import FixedCostFit

        self.fit = FixedCostFit(seconds=0.0, epochs=1)
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import errno

        self.calls += 1
        if self.calls == 2:
            raise OSError(errno.ENOSPC, "No space left on device", "/full/weights.pt")
        return self.fit(*args, **kwargs)


def test_a_full_disk_stops_the_search_and_the_next_start_redoes_the_trial(tmp_path: Path) -> None:
    """The trial that met the full disk is failed with its retry queued (not a failed
    architecture), its MLflow run closed or, if MLflow could not write, closed by the next start."""
    import archsearch as A
    from archsearch.errors import DiskFull
    from tests.test_api import _tiny_search

    with pytest.raises(DiskFull, match=r"no space left on the device writing /full/weights\.pt"):
        _tiny_search(tmp_path, "full", 4, fit_fn=FullOnce())
    study = optuna.load_study(study_name="full", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs["state"] == "fault"
    result = _tiny_search(tmp_path, "full", 4)
    assert isinstance(result, A.SearchResult)
    trials = result.study.trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert trials[2].state == TrialState.COMPLETE and trials[2].params == trials[1].params


def test_the_next_start_closes_runs_a_fault_left_running(tmp_path: Path, mlflow_db_template: Path) -> None:
    """Runs of trials Optuna finished but MLflow could not close are closed by state; runs of
    trials still running (a live worker's) are left alone."""
    import shutil

    from mlflow import MlflowClient

    from archsearch.results.tracking import STUDY_TAG, Tracker
    from archsearch.search.recovery import close_orphan_runs

    shutil.copy(mlflow_db_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, experiment="archsearch/orphans", artifact_dir=tmp_path / "artifacts")
    tracker.start_study("orphans", {}, "")
    study = optuna.create_study(study_name="orphans", directions=["maximize"])
    runs = {}
    for number, state in enumerate(("complete", "pruned", "fail", "fault", "running")):
        trial = study.ask()
        runs[number] = tracker.start_trial(number, {}, {STUDY_TAG: "orphans"})
        trial.set_user_attr("mlflow_run_id", runs[number])
        if state == "fault":
            trial.set_user_attr("state", "fault")
        if state == "complete":
            study.tell(trial, 0.5)
        elif state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif state != "running":
            study.tell(trial, state=TrialState.FAIL)
    assert close_orphan_runs(tracker, study) == 4
    client = MlflowClient(tracking_uri=uri)
    got = {n: client.get_run(r) for n, r in runs.items()}
    assert [got[n].info.status for n in range(5)] == ["FINISHED", "KILLED", "FAILED", "FAILED", "RUNNING"]
    assert "full disk" in got[3].data.tags["archsearch.fail_reason"]
    assert "heartbeats" in got[2].data.tags["archsearch.fail_reason"]
    assert close_orphan_runs(tracker, study) == 0  # nothing left to close


def test_a_call_that_lost_its_connection_mid_statement_runs_again() -> None:
    from sqlalchemy.exc import OperationalError

    from archsearch.errors import StorageUnreachable
    from archsearch.storage.outage import retry_lost_connection

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE ...", {}, Exception("server closed the connection unexpectedly"))
        return "written"

    assert retry_lost_connection(flaky) == "written" and len(calls) == 3
    calls.clear()

    def gone() -> None:
        calls.append(1)
        raise StorageUnreachable("the study storage ... has refused connections for 120 s")

    with pytest.raises(StorageUnreachable):
        retry_lost_connection(gone)
    assert len(calls) == 1  # the outage budget is spent: not retried again

    def broken() -> None:
        calls.append(1)
        raise ValueError("not a connection problem")

    with pytest.raises(ValueError, match="not a connection"):
        retry_lost_connection(broken)


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_still_retried(tmp_path: Path) -> None:
    """Creating a trial and its first heartbeat are two writes; a worker killed between them
    left a RUNNING trial Optuna's stale check never sees, and a live worker then waited for it
    forever. The live worker now beats once for it, fails it after the grace period and runs
    its retry."""
    from archsearch.search.workers import StaleTrialCallback, run_trials
    from archsearch.storage.database import StorageLock, open_storage

    url = f"sqlite:///{tmp_path / 'orphan.db'}"
    optuna.create_study(study_name="orphan", storage=url)
    storage = open_storage(url, 1, 2, StaleTrialCallback(retries=1))
    study = optuna.load_study(study_name="orphan", storage=storage)
    done: list[int] = []

    def live_worker() -> None:
        run_trials(
            study,
            lambda trial: time.sleep(0.3) or trial.suggest_float("x", 0, 1),
            storage=storage,
            lock=StorageLock(url),
            n_trials=4,
            callbacks=[lambda _s, t: done.append(t.number)],
        )

    worker = threading.Thread(target=live_worker, daemon=True)
    worker.start()
    wait_for(lambda: 1 if done else None, "the live worker's first trial", timeout=30)
    # The dead worker's trial: created, never beaten for (it died right after the ask).
    dead = optuna.load_study(study_name="orphan", storage=url)
    orphan = dead.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).number
    worker.join(timeout=40)
    assert not worker.is_alive(), "the live worker waits for a trial nobody runs"
    trials = optuna.load_study(study_name="orphan", storage=url).trials
    assert trials[orphan].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert any(t.system_attrs.get("failed_trial") == orphan for t in trials)
