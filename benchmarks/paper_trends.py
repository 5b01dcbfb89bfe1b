"""SqueezeNet's design-space trends (Iandola et al. 2016, Figure 3) re-measured at small scale.

    .venv/bin/python benchmarks/paper_trends.py --out DIR [--seeds 3] [--epochs 5] [--subset 10000]
        [--data fashion_mnist|cifar10|auto] [--sweeps sr pct3x3] [--threads 1]
    .venv/bin/python benchmarks/paper_trends.py --out DIR --from-csv   # re-plot and re-judge DIR/trends.csv

Two grid searches (``sampler=grid``: a GridSampler over the space's ``grid()``), each repeated
for every seed (seed = data split, subset, init and batches):

* ``sr``: search_spaces/sr_grid.yaml, squeeze ratio 0.125, 0.25, 0.5, 0.75, 1.0 (paper 3a);
* ``pct3x3``: search_spaces/pct3x3_grid.yaml, 3x3 share 0% ... 99% at SR 0.5 (paper 3b).

Every candidate trains ``--epochs`` epochs (conf/trainer/default.yaml: SGD, one-cycle) on
``--subset`` training images and is scored on the validation split (the test set is not used).
``--data auto`` takes CIFAR-10 when its batches are under ``--cifar-dir``, else Fashion-MNIST.
Default (3 seeds, 5 epochs, 10,000 images, Fashion-MNIST): 42 trainings, about 40-60 minutes on
the 2-core build machine at one thread.

Writes DIR/trends.csv (raw: one row per sweep, value, seed) and DIR/trends.png (validation
accuracy against parameters per sweep, mean and one standard deviation over seeds, each point
labelled with its SR or 3x3 share, like the paper's figure). Prints a table of mean and std per
value and a verdict per sweep: the saturation point is the smallest value whose mean accuracy
is within one standard deviation (of the best value's seeds) of the best mean; the paper found
0.75 for SR and 50% for the 3x3 share. With one seed the std is 0 and the rule reduces to the
best value itself.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the build machine
import matplotlib.pyplot as plt
import optuna

import archsearch as A
from archsearch.data.settings import DataSettings
from archsearch.search.samplers import grid_sampler

# sweep -> (space file, parameter, the paper's saturation point, axis label)
SWEEPS: dict[str, tuple[str, str, float, str]] = {
    "sr": ("sr_grid", "sr", 0.75, "squeeze ratio (SR)"),
    "pct3x3": ("pct3x3_grid", "pct3x3", 0.5, "share of 3x3 filters"),
}
FIELDS = ("sweep", "value", "seed", "params", "macs", "val_acc", "seconds", "data", "epochs", "subset")


def pick_data(name: str, cifar_dir: Path) -> str:
    """``auto``: CIFAR-10 when its python batches are present (closer to the paper), else Fashion-MNIST."""
    if name != "auto":
        return name
    return "cifar10" if (cifar_dir / "data_batch_1").is_file() else "fashion_mnist"


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every grid point of every sweep for every seed; return one row per training."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data_name = pick_data(args.data, args.cifar_dir)
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        # The shipped conf/data/NAME.yaml (its dir, val_fraction, augment), with the subset set.
        shipped = DataSettings.from_config(data_name)
        options = shipped.options
        if data_name == "cifar10":
            options = dataclasses.replace(options, dir=str(args.cifar_dir))
        data = A.load_dataset(dataclasses.replace(shipped, subset=args.subset, options=options), seed=seed)
        for sweep in args.sweeps:
            space_name, key, _, _ = SWEEPS[sweep]
            space = A.load_space(space_name)
            grid = space.grid()
            n = math.prod(len(v) for v in grid.values())
            settings_name = f"{sweep}-{data_name}-e{args.epochs}-n{args.subset}-seed{seed}"
            settings = A.SearchSettings(
                # params is the x axis; a second objective keeps every grid point on record
                # the way a sweep would store it (the grid sampler ignores objectives).
                objectives=(("val_acc", "maximize"), ("params", "minimize")),
                # The name carries the settings: a rerun into the same --out with other settings
                # starts new studies instead of topping up (and relabelling) the old ones.
                study=A.StudySettings(name=settings_name, n_trials=n),
                trainer=A.TrainerSettings(epochs=args.epochs, threads=args.threads),
                tracking=A.TrackingSettings(enabled=False),
                export=A.ExportSettings(dir=args.out / "export" / settings_name, plots=False),
                seed=seed,
            )
            started = time.perf_counter()
            result = A.run_search(
                space,
                data,
                settings,
                # archsearch's GridSampler for its ask-and-tell loop (what sampler=grid builds):
                # Optuna's own calls study.stop() when the grid is done, legal only in optimize().
                sampler=grid_sampler(space),
                storage=f"sqlite:///{(args.out / 'trends.db').resolve()}",
                hardware=A.load_hardware("this_machine"),  # not an objective: skip calibration
            )
            for t in result.study.trials:
                if t.state != optuna.trial.TrialState.COMPLETE:
                    reason = t.user_attrs.get("fail_reason", "")
                    print(f"  {sweep} seed {seed} trial {t.number}: {t.state.name} {reason}")
                    continue
                costs = t.user_attrs.get("costs") or {}
                rows.append(
                    {
                        "sweep": sweep,
                        "value": float(t.params[key]),
                        "seed": seed,
                        "params": int(costs.get("params", t.values[1])),
                        "macs": int(costs.get("macs", 0)),
                        "val_acc": float(t.values[0]),
                        "seconds": round(float(t.duration.total_seconds()) if t.duration else 0.0, 1),
                        "data": data_name,
                        "epochs": args.epochs,
                        "subset": args.subset,
                    }
                )
            print(f"{sweep} seed {seed}: {n} grid points in {time.perf_counter() - started:.0f} s")
    return rows


def summarize(rows: list[dict[str, Any]], sweep: str) -> list[dict[str, Any]]:
    """Per grid value: params, mean and (sample) std of validation accuracy over seeds."""
    by_value: dict[float, list[dict[str, Any]]] = {}
    for r in rows:
        if r["sweep"] == sweep:
            by_value.setdefault(float(r["value"]), []).append(r)
    out = []
    for value, rs in sorted(by_value.items()):
        accs = [float(r["val_acc"]) for r in rs]
        out.append(
            {
                "value": value,
                "params": int(rs[0]["params"]),
                "mean": statistics.fmean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "n": len(accs),
            }
        )
    return out


def verdict(summary: list[dict[str, Any]], paper: float, values: list[float], num_classes: int = 10) -> str:
    """Where accuracy saturates in the data, against the paper's saturation point.

    "Saturates" = the smallest value whose mean is within one std of the best mean (the std of
    the best value's seeds): beyond it, more squeeze channels or more 3x3 filters buy no
    accuracy that the seed-to-seed spread can tell apart. The paper's finding holds when that
    point is the paper's value or a grid neighbour of it (and not the range's last value).
    """
    best = max(summary, key=lambda s: s["mean"])
    sat = min((s for s in summary if s["mean"] >= best["mean"] - best["std"]), key=lambda s: s["value"])
    i_sat, i_paper = values.index(sat["value"]), values.index(paper)
    if best["mean"] < 1.5 / num_classes:
        # Near chance every value ties with every other: no trend can be read off the data.
        word = "UNDECIDED (accuracy near chance: train longer or on more images)"
    elif i_sat == len(values) - 1:
        word = "DOES NOT HOLD (no saturation within the range)"
    elif abs(i_sat - i_paper) <= 1:
        word = "HOLDS"
    elif i_sat < i_paper:
        word = "DOES NOT HOLD (saturates earlier)"
    else:
        word = "DOES NOT HOLD (saturates later)"
    return (
        f"best {best['value']:g} ({best['mean']:.4f} +- {best['std']:.4f}, {best['params']:,} params); "
        f"saturates at {sat['value']:g} ({sat['mean']:.4f}, {sat['params']:,} params); "
        f"paper: {paper:g} -> {word}"
    )


def plot(rows: list[dict[str, Any]], sweeps: list[str], path: Path) -> None:
    """One panel per sweep: mean validation accuracy +- std against parameters, points labelled."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4.2), squeeze=False)
    for ax, sweep in zip(axes[0], sweeps, strict=True):
        s = summarize(rows, sweep)
        label = SWEEPS[sweep][3]
        ax.errorbar(
            [x["params"] for x in s], [x["mean"] for x in s], yerr=[x["std"] for x in s], fmt="o-", capsize=3
        )
        for x in s:
            text = f"{x['value']:g}" if sweep == "sr" else f"{x['value'] * 100:.1f}%"
            ax.annotate(
                text, (x["params"], x["mean"]), fontsize=7, xytext=(4, -10), textcoords="offset points"
            )
        n = max((x["n"] for x in s), default=0)
        ax.set_title(f"{label}: mean +- std of {n} seed(s)", fontsize=10)
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation accuracy")
        ax.grid(True, alpha=0.3)
    data = rows[0]["data"] if rows else ""
    fig.suptitle(f"SqueezeNet design-space trends on {data}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--subset", type=int, default=10000, help="training images per run (0: all)")
    ap.add_argument("--data", default="fashion_mnist", choices=["fashion_mnist", "cifar10", "auto"])
    ap.add_argument("--cifar-dir", type=Path, default=Path("~/datasets/cifar-10-batches-py").expanduser())
    ap.add_argument("--sweeps", nargs="+", default=list(SWEEPS), choices=list(SWEEPS))
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)"
    )
    ap.add_argument(
        "--from-csv", action="store_true", help="re-plot and re-judge DIR/trends.csv, train nothing"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.subset == 0:
        args.subset = None
    csv_path = args.out / "trends.csv"
    if args.from_csv:
        with csv_path.open(newline="") as fh:
            rows: list[dict[str, Any]] = list(csv.DictReader(fh))
        args.sweeps = [s for s in SWEEPS if any(r["sweep"] == s for r in rows)]
    else:
        rows = run(args)
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    plot(rows, args.sweeps, args.out / "trends.png")
    for sweep in args.sweeps:
        space_name, key, paper, label = SWEEPS[sweep]
        summary = summarize(rows, sweep)
        print(f"\n{label} ({space_name}):")
        print(f"  {key:>7}  {'params':>8}  {'val_acc':>7}  {'std':>6}  n")
        for s in summary:
            print(f"  {s['value']:>7g}  {s['params']:>8,}  {s['mean']:.4f}  {s['std']:.4f}  {s['n']}")
        values = [float(v) for v in A.load_space(space_name).grid()[key]]
        print(f"  verdict: {verdict(summary, paper, values) if summary else 'no completed trials'}")
    print(f"\nwrote {csv_path} and {args.out / 'trends.png'}")


if __name__ == "__main__":
    main()
