"""MLflow tracking: one experiment and one parent run per study, one child run per trial.

Everything goes through ``MlflowClient`` with explicit run ids (no global active run), so
several workers, threads or a notebook can log to the same study safely.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from archsearch.errors import ConfigError
from archsearch.storage.database import DATABASE_SCHEMES, url_scheme

__all__ = [
    "STUDY_TAG",
    "NullTracker",
    "Tracker",
    "TrialTracker",
    "check_tracking_uri",
    "open_tracker",
    "resolve_tracking_uri",
    "runs_view_url",
]

STUDY_TAG = "archsearch.study"
ROLE_TAG = "archsearch.role"
TRIAL_TAG = "archsearch.trial"
#: Seconds a tracking server may take to answer /health before it counts as unreachable.
HEALTH_TIMEOUT_S = 10
#: Where ``mlflow ui`` serves when given no ``--host``/``--port``.
LOCAL_UI = "http://127.0.0.1:5000"
#: MLflow 3's UI opens an experiment on its GenAI traces page unless the experiment says it
#: holds model training; with this tag it opens on the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: The query of MLflow 3's UI (3.x: ``workflowType`` is ``genai`` or ``machine_learning``) that
#: opens an experiment's pages in the classic model-training layout (Runs, Models, ...).
WORKFLOW_QUERY = "workflowType=machine_learning"


def resolve_tracking_uri(uri: str | None, directory: str | Path = "mlruns") -> str:
    """``None`` means the default SQLite backend under ``directory``; a bare path means SQLite there.

    Pure: nothing is created until a :class:`Tracker` opens the URI.
    """
    if uri is None or str(uri) == "":
        return f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"
    text = str(uri)
    if "://" not in text and not text.startswith("sqlite:"):
        return f"sqlite:///{Path(text).resolve()}"
    return text


def runs_view_url(tracking_uri: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's runs table (its ``/runs`` tab), in the classic layout.

    A tracking server serves the UI itself; a database backend is read by ``mlflow ui``,
    which serves on :data:`LOCAL_UI` by default. MLflow 3's UI shows an experiment in its
    GenAI layout unless the page's ``workflowType`` query says otherwise (or the browser
    remembers the other choice), so the URL asks for :data:`WORKFLOW_QUERY`.
    """
    base = tracking_uri.rstrip("/") if url_scheme(tracking_uri) in ("http", "https") else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}"


OTHER_SCHEMES = ("databricks", "databricks-uc", "uc")  # hosted backends, checked by MLflow itself


def check_tracking_uri(uri: str) -> None:
    """Raise a one-sentence ConfigError unless the MLflow backend at ``uri`` answers; write nothing.
    A database URI is connected to (or, for SQLite, its file or directory inspected); an
    ``http(s)://`` server must answer ``/health``; :data:`OTHER_SCHEMES` are left to MLflow.
    """
    from archsearch.storage.database import check_database_url, describe_url

    scheme = url_scheme(uri)
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S) as reply:
                status = reply.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"tracking.uri {describe_url(uri)!r} cannot be reached ({reason}); "
                "start the MLflow server or fix tracking.uri."
            ) from None
        if status != 200:
            raise ConfigError(
                f"tracking.uri {describe_url(uri)!r} answered HTTP {status} on /health; "
                "it is not a running MLflow tracking server."
            )
    elif scheme in DATABASE_SCHEMES:
        check_database_url(uri, "tracking.uri")
    elif scheme in ("file", ""):
        raise ConfigError(
            f"tracking.uri {describe_url(uri)!r} is MLflow's plain-file store, which MLflow 3 refuses; leave "
            "tracking.uri null (SQLite under tracking.dir) or give sqlite:///PATH or http://HOST:PORT."
        )
    elif scheme not in OTHER_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in ("http(s)", *DATABASE_SCHEMES, *OTHER_SCHEMES))
        raise ConfigError(
            f"tracking.uri {describe_url(uri)!r} has an unknown scheme {scheme!r}; allowed: {allowed}."
        )


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


