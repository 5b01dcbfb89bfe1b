"""Ride out a short database outage: a connection refused is retried with backoff for a while.

A study on PostgreSQL or MySQL outlives a server restart (a failover, an upgrade, a stopped
container) only if its workers wait for the server instead of failing the trial they are
training. Every database connection SQLAlchemy opens for an engine goes through its
``do_connect`` event, including the reconnection ``pool_pre_ping`` makes after the server
went away, so that one place covers Optuna's storage calls, archsearch's own one-transaction
writes, the heartbeats and the workers' storage lock alike.

While the server refuses connections, each attempt is retried after 0.5, 1, 2, 4, then every
5 seconds, with one line on stderr when the wait starts and one when it ends; after
``outage_s`` seconds without a connection the worker gives up with :class:`StorageUnreachable`
(the CLI exits 4), leaving its running trial to the heartbeat recovery of the next start.

A statement already in flight when the server went away fails on a dead connection rather than
at connect time; :class:`OutageTolerantStorage` (Optuna's RDBStorage) and
:func:`retry_lost_connection` (archsearch's own one-transaction writes) run such a call again,
up to twice, and the new connection then waits as above. The call's transaction was rolled
back with the connection, so nothing is written twice; the one exception is a commit the
server made just before the connection died, which for ``create_new_trial`` would leave one
extra trial that is never run (it goes stale and is failed, and is retried, not counted).

SQLite files are not touched: a local file has no outage to ride out.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna

from archsearch.errors import StorageUnreachable, causes
from archsearch.storage.optuna_compat import CACHED_BACKEND_CALLS

__all__ = ["BACKOFF_S", "OutageTolerantStorage", "retry_lost_connection", "ride_out_outages"]

T = TypeVar("T")

#: Waits between attempts: then the last one repeats until the outage budget is spent.
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)


def ride_out_outages(
    engine: Any,
    outage_s: float,
    shown_url: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Make ``engine`` retry refused connections for up to ``outage_s`` seconds.

    Args:
        engine: a SQLAlchemy engine on a database server (a SQLite engine is left as is).
        outage_s: how long one connection attempt may keep retrying; 0 fails at once, as
            SQLAlchemy does by default.
        shown_url: the URL as it may be printed (password masked), for the messages.
        sleep, clock: injected by tests.

    Raises (from the connection attempt):
        StorageUnreachable: the server refused every attempt for ``outage_s`` seconds.
    """
    if engine.dialect.name == "sqlite" or outage_s <= 0:
        return
    from sqlalchemy import event

    dbapi = engine.dialect.loaded_dbapi
    report = _Report(shown_url)

    def connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        started = clock()
        attempt = 0
        while True:
            try:
                conn = dbapi.connect(*cargs, **cparams)
            except dbapi.OperationalError as exc:
                waited = clock() - started
                if waited >= outage_s:
                    report.gave_up(waited)
                    raise StorageUnreachable(
                        f"the study storage {shown_url!r} has refused connections for {waited:.0f} s "
                        f"(study.storage_outage_s is {outage_s:g}); the running trials are retried "
                        "when the study is started again."
                    ) from exc
                report.waiting(_first_line(exc), outage_s)
                sleep(min(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], max(0.0, outage_s - waited)))
                attempt += 1
                continue
            if attempt:
                report.back(clock() - started)
            return conn

    event.listen(engine, "do_connect", connect)


class _Report:
    """One line when a process starts waiting for the server and one when it is back (any thread)."""

    def __init__(self, shown_url: str) -> None:
        self.shown_url = shown_url
        self._lock = threading.Lock()
        self._waiting = False

    def waiting(self, reason: str, outage_s: float) -> None:
        with self._lock:
            if self._waiting:
                return
            self._waiting = True
        print(
            f"warning: the study storage {self.shown_url!r} refuses connections ({reason}); "
            f"retrying for up to {outage_s:g} s (study.storage_outage_s).",
            file=sys.stderr,
            flush=True,
        )

    def back(self, waited: float) -> None:
        with self._lock:
            if not self._waiting:
                return
            self._waiting = False
        print(f"the study storage {self.shown_url!r} answers again after {waited:.0f} s.", file=sys.stderr)

    def gave_up(self, waited: float) -> None:
        with self._lock:
            self._waiting = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join((text.splitlines() or [type(exc).__name__])[0].split()).rstrip(".")


def lost_connection(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a database connection that failed or was lost."""
    from sqlalchemy import exc as sa

    for current in causes(exc):
        if isinstance(current, StorageUnreachable):
            return False  # the outage budget is spent: give up
        if isinstance(current, sa.OperationalError | sa.InterfaceError) or (
            isinstance(current, sa.DBAPIError) and current.connection_invalidated
        ):
            return True
    return False


def retry_lost_connection(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, run again (at most twice) when it failed on a lost connection."""
    for attempt in range(3):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == 2 or not lost_connection(exc):
                raise
    raise AssertionError("unreachable")


class OutageTolerantStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose calls are run again when their connection was lost mid-statement.

    Set ``outage_s`` (seconds, as :func:`ride_out_outages`); 0 keeps RDBStorage's behaviour.
    """

    outage_s: float = 0.0


def _tolerant(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: OutageTolerantStorage, *args: Any, **kwargs: Any) -> Any:
        if self.outage_s <= 0:
            return method(self, *args, **kwargs)
        return retry_lost_connection(method, self, *args, **kwargs)

    return call


for _name in (
    "create_new_study",
    "create_new_trial",
    "get_all_studies",
    "get_all_trials",
    "get_best_trial",
    "get_n_trials",
    "get_study_directions",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_system_attrs",
    "get_study_user_attrs",
    "get_trial",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "get_trial_params",
    "get_trial_system_attrs",
    "get_trial_user_attrs",
    "record_heartbeat",
    "set_study_system_attr",
    "set_study_user_attr",
    "set_trial_intermediate_value",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_system_attr",
    "set_trial_user_attr",
    *CACHED_BACKEND_CALLS,  # what a study's caching wrapper calls on it, which the names above miss
):
    setattr(OutageTolerantStorage, _name, _tolerant(_name))
