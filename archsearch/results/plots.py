"""Plots of a study's front: matplotlib PNG and plotly HTML, accuracy against costs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from archsearch.pareto import REFERENCE
from archsearch.results.front import accuracy_axis, completed_feasible

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["eng_log_formatter", "plot_front", "plot_hypervolume"]

_COST_AXES = ("params", "macs")


def _axes(names: Sequence[str]) -> tuple[str, list[str]]:
    """The accuracy-like objective for y, and the cost metrics for x (params and MACs always)."""
    y = accuracy_axis(names)
    xs = list(_COST_AXES) + [n for n in names if n != y and n not in _COST_AXES]
    return y, xs


def _value(t: FrozenTrial, names: Sequence[str], key: str) -> float | None:
    if key in names and t.values is not None:
        return float(t.values[list(names).index(key)])
    costs = t.user_attrs.get("costs") or {}
    value = costs.get(key, t.user_attrs.get(key))
    return float(value) if isinstance(value, int | float) else None


def _staircase(
    trials: Sequence[FrozenTrial], names: Sequence[str], x: str, y: str
) -> list[tuple[float, float]]:
    """The 2-D front of (cost x, accuracy y): each point beats every cheaper one in accuracy."""
    pts = sorted(
        (vx, vy)
        for t in trials
        if (vx := _value(t, names, x)) is not None and (vy := _value(t, names, y)) is not None
    )
    out: list[tuple[float, float]] = []
    for vx, vy in pts:
        if not out or vy > out[-1][1]:
            out.append((vx, vy))
    return out


def eng_log_formatter(minor: bool) -> Any:
    """Tick labels for a log axis in engineering notation ("20k", "1.5M").

    Minor ticks are labelled only while the axis spans less than a decade, when there may be no
    power of ten on it to label, as matplotlib's own log formatter does.
    """
    from matplotlib.ticker import EngFormatter

    class _EngLog(EngFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            if minor and self.axis is not None:
                lo, hi = sorted(self.axis.get_view_interval())
                if lo <= 0 or hi / lo >= 10:
                    return ""
            return str(super().__call__(x, pos))

    return _EngLog(sep="")


def plot_front(
    study: optuna.Study,
    front: Sequence[FrozenTrial],
    names: Sequence[str],
    directions: Sequence[str],
    out: Path,
    *,
    commands: Mapping[int, str] | None = None,
) -> dict[str, Path]:
    """Write pareto.png and pareto.html: front members highlighted, dominated trials grey.

    Hovering over a point of the HTML shows every objective, the spec hash and, for a front
    member, the command that retrains it (``commands``: trial number -> command).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from plotly.subplots import make_subplots

    y, xs = _axes(names)
    trials = completed_feasible(study)
    on_front = {t.number for t in front}
    fig, axes = plt.subplots(1, len(xs), figsize=(5.5 * len(xs), 4.2), squeeze=False)
    pfig = make_subplots(rows=1, cols=len(xs), subplot_titles=[f"{y} vs {x}" for x in xs])
    hover = {t.number: _hover(t, names, (commands or {}).get(t.number, "")) for t in trials}
    for col, x in enumerate(xs):
        _draw_points(axes[0][col], pfig, col, trials, on_front, hover, (names, x, y))
        _draw_staircase(axes[0][col], pfig, col, trials, names, x, y)
        _label_panel(axes[0][col], pfig, col, x, y)
    if trials:  # a study with no finished trial yet (Ctrl-C in the first) has nothing to label
        axes[0][0].legend()
    fig.suptitle(
        f"study {study.study_name}: {len(front)} on the {len(names)}-objective front "
        f"of {len(trials)} feasible trials"
    )
    # Fixed margins: the labels are short and known, and tight_layout costs a full draw.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.25)
    png = out / "pareto.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    html = out / "pareto.html"
    pfig.update_layout(title=f"study {study.study_name}: Pareto front", template="plotly_white")
    pfig.write_html(html, include_plotlyjs=True)
    return {"png": png, "html": html}


