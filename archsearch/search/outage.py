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
(the CLI exits 4), leaving its running trial to the heartbeat recovery of the next start. A
statement already in flight when the server stops still fails: the window is the few
milliseconds a storage call takes.

SQLite files are not touched: a local file has no outage to ride out.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from archsearch.errors import StorageUnreachable

__all__ = ["BACKOFF_S", "ride_out_outages"]

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
