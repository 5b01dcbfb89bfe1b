"""Does the supernet rank networks like training them does, and how many does it score an hour?

    .venv/bin/python benchmarks/supernet.py --seed 0 [--count 40] [--epochs 12] [--jobs 2]
        [--params-max 120000] [--subset 10000] [--phases supernet,standalone,second] [--out DIR]
    .venv/bin/python benchmarks/supernet.py --report [--out DIR]

On Fashion-MNIST (a ``--subset`` of the training images after the 10% validation split), with
the fire space under ``params <= --params-max``:

- ``supernet``: draws the pool, trains the supernet (``SupernetSettings(epochs=--epochs)``, the
  sweep's default trainer, 2 threads), then scores ``--count`` random feasible candidates (drawn
  with another seed than the pool, so no candidate is chosen to suit the supernet) and times the
  scoring of every one of them (process CPU seconds and wall-clock).
- ``standalone``: trains each candidate from scratch on the same subset for 9 epochs, and for 1
  and for 3 epochs as separate runs with their own full schedule (a rung's accuracy with no
  warm-up still running at the rung), ``--jobs`` processes of one thread each.
- ``second``: the larger half by parameters again for 9 epochs with seed + 1 (the ranking is
  against the mean of the two).

Every phase appends raw rows to ``<out>/supernet_s<seed>.csv`` (one row per candidate and
measurement), so runs split over several invocations merge. ``--report`` reads every CSV
there and prints Kendall tau and Spearman rho against stand-alone accuracy for the supernet
score, parameter count and the two rungs, over all candidates and over the larger half, with
95% bootstrap intervals, the residual tau after a least-squares fit of each side on
log(params), and the throughput figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.supernet.settings import SupernetSettings

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "supernet"
FIELDS = ["seed", "candidate", "spec_hash", "params", "macs", "kind", "value", "cpu_s", "wall_s", "note"]


def _data(subset: int, seed: int) -> Any:
    from archsearch.data.datasets import load_dataset

    cfg = {
        "name": "fashion_mnist",
        "dir": "/usr/share/datasets/fashion-mnist",
        "val_fraction": 0.1,
        "subset": subset,
    }
    return load_dataset(cfg, seed)


def _feasible(params_max: float) -> Any:
    from archsearch.net.cost import analyze

    def macs(spec: Any) -> float | None:
        report = analyze(spec)
        return float(report.macs) if report.params <= params_max else None

    return macs


def _candidates(space: Any, data: Any, count: int, params_max: float, seed: int) -> list[Any]:
    from archsearch.search.supernet_space import draw_pool

    pool = draw_pool(
        space, data.shape, data.num_classes, _feasible(params_max), size=count * 4, seed=10_000 + seed
    )
    rng = random.Random(seed)
    specs = list(pool.specs)
    rng.shuffle(specs)
    return specs[:count]


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


def phase_supernet(args: argparse.Namespace, out: Path) -> None:
    import torch

    from archsearch.net.cost import analyze
    from archsearch.search.space import load_space
    from archsearch.search.supernet_space import corner_specs, draw_pool
    from archsearch.supernet.plan import plan_banks
    from archsearch.supernet.scoring import Scorer
    from archsearch.supernet.settings import SupernetSettings
    from archsearch.supernet.training import train_supernet
    from archsearch.train.settings import TrainerSettings

    torch.set_num_threads(2)
    data = _data(args.subset, args.seed)
    space = load_space("fire")
    settings = SupernetSettings(epochs=args.epochs, random_per_step=args.random_per_step)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    corners = corner_specs(space, data.shape, data.num_classes)
    plan = plan_banks(corners)
    pool = draw_pool(
        space,
        data.shape,
        data.num_classes,
        _feasible(args.params_max),
        size=settings.pool,
        extra=corners,
        seed=args.seed,
    )
    prep = (time.process_time() - cpu0, time.perf_counter() - wall0)
    print(
        f"plan and pool: {len(plan.banks)} banks, {len(pool.specs)} feasible networks, {prep[1]:.1f} s",
        flush=True,
    )
    cpu1, wall1 = time.process_time(), time.perf_counter()
    run = train_supernet(
        plan,
        pool,
        data,
        TrainerSettings(threads=2),
        settings,
        seed=args.seed,
        on_epoch_end=lambda e, r: print(
            f"supernet epoch {e}: loss {r['train_loss']:.3f}, {r['seconds']:.1f} s", flush=True
        ),
    )
    train_cpu, train_wall = time.process_time() - cpu1, time.perf_counter() - wall1
    scorer = Scorer(
        run.supernet, data, batch_size=128, bn_batches=settings.bn_batches, eval_images=settings.eval_images
    )
    rows = [
        {
            "seed": args.seed,
            "candidate": -1,
            "spec_hash": "",
            "params": 0,
            "macs": 0,
            "kind": f"supernet_train{args.tag}",
            "value": args.epochs,
            "cpu_s": train_cpu,
            "wall_s": train_wall,
            "note": json.dumps(
                {
                    "prep_cpu_s": prep[0],
                    "prep_wall_s": prep[1],
                    "pool": len(pool.specs),
                    "largest_macs": pool.macs[-1],
                    "smallest_macs": pool.macs[0],
                    "loadavg": os.getloadavg()[0],
                }
            ),
        },
    ]
    for i, spec in enumerate(_candidates(space, data, args.count, args.params_max, args.seed)):
        report = analyze(spec)
        c0, w0 = time.process_time(), time.perf_counter()
        acc = scorer(spec)
        rows.append(
            {
                "seed": args.seed,
                "candidate": i,
                "spec_hash": spec.hash,
                "params": report.params,
                "macs": report.macs,
                "kind": f"supernet{args.tag}",
                "value": acc,
                "cpu_s": time.process_time() - c0,
                "wall_s": time.perf_counter() - w0,
                "note": f"loadavg {os.getloadavg()[0]:.2f}",
            }
        )
        print(f"candidate {i}: {report.params} params, supernet {acc:.4f}", flush=True)
    _append(out / f"supernet_s{args.seed}.csv", rows)


def _standalone(job: tuple[dict[str, Any], int, int, int, int]) -> dict[str, Any]:
    import torch

    from archsearch.net.model import build
    from archsearch.net.spec import NetSpec
    from archsearch.train.fit import TrainingDiverged, fit
    from archsearch.train.settings import TrainerSettings

    raw, epochs, seed, subset, data_seed = job
    torch.set_num_threads(1)
    data = _data(subset, data_seed)
    spec = NetSpec.from_dict(raw)
    torch.manual_seed(seed)
    model = build(spec)
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        result = fit(model, data, TrainerSettings(epochs=epochs, threads=1), seed=seed)
    except TrainingDiverged as exc:  # recorded, and left out of the rankings
        return {
            "value": math.nan,
            "cpu_s": time.process_time() - c0,
            "wall_s": time.perf_counter() - w0,
            "note": str(exc),
        }
    return {
        "value": result.val_acc_last,
        "cpu_s": time.process_time() - c0,
        "wall_s": time.perf_counter() - w0,
    }


def _done(path: Path) -> set[tuple[int, str]]:
    if not path.exists():
        return set()
    with path.open() as f:
        return {(int(r["candidate"]), r["kind"]) for r in csv.DictReader(f)}


def phase_standalone(args: argparse.Namespace, out: Path, second: bool) -> None:
    from archsearch.net.cost import analyze
    from archsearch.search.space import load_space

    data = _data(args.subset, args.seed)
    specs = _candidates(load_space("fire"), data, args.count, args.params_max, args.seed)
    params = [analyze(s).params for s in specs]
    jobs: list[tuple[int, str, tuple[dict[str, Any], int, int, int, int]]] = []
    if second:
        larger = sorted(range(len(specs)), key=lambda i: params[i])[len(specs) // 2 :]
        for i in larger:
            jobs.append(
                (i, "standalone9_seed2", (specs[i].to_dict(), 9, args.seed + 1, args.subset, args.seed))
            )
    else:
        for i, spec in enumerate(specs):
            for epochs in (9, 3, 1):
                jobs.append(
                    (i, f"standalone{epochs}", (spec.to_dict(), epochs, args.seed, args.subset, args.seed))
                )
    done = _done(out / f"supernet_s{args.seed}.csv")
    jobs = [j for j in jobs if (j[0], j[1]) not in done]  # a rerun finishes what an earlier one left
    with ProcessPoolExecutor(args.jobs) as pool:
        for (i, kind, _), result in zip(jobs, pool.map(_standalone, [j for _, _, j in jobs]), strict=True):
            row = {
                "seed": args.seed,
                "candidate": i,
                "spec_hash": specs[i].hash,
                "params": params[i],
                "macs": analyze(specs[i]).macs,
                "kind": kind,
                **result,
                "note": f"loadavg {os.getloadavg()[0]:.2f} {result.get('note', '')}".strip(),
            }
            _append(out / f"supernet_s{args.seed}.csv", [row])
            print(f"candidate {i} {kind}: {result['value']:.4f} ({result['cpu_s']:.0f} cpu s)", flush=True)


# --------------------------------------------------------------------------- report


def _residual(y: np.ndarray, logp: np.ndarray) -> np.ndarray:
    a = np.vstack([logp, np.ones_like(logp)]).T
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return y - a @ coef


def _stats(x: np.ndarray, y: np.ndarray, logp: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    from scipy.stats import kendalltau, spearmanr

    def all_three(idx: np.ndarray) -> tuple[float, float, float]:
        xs, ys, lp = x[idx], y[idx], logp[idx]
        tau = kendalltau(xs, ys).statistic
        rho = spearmanr(xs, ys).statistic
        res = kendalltau(_residual(xs, lp), _residual(ys, lp)).statistic
        return float(tau), float(rho), float(res)

    point = all_three(np.arange(len(x)))
    boots = np.array([all_three(rng.integers(0, len(x), len(x))) for _ in range(1000)])
    lo, hi = np.nanpercentile(boots, 2.5, axis=0), np.nanpercentile(boots, 97.5, axis=0)
    return {"tau": point[0], "rho": point[1], "res": point[2], "lo": lo, "hi": hi}


def _line(name: str, s_all: dict[str, Any], s_big: dict[str, Any], key: str | None) -> str:
    def cell(s: dict[str, Any], i: int, field: str) -> str:
        return f"{s[field]:.2f} [{s['lo'][i]:.2f}, {s['hi'][i]:.2f}]"

    # Parameter count's residual on log(params) is zero by construction: it has no information there.
    residual = cell(s_all, 2, "res") if key is not None else "n/a"
    return (
        f"{name:<10} {cell(s_all, 0, 'tau'):<20} {s_all['rho']:<8.2f} {cell(s_big, 0, 'tau'):<22} {residual}"
    )


def report(out: Path) -> None:
    rows = []
    for path in sorted(out.glob("supernet_s*.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        by: dict[int, dict[str, float]] = {}
        params: dict[int, float] = {}
        for r in mine:
            c = int(r["candidate"])
            if c < 0:
                continue
            by.setdefault(c, {})[r["kind"]] = float(r["value"])
            params[c] = float(r["params"])
        # Every ranker is compared on the same candidates: those with a finite value of each kind
        # measured (a training that diverged, NaN, has no accuracy to rank by; its count is shown).
        kinds = {k for c in by for k in by[c]} - {"standalone9_seed2"}
        measured = [c for c in sorted(by) if "standalone9" in by[c] and "supernet" in by[c]]
        full = [c for c in measured if all(math.isfinite(by[c].get(k, math.nan)) for k in kinds)]
        if len(full) < len(measured):
            print(f"left out: {len(measured) - len(full)} candidates with a diverged (NaN) training")
        if not full:
            print(
                f"seed {seed}: no candidate has both a supernet score and a 9-epoch stand-alone accuracy yet"
            )
            continue
        truth = np.array(
            [
                np.mean([by[c]["standalone9"], by[c].get("standalone9_seed2", by[c]["standalone9"])])
                for c in full
            ]
        )
        logp = np.log(np.array([params[c] for c in full]))
        larger = np.argsort(logp)[len(full) // 2 :]
        two = sum("standalone9_seed2" in by[c] for c in full)
        print(f"\nseed {seed}: {len(full)} candidates ({two} with 2 stand-alone seeds)")
        print(
            f"{'ranker':<10} {'tau all [95%]':<20} {'rho all':<8} {'tau larger half [95%]':<22} "
            "residual tau [95%]"
        )
        tags = sorted(
            {r["kind"] for r in mine if r["kind"].startswith("supernet") and "_train" not in r["kind"]}
        )
        rankers: list[tuple[str, str | None]] = [(t, t) for t in tags]
        rankers += [("params", None), ("epoch-1", "standalone1"), ("epoch-3", "standalone3")]
        for name, key in rankers:
            if key is not None and not all(math.isfinite(by[c].get(key, math.nan)) for c in full):
                continue
            x = np.exp(logp) if key is None else np.array([by[c][key] for c in full])
            print(
                _line(
                    name,
                    _stats(x, truth, logp, rng),
                    _stats(x[larger], truth[larger], logp[larger], rng),
                    key,
                )
            )
        s9 = sorted((r for r in mine if r["kind"] == "standalone9"), key=lambda r: float(r["params"]))
        for tag in tags:
            trained = [r for r in mine if r["kind"] == tag.replace("supernet", "supernet_train", 1)]
            _throughput(tag, trained, [r for r in mine if r["kind"] == tag], s9)


def _throughput(
    tag: str, train: list[dict[str, str]], scores: list[dict[str, str]], s9: list[dict[str, str]]
) -> None:
    if not train or not scores:
        return
    cpu = float(np.mean([float(r["cpu_s"]) for r in scores]))
    wall = float(np.mean([float(r["wall_s"]) for r in scores]))
    note = json.loads(train[0]["note"])
    tcpu = float(train[0]["cpu_s"])
    print(
        f"{tag}: scoring {cpu:.2f} cpu s, {wall:.2f} wall s per candidate -> {3600 / wall:.0f} per "
        f"wall-clock hour on 2 threads ({3600 / cpu:.0f} per cpu-hour); training {tcpu:.0f} cpu s, "
        f"{float(train[0]['wall_s']):.0f} wall s, {train[0]['value']} epochs "
        f"(load average {note['loadavg']:.2f})"
    )
    if s9:
        median = s9[len(s9) // 2]
        print(
            f"  median candidate's 9-epoch stand-alone training: {float(median['cpu_s']):.0f} cpu s -> "
            f"supernet training = {tcpu / float(median['cpu_s']):.1f} such trainings"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--epochs", type=int, default=SupernetSettings().epochs)
    p.add_argument("--random-per-step", type=int, default=SupernetSettings().random_per_step)
    p.add_argument("--tag", default="", help="suffix of the supernet rows' kind (a second supernet setting)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--subset", type=int, default=10_000)
    p.add_argument("--params-max", type=float, default=120_000)
    p.add_argument("--phases", default="supernet,standalone,second")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        report(args.out)
        return 0
    phases = args.phases.split(",")
    if "supernet" in phases:
        phase_supernet(args, args.out)
    if "standalone" in phases:
        phase_standalone(args, args.out, second=False)
    if "second" in phases:
        phase_standalone(args, args.out, second=True)
    report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
