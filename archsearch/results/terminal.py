"""What a sweep shows in the terminal: one line per trial, then the front and where things went."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.table import Table

from archsearch.storage.database import describe_url

if TYPE_CHECKING:
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.results.export import ExportResult

__all__ = ["SearchReporter", "SweepReporter", "fmt_count", "print_commands"]


def fmt_count(value: float | None) -> str:
    """12345 -> '12.3k', 8.19e8 -> '819M'."""
    if value is None:
        return "-"
    v = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def _fmt_metric(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in ("val_acc", "val_acc_best", "test_acc"):
        return f"{float(value):.4f}"
    if name.endswith("_ms"):
        return f"{float(value):.3g} ms"
    return fmt_count(value)


class SearchReporter(Protocol):
    """What a search tells about its progress: :class:`SweepReporter` prints it; a notebook or a
    service may show it otherwise."""

    def start(self, study: optuna.Study, done: int) -> None:
        """The trials begin; ``done`` of the study's budget were finished before."""

    def trial_done(self, study: optuna.Study, trial: FrozenTrial, outcome: dict[str, Any]) -> None:
        """A trial this process ran finished (``outcome``: what the objective measured)."""

    def finish(
        self, study: optuna.Study, exported: ExportResult, seconds: float, *, storage: str, tracking_uri: str
    ) -> None:
        """The search's front was published (``exported``) after ``seconds`` of trials."""


class SweepReporter:
    """Prints a progress line per finished trial and a final Pareto table."""

    def __init__(
        self,
        console: Console,
        objectives: Sequence[str],
        n_trials: int,
        hardware: HardwareProfile | None = None,
    ) -> None:
        self.console = console
        #: The profile ``latency_est_ms`` was estimated on, named under the front table.
        self.hardware = hardware
        self.objectives = list(objectives)
        self.n_trials = n_trials
        self.started = time.perf_counter()

    def start(self, study: optuna.Study, done: int) -> None:
        self.started = time.perf_counter()
        verb = "resuming" if done else "starting"
        self.console.print(
            f"[bold]{verb}[/bold] study [cyan]{study.study_name}[/cyan]: {done}/{self.n_trials} trials done, "
            f"objectives {', '.join(self.objectives)}"
        )

    def trial_done(self, study: optuna.Study, trial: FrozenTrial, outcome: dict[str, Any]) -> None:
        """Print one line for a trial Optuna has just recorded (``outcome`` from the objective)."""
        from archsearch.results.front import front_trials

        number = trial.number
        state = str(outcome.get("state") or trial.state.name.lower())
        outcome = {**trial.user_attrs.get("costs", {}), **outcome}
        colour = {"complete": "green", "infeasible": "yellow", "failed": "red", "pruned": "magenta"}.get(
            state, "white"
        )
        front = len(front_trials(study))
        elapsed = time.perf_counter() - self.started
        parts = [
            f"trial {number:>4}",
            f"[{colour}]{state:<10}[/{colour}]",
            f"params {fmt_count(outcome.get('params')):>7}",
            f"MACs {fmt_count(outcome.get('macs')):>7}",
            f"acc {_fmt_metric('val_acc', outcome.get('val_acc')):>6}",
            f"front {front:>3}",
            f"{outcome.get('seconds', 0.0):5.1f}s",
            f"elapsed {elapsed:6.1f}s",
        ]
        if "reused_from" in outcome:
            parts.append(f"(same net as trial {outcome['reused_from']})")
        if state in ("infeasible", "failed", "pruned") and outcome.get("reason"):
            parts.append(f"[dim]{outcome['reason']}[/dim]")
        self.console.print("  ".join(parts), highlight=False)

    def finish(
        self, study: optuna.Study, exported: ExportResult, seconds: float, *, storage: str, tracking_uri: str
    ) -> None:
        """The front table, where the exports went, and the commands to review and retrain.

        Args:
            storage: the study storage URL (its password is hidden when printed).
            tracking_uri: the MLflow URI, or "" when tracking is off.
        """
        front = exported.front
        count = f"{len(front)} trial{'' if len(front) == 1 else 's'}"
        table = Table(title=f"Pareto front of study {study.study_name} ({count})")
        if self.hardware is not None:
            table.caption = f"latency_est_ms: estimate on {self.hardware.name} ({self.hardware.provenance})"
        table.add_column("trial", justify="right")
        datasheet = self.hardware is not None and not self.hardware.calibrated
        extra = [c for c in ("params", "macs", "bytes", "latency_est_ms") if c not in self.objectives]
        for name in [*self.objectives, *extra]:
            # A datasheet profile's estimate is labelled as such in the header itself.
            label = f"{name} (datasheet)" if datasheet and name == "latency_est_ms" else name
            table.add_column(label, justify="right")
        table.add_column("spec hash")
        for t in front:
            costs = t.user_attrs.get("costs") or {}
            cells = [str(t.number)]
            cells += [_fmt_metric(n, v) for n, v in zip(self.objectives, t.values or [], strict=False)]
            cells += [_fmt_metric(n, costs.get(n)) for n in extra]
            cells.append(str(t.user_attrs.get("spec_hash", "")))
            table.add_row(*cells)
        self.console.print(table)
        self.console.print(f"finished in {seconds:.1f}s; exports in [cyan]{exported.directory}[/cyan]:")
        for key, path in sorted(exported.files.items()):
            self.console.print(f"  {key:<16} {path}")
        self.console.print(f"  {'study storage':<16} {describe_url(storage)}")
        if tracking_uri:
            from archsearch.results.tracking import runs_view_url

            experiment = str(study.user_attrs.get("mlflow_experiment_id", ""))
            # The experiment's runs table, not the GenAI traces page MLflow 3 may open first.
            runs_url = runs_view_url(tracking_uri, experiment) if experiment else ""
            if tracking_uri.startswith(("http://", "https://")):
                self.console.print(f"review the runs at {runs_url or tracking_uri}", soft_wrap=True)
            else:  # a database, which `mlflow ui` reads and serves
                command = f"mlflow ui --backend-store-uri {describe_url(tracking_uri)}"
                self.console.print(f"review the runs: [bold]{command}[/bold]", soft_wrap=True)
                if runs_url:
                    self.console.print(f"  then open the runs table at {runs_url}", soft_wrap=True)
        if front:
            print_commands(self.console, exported)


def print_commands(console: Console, exported: ExportResult) -> None:
    """The command retraining the first front member as its trial was, and the full-fidelity one.

    Both are the export's (:attr:`ExportResult.commands`): re-rooted where the project is now.
    """
    from archsearch.results.commands import fill_config
    from archsearch.results.export import net_path

    command = exported.commands.retrain
    if not exported.front:
        return
    member = exported.front[0]
    if command:
        # A real member's file, so the line can be pasted as it is; pareto.csv has them all.
        path = net_path(exported.directory, member)
        console.print(
            f"retrain trial {member.number} as searched (pareto.csv's retrain column has them all):",
            highlight=False,
        )
        line = f"  {fill_config(command, path)}"
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    else:
        console.print(
            "no retrain command: the search was given a dataset without the data settings it was "
            "loaded from (run_search(data_settings=...)), so no command line can rebuild its split."
        )
    final = exported.commands.finalize
    if final:
        console.print("retrain the front at full fidelity and score test:", highlight=False)
        console.print(f"  {final}", highlight=False, markup=False, soft_wrap=True)
