"""Table and plot of a finalized Fashion-MNIST front beside the published benchmark table.

    .venv/bin/python benchmarks/showcase_report.py OUT/optuna.db --study showcase \
        --published benchmarks/data/fashion_mnist_published.csv --out OUT [--note TEXT]

Reads every finalized member of the study (``python -m archsearch.finalize``'s stored results,
so members that the finalized front no longer keeps still appear) and the published entries
(CSV with ``#`` comment lines: classifier, params, params_bound, test_acc, preprocessing).
Writes OUT/showcase.csv (raw: one row per finalized member and per published entry),
OUT/showcase.md (the same as a markdown table, sorted by parameters, with ``--note``) and
OUT/showcase.png (test accuracy against parameters, log x). Prints the markdown table.
``benchmarks/showcase_fashion_mnist.sh`` runs it as its last step, and before finalizing as

    .venv/bin/python benchmarks/showcase_report.py OUT/optuna.db --study showcase \
        --select-into showcase_final --max-members 4

which copies at most 4 front members, spread over the front's parameter range, into a new
study that finalize then retrains (0: all members). Prints the trials kept.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the build machine
import matplotlib.pyplot as plt
from matplotlib.transforms import Bbox

from archsearch.results.export import finalized_results, load_stored_study

FIELDS = (
    "source",
    "name",
    "params",
    "params_bound",
    "macs",
    "test_acc",
    "val_acc",
    "search_val_acc",
    "epochs",
    "train_seconds",
    "notes",
)


def read_published(path: Path) -> list[dict[str, Any]]:
    """The published entries: rows of a CSV whose ``#`` lines are comments."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    return [
        {
            "source": "published",
            "name": r["classifier"],
            "params": int(r["params"]),
            "params_bound": r["params_bound"],
            "test_acc": float(r["test_acc"]),
            "notes": r["preprocessing"],
        }
        for r in rows
    ]


def read_finalized(db: Path, study_name: str) -> list[dict[str, Any]]:
    """One row per finalized member of the study, with its costs from the search trial."""
    study = load_stored_study(study_name, f"sqlite:///{db.resolve()}")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = []
    for number, r in sorted(finalized_results(study).items()):
        costs = trials[number].user_attrs.get("costs") or {}
        # A selected copy (select_members) numbers its trials afresh; name the search's trial.
        shown = trials[number].user_attrs.get("search_trial", number)
        rows.append(
            {
                "source": "archsearch",
                "name": f"trial {shown} ({r.get('spec_hash', '')[:8]})",
                "params": int(costs.get("params", 0)),
                "params_bound": "",
                "macs": int(costs.get("macs", 0)),
                "test_acc": float(r["test_acc"]),
                "val_acc": float(r["val_acc"]),
                "search_val_acc": float(r["search_val_acc"]),
                "epochs": int(r["epochs"]),
                "train_seconds": round(float(r["train_seconds"]), 1),
                "notes": r.get("failed") or "",
            }
        )
    return rows


def spread_by_size(sizes: list[float], count: int) -> list[int]:
    """Indices of ``count`` of the ascending ``sizes``, spread evenly over their log range.

    Targets are ``count`` sizes evenly spaced in log between the smallest and the largest (both
    always kept); each takes the nearest size (in log) not yet taken. Evenly spaced *ranks*
    would follow where the front is dense, which is usually its small end: on an earlier run's
    16-member front they put three of four picks under 11K parameters and none between 11K and 90K.
    """
    if count >= len(sizes):
        return list(range(len(sizes)))
    logs = [math.log(max(size, 1.0)) for size in sizes]
    low, high = logs[0], logs[-1]
    chosen: list[int] = []
    for k in range(count):
        target = low + (high - low) * k / (count - 1) if count > 1 else high
        free = [i for i in range(len(sizes)) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(logs[i] - target), i)))
    return sorted(chosen)


