"""End to end at equal compute: a weight-sharing search against the best one without it.

    .venv/bin/python benchmarks/supernet_e2e.py --method supernet --seed 0 --phase search
    .venv/bin/python benchmarks/supernet_e2e.py --method gp_halving --seed 0 --phase search
    .venv/bin/python benchmarks/supernet_e2e.py --method supernet --seed 0 --phase finalize
    .venv/bin/python benchmarks/supernet_e2e.py --method gp_halving --seed 0 --phase finalize
    .venv/bin/python benchmarks/supernet_e2e.py --report [--out DIR]
    bash benchmarks/supernet_e2e.sh [SEED]     # all of the above: the searches side by side, then finalize

Both searches are what a user runs, composed from the same command-line overrides the CLI
takes (``+sweep=...``), on Fashion-MNIST with a ``--subset`` of the training images after the
10% validation split, the fire space under ``params <= 120000`` and objectives val_acc, params
and MACs:

- ``supernet``: ``+sweep=fire_supernet`` (the supernet trained once, at the start, inside the
  budget; NSGA-II, population 50; every trial scored on its slice);
- ``gp_halving``: ``+sweep=fire sampler=gp`` with successive halving at epoch 3 of 9 (eta 3,
  after the 25% warm-up of the 9-epoch one-cycle schedule): the best Optuna configuration of
  benchmarks/peers.py on digits (GPSampler with halving, 1.151 +- 0.068 against TPE's 0.899).

Equal compute is counted in process CPU seconds (``--cpu-budget``, default 3600), every
method on one thread (``trainer.threads=1``), so that the two can run side by side on the two
cores and load cannot move the budget; wall-clock is reported beside it. A callback stops the
search after the trial that crosses the budget (``study.stop()``).

``finalize`` retrains ``--members`` members of each front (``finalize.members``: chosen on
validation accuracy, spread over the front's sizes; the same selection rule for both) from
scratch for ``--final-epochs`` on the same training subset with the sweep's trainer, and scores
the 10,000 test images once per member; for ``supernet`` it then retrains the same members
starting from their supernet slices (``finalize.init=supernet``). Rows go to
``<out>/e2e_s<seed>.csv``; ``--report`` prints, per method, the finalized front's hypervolume
(validation and test accuracy, on the fixed box ``BOX``: accuracy linear, log10 costs) and the
best member of <= 50K parameters by validation accuracy with its test accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "supernet_e2e"
METHODS = {
    "supernet": ["+sweep=fire_supernet"],
    "gp_halving": [
        "+sweep=fire",
        "sampler=gp",
        "trainer.epochs=9",
        "sweep.fidelity.enabled=true",
        "sweep.fidelity.rungs=[3]",
        "sweep.fidelity.eta=3",
    ],
}
#: The hypervolume's fixed box: val_acc in [0.5, 1], log10 params in [3, 5.1], log10 MACs in [5, 7.5].
BOX = {"lower": [0.5, 3.0, 5.0], "upper": [1.0, 5.1, 7.5]}
SMALL = 50_000
FIELDS = [
    "seed",
    "method",
    "init",
    "trial",
    "params",
    "macs",
    "search_val_acc",
    "val_acc",
    "test_acc",
    "train_seconds",
    "cpu_s",
    "wall_s",
    "loadavg",
]


def compose(method: str, args: argparse.Namespace, out: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from archsearch.resources import CONF_DIR

    name = f"e2e_{method}_s{args.seed}"
    overrides = [
        *METHODS[method],
        "data=fashion_mnist",
        f"data.subset={args.subset}",
        f"seed={args.seed}",
        "constraints.params.max=120000",
        "trainer.threads=1",
        "hardware=laptop_cpu",  # no latency objective: the profile only fills latency_est_ms
        "study.n_trials=1000000",  # the CPU budget ends the search
        f"study.name={name}",
        f"study.storage=sqlite:///{out / 'optuna.db'}",
        f"tracking.dir={out / 'mlruns'}",
        f"export.dir={out / name}",
        "export.plots=false",
        *args.set,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides), name


def phase_search(method: str, args: argparse.Namespace, out: Path) -> None:
    import optuna
    from rich.console import Console

    from archsearch.cli.config import sweep_plan
    from archsearch.data.datasets import load_dataset

    cfg, name = compose(method, args, out)
    plan = sweep_plan(cfg)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    data = load_dataset(plan.data, seed=plan.settings.seed)

    def budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if time.process_time() - cpu0 >= args.cpu_budget:
            study.stop()

    result = plan.search(data, console=Console(), callbacks=[budget])
    trials = result.study.trials
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    summary = {
        "seed": args.seed,
        "method": method,
        "study": name,
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - wall0,
        "trials": len(trials),
        "states": states,
        "unique_specs": len({t.user_attrs.get("spec_hash") for t in trials if t.user_attrs.get("spec_hash")}),
        "front": len(result.front),
        "loadavg": os.getloadavg()[0],
        "cpu_budget": args.cpu_budget,
        "supernet": result.study.user_attrs.get("supernet"),
    }
    (out / f"search_{method}_s{args.seed}.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, default=str), flush=True)


def phase_finalize(method: str, args: argparse.Namespace, out: Path) -> None:
    from rich.console import Console

    from archsearch.cli.config import sweep_plan
    from archsearch.data.datasets import load_dataset
    from archsearch.results.export import load_stored_study
    from archsearch.search.finalize import FinalizeSettings, finalize_study

    cfg, name = compose(method, args, out)
    plan = sweep_plan(cfg)
    settings = plan.settings
    data = load_dataset(plan.data, seed=settings.seed)
    study = load_stored_study(name, settings.storage_url)
    inits = ["scratch", "supernet"] if method == "supernet" else ["scratch"]
    for init in inits:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        done = finalize_study(
            study,
            data,
            settings=FinalizeSettings(epochs=args.final_epochs, members=args.members, init=init),
            trainer=settings.trainer,
            tracking=settings.tracking,
            export=settings.export,
            seed=settings.seed,
            console=Console(),
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        rows = []
        for m in done.members:
            costs = trials[m.trial].user_attrs["costs"]
            rows.append(
                {
                    "seed": args.seed,
                    "method": method,
                    "init": init,
                    "trial": m.trial,
                    "params": int(costs["params"]),
                    "macs": int(costs["macs"]),
                    "search_val_acc": m.search_val_acc,
                    "val_acc": m.val_acc,
                    "test_acc": m.test_acc,
                    "train_seconds": m.train_seconds,
                    "cpu_s": cpu / max(len(done.members), 1),
                    "wall_s": wall / max(len(done.members), 1),
                    "loadavg": os.getloadavg()[0],
                }
            )
        path = out / f"e2e_s{args.seed}.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)


def _hv(rows: list[dict[str, Any]], key: str) -> float:
    from archsearch.pareto import hypervolume

    points = [[float(r[key]), math.log10(float(r["params"])), math.log10(float(r["macs"]))] for r in rows]
    points = [p for p in points if math.isfinite(p[0])]
    return hypervolume(points, ["maximize", "minimize", "minimize"], BOX["lower"], BOX["upper"])


def report(out: Path) -> None:
    rows: list[dict[str, Any]] = []
    for path in sorted(out.glob("e2e_s*.csv")):
        with path.open() as f:
            rows.extend(csv.DictReader(f))
    searches = [json.loads(p.read_text()) for p in sorted(out.glob("search_*_s*.json"))]
    print(f"hypervolume box {BOX} (val_acc, log10 params, log10 MACs)")
    for s in searches:
        sup = s.get("supernet") or {}
        print(
            f"search {s['method']:<11} seed {s['seed']}: {s['trials']} trials ({s['unique_specs']} unique), "
            f"{s['cpu_s']:.0f} CPU s, {s['wall_s']:.0f} s wall, front {s['front']}, load {s['loadavg']:.2f}"
            + (f", supernet {sup.get('seconds', float('nan')):.0f} s" if sup else "")
        )
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["seed"], r["method"], r["init"]), []).append(r)
    print(
        f"{'seed':>4} {'method':<11} {'init':<8} {'members':>7} {'HV val':>7} {'HV test':>7} "
        f"{'best<=50K val':>13} {'its test':>8} {'params':>7}  members (params: val/test)"
    )
    for (seed, method, init), group in sorted(groups.items()):
        small = [r for r in group if float(r["params"]) <= SMALL and math.isfinite(float(r["val_acc"]))]
        best = max(small, key=lambda r: float(r["val_acc"])) if small else None
        listing = ", ".join(
            f"{int(r['params']) / 1000:.1f}K: {float(r['val_acc']):.4f}/{float(r['test_acc']):.4f}"
            for r in sorted(group, key=lambda r: float(r["params"]))
        )
        print(
            f"{seed:>4} {method:<11} {init:<8} {len(group):>7} {_hv(group, 'val_acc'):>7.4f} "
            f"{_hv(group, 'test_acc'):>7.4f} "
            + (
                f"{float(best['val_acc']):>13.4f} {float(best['test_acc']):>8.4f} {int(best['params']):>7}"
                if best
                else f"{'none':>13} {'':>8} {'':>7}"
            )
            + f"  {listing}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=sorted(METHODS))
    ap.add_argument("--phase", choices=["search", "finalize"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-budget", type=float, default=3600.0, help="process CPU seconds per search")
    ap.add_argument("--subset", type=int, default=10_000)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--final-epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra overrides")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(out)
        return
    if args.method is None or args.phase is None:
        ap.error("--method and --phase are needed unless --report")
    print(f"{args.phase} {args.method} seed {args.seed}: load average {os.getloadavg()[0]:.2f}", flush=True)
    (phase_search if args.phase == "search" else phase_finalize)(args.method, args, out)


if __name__ == "__main__":
    main()
