"""Fault benchmark: kill workers, cut the database, fill the disk; count what was lost, doubled, left RUNNING.

    .venv/bin/python benchmarks/chaos.py [--storage URL] [--trials 10] [--seconds 2]
                                         [--only sigkill,sigint,launcher,outage,disk_full]

Each scenario runs a fresh study of ``--trials`` fixed-cost trials (``archsearch.testing.
FixedCostFit`` sleeps ``--seconds`` instead of training, so the faults, not the trainer, are
measured) with short heartbeats (1 s, failed after 4 s), injects its fault mid-trial, lets the
survivors finish, then makes the *next start* (the same command once more, as a user would) and
counts, on the study and its MLflow experiment:

* completed: slots with a COMPLETE trial (a slot is a trial's number, or for a retry the number
  of the trial it retries), out of ``--trials``;
* lost: slots without a COMPLETE trial;
* duplicated: COMPLETE trials beyond the first of their slot (a retry of a killed trial is not
  a duplicate; two COMPLETE trials for one slot are);
* RUNNING: Optuna trials and MLflow runs still RUNNING.

Scenarios:

    sigkill    two separate worker processes; SIGKILL one mid-trial
    sigint     two separate worker processes; SIGINT (Ctrl-C) one mid-trial
    launcher   +workers=local workers.n=2; SIGKILL one of the launcher's worker processes
    outage     two separate workers on PostgreSQL through archsearch.testing.OutageProxy, which
               refuses and drops every connection for 7 s mid-trial (a server restart)
    disk_full  one worker with mlruns/ and the export on a 48 MiB tmpfs, filled to the last byte
               mid-trial; space is freed before the next start (needs root for the mount)

The storage is ``--storage`` (default ``$ARCHSEARCH_TEST_POSTGRES``, else SQLite under each
scenario's directory); ``outage`` needs PostgreSQL and is skipped without it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from archsearch.storage.database import describe_url

SCENARIOS = ("sigkill", "sigint", "launcher", "outage", "disk_full")


class Scenario:
    """One fault run: its directory, study, storage and the command every worker runs."""

    def __init__(self, name: str, root: Path, storage: str | None, trials: int, seconds: float) -> None:
        self.name = name
        self.cwd = root / name
        self.cwd.mkdir(parents=True)
        self.study = f"chaos_{name}_{uuid.uuid4().hex[:6]}"
        self.storage = storage or f"sqlite:///{self.cwd / 'mlruns' / 'optuna.db'}"
        self.trials = trials
        self.seconds = seconds
        self.extra: list[str] = []
        self.mlruns = self.cwd / "mlruns"
        self.cleanups: list[Callable[[], Any]] = []

    def args(self, storage: str | None = None, seconds: float | None = None) -> list[str]:
        return [
            sys.executable,
            "-m",
            "archsearch",
            "+sweep=fire",
            "sampler=tpe",
            "data=synthetic",
            "export.plots=false",
            "trainer.threads=1",
            f"study.storage={storage or self.storage}",
            f"study.name={self.study}",
            f"study.n_trials={self.trials}",
            "study.heartbeat_interval=1",
            "study.grace_period=4",
            "+sweep.fit._target_=archsearch.testing.FixedCostFit",
            f"+sweep.fit.seconds={self.seconds if seconds is None else seconds}",
            *self.extra,
        ]

    def start(
        self, *more: str, interruptible: bool = False, storage: str | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.args(storage), *more],
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if interruptible else None,
        )

    def trials_now(self) -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name=self.study, storage=self.storage).get_trials(deepcopy=False)
        except Exception:  # not created yet
            return []

    def wait_running(self, pid: int | None = None, timeout: float = 120) -> int:
        """Wait for a RUNNING trial with its MLflow run (of worker ``pid`` if given); its worker's pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t in self.trials_now():
                worker = str(t.user_attrs.get("worker", ""))
                if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs and worker:
                    owner = int(worker.rsplit(":", 1)[1])
                    if pid is None or owner == pid:
                        return owner
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: no running trial within {timeout:.0f} s")

    def next_start(self) -> int:
        """The same command once more, to the end (it recovers what the fault left); its exit code."""
        time.sleep(5)  # the grace period: a dead worker's heartbeat is stale by now
        done = subprocess.run(
            self.args(seconds=0.2), cwd=self.cwd, capture_output=True, text=True, check=False
        )
        return done.returncode

    def count(self) -> dict[str, int]:
        trials = self.trials_now()
        complete = Counter(
            int(t.system_attrs.get("failed_trial", t.number))
            for t in trials
            if t.state == TrialState.COMPLETE
        )
        running_runs = _mlflow_running(self.mlruns / "mlflow.db", self.study)
        return {
            "completed": len(complete),
            "lost": max(0, self.trials - len(complete)),
            "duplicated": sum(n - 1 for n in complete.values()),
            "running": sum(t.state == TrialState.RUNNING for t in trials) + running_runs,
            "trials": len(trials),
        }


