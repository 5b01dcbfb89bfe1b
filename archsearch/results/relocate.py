"""A project that was moved or copied: its stored paths found where it is now.

A project is the directories a search writes: the tracking directory (``tracking.dir``, by
default ``mlruns/``: the Optuna storage ``optuna.db``, MLflow's store ``mlflow.db`` and the
run artifacts under ``artifacts/``) and the export directory (``export.dir``: pareto.csv/json,
``nets/``, ``weights/``). What archsearch stores itself travels with them:

- a trial's ``weights`` user attr is relative to the export directory (:func:`stored_path`);
  an absolute one, written before, is looked up in the current export directory first
  (:func:`weights_file`);
- the stored retrain and finalize commands keep absolute paths, so that one pasted from
  optuna-dashboard still runs, and are re-rooted where the project is now whenever they are
  read (:func:`archsearch.results.commands.relocate_commands`).

MLflow keeps absolute artifact locations in its database (an experiment's
``artifact_location``, each run's ``artifact_uri``; MLflow resolves a relative one against the
working directory before storing it), and its public API cannot change them. So a moved project
is detected (:func:`artifact_root`), read where its artifacts are now (``python -m
archsearch.export`` restores weights from there), refused for new runs until re-rooted, and
re-rooted by :func:`reroot_store` (``python -m archsearch.reroot``), which rewrites those
locations in the SQLite store.
"""

from __future__ import annotations

import shlex
import sqlite3
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from archsearch.errors import ConfigError

__all__ = [
    "ArtifactRoot",
    "Rerooted",
    "artifact_root",
    "locate_artifacts",
    "refuse_moved_store",
    "reroot_command",
    "reroot_store",
    "stored_path",
    "weights_file",
]

#: The folder beside ``mlflow.db`` where archsearch keeps MLflow's artifacts (``tracking.dir/artifacts``).
ARTIFACTS = "artifacts"
#: The MLflow store's file in the tracking directory.
STORE = "mlflow.db"
#: Columns of MLflow's SQLite schema that hold artifact locations (table, column, row filter).
#: Tables or columns an MLflow version lacks are skipped.
URI_COLUMNS = (
    ("experiments", "artifact_location", ""),
    ("runs", "artifact_uri", ""),
    ("logged_models", "artifact_location", ""),
    ("model_versions", "storage_location", ""),
    ("model_versions", "source", ""),
    ("trace_tags", "value", "key = 'mlflow.artifactLocation'"),
)


def stored_path(path: str | Path, root: str | Path) -> str:
    """``path`` as a project stores it: relative to ``root`` (POSIX) when under it, else absolute."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(absolute)


def weights_file(stored: object, export_dir: str | Path) -> Path | None:
    """The weights file a trial's ``weights`` user attr names, as seen from ``export_dir``.

    A relative path is under ``export_dir``. An absolute one (studies written before weights
    were stored relative) is taken from ``export_dir/weights/`` when that holds a file of its
    name (a moved or copied project), else as it is. None when nothing is stored.
    """
    if not stored:
        return None
    path = Path(str(stored))
    if not path.is_absolute():
        return Path(export_dir) / path
    here = Path(export_dir) / "weights" / path.name
    return here if here.is_file() else path


def local_path(uri: str) -> Path | None:
    """The directory a local artifact location names (``file://`` URI or absolute path), else None."""
    if uri.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path))
    path = Path(uri)
    return path if path.is_absolute() else None


def reroot_command(tracking_dir: str | Path) -> str:
    """The command that re-roots the MLflow store in ``tracking_dir`` where it is now."""
    return f"python -m archsearch.reroot {shlex.quote(f'tracking.dir={Path(tracking_dir).resolve()}')}"


@dataclass(frozen=True)
class ArtifactRoot:
    """Where an MLflow experiment says its artifacts are, and where they are now.

    Attributes:
        stored: the experiment's ``artifact_location`` as MLflow keeps it.
        old: the directory it names.
        path: the directory holding the artifacts now (``old`` unless the project moved).
    """

    stored: str
    old: Path
    path: Path

    @property
    def moved(self) -> bool:
        """The artifacts are no longer where MLflow's store says (re-root it)."""
        return self.path != self.old

    def run_dir(self, artifact_uri: str) -> Path | None:
        """A run's artifact directory now (its stored ``artifact_uri`` re-rooted); None if not local."""
        path = local_path(artifact_uri)
        if path is None or not self.moved:
            return path
        try:
            return self.path / path.relative_to(self.old)
        except ValueError:  # a run logged elsewhere than its experiment says
            return path


