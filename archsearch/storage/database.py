"""Database URLs shared by the Optuna study storage and MLflow: checks that write nothing, and a lock.

A sweep validates everything before it writes anything, so a wrong URL must be found by
*looking*: :func:`check_database_url` connects and runs ``SELECT 1`` on a server, and for
SQLite opens an existing file read-only or checks that its directory could hold a new one.

:class:`StorageLock` is a mutual exclusion shared by every process that uses one storage:
a PostgreSQL advisory lock, a MySQL named lock, or an exclusive ``flock`` on a file beside
a SQLite database. Workers hold it for milliseconds to create tables, find or create the
study's MLflow parent run, and take the next trial, which makes the trial budget exact.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from archsearch.errors import ConfigError

__all__ = [
    "DATABASE_SCHEMES",
    "SERVER_BACKENDS",
    "StorageLock",
    "check_database_url",
    "describe_url",
    "is_database_url",
    "mask_passwords",
    "missing_sqlite_file",
    "open_storage",
    "set_user_attrs",
    "sqlite_sync_normal",
    "stored_study_names",
    "url_scheme",
    "url_without_password",
    "use_wal",
]

#: URL schemes of databases MLflow and Optuna open themselves (not a tracking server).
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
#: Server databases a storage lock is implemented for (SQLite uses a lock file).
SERVER_BACKENDS = ("postgresql", "mysql")
#: One lock per storage: arbitrary, fixed, and the same in every process.
_LOCK_KEY = 0x61726368_73726368  # "archsrch"
_LOCK_NAME = "archsearch"
#: Seconds a connection attempt to a database server may take before the URL counts as unreachable.
CONNECT_TIMEOUT_S = 10


def describe_url(url: str) -> str:
    """``url`` as it may be printed: any password is masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


#: user:password@ in any URL of a text (``postgresql://u:pw@host/db``, ``http://u:pw@host``).
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)")


def mask_passwords(text: str) -> str:
    """``text`` (a logged config, say) with the password of every URL in it masked as ``***``."""
    return _URL_PASSWORD.sub(r"\1***\2", text)


def url_without_password(url: str) -> str:
    """``url`` with its password left out, for commands printed to be pasted: a server URL without
    a password makes libpq (and MySQL clients) read ``PGPASSWORD`` or ``~/.pgpass`` instead."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return mask_passwords(url)
    if parsed.password is None:
        return url
    bare = URL.create(
        parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
    )
    return bare.render_as_string(hide_password=False)


def url_scheme(url: str) -> str:
    """``postgresql+psycopg2://...`` -> ``postgresql``; ``sqlite:///x`` -> ``sqlite``; "" for none."""
    return url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""


def missing_sqlite_file(url: str) -> bool:
    """True for a ``sqlite:///`` URL whose file does not exist (opening it would create it)."""
    return url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file()


def stored_study_names(url: str, key: str = "study.storage") -> list[str]:
    """The study names in an existing storage, read without creating it (a missing SQLite file
    would otherwise be created empty); a missing or unreadable storage is a one-sentence ConfigError."""
    import optuna

    if missing_sqlite_file(url):
        raise ConfigError(f"{key} {url!r} does not exist; run a sweep first or fix {key}.")
    try:
        return list(optuna.get_all_study_names(storage=url))
    except Exception as exc:
        raise ConfigError(f"{key} {url!r} cannot be opened ({type(exc).__name__}).") from None