def _mlflow_running(db: Path, study: str) -> int:
    if not db.is_file():
        return 0
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(f"archsearch/{study}")
    if exp is None:
        return 0
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=10000)
    return sum(r.info.status == "RUNNING" for r in runs)


#: The last stderr line of every worker that exited non-zero, for the report.
LAST_ERRORS: list[str] = []


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[int]:
    codes = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        codes.append(p.returncode)
        if p.returncode and err.strip():
            traceback = " (after a traceback)" if "Traceback" in err else ""
            LAST_ERRORS.append(err.strip().splitlines()[-1][:300] + traceback)
    return codes


def kill_one_of_two(s: Scenario, sig: signal.Signals) -> str:
    a = s.start(interruptible=True)
    s.wait_running(a.pid)
    b = s.start()
    s.wait_running(b.pid)
    os.kill(a.pid, sig)
    codes = _finish([a, b])
    return f"exit codes {codes[0]} (signalled), {codes[1]}"


def launcher(s: Scenario) -> str:
    s.extra = ["+workers=local", "workers.n=2"]
    proc = s.start()
    victim = s.wait_running()
    os.kill(victim, signal.SIGKILL)
    (code,) = _finish([proc])
    return f"launcher exit code {code}"


def outage(s: Scenario) -> str:
    from sqlalchemy.engine import make_url

    from archsearch.testing import OutageProxy

    url = make_url(s.storage)
    proxy = OutageProxy(url.host or "127.0.0.1", url.port or 5432).start()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        procs = [s.start(storage=through)]
        s.wait_running()
        procs.append(s.start(storage=through))
        s.wait_running(procs[1].pid)
        proxy.cut(7)
        codes = _finish(procs)
    finally:
        proxy.stop()
    return f"exit codes {codes} after a 7 s cut"


def disk_full(s: Scenario) -> str:
    mount = s.cwd / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    s.cleanups.append(lambda: subprocess.run(["umount", "-l", str(mount)], check=False))
    if s.storage.startswith("sqlite"):
        s.storage = f"sqlite:///{mount / 'mlruns' / 'optuna.db'}"
    s.mlruns = mount / "mlruns"
    s.extra = [f"tracking.dir={s.mlruns}", f"export.dir={mount / 'results'}"]
    proc = s.start()
    s.wait_running()
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1 << 20, 4096, 1):  # unbuffered, to the last byte
            try:
                while os.write(fd, b"\0" * block):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    time.sleep(4 * s.seconds)  # trials run (or fail) on the full disk
    filler.unlink()  # freed before the next start, as a user would
    (code,) = _finish([proc])
    return f"exit code {code} on the full disk"


def run(name: str, root: Path, storage: str | None, trials: int, seconds: float) -> dict[str, Any]:
    s = Scenario(name, root, storage, trials, seconds)
    faults: dict[str, Callable[[Scenario], str]] = {
        "sigkill": lambda s: kill_one_of_two(s, signal.SIGKILL),
        "sigint": lambda s: kill_one_of_two(s, signal.SIGINT),
        "launcher": launcher,
        "outage": outage,
        "disk_full": disk_full,
    }
    started = time.monotonic()
    try:
        what = faults[name](s)
        recovered = s.next_start()
        counts = s.count()
    finally:
        for cleanup in s.cleanups:
            cleanup()
    return {
        "scenario": name,
        "fault": what,
        "next start": recovered,
        **counts,
        "seconds": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", default=os.environ.get("ARCHSEARCH_TEST_POSTGRES"))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    root = Path(tempfile.mkdtemp(prefix="archsearch_chaos_"))
    shown = describe_url(args.storage) if args.storage else "SQLite per scenario"
    print(f"storage: {shown}; {args.trials} trials of {args.seconds:g} s; in {root}")
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    rows = []
    for name in names:
        if name == "outage" and not (args.storage or "").startswith("postgresql"):
            print(f"{name:10s} skipped: needs --storage postgresql://...")
            continue
        if name == "disk_full" and (os.geteuid() != 0 or not shutil.which("mount")):
            print(f"{name:10s} skipped: mounting a tmpfs needs root")
            continue
        row = run(name, root, args.storage, args.trials, args.seconds)
        rows.append(row)
        print(
            f"{name:10s} completed {row['completed']:>2}/{args.trials}  lost {row['lost']}  "
            f"duplicated {row['duplicated']}  RUNNING {row['running']}  trials {row['trials']:>2}  "
            f"next start exit {row['next start']}  ({row['fault']}; {row['seconds']:.0f} s)",
            flush=True,
        )
        for line in LAST_ERRORS:
            print(f"           a worker's last line: {line}")
        LAST_ERRORS.clear()
    bad = [r["scenario"] for r in rows if r["lost"] or r["duplicated"] or r["running"] or r["next start"]]
    print("verdict:", "0 lost, 0 duplicated, 0 RUNNING in every scenario" if not bad else f"failed: {bad}")
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # the proxy's pipe threads die with their sockets
    main()