def select_members(db: Path, study_name: str, into: str, max_members: int) -> None:
    """Copy at most ``max_members`` of the study's front into a new study ``into`` (same storage).

    Finalize retrains a study's whole front, and its time grows with the front's size, which
    the search decides; finalizing a copy holding a chosen few bounds that time. The members
    kept are spread evenly over the front's log-parameter range (``spread_by_size``). Each copy
    records its search trial number as the user attr ``search_trial``.
    """
    import optuna

    from archsearch.results.front import front_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{db.resolve()}"
    study = load_stored_study(study_name, url)
    front = sorted(front_trials(study), key=lambda t: t.user_attrs["costs"]["params"])
    if 0 < max_members < len(front):
        keep = spread_by_size([t.user_attrs["costs"]["params"] for t in front], max_members)
        front = [front[i] for i in keep]
    if into in optuna.get_all_study_names(storage=url):
        old = optuna.load_study(study_name=into, storage=url)
        held = sorted(t.user_attrs.get("search_trial", -1) for t in old.trials)
        if held == sorted(t.number for t in front):
            # The same selection: keep it, and with it the members already finalized (a rerun
            # of an interrupted finalize then skips them).
            print(f"study {into} already holds the selected {len(front)} front member(s); kept")
            return
        optuna.delete_study(study_name=into, storage=url)  # another selection: start afresh
    copy = optuna.create_study(storage=url, study_name=into, directions=study.directions)
    for key, value in study.user_attrs.items():
        if not key.startswith("finalized:"):
            copy.set_user_attr(key, value)
    for t in front:
        copy.add_trial(
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                values=t.values,
                user_attrs={**t.user_attrs, "search_trial": t.number},
                system_attrs=t.system_attrs,
                state=optuna.trial.TrialState.COMPLETE,
            )
        )
    kept = ", ".join(f"{t.number} ({t.user_attrs['costs']['params']:,.0f} params)" for t in front)
    print(f"selected {len(front)} front member(s) of study {study_name} into {into}: trials {kept}")