def artifact_root(store: str, stored: str, artifact_dir: str | Path) -> ArtifactRoot | None:
    """Where the experiment whose artifact location is ``stored`` keeps its artifacts now.

    archsearch creates each experiment with its artifacts in ``artifact_dir``
    (``tracking.dir/artifacts``), beside the SQLite store. A store found at another place than
    its artifact location names was moved or copied: when ``artifact_dir`` holds artifacts, they
    are the ones of this copy. Otherwise the stored location is used while it exists.

    Args:
        store: the MLflow tracking URI (``sqlite:///...`` for the local store).
        stored: the experiment's ``artifact_location``.
        artifact_dir: where the project keeps its artifacts now.

    Returns:
        None when ``stored`` is not a local directory (a tracking server's ``mlflow-artifacts:``,
        cloud storage), which does not move with the project.

    Raises:
        ConfigError: neither the stored location nor ``artifact_dir`` exists (one sentence naming
            the stale path and the re-root command).
    """
    old = local_path(stored)
    if old is None:
        return None
    here = Path(artifact_dir).resolve()
    beside = (
        store.startswith("sqlite:///") and Path(store[len("sqlite:///") :]).resolve().parent == here.parent
    )
    if old == here:
        return ArtifactRoot(stored, old, old)
    if beside and here.is_dir():
        return ArtifactRoot(stored, old, here)
    if old.is_dir():
        return ArtifactRoot(stored, old, old)
    fix = (
        f"copy the project's {ARTIFACTS} folder to {here} and run `{reroot_command(here.parent)}`"
        if beside
        else "put them back"
    )
    raise ConfigError(
        f"the MLflow store {store} keeps its artifacts in {old}, which does not exist"
        f"{f', and {here} does not either' if beside else ''}: {fix}, or set tracking.enabled=false "
        "to go on without them."
    )


def locate_artifacts(tracking_uri: str, experiment: str, artifact_dir: str | Path) -> ArtifactRoot | None:
    """Where the MLflow experiment ``experiment`` keeps its artifacts now; reads, never writes.

    Ask it before writing anything: a store whose artifacts are nowhere is a ConfigError
    naming the stale location (:func:`artifact_root`).

    Args:
        tracking_uri: the MLflow tracking URI ("" when tracking is off).
        experiment: the experiment's name (``archsearch/<study>``).
        artifact_dir: where the project keeps its artifacts now (``tracking.dir/artifacts``).

    Returns:
        None when there is nothing local to look for: tracking off, no store yet, no such
        experiment, or a tracking server (which keeps the artifacts itself).
    """
    from archsearch.storage.database import (
        DATABASE_SCHEMES,
        missing_sqlite_file,
        sqlite_sync_normal,
        url_scheme,
    )

    if url_scheme(tracking_uri) not in DATABASE_SCHEMES or missing_sqlite_file(tracking_uri):
        return None  # a tracking server, or no store yet (asking MLflow would create it)
    from mlflow import MlflowClient

    sqlite_sync_normal()  # before MLflow's engine: a search asks this first, and pools its connections
    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        return None
    return artifact_root(tracking_uri, str(found.artifact_location or ""), artifact_dir)


def refuse_moved_store(store: str, root: ArtifactRoot | None) -> None:
    """Raise a one-sentence ConfigError if runs logged to ``store`` now would land in another project.

    Args:
        store: the MLflow tracking URI.
        root: where its experiment's artifacts are (:func:`artifact_root`, :func:`locate_artifacts`).

    A moved or copied store would write the artifacts of its new runs at the old place (or
    recreate it), apart from the rest of the project: it is re-rooted first.
    """
    if root is not None and root.moved:
        raise ConfigError(
            f"the MLflow store {store} was moved or copied: it still keeps its artifacts in {root.old}, "
            f"not in {root.path}; run `{reroot_command(root.path.parent)}` once, then run this again."
        )