def _hover(t: FrozenTrial, names: Sequence[str], command: str) -> str:
    """A point's hover text: trial, every objective, the spec hash and its retrain command."""
    import html

    lines = [f"<b>trial {t.number}</b>"]
    for name, value in zip(names, t.values or [], strict=False):
        lines.append(f"{name} = {value:.4f}" if name.endswith("acc") else f"{name} = {value:,.6g}")
    lines.append(f"spec hash {t.user_attrs.get('spec_hash', '')}")
    if command:
        lines.append(f"retrain: {html.escape(command)}")
    return "<br>".join(lines)


def _draw_points(
    ax: Axes,
    pfig: Any,
    col: int,
    trials: Sequence[FrozenTrial],
    on_front: set[int],
    hover: Mapping[int, str],
    axes: tuple[Sequence[str], str, str],
) -> None:
    """Scatter the trials' (x, y) on one panel of both figures: front members red, the rest grey."""
    import plotly.graph_objects as go

    names, x, y = axes
    for member, colour, label in ((False, "#b0b0b0", "dominated"), (True, "#d62728", "Pareto front")):
        pts = [
            (vx, vy, t.number)
            for t in trials
            if (t.number in on_front) == member
            and (vx := _value(t, names, x)) is not None
            and (vy := _value(t, names, y)) is not None
        ]
        if not pts:
            continue
        px, py, pn = zip(*pts, strict=True)
        ax.scatter(px, py, c=colour, s=28 if member else 16, label=label, zorder=3 if member else 2)
        pfig.add_trace(
            go.Scatter(
                x=px,
                y=py,
                mode="markers",
                name=label,
                legendgroup=label,
                showlegend=col == 0,
                marker={"color": colour, "size": 9 if member else 6},
                text=[hover[n] for n in pn],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=col + 1,
        )


def _draw_staircase(
    ax: Axes, pfig: Any, col: int, trials: Sequence[FrozenTrial], names: Sequence[str], x: str, y: str
) -> None:
    """Draw the 2-D front of (cost x, accuracy y) as a staircase on one panel of both figures."""
    import plotly.graph_objects as go

    stair = _staircase(trials, names, x, y)
    if not stair:
        return
    sx, sy = zip(*stair, strict=True)
    ax.step(sx, sy, where="post", c="#d62728", lw=0.8, alpha=0.5, label="front on this cost alone")
    pfig.add_trace(
        go.Scatter(
            x=sx,
            y=sy,
            mode="lines",
            line={"shape": "hv", "color": "#d62728", "width": 1},
            opacity=0.5,
            name="2-D front",
            legendgroup="2-D front",
            showlegend=col == 0,
            hoverinfo="skip",
        ),
        row=1,
        col=col + 1,
    )


def _label_panel(ax: Axes, pfig: Any, col: int, x: str, y: str) -> None:
    """Give one panel of both figures a log x axis with engineering ticks, titles and a grid."""
    ax.set_xscale("log")
    # "10k", "1M" instead of mathtext powers of ten: readable, and no mathtext parser to start.
    ax.xaxis.set_major_formatter(eng_log_formatter(minor=False))
    ax.xaxis.set_minor_formatter(eng_log_formatter(minor=True))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    pfig.update_xaxes(type="log", title_text=x, row=1, col=col + 1)
    pfig.update_yaxes(title_text=y, row=1, col=col + 1)


def plot_hypervolume(
    history: Sequence[tuple[int, float]], out: Path, k: int, normalisation: str = ""
) -> dict[str, Path]:
    """Write hypervolume.png: the hypervolume of the front after each trial, 1 at most.

    ``history`` is :func:`archsearch.results.export.hypervolume_history` of a study with ``k``
    objectives: already divided by the reference box's volume, 1.1^k. ``normalisation`` (the
    box's :meth:`~archsearch.results.front_meta.HypervolumeBox.describe`) is printed above the plot.
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = textwrap.wrap(normalisation, 90) if normalisation else []
    fig, ax = plt.subplots(figsize=(5.5, 3.6 + 0.16 * len(lines)))
    if history:
        n, hv = zip(*history, strict=True)
        ax.step(n, hv, where="post")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"hypervolume / {REFERENCE:g}^{k} (1 = max)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    if lines:
        ax.set_title("\n".join(lines), fontsize=6.5, loc="left")
    top = 0.95 - 0.045 * len(lines) - (0.02 if lines else 0.0)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.14, top=top)
    path = out / "hypervolume.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"hypervolume_png": path}