class TrialTracker(Protocol):
    """Where a search and a finalize log their runs: :class:`Tracker` (MLflow) or :class:`NullTracker`.

    A study has one parent run (:meth:`start_study`) and one run per trial or finalized member;
    every method taking a ``run_id`` ignores an empty one, which is what a tracker that logs
    nothing hands out.
    """

    enabled: bool
    experiment_id: str
    parent_run_id: str

    def start_study(self, study_name: str, params: Mapping[str, Any], config_yaml: str) -> str: ...
    def end_study(self, status: str = "FINISHED") -> None: ...
    def start_trial(
        self,
        number: int,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        metrics: Mapping[str, float] | None = None,
    ) -> str: ...
    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None: ...
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None: ...
    def log_texts(self, run_id: str, texts: Mapping[str, str]) -> None: ...
    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None: ...
    def end_trial(
        self,
        run_id: str,
        status: str,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None: ...
    def trial_runs(self, study_name: str, running_only: bool = False) -> dict[int, str]: ...


class NullTracker:
    """Tracking off (``tracking.enabled=false``): logs nothing, hands out empty run ids."""

    enabled = False
    experiment_id = ""
    parent_run_id = ""

    def start_study(self, study_name: str, params: Mapping[str, Any], config_yaml: str) -> str:
        return ""

    def end_study(self, status: str = "FINISHED") -> None:
        return None

    def start_trial(
        self,
        number: int,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        metrics: Mapping[str, float] | None = None,
    ) -> str:
        return ""

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        return None

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        return None

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        return None

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        return None

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        return None

    def log_texts(self, run_id: str, texts: Mapping[str, str]) -> None:
        return None

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def end_trial(
        self,
        run_id: str,
        status: str,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        return None

    def trial_runs(self, study_name: str, running_only: bool = False) -> dict[int, str]:
        return {}


def open_tracker(
    uri: str, experiment: str, artifact_dir: str | Path | None, *, enabled: bool
) -> TrialTracker:
    """The study's tracker: MLflow at ``uri`` (experiment created if new), or a NullTracker when off."""
    if not enabled:
        return NullTracker()
    return Tracker(uri, experiment, artifact_dir)


class Tracker:
    """Thin, explicit wrapper over ``mlflow.MlflowClient`` for one study.

    Args:
        uri: MLflow tracking URI (``sqlite:///...``, ``http://127.0.0.1:5000``, ...).
        experiment: experiment name; one per study.
        artifact_dir: where a new experiment keeps artifacts when the backend is local
            SQLite (ignored for a tracking server, which decides itself).
    Tracking off is :class:`NullTracker` (:func:`open_tracker` picks).
    """

    enabled = True

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_dir: str | Path | None = None,
    ) -> None:
        self.uri = uri
        self.experiment_name = experiment
        self.experiment_id = ""
        self.parent_run_id = ""
        #: Artifact URI of each trial run started here and not yet given its texts.
        self._artifact_uris: dict[str, str] = {}
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from archsearch.storage.database import sqlite_sync_normal, use_wal

        sqlite_sync_normal()

        if uri.startswith("sqlite:///"):
            try:
                Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"tracking.uri {uri!r} cannot be created ({exc.strerror}: {exc.filename})."
                ) from None
        # Our own progress lines say where runs are; MLflow would print two URLs per trial
        # (and fetch the run again to build them).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        fresh = _seed_sqlite_store(uri)
        self._client = MlflowClient(tracking_uri=uri)
        try:
            found = self._client.get_experiment_by_name(experiment)
            if fresh:
                _keep_as_template(uri)
                store = Path(uri[len("sqlite:///") :])
                _own_default_experiment(store, store.parent)
            if found is None:
                location = None
                if url_scheme(uri) in DATABASE_SCHEMES and artifact_dir is not None:
                    location = Path(artifact_dir).resolve().as_uri()
                try:
                    self.experiment_id = self._client.create_experiment(
                        experiment, artifact_location=location, tags=EXPERIMENT_KIND
                    )
                except MlflowException:
                    # Another worker created it between our lookup and create.
                    again = self._client.get_experiment_by_name(experiment)
                    if again is None:
                        raise
                    self.experiment_id = again.experiment_id
            else:
                self.experiment_id = found.experiment_id
                if not set(EXPERIMENT_KIND) <= set(found.tags):  # made before archsearch tagged it
                    for key, value in EXPERIMENT_KIND.items():
                        self._client.set_experiment_tag(self.experiment_id, key, value)
        except MlflowException as exc:
            raise ConfigError(
                f"tracking.uri {uri!r} is not a usable MLflow backend: {str(exc).splitlines()[0]}"
            ) from None
        except Exception as exc:  # connection errors come in many types (requests, sqlalchemy)
            raise ConfigError(
                f"tracking.uri {uri!r} cannot be reached ({type(exc).__name__}); "
                "start the server or fix tracking.uri."
            ) from None
        use_wal(uri)  # MLflow has created the tables of a new SQLite file by now
        if found is not None and artifact_dir is not None and url_scheme(uri) in DATABASE_SCHEMES:
            from archsearch.results.relocate import artifact_root, refuse_moved_store

            # A moved or copied store would log new runs' artifacts where it was written.
            refuse_moved_store(uri, artifact_root(uri, str(found.artifact_location or ""), artifact_dir))

    def start_study(self, study_name: str, params: Mapping[str, Any], config_yaml: str) -> str:
        """Find or create the study's single parent run (shared by resumes and workers)."""
        existing = self._parent_runs(study_name)
        if existing:
            self.parent_run_id = existing[0]
            self._client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        run = self._client.create_run(
            self.experiment_id,
            run_name=f"study-{study_name}",
            tags={STUDY_TAG: study_name, ROLE_TAG: "parent"},
        )
        mine = run.info.run_id
        # Two workers starting together may both create one: the earliest wins, others delete theirs.
        winner = self._parent_runs(study_name)[0]
        if winner != mine:
            self._client.delete_run(mine)
        else:
            self.log_params(mine, params)
            self._client.log_text(mine, config_yaml, "config.yaml")
        self.parent_run_id = winner
        return winner

    def _parent_runs(self, study_name: str) -> list[str]:
        runs = self._client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'parent'",
            order_by=["attributes.start_time ASC"],
            max_results=10,
        )
        runs.sort(key=lambda r: (r.info.start_time, r.info.run_id))
        return [r.info.run_id for r in runs]

    def end_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self._client.set_terminated(self.parent_run_id, status=status)

    def start_trial(
        self,
        number: int,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        metrics: Mapping[str, float] | None = None,
    ) -> str:
        """Create the child run of trial ``number`` with its sampled parameters (and costs)."""
        all_tags = {
            "mlflow.parentRunId": self.parent_run_id,
            STUDY_TAG: tags.get(STUDY_TAG, ""),
            ROLE_TAG: "trial",
            TRIAL_TAG: str(number),
            **tags,
        }
        run = self._client.create_run(self.experiment_id, run_name=f"trial-{number}", tags=all_tags)
        self._artifact_uris[str(run.info.run_id)] = str(run.info.artifact_uri or "")
        self.log(run.info.run_id, params=params, metrics=metrics)
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        """Log params, finite metrics and tags in as few calls as MLflow allows (one, usually).

        NaN/inf metrics are skipped: MLflow stores them poorly and they carry no information.
        """
        if not run_id:
            return
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        p = [Param(k, str(v)[:6000]) for k, v in _flat(params or {}).items()]
        m = [
            Metric(k, float(v), now, step)
            for k, v in (metrics or {}).items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        ]
        t = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        # log_batch takes at most 100 params and 100 tags per call.
        while p or m or t:
            self._client.log_batch(run_id, metrics=m[:1000], params=p[:100], tags=t[:100])
            p, m, t = p[100:], m[1000:], t[100:]

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self.log(run_id, params=params)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log(run_id, metrics=metrics, step=step)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.log(run_id, tags=tags)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        if run_id:
            self._client.log_text(run_id, text, artifact_file)

    def log_texts(self, run_id: str, texts: Mapping[str, str]) -> None:
        """Log several small text files (name -> content) at the run's artifact root, in one upload."""
        if not (run_id and texts):
            return
        import tempfile

        uri = self._artifact_uris.pop(run_id, "")
        if uri.startswith("file:"):
            # A local artifact store is a directory: write into it, as MLflow's local repository
            # would after copying, without its run lookup and temporary copy.
            from mlflow.utils.file_utils import local_file_uri_to_path

            root = Path(local_file_uri_to_path(uri))
            root.mkdir(parents=True, exist_ok=True)
            for name, text in texts.items():
                (root / name).write_text(text, encoding="utf-8")
            return
        with tempfile.TemporaryDirectory(prefix="archsearch-") as tmp:
            for name, text in texts.items():
                (Path(tmp) / name).write_text(text, encoding="utf-8")
            self._client.log_artifacts(run_id, tmp)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        if run_id:
            self._client.log_artifact(run_id, str(path), artifact_path)

    def end_trial(
        self,
        run_id: str,
        status: str,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        """Log the last metrics and tags, then close a child run: FINISHED, FAILED or KILLED.

        Args:
            step: the metric step of ``metrics``; a metric also logged per epoch must not be
                logged again here at another step, or its chart gains a point no epoch made.
        """
        if run_id:
            self.log(run_id, metrics=metrics, tags=tags, step=step)
            self._client.set_terminated(run_id, status=status)

    def trial_runs(self, study_name: str, running_only: bool = False) -> dict[int, str]:
        """Trial number -> child run id, for every trial of the study logged so far (or still RUNNING)."""
        out: dict[int, str] = {}
        token = None
        running = " and attributes.status = 'RUNNING'" if running_only else ""
        while True:
            page = self._client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'trial'{running}",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                number = run.data.tags.get(TRIAL_TAG)
                if number is not None:
                    out.setdefault(int(number), run.info.run_id)
            token = page.token
            if not token:
                return out


def _store_template() -> Path:
    """An empty, fully migrated MLflow SQLite store for this MLflow version (per user)."""
    import mlflow

    from archsearch.resources import user_cache_dir

    return user_cache_dir() / "mlflow" / f"empty-{mlflow.__version__}.db"


def _seed_sqlite_store(uri: str) -> bool:
    """Start a new SQLite MLflow store from the cached empty one; True if MLflow must create it.

    MLflow creates a store by running its ~50 schema migrations: 1.1 s of every fresh project's
    start-up here. A copy of an empty store it made before (same MLflow version) is the same
    file but for where its Default experiment keeps artifacts, which is set to this project's.
    ``os.link`` puts the copy in place only if no other worker created the store first.
    """
    if not uri.startswith("sqlite:///"):
        return False
    db = Path(uri[len("sqlite:///") :])
    if db.exists():
        return False
    template = _store_template()
    if not template.is_file():
        return True
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        copy = Path(tmp) / db.name
        shutil.copyfile(template, copy)
        _own_default_experiment(copy, db.parent)
        with contextlib.suppress(FileExistsError):
            os.link(copy, db)
    return False


def _own_default_experiment(store: Path, tracking_dir: Path) -> None:
    """Point the copied store's Default experiment (id 0) at this project's artifacts folder: the
    template kept the location of whichever project MLflow first made it in."""
    import sqlite3

    location = str((tracking_dir / "artifacts" / "0").resolve())
    with contextlib.closing(sqlite3.connect(store)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (location,))


def _keep_as_template(uri: str) -> None:
    """Keep the store MLflow has just created (nothing but its default experiment) for next time."""
    import shutil

    template = _store_template()
    if template.is_file():
        return
    with contextlib.suppress(OSError):
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(uri[len("sqlite:///") :], partial)
        os.replace(partial, template)