def is_database_url(url: str) -> bool:
    """True for a URL SQLAlchemy can parse (``sqlite:///x.db``, ``postgresql://...``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except (ArgumentError, ValueError):
        return False
    return True


def _backend(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name()


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return " ".join((text.splitlines() or [type(exc).__name__])[0].split()).rstrip(".")


def check_database_url(url: str, key: str) -> None:
    """Raise a one-sentence ConfigError naming ``key`` unless ``url`` can be used; write nothing.

    Args:
        url: a SQLAlchemy database URL.
        key: the config key it came from (``study.storage``, ``tracking.uri``), for the message.
    """
    shown = describe_url(url)
    if not is_database_url(url):
        raise ConfigError(
            f"{key} {shown!r} is not a database URL; use sqlite:///path/to/file.db or "
            "postgresql://user:password@host:5432/database."
        )
    backend = _backend(url)
    if backend == "sqlite":
        _check_sqlite(url, key)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    connect_args: dict[str, Any] = {}
    if backend in SERVER_BACKENDS:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{key} {shown!r} needs the Python database driver {exc.name!r}, which is not installed."
        ) from None
    except Exception as exc:
        raise ConfigError(f"{key} {shown!r} is not a usable database URL ({_first_line(exc)}).") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise ConfigError(
            f"{key} {shown!r} cannot be reached ({_first_line(exc)}); "
            "check the URL and that the database server runs."
        ) from None
    finally:
        engine.dispose()


def _check_sqlite(url: str, key: str) -> None:
    path = _sqlite_path(url)
    if path is None:
        return
    shown = describe_url(url)
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{key} {shown!r} names {path}, which is not a file.")
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                conn.execute("PRAGMA schema_version").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise ConfigError(f"{key} {shown!r} cannot be read as SQLite ({exc}).") from None
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{key} {shown!r} is read-only; a sweep needs to write to it.")
        return
    # A new database: its directory will be created, so the nearest existing one must be writable.
    ancestor = path.resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {shown!r} cannot be created: {ancestor} is not a writable directory.")


def use_wal(url: str) -> None:
    """Switch a SQLite database to write-ahead logging (a no-op for other URLs).

    A commit then costs one append instead of a rollback journal's create-write-delete, which
    halves what MLflow spends per trial, and readers no longer block the workers' writes. The
    mode is stored in the file, so once is enough; a database busy at that moment keeps its mode.
    """
    if not is_database_url(url) or _backend(url) != "sqlite":
        return
    path = _sqlite_path(url)
    if path is None or not path.is_file():
        return
    try:
        conn = sqlite3.connect(path, timeout=1.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return


_SYNC_LISTENER: list[Any] = []


def sqlite_sync_normal() -> None:
    """Every SQLite connection this process opens (Optuna's and MLflow's) syncs at checkpoints only.

    In WAL mode SQLite's default ``synchronous=FULL`` fsyncs the log on every commit, and a
    trial makes about 50 commits (one per sampled parameter, attribute and MLflow batch):
    2.8 ms each here. ``NORMAL`` keeps the database consistent and loses nothing when a
    process is killed; only an operating-system crash or power cut can roll back the last
    commits before a checkpoint. Registered once, on SQLAlchemy's engine class: call it
    before the first engine is created, or pooled connections keep the default.
    """
    if _SYNC_LISTENER:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(Engine, "connect", on_connect)
    _SYNC_LISTENER.append(on_connect)


def set_user_attrs(trial: Any, attrs: Mapping[str, Any]) -> None:
    """Set several user attrs of a running ``optuna.Trial`` at once: one transaction on a database.

    ``Trial.set_user_attr`` opens a session and commits once per key; a trial records about ten
    keys, so on a database storage they are written in one session and one commit
    (archsearch.storage.optuna_compat says how, and what it saves). Any other storage, or an
    Optuna whose internals moved, gets the public one-key calls: the same rows, slower.
    """
    from archsearch.storage.optuna_compat import set_user_attrs_in_one_write
    from archsearch.storage.outage import retry_lost_connection

    if not attrs or retry_lost_connection(set_user_attrs_in_one_write, trial, attrs):
        return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def open_storage(
    url: str,
    heartbeat_interval: int,
    grace_period: int,
    on_stale: Callable[[Any, Any], None] | None,
    *,
    outage_s: float = 0.0,
) -> Any:
    """The study storage with heartbeats: a trial silent for ``grace_period`` s is failed.

    A database server that refuses connections is retried for ``outage_s`` seconds
    (archsearch.storage.outage) before :class:`~archsearch.errors.StorageUnreachable`.
    """
    import warnings

    import optuna

    from archsearch.storage.outage import OutageTolerantStorage, ride_out_outages

    sqlite_sync_normal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = OutageTolerantStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=on_stale,
        )
    storage.outage_s = outage_s
    ride_out_outages(storage.engine, outage_s, describe_url(url))
    use_wal(url)
    return storage


class StorageLock:
    """Mutual exclusion among all processes (on any machines) that share one storage URL.

    A context manager; not reentrant. Supported: SQLite (an ``flock`` on ``FILE.lock``, so
    the database's directory must be local or on a file system with working locks), PostgreSQL
    (``pg_advisory_lock``) and MySQL (``GET_LOCK``). A process that dies holding it releases it:
    the kernel drops the file lock and the server ends the session.

    Args:
        url: the study storage URL (as validated by :func:`check_database_url`).
        outage_s: how long a server that refuses connections is retried (archsearch.storage.outage).
    """

    def __init__(self, url: str, *, outage_s: float = 0.0) -> None:
        self.url = url
        self.outage_s = outage_s
        self._backend = _backend(url)
        if self._backend != "sqlite" and self._backend not in SERVER_BACKENDS:
            raise ConfigError(
                f"study.storage {describe_url(url)!r} uses {self._backend}, which cannot coordinate workers; "
                "use sqlite, postgresql or mysql."
            )
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._conn: Any = None
        self._engine: Any = None

    def __enter__(self) -> StorageLock:
        self._threads.acquire()
        try:
            if self._backend == "sqlite":
                self._lock_file()
            else:
                self._lock_server()
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._fd is not None:
                import fcntl

                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
            if self._conn is not None:
                from sqlalchemy import text

                postgres = self._backend == "postgresql"
                sql = "SELECT pg_advisory_unlock(:k)" if postgres else "SELECT RELEASE_LOCK(:n)"
                try:
                    self._conn.execute(text(sql), {"k": _LOCK_KEY, "n": _LOCK_NAME})
                except Exception:
                    # The server went away while the lock was held: its session, and so the lock, ended.
                    self._conn.invalidate()
                finally:
                    self._conn.close()
                    self._conn = None
        finally:
            self._threads.release()

    def _lock_file(self) -> None:
        path = _sqlite_path(self.url)
        if path is None:  # in-memory: only this process can see it, the thread lock suffices
            return
        import fcntl

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            shown = describe_url(self.url)
            raise ConfigError(
                f"study.storage {shown!r} cannot be created ({exc.strerror}: {exc.filename})."
            ) from None
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def _lock_server(self) -> None:
        from sqlalchemy import create_engine, text

        if self._engine is None:
            # Its own small pool: the lock's session must not be one Optuna is using.
            self._engine = create_engine(
                self.url,
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
            )
            from archsearch.storage.outage import ride_out_outages

            ride_out_outages(self._engine, self.outage_s, describe_url(self.url))
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if self._backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            else:
                conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": _LOCK_NAME})
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Release the server connection pool (the lock itself is released on every exit)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
