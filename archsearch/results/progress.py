"""A progress bar for a search run from Python: ``run_search(..., progress_bar=True)``.

Optuna's ``study.optimize(show_progress_bar=True)`` counterpart: one bar over the study's
``n_trials`` (trials finished before this process started count as done), with the trial
states so far and the best validation accuracy, on stderr so that a notebook's output stays the
user's. It is a :class:`~archsearch.results.terminal.SearchReporter`; pass it as ``reporter=``
to combine it with your own reporting.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from collections.abc import Sequence

    import optuna
    from optuna.trial import FrozenTrial

    from archsearch.hardware.profile import HardwareProfile
    from archsearch.results.export import ExportResult
    from archsearch.results.terminal import SearchReporter

__all__ = ["ProgressBarReporter", "search_reporter"]


class ProgressBarReporter:
    """A bar over ``n_trials``: states so far and the best ``val_acc``, updated per finished trial."""

    def __init__(self, n_trials: int, console: Console | None = None) -> None:
        self.n_trials = n_trials
        self.console = console or Console(file=sys.stderr)
        self.states: Counter[str] = Counter()
        self.best: float | None = None
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, study: optuna.Study, done: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
            # Redrawn on each finished trial, without a refresh thread: a search that raises
            # leaves the bar as it last was, and no thread behind.
            auto_refresh=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(study.study_name, total=self.n_trials, completed=done, status="")
        self._progress.refresh()

    def trial_done(self, study: optuna.Study, trial: FrozenTrial, outcome: dict[str, Any]) -> None:
        self.states[trial.state.name.lower()] += 1
        accuracy = trial.user_attrs.get("val_acc")
        if trial.state.name == "COMPLETE" and isinstance(accuracy, int | float):
            self.best = float(accuracy) if self.best is None else max(self.best, float(accuracy))
        if self._progress is not None:
            self._progress.update(self._task, advance=1, status=self.status(), refresh=True)

    def finish(
        self, study: optuna.Study, exported: ExportResult, seconds: float, *, storage: str, tracking_uri: str
    ) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, status=f"{self.status()}, front {len(exported.front)}", refresh=True
            )
            self._progress.stop()
            self._progress = None

    def status(self) -> str:
        """``complete 7, pruned 3, best val_acc 0.8812``: what the finished trials came to."""
        states = ", ".join(f"{state} {count}" for state, count in sorted(self.states.items()))
        best = "" if self.best is None else f", best val_acc {self.best:.4f}"
        return states + best


def search_reporter(
    console: Console,
    objectives: Sequence[str],
    n_trials: int,
    hardware: HardwareProfile | None,
    progress_bar: bool,
) -> SearchReporter:
    """How a search reports when the caller brings no reporter: a bar (``progress_bar``), or a
    line per trial and the front table on ``console`` (``terminal.SweepReporter``)."""
    if progress_bar:
        return ProgressBarReporter(n_trials)
    from archsearch.results.terminal import SweepReporter

    return SweepReporter(console, objectives, n_trials, hardware)
