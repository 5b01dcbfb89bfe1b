"""Many workers, one study: an exact trial budget, heartbeats, crash retries and a clean Ctrl-C.

Any number of processes, on any machines, may run the same study against one storage.
They never talk to each other, only to the storage, and take turns under a
:class:`~archsearch.storage.database.StorageLock` (held for milliseconds) to take the next trial.

The budget rule (``study.n_trials`` is a total, not a per-worker count):

* A trial's *slot* is its own number, or for a retry the number of the trial it retries
  (Optuna's ``failed_trial`` system attribute). Each slot is one architecture evaluation;
  the latest trial of a slot says its state.
* Under the lock a worker counts finished slots (complete, pruned, failed) and running ones,
  and asks Optuna for a trial only while ``finished + running < n_trials``. ``study.ask()``
  first pops a waiting trial (a retry, or one a user enqueued), else creates one, and no
  other worker asks meanwhile: so the study never holds more than ``n_trials`` slots, and no
  trial is ever created only to be thrown away.
* With no free slot but trials still running elsewhere, a worker waits (looking again every
  second) instead of leaving: if one of those workers has died, its trial is failed once
  its heartbeat is ``grace_period`` seconds old, and its retry needs a worker.
  A worker leaves once every slot is finished, at ``study.timeout``, or on Ctrl-C.
* ``study.max_epochs`` bounds the training epochs the study consumes: the ``epochs_done`` its
  trials stored (pruned and failed ones included; a reused result trained none), summed under
  the same lock, so all workers share one budget. Once reached, no worker takes a new trial;
  running ones finish, so the study may overshoot by what they train.

Crash safety: every running trial records a heartbeat in the storage. A trial whose heartbeat
stops (the worker was killed, lost its node or its network) is marked FAIL by the next worker
that looks, or by the next start; ``on_stale`` then closes its MLflow run and a WAITING retry
with the same parameters takes over its slot (``study.retries`` times at most). Ctrl-C fails
the running trial the same way and queues its retry, so a later start redoes it; a trial that
Optuna recorded COMPLETE is never touched again, so nothing completed is lost or run twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.errors import WorkerFault
from archsearch.storage import optuna_compat
from archsearch.storage.database import StorageLock

__all__ = [
    "Budget",
    "StaleTrialCallback",
    "WorkerGridSampler",
    "budget",
    "epochs_consumed",
    "interrupted_trial",
    "run_trials",
    "sigint_ignored",
    "worker_id",
    "worker_seed",
    "worker_threads",
]

#: System attribute Optuna's retry callback puts on a retry: the number of the first failed trial.
RETRIED_FROM = "failed_trial"
#: How a study records how many worker processes have started on it (for distinct sampler seeds).
WORKERS_STARTED = "workers_started"

ObjectiveFn = Callable[[optuna.Trial], Sequence[float] | float]
TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class Budget:
    """Slots of a study by the state of their latest trial."""

    n_trials: int
    finished: int
    running: int
    waiting: int

    @property
    def free(self) -> int:
        """Slots a worker may still take now (waiting trials are popped before new ones are made)."""
        return self.n_trials - self.finished - self.running

    @property
    def done(self) -> bool:
        return self.free <= 0 and self.running == 0


def slot_of(trial: FrozenTrial) -> int:
    """The budget slot a trial fills: its own number, or the number of the trial it retries."""
    return int(trial.system_attrs.get(RETRIED_FROM, trial.number))


def budget(trials: Sequence[FrozenTrial], n_trials: int) -> Budget:
    """Count ``trials`` against ``n_trials``: one slot per trial and its retries."""
    latest: dict[int, FrozenTrial] = {}
    for t in trials:
        slot = slot_of(t)
        if slot not in latest or t.number > latest[slot].number:
            latest[slot] = t
    states = [t.state for t in latest.values()]
    return Budget(
        n_trials=n_trials,
        finished=sum(s.is_finished() for s in states),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )


def epochs_consumed(trials: Sequence[FrozenTrial]) -> int:
    """Training epochs ``trials`` consumed: their stored ``epochs_done``, reused results excluded."""
    return int(
        sum(float(t.user_attrs.get("epochs_done", 0)) for t in trials if "reused_from" not in t.user_attrs)
    )


def worker_id() -> str:
    """``host:pid`` of this process, stored on every trial it runs (user attr ``worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_seed(seed: int, index: int) -> int:
    """The sampler seed of the ``index``-th process started on a study.

    The first keeps ``seed`` (a single-process run is reproducible); later ones (other
    workers, resumes) get distinct seeds, since identical seeds would make every worker
    propose the same random start-up architectures.
    """
    return (seed + 1_000_003 * index) % 2**32


def worker_threads(cores: int, parallel_jobs: int) -> int:
    """Torch threads for one of ``parallel_jobs`` processes sharing ``cores`` (at least 1).

    ``parallel_jobs`` follows joblib: ``-1`` is one job per core, ``-2`` all cores but one.
    """
    jobs = parallel_jobs if parallel_jobs > 0 else max(1, cores + 1 + parallel_jobs)
    return max(1, cores // jobs)


class StaleTrialCallback:
    """What happens to a trial whose worker stopped: ``cleanup`` (close its MLflow run), then a retry.

    Args:
        retries: how often one architecture is retried after its worker died or was
            interrupted (0: never; the failed trial then counts as finished).
        cleanup: called first with the failed trial (e.g. to close its MLflow run).
    """

    def __init__(self, retries: int, cleanup: TrialCallback | None = None) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)
        self.cleanup = cleanup

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # The retry first: it is one write, and a worker killed while cleaning up (a launcher
        # tearing down its jobs) must not leave a failed slot without its retry.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry(study, trial)
        if self.cleanup is not None:
            self.cleanup(study, trial)


class _Heartbeat:
    """Records the trial's heartbeat now and every ``interval`` seconds until the block ends."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            # A storage hiccup must not kill the trial; missing beats past the grace period will.
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C while the block cleans up after one (in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class WorkerGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler for :func:`run_trials`' ask-and-tell loop.

    Optuna's version calls ``study.stop()`` after the last grid point, which is only allowed
    inside ``study.optimize`` and would leave that trial RUNNING; here the loop itself stops
    taking trials once :meth:`is_exhausted` says every grid point is taken.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def _grid_exhausted(study: optuna.Study) -> bool:
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for Study.optimize; this loop records them itself.
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


def interrupted_trial(
    study: optuna.Study, trial: optuna.Trial, on_stale: TrialCallback | None, state: str = "interrupted"
) -> FrozenTrial | None:
    """Fail a trial cut short by Ctrl-C (or a fault: ``state``) and queue its retry; None if
    Optuna had already recorded it."""
    if study.get_trials(deepcopy=False)[trial.number].state != TrialState.RUNNING:
        return None
    trial.set_user_attr("state", state)
    frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if on_stale is not None:
        on_stale(study, frozen)
    return frozen


def run_trials(
    study: optuna.Study,
    objective: ObjectiveFn,
    *,
    storage: optuna.storages.RDBStorage,
    lock: StorageLock,
    n_trials: int,
    timeout: float | None = None,
    catch: tuple[type[Exception], ...] = (),
    callbacks: Sequence[TrialCallback] = (),
    on_stale: TrialCallback | None = None,
    on_wait: Callable[[Budget], None] | None = None,
    max_epochs: int | None = None,
) -> int:
    """Run trials of ``study`` until it holds ``n_trials`` finished slots (see the module docstring).

    Args:
        study: the shared study (opened on ``storage``).
        objective: returns the objective value(s); raises ``optuna.TrialPruned`` to prune.
        storage: the heartbeat-enabled storage from :func:`open_storage`.
        lock: the storage's lock, held while a trial is taken.
        n_trials: the study's total budget.
        timeout: seconds after which this process takes no new trial.
        catch: exceptions that fail the trial and go on; others fail it and propagate.
        callbacks: called with each trial this process finished, after Optuna recorded it, as
            ``study.optimize`` calls them; ``study.stop()`` in one ends the loop.
        on_stale: what a trial cut short by Ctrl-C gets (the heartbeat callback, which
            closes its MLflow run and queues its retry).
        on_wait: told, once per wait, that no slot is free while other workers' trials run
            (the worker then looks again every second).
        max_epochs: the study's epoch budget (``study.max_epochs``, module docstring); None: none.

    Returns:
        How many trials this process ran.

    Raises:
        KeyboardInterrupt: after the running trial was failed and its retry queued.
    """
    interval = float(storage.get_heartbeat_interval() or 1)
    # Waiting workers look again every second: a finished trial frees the study at once.
    poll = min(1.0, interval)
    deadline = None if timeout is None else time.monotonic() + timeout
    study_id = storage.get_study_id_from_name(study.study_name)
    ran = 0
    waiting = False
    with lock:
        _beat_running(study, storage)
    # study.stop() (a callback, or GridSampler with its grid exhausted) ends the loop.
    with optuna_compat.optimize_loop(study) as stop_asked:
        while (deadline is None or time.monotonic() < deadline) and not stop_asked():
            trial: optuna.Trial | None = None
            try:
                state, trial = _take(study, study_id, storage, lock, n_trials, max_epochs)
                if state is None:
                    return ran  # the epoch budget is spent
                if trial is None:
                    if state.running == 0:
                        return ran
                    if on_wait is not None and not waiting:
                        on_wait(state)
                    waiting = True
                    time.sleep(poll)
                    continue
                waiting = False
                trial.set_user_attr("worker", worker_id())
                frozen = _run_one(study, trial, objective, storage, interval, catch)
            except (KeyboardInterrupt, WorkerFault) as exc:
                # On a fault (a full disk) the storage may answer, so the retry is queued now; an
                # unreachable storage leaves it to the heartbeat recovery of the next start.
                fault = isinstance(exc, WorkerFault)
                if trial is not None:
                    with sigint_ignored(), contextlib.suppress(*([Exception] if fault else [])):
                        interrupted_trial(study, trial, on_stale, "fault" if fault else "interrupted")
                raise
            ran += 1
            for callback in callbacks:
                callback(study, frozen)
    return ran


def _take(
    study: optuna.Study,
    study_id: int,
    storage: optuna.storages.RDBStorage,
    lock: StorageLock,
    n_trials: int,
    max_epochs: int | None,
) -> tuple[Budget | None, optuna.Trial | None]:
    """Under the lock: the study's slots and a new trial if one is free (None, None: epochs spent)."""
    with lock:
        _fail_stale(study)
        # A worker killed between creating its trial and beating for it left it without any
        # heartbeat: beat once for it here, so it goes stale (and is retried) like any other.
        for orphan in optuna_compat.running_without_heartbeat(storage, study_id):
            storage.record_heartbeat(orphan)
        trials = study.get_trials(deepcopy=False)
        if max_epochs is not None and epochs_consumed(trials) >= max_epochs:
            return None, None
        state = budget(trials, n_trials)
        trial = _ask(study) if state.free > 0 and not _grid_exhausted(study) else None
        if trial is not None:
            # Beat once under the lock: a trial is never RUNNING without a heartbeat.
            storage.record_heartbeat(optuna_compat.trial_id(trial))
    return state, trial


def _beat_running(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    """Fail stale trials, then beat once for every running one.

    A running trial without any heartbeat (left by a run that had none) would never go stale:
    after this beat a dead one is failed after the grace period. A live worker's trial just
    gets a fresh heartbeat.
    """
    _fail_stale(study)
    for running in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.record_heartbeat(optuna_compat.trial_id(running))


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: ObjectiveFn,
    storage: optuna.storages.RDBStorage,
    interval: float,
    catch: tuple[type[Exception], ...],
) -> FrozenTrial:
    values: Sequence[float] | float | None = None
    state: TrialState | None = None
    with _Heartbeat(storage, optuna_compat.trial_id(trial), interval):
        try:
            values = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except catch:
            state = TrialState.FAIL
        except WorkerFault:
            raise  # nothing can be recorded; the next start retries the trial (stale heartbeat)
        except Exception:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
    # skip_if_finished: another worker may have declared this trial dead (no heartbeat for the
    # grace period, e.g. a stalled network); its retry then owns the slot and this result is dropped.
    return study.tell(trial, values, state=state, skip_if_finished=True)