@dataclass
class Rerooted:
    """What :func:`reroot_store` did.

    Attributes:
        store: the SQLite file re-rooted.
        root: the artifact directory it now names.
        old_roots: the artifact locations it named before (empty: nothing needed re-rooting).
        experiments, runs: how many experiments and runs now name ``root``.
        missing: runs re-rooted whose artifact directory is not under ``root`` (runs that
            logged no artifact have none).
    """

    store: Path
    root: Path
    old_roots: list[str] = field(default_factory=list)
    experiments: int = 0
    runs: int = 0
    missing: int = 0


def reroot_store(tracking_dir: str | Path) -> Rerooted:
    """Point the MLflow store ``tracking_dir/mlflow.db`` at the artifacts beside it, where it is now.

    Every experiment whose artifact location is another directory named ``artifacts`` (the
    ``tracking.dir/artifacts`` of the place the project was written) is re-rooted on
    ``tracking_dir/artifacts``, with every artifact location under the old one: runs, logged
    models, model versions, traces. Locations elsewhere (the ``Default`` experiment, a
    tracking server's, cloud storage) are left as they are. Running it again changes nothing.

    MLflow's public API cannot change a stored artifact location, so the SQLite tables are
    written directly, in one transaction (all or nothing), and only where a location starts
    with an old root. Do not run it while a search logs to this store (none can: a moved store
    is refused until it is re-rooted).

    Raises:
        ConfigError: there is no store, or the artifacts it names are not in
            ``tracking_dir/artifacts`` (one sentence naming the stale path).
    """
    db = Path(tracking_dir).resolve() / STORE
    if not db.is_file():
        raise ConfigError(
            f"tracking.dir {str(tracking_dir)!r} holds no MLflow store ({db} does not exist); "
            "give the tracking directory of the project to re-root."
        )
    here = db.parent / ARTIFACTS
    done = Rerooted(db, here)
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _reroot(conn, done)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"the MLflow store {db} cannot be re-rooted ({exc}).") from None
    finally:
        conn.close()
    return done


def _reroot(conn: sqlite3.Connection, done: Rerooted) -> None:
    """The re-rooting inside the caller's transaction; fills ``done``."""
    here = done.root
    olds: dict[str, Path] = {}  # stored location -> the directory it names
    for (location,) in conn.execute("SELECT DISTINCT artifact_location FROM experiments"):
        old = local_path(str(location or ""))
        if old is not None and old != here and old.name == ARTIFACTS:
            olds[str(location)] = old
    if not olds:
        return
    runs = [
        ArtifactRoot(location, old, here).run_dir(str(uri))
        for location, old in olds.items()
        for (uri,) in conn.execute(
            "SELECT artifact_uri FROM runs WHERE " + _under("artifact_uri"), _at(location)
        )
    ]
    found = sum(1 for run in runs if run is not None and run.is_dir())
    if runs and not found:
        where = ", ".join(str(old) for old in olds.values())
        raise ConfigError(
            f"the MLflow store {done.store} keeps its artifacts in {where}, and none of its "
            f"{len(runs)} runs' artifacts are in {here}: copy the project's {ARTIFACTS} folder there first."
        )
    marks = ",".join("?" * len(olds))
    (experiments,) = conn.execute(
        f"SELECT count(*) FROM experiments WHERE artifact_location IN ({marks})", tuple(olds)
    ).fetchone()
    columns = [(t, c, only) for t, c, only in URI_COLUMNS if _has_column(conn, t, c)]
    for location in olds:
        new = here.as_uri() if location.startswith("file:") else str(here)
        for table, column, only in columns:
            conn.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {_under(column)}"
                + (f" AND {only}" if only else ""),
                (new, len(location) + 1, *_at(location)),
            )
    done.old_roots = [str(old) for old in olds.values()]
    done.experiments = int(experiments)
    done.runs = len(runs)
    done.missing = len(runs) - found


def _under(column: str) -> str:
    """SQL: ``column`` is the location bound twice after it, or a path below it."""
    return f"(substr({column}, 1, length(?)) = ? AND substr({column}, length(?) + 1, 1) IN ('', '/'))"


def _at(location: str) -> tuple[str, str, str]:
    return (location, location, location)


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))
