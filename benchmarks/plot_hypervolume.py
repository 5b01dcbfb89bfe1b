"""Plot the hypervolume curves peers.py and search_efficiency.py store, mean +- sd per method.

    .venv/bin/python benchmarks/plot_hypervolume.py DIR [DIR ...] [--out FILE] [--title TEXT]

Reads every ``hypervolume_<axis>.csv`` in the given directories (columns method, axis, fraction,
budget, mean, sd, seeds; one file per axis: ``trial``, ``seconds``, ``epochs_cumulative``) and
draws one panel per axis: the mean hypervolume against the budget, with a band of one standard
deviation over seeds. Writes ``FILE`` (default: ``hypervolume.png`` in the first DIR). Nothing is
re-run: the figures in the README are re-plotted from the CSVs stored beside them.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the build machine
import matplotlib.pyplot as plt

AXES = {
    "trial": "trials",
    "epochs_cumulative": "training epochs",
    "cpu": "process CPU seconds",
    "seconds": "wall-clock seconds",
}


def read_curves(paths: list[Path]) -> dict[str, dict[str, list[tuple[float, float, float, int]]]]:
    """axis -> method -> [(budget spent, mean, sd, seeds)] from every hypervolume CSV found."""
    curves: dict[str, dict[str, list[tuple[float, float, float, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for folder in paths:
        for axis in AXES:
            path = folder / f"hypervolume_{axis}.csv"
            if not path.is_file():
                continue
            with path.open() as f:
                for row in csv.DictReader(f):
                    spent = float(row["fraction"]) * float(row["budget"])
                    point = (spent, float(row["mean"]), float(row["sd"]), int(row["seeds"]))
                    curves[axis][row["method"]].append(point)
    return curves


def plot(curves: dict[str, dict[str, list[tuple[float, float, float, int]]]], out: Path, title: str) -> None:
    axes_present = [a for a in AXES if a in curves]
    if not axes_present:
        raise SystemExit("no hypervolume_<axis>.csv in the given directories")
    fig, panels = plt.subplots(1, len(axes_present), figsize=(5.5 * len(axes_present), 4.2), squeeze=False)
    for panel, axis in zip(panels[0], axes_present, strict=True):
        for method, points in curves[axis].items():
            points.sort()
            x = [0.0] + [p[0] for p in points]
            mean = [0.0] + [p[1] for p in points]
            sd = [0.0] + [p[2] for p in points]
            (line,) = panel.plot(
                x, mean, label=f"{method} (n={points[-1][3]})", lw=2 if method == "default" else 1.3
            )
            lo = [m - s for m, s in zip(mean, sd, strict=True)]
            hi = [m + s for m, s in zip(mean, sd, strict=True)]
            panel.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        panel.set_xlabel(AXES[axis])
        panel.set_ylabel("hypervolume (log10 cost axes)")
        panel.grid(alpha=0.3)
    panels[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", type=Path, nargs="+", help="folders holding hypervolume_<axis>.csv")
    parser.add_argument("--out", type=Path, help="image file (default: DIR/hypervolume.png)")
    parser.add_argument("--title", default="hypervolume, mean +- sd over seeds")
    args = parser.parse_args()
    out = args.out or args.dirs[0] / "hypervolume.png"
    plot(read_curves(args.dirs), out, args.title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
