"""Hydra's launchers seen from a job: the local workers' Ctrl-C handling and each job's core share."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from hydra.experimental.callback import Callback

__all__ = ["LocalWorkersCallback", "local_parallel_jobs"]


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
