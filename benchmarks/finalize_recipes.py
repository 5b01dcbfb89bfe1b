"""Finalize recipes for small nets on Fashion-MNIST, compared on the validation split only.

    .venv/bin/python benchmarks/finalize_recipes.py [--subset 10000] [--epochs 15] [--seeds 0,1]
        [--jobs 2] [--only plain,longer,...] [--confirm RECIPE] [--out DIR]

Two fixed Fire nets of 30-60K parameters (the previous showcase's finalized member, 32.7K, and
a wider one from search_spaces/fire.yaml) are trained from scratch with each recipe on
``--subset`` training images, ``--seeds`` seeds each, one thread per run, and scored on the
validation split (5,400 images of the official training set: never test). Recipes, each the
trainer of conf/trainer/default.yaml (one-cycle SGD with Nesterov momentum, batch 128, label
smoothing 0.1) with a change:

    plain       --epochs epochs, no augmentation (the trainer as the search uses it)
    longer      2 x --epochs epochs
    no_smooth   --epochs epochs, label_smoothing 0
    crop        2 x --epochs epochs, the data set's crop (2 px padding), no flip
    crop_flip   2 x --epochs epochs, crop and horizontal flip (Fashion-MNIST's data.augment)
    erase       2 x --epochs epochs, crop, flip and random erasing (p 0.25)

(The augmented recipes get the longer schedule: augmentation only pays off in longer runs,
and ``longer`` is their no-augmentation control at equal epochs.) Weight averaging is not
among them: the trainer has none.

Prints, per recipe, validation accuracy mean and standard deviation over the nets x seeds,
the paired difference from ``plain`` (mean and 95% t interval over the same net/seed pairs),
process CPU seconds, and writes recipes.csv. The pick: the recipe with the best mean whose
paired interval against the simpler recipes excludes 0; where the intervals include 0, the
simpler one stays. ``--confirm RECIPE`` instead trains RECIPE on the full training split
(54,000 images) for the showcase net once and scores validation and test once.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Any

from dsd import NETS as DSD_NETS

RECIPES: dict[str, dict[str, Any]] = {
    "plain": {"epochs": 1, "augment": None},
    "longer": {"epochs": 2, "augment": None},
    "no_smooth": {"epochs": 1, "augment": None, "label_smoothing": 0.0},
    "crop": {"epochs": 2, "augment": {"crop_padding": 2, "flip": False, "erase_p": 0.0}},
    "crop_flip": {"epochs": 2, "augment": {"crop_padding": 2, "flip": True, "erase_p": 0.0}},
    "erase": {"epochs": 2, "augment": {"crop_padding": 2, "flip": True, "erase_p": 0.25}},
}
#: Simpler first: a later recipe must beat every earlier one it is compared with to be picked.
ORDER = list(RECIPES)

SHOWCASE_NET = Path(__file__).parent / "results" / "showcase" / "trial_0001_961bf21d3d4d.yaml"
#: dsd.py's "mid" net with wider expand layers (41.2K parameters on Fashion-MNIST).
WIDE_NET: dict[str, Any] = {**DSD_NETS["mid"], "base_e": 64}


def _spec(net: str, data: Any) -> Any:
    import optuna

    from archsearch.net.spec import load_spec
    from archsearch.search.space import load_space

    if net == "showcase":
        return load_spec(str(SHOWCASE_NET))
    return load_space("fire").sample(optuna.trial.FixedTrial(WIDE_NET), data.shape, data.num_classes)


def train_one(
    recipe: str, net: str, seed: int, subset: int | None, epochs: int, test: bool
) -> dict[str, Any]:
    """One run in a worker process: one thread, the recipe's trainer, scored on validation (and test)."""
    import torch

    from archsearch.data.base import Augment
    from archsearch.data.datasets import load_dataset
    from archsearch.net.model import build, count_params
    from archsearch.train.fit import fit
    from archsearch.train.settings import TrainerSettings

    torch.set_num_threads(1)
    r = RECIPES[recipe]
    data = load_dataset({"name": "fashion_mnist", "subset": subset}, seed=seed)
    if r["augment"] is not None:
        data = dataclasses.replace(data, augment=Augment(**r["augment"]))
    trainer = TrainerSettings(
        epochs=epochs * r["epochs"],
        threads=1,
        augment=r["augment"] is not None,
        label_smoothing=r.get("label_smoothing", TrainerSettings().label_smoothing),
    )
    torch.manual_seed(seed)
    model = build(_spec(net, data))
    cpu = time.process_time()
    result = fit(model, data, trainer, seed=seed, evaluate_test=test)
    return {
        "recipe": recipe,
        "net": net,
        "params": count_params(model),
        "seed": seed,
        "epochs": trainer.epochs,
        "val_acc": result.val_acc_last,
        "test_acc": result.test_acc if test else "",
        "cpu_s": time.process_time() - cpu,
        "wall_s": result.seconds,
    }


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def report(rows: list[dict[str, Any]]) -> str:
    """The table: mean, sd, paired difference from plain; and the pick."""
    lines = [f"{'recipe':<10} {'epochs':>6} {'val mean':>9} {'sd':>7} {'vs plain (95%)':>26} {'CPU s':>7}  n"]
    by = {
        name: {(r["net"], r["seed"]): float(r["val_acc"]) for r in rows if r["recipe"] == name}
        for name in ORDER
    }
    diffs: dict[str, tuple[float, float]] = {}
    for name in ORDER:
        vals = list(by[name].values())
        if not vals:
            continue
        cpu = statistics.mean(float(r["cpu_s"]) for r in rows if r["recipe"] == name)
        epochs = next(int(r["epochs"]) for r in rows if r["recipe"] == name)
        pairs = [by[name][k] - by["plain"][k] for k in by[name] if k in by["plain"]]
        diff = ""
        if name != "plain" and len(pairs) > 1:
            m, half = statistics.mean(pairs), _t95(len(pairs)) * statistics.stdev(pairs) / len(pairs) ** 0.5
            diffs[name] = (m, half)
            diff = f"{100 * m:+.2f} [{100 * (m - half):+.2f}, {100 * (m + half):+.2f}] pts"
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        mean = statistics.mean(vals)
        lines.append(f"{name:<10} {epochs:>6} {mean:>9.4f} {sd:>7.4f} {diff:>26} {cpu:>7.0f}  {len(vals)}")
    real = [n for n, (m, half) in diffs.items() if m - half > 0]
    pick = max(real, key=lambda n: diffs[n][0]) if real else "plain"
    why = (
        "its paired interval against plain excludes 0"
        if real
        else "no recipe's interval against plain excludes 0"
    )
    lines.append(f"pick (on validation): {pick} ({why})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default=",".join(ORDER))
    parser.add_argument(
        "--confirm", default=None, help="train this recipe on the full split, score test once"
    )
    parser.add_argument("--out", type=Path, default=Path("finalize_recipes"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    started = time.monotonic()
    if args.confirm:
        row = train_one(args.confirm, "showcase", 0, None, args.epochs, test=True)
        print(
            f"{args.confirm} on the full training split, {row['epochs']} epochs, showcase net "
            f"({row['params']} params): val {row['val_acc']:.4f}, test {row['test_acc']:.4f} "
            f"(scored once), {row['cpu_s']:.0f} CPU s"
        )
        _write(args.out / f"confirm_{args.confirm}.csv", [row])
        return
    jobs = [
        (recipe, net, seed)
        for recipe in [r.strip() for r in args.only.split(",")]
        for net in ("showcase", "wide")
        for seed in [int(s) for s in args.seeds.split(",")]
    ]
    rows: list[dict[str, Any]] = []
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(train_one, r, n, s, args.subset, args.epochs, False) for r, n, s in jobs]
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows.append(row)
            print(
                f"  {row['recipe']:<10} {row['net']:<8} ({row['params']} params) seed {row['seed']}: "
                f"val {row['val_acc']:.4f}  {row['epochs']} epochs  {row['cpu_s']:.0f} CPU s",
                flush=True,
            )
            _write(args.out / "recipes.csv", rows)
    print(report(rows))
    print(f"total {time.monotonic() - started:.0f} s wall; load average at the end {os.getloadavg()[0]:.2f}")


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
