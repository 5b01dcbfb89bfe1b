"""Hydra launcher ``archsearch_processes``: one process per job (archsearch.cli.launcher).

Hydra only instantiates launchers defined under the ``hydra_plugins`` namespace package, and
imports every module there when it starts, which registers the config below. The work is done
by :func:`archsearch.cli.launcher.launch_processes`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.archsearch_launcher.ProcessLauncher"
    n_jobs: int = 2  # processes at once (+workers=local sets it to workers.n, one per job)


ConfigStore.instance().store(
    group="hydra/launcher", name="archsearch_processes", node=ProcessLauncherConf, provider="archsearch"
)


class ProcessLauncher(Launcher):
    """Runs every job of a multirun at once, each in a process of its own."""

    def __init__(self, n_jobs: int = 2) -> None:
        self.n_jobs = n_jobs
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from archsearch.cli.launcher import launch_processes

        return launch_processes(
            self.config, self.hydra_context, self.task_function, job_overrides, initial_job_idx, self.n_jobs
        )
