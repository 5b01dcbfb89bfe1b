"""``+workers=local``: one operating-system process per worker, their Ctrl-C, and each one's core share.

:func:`launch_processes` is what the Hydra launcher ``archsearch_processes`` (a shim under
``hydra_plugins/``, where Hydra requires launchers to live) does: each job is a process of its
own, started with ``spawn``, and the launcher waits for all of them. A worker that dies (``kill
-9``, the out-of-memory killer) takes nobody with it: the others go on, fail its trial once its
heartbeat is ``study.grace_period`` seconds old and run the retry. joblib's loky pool, which
``+workers=local`` used before, tears down every worker when one dies, leaving their trials and
MLflow runs RUNNING until the next start.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from hydra.experimental.callback import Callback

__all__ = ["LocalWorkersCallback", "launch_processes", "local_parallel_jobs"]


class LocalWorkersCallback(Callback):
    """Hydra callback of ``+workers=local``: Ctrl-C is handled by the workers, not the launcher.

    A terminal's Ctrl-C reaches every process of the foreground group. Left alone, the joblib
    launcher would tear its worker processes down while they are still marking their trials
    and closing their runs; so the launching process ignores SIGINT and waits, and each job
    (which inherits that) turns it back into KeyboardInterrupt for :func:`run_trials`.
    """

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        # Checked before the launcher starts anything (joblib raises a bare ValueError for 0).
        n = (config.get("workers") or {}).get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            print(f"error: workers.n must be an integer >= 1 (worker processes), got {n!r}.", file=sys.stderr)
            raise SystemExit(2)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)


def local_parallel_jobs() -> tuple[int, int] | None:
    """(cores, parallel jobs) when this process is one job of a Hydra multirun on a shared machine.

    The joblib launcher runs ``hydra.launcher.n_jobs`` jobs side by side on the local cores;
    the submitit launcher gives each job ``hydra.launcher.cpus_per_task`` cores of its own.
    None otherwise (a single run, or the basic launcher, which runs jobs one after another).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    launcher: Any = hydra_cfg.launcher
    cpus = launcher.get("cpus_per_task")
    if cpus:
        return int(cpus), 1
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return None
    return len(os.sched_getaffinity(0)), int(n_jobs)


def launch_processes(
    config: Any,
    hydra_context: Any,
    task_function: Any,
    job_overrides: Sequence[Sequence[str]],
    first: int,
    n_jobs: int | None = None,
) -> list[Any]:
    """Run each job of a Hydra multirun in a process of its own and wait for all of them.

    Args:
        config: the multirun's config (``hydra.sweep.dir`` is created here).
        hydra_context, task_function: what Hydra gave the launcher's ``setup``.
        job_overrides: one list of overrides per job.
        first: the index of the first job (Hydra's ``initial_job_idx``).
        n_jobs: at most this many processes at once (None: all jobs at once); the next job
            starts as one ends.

    Returns:
        One ``JobReturn`` per job, in order; its return value is dropped (a job's result lives
        in the study and MLflow).

    Raises:
        SystemExit: after every job ended, when one did not end with 0: the first such job's exit
            code, or 128 + the signal that killed it (as a shell reports it), with one line saying
            which worker it was.
    """
    import multiprocessing
    from pathlib import Path

    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals

    from archsearch.storage.database import mask_passwords

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # Hydra's sweeper saved the whole config there just before: a database password included.
    saved = sweep_dir / "multirun.yaml"
    if saved.is_file():
        saved.write_text(mask_passwords(saved.read_text(encoding="utf-8")), encoding="utf-8")
    # spawn: a fresh interpreter per worker (no fork of a process holding threads or a CUDA context).
    context = multiprocessing.get_context("spawn")
    payload = cloudpickle.dumps((hydra_context, config, task_function, Singleton.get_state()))
    failed = _run_all(context, payload, job_overrides, first, n_jobs)
    if failed:
        raise SystemExit(failed[0][1])
    returns = []
    for overrides in job_overrides:
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        ret.return_value = None
        returns.append(ret)
    return returns


def _run_all(
    context: Any, payload: bytes, job_overrides: Sequence[Sequence[str]], first: int, n_jobs: int | None
) -> list[tuple[int, int]]:
    """Start the jobs (at most ``n_jobs`` at once) and wait for all; (index, exit code) of those
    that failed, a killed one's code as 128 + its signal."""
    import multiprocessing.connection

    waiting = list(enumerate(job_overrides))
    limit = max(1, n_jobs) if n_jobs else len(waiting)
    failed: list[tuple[int, int]] = []
    running: dict[int, Any] = {}
    while running or waiting:
        while waiting and len(running) < limit:
            idx, overrides = waiting.pop(0)
            running[idx] = context.Process(
                target=_run_job, args=(payload, first + idx, list(overrides)), name=f"archsearch-worker-{idx}"
            )
            running[idx].start()
        # Told as soon as a worker ends, so a killed one is reported while the others go on.
        multiprocessing.connection.wait([p.sentinel for p in running.values()])
        for idx, process in list(running.items()):
            if process.is_alive():
                continue
            process.join()
            del running[idx]
            code = process.exitcode if process.exitcode is not None else 1
            if code == 0:
                continue
            failed.append((idx, 128 - code if code < 0 else code))
            if code < 0:
                print(
                    f"error: worker {idx} (pid {process.pid}) was killed by {signal.Signals(-code).name}; "
                    "the other workers retry its trial once its heartbeat is study.grace_period seconds "
                    "old, or the next start does.",
                    file=sys.stderr,
                    flush=True,
                )
    return failed


def _run_job(payload: bytes, idx: int, overrides: list[str]) -> None:
    """One worker process: the job Hydra would run, with its own sweep config (as joblib's launcher)."""
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    # The task wraps its body in run_cli, which exits with its own code; anything else is a bug.
    if ret.status.name == "FAILED":
        import traceback

        error = ret._return_value
        if isinstance(error, BaseException):
            traceback.print_exception(type(error), error, error.__traceback__)
        raise SystemExit(1)