def _fmt(value: Any, key: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key == "params":
        return f"{value:,}"
    if key in ("test_acc", "val_acc", "search_val_acc"):
        return f"{value:.4f}"
    return str(value)


TARGET_SMALL_PARAMS = 50_000  # issue 27: >= 93.5% test at <= 50K parameters
TARGET_SMALL_ACC = 0.935
TARGET_PUBLISHED_MAX_PARAMS = 113_000  # every published entry up to this size must be beaten


def target_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One line per target: met or missed, and by which member (or the best there is).

    A published entry is beaten when a finalized member no larger than it scores a higher test
    accuracy ("<100K" is read as 100,000: the most it can be). The small-net target needs a
    member of at most 50K parameters at 93.5% or more.
    """
    ours = [r for r in rows if r["source"] == "archsearch" and not r.get("notes")]
    lines = []
    for pub in sorted(rows, key=lambda r: r["params"]):
        if pub["source"] != "published" or pub["params"] > TARGET_PUBLISHED_MAX_PARAMS:
            continue
        fits = [r for r in ours if r["params"] <= pub["params"]]
        best = max(fits, key=lambda r: r["test_acc"], default=None)
        if best is None:
            lines.append(f"- beat {pub['name']} ({pub['test_acc']:.3f}): missed, no member that small")
            continue
        verdict = "met" if best["test_acc"] > pub["test_acc"] else "missed"
        lines.append(
            f"- beat {pub['name']} ({pub['test_acc']:.3f}): {verdict}, best member no larger: "
            f"{best['name']}, {best['params']:,} params, {best['test_acc']:.4f} test"
        )
    small = [r for r in ours if r["params"] <= TARGET_SMALL_PARAMS]
    best = max(small, key=lambda r: r["test_acc"], default=None)
    head = f"- >= {TARGET_SMALL_ACC:.1%} test at <= {TARGET_SMALL_PARAMS:,} params"
    if best is None:
        lines.append(f"{head}: missed, no member that small")
    else:
        verdict = "met" if best["test_acc"] >= TARGET_SMALL_ACC else "missed"
        lines.append(
            f"{head}: {verdict}, best: {best['name']}, {best['params']:,} params, "
            f"{best['test_acc']:.4f} test (one seed carries about +-0.3 points)"
        )
    return lines


def write_table(rows: list[dict[str, Any]], out: Path, note: str) -> str:
    """Write showcase.csv and showcase.md; return the markdown."""
    with (out / "showcase.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    cols = ("source", "name", "params", "test_acc", "val_acc", "search_val_acc", "epochs", "train_seconds")
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in sorted(rows, key=lambda r: r["params"]):
        cells = [_fmt(r.get(c), c) for c in cols]
        if r.get("params_bound"):
            cells[2] = r["params_bound"] + cells[2]  # "~113,000" / "<100,000", as the README says
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    text += "\nTargets (issue 27):\n" + "\n".join(target_verdicts(rows)) + "\n"
    if note:
        text += f"\n{note}\n"
    text += (
        "\npublished: rows of the submitted-benchmark table in Debian's dataset-fashion-mnist README "
        "that state a parameter count (not verified by the dataset's authors); test_acc of "
        "archsearch rows: the 10,000 test images, scored once after finalize.\n"
    )
    (out / "showcase.md").write_text(text)
    return text


def _place_labels(fig: Any, ax: Any, labels: list[tuple[str, tuple[float, float]]]) -> None:
    """Annotate each point, trying offsets until the text covers no marker and no earlier label."""
    offsets = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom")]
    offsets += [(-5, -3, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top")]
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken: list[Any] = []
    for line in ax.get_lines():  # every marker, with a margin
        for xy in line.get_xydata():
            x, y = ax.transData.transform(xy)
            taken.append(Bbox.from_extents(x - 5, y - 5, x + 5, y + 5))
    for text, xy in labels:
        for k, (dx, dy, ha, va) in enumerate(offsets):
            note = ax.annotate(
                text, xy, fontsize=6, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va
            )
            box = note.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if k == len(offsets) - 1 or (inside and not any(box.overlaps(other) for other in taken)):
                taken.append(box)
                break
            note.remove()


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """showcase.png: test accuracy against parameters (log x), both sources."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ours = sorted((r for r in rows if r["source"] == "archsearch"), key=lambda r: r["params"])
    pub = [r for r in rows if r["source"] == "published"]
    ax.plot(
        [r["params"] for r in ours],
        [r["test_acc"] for r in ours],
        "o-",
        color="tab:blue",
        label="archsearch front, finalized",
    )
    # Published entries sit close together on the log axis (<100K and ~113K; 8M and 26M): each
    # gets its own marker and a legend line instead of a label beside it.
    markers = iter("sD^vPX*ph>")
    colors = iter(
        ["tab:orange", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"] * 2
    )
    for r in sorted(pub, key=lambda r: r["params"]):
        # An upper bound ("<100K") is drawn as a left-pointing marker: the true count is smaller.
        marker = "<" if r["params_bound"] == "<" else next(markers)
        label = f"published: {r['name']}, {100 * r['test_acc']:.1f}%"
        ax.plot(r["params"], r["test_acc"], marker, color=next(colors), linestyle="none", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("Fashion-MNIST test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=6)
    fig.tight_layout()
    labels = [
        (f"{r['params'] / 1000:.1f}K: {100 * r['test_acc']:.2f}%", (r["params"], r["test_acc"])) for r in ours
    ]
    _place_labels(fig, ax, labels)
    fig.savefig(out / "showcase.png", dpi=150)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", type=Path, help="the study's SQLite file (OUT/optuna.db)")
    ap.add_argument("--study", default="showcase")
    ap.add_argument(
        "--published", type=Path, default=Path(__file__).parent / "data" / "fashion_mnist_published.csv"
    )
    ap.add_argument("--out", type=Path, help="where the table and plot go (required unless --select-into)")
    ap.add_argument("--note", default="")
    ap.add_argument(
        "--select-into", metavar="NAME", help="only copy --max-members front members into study NAME"
    )
    ap.add_argument("--max-members", type=int, default=0, help="with --select-into: members kept (0: all)")
    args = ap.parse_args()
    if args.select_into:
        select_members(args.db, args.study, args.select_into, args.max_members)
        return
    if args.out is None:
        ap.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = read_finalized(args.db, args.study) + read_published(args.published)
    print(write_table(rows, args.out, args.note), end="")
    plot(rows, args.out)
    print(f"wrote {args.out / 'showcase.md'}, {args.out / 'showcase.csv'}, {args.out / 'showcase.png'}")


if __name__ == "__main__":
    main()
