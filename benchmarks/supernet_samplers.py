"""Which sampler should a supernet search use? Each compared on a trained supernet (an oracle).

    .venv/bin/python benchmarks/supernet_samplers.py [--samplers nsga2,tpe,cost_aware,random]
        [--seeds 0,1] [--trials 100] [--e2e DIR] [--out DIR]

A supernet search scores a candidate in about a second, so the sampler's own time counts. This
reuses the supernet ``benchmarks/supernet_e2e.py`` trained (seed 0: Fashion-MNIST, 10,000-image
subset, fire space under params <= 120,000): its checkpoint is copied in as each new study's
own (same fingerprint, so nothing is trained again), and each sampler runs ``+sweep=fire_supernet``
as a user would (``sampler=...``) for ``--trials`` trials, one thread. The scores are supernet
accuracies, a cheap oracle, not trained accuracies: labelled as such in the README.

Reported per sampler: hypervolume of the scored front (supernet score linear on [0, 1], log10
params and MACs on peers.py's fixed box) at equal trials and at equal process CPU seconds (the
shortest run's), mean and standard deviation over seeds, and the mean proposal time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from peers import BOX  # noqa: E402
from search_efficiency import hv  # noqa: E402

OVERRIDES = {
    "nsga2": ["sampler=nsga2", "sampler.population_size=50"],
    # fire_supernet sets NSGA-II's population: other samplers drop the key.
    "tpe": ["sampler=tpe", "~sampler.population_size"],
    "cost_aware": ["sampler=cost_aware", "~sampler.population_size"],
    "random": ["sampler=random", "~sampler.population_size"],
}


def run(sampler: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import math

    import optuna
    import torch
    from hydra import compose, initialize_config_dir

    from archsearch.cli.config import sweep_plan
    from archsearch.data.datasets import load_dataset
    from archsearch.resources import CONF_DIR
    from archsearch.search.supernet_fidelity import checkpoint_path, supernet_fingerprint

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    e2e = args.e2e.resolve()
    name = f"oracle_{sampler}_s{seed}"
    overrides = [
        "+sweep=fire_supernet",
        *OVERRIDES[sampler],
        "data=fashion_mnist",
        "data.subset=10000",
        "seed=0",  # the supernet's seed: the data split and its weights are the trained one's
        f"sampler.seed={seed}",
        "constraints.params.max=120000",
        "trainer.threads=1",
        "hardware=laptop_cpu",
        f"study.n_trials={args.trials}",
        f"study.name={name}",
        f"study.storage=sqlite:///{args.out / 'optuna.db'}",
        f"tracking.dir={args.out / 'mlruns'}",
        "tracking.enabled=false",
        f"export.dir={args.out / name}",
        "export.plots=false",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plan = sweep_plan(compose("config", overrides=overrides))
    data = load_dataset(plan.data, seed=plan.settings.seed)
    fingerprint = supernet_fingerprint(plan.settings, plan.space, data)
    trained = e2e / "mlruns" / "supernet" / f"e2e_supernet_s0-{fingerprint}.pt"
    if not trained.is_file():
        raise SystemExit(f"no trained supernet at {trained}: run benchmarks/supernet_e2e.sh first")
    target = checkpoint_path(plan.settings, fingerprint)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained, target)
    cpu0 = time.process_time()
    used: list[float] = []
    result = plan.search(data, callbacks=[lambda _s, _t: used.append(time.process_time() - cpu0)])
    # One worker: trials finish in number order, as the callback saw them.
    points = [
        [
            t.values[0],
            math.log10(t.user_attrs["costs"]["params"]),
            math.log10(t.user_attrs["costs"]["macs"]),
            cpu,
        ]
        for t, cpu in zip(sorted(result.study.trials, key=lambda t: t.number), used, strict=False)
        if t.state.name == "COMPLETE" and t.values and "val_acc" in t.user_attrs
    ]
    proposals = [
        t.user_attrs["proposal_seconds"] for t in result.study.trials if "proposal_seconds" in t.user_attrs
    ]
    return {
        "sampler": sampler,
        "seed": seed,
        "trials": len(result.study.trials),
        "cpu": used,
        "points": points,
        "proposal_s": statistics.mean(proposals) if proposals else 0.0,
    }


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def report(rows: list[dict[str, Any]]) -> None:
    budget = min(r["cpu"][-1] for r in rows)
    print(f"hypervolume on peers.py's box {BOX}; equal CPU = {budget:.0f} s (the shortest run's)")
    print(
        f"{'sampler':<11} {'seeds':>5} {'HV at equal trials':>20} {'HV at equal CPU':>18} {'proposal s':>11}"
    )
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        runs = [r for r in rows if r["sampler"] == sampler]
        # Each point is (score, log10 params, log10 MACs, CPU seconds when its trial finished).
        at_trials = [hv([p[:3] for p in r["points"]], BOX) for r in runs]
        at_cpu = [hv([p[:3] for p in r["points"] if p[3] <= budget], BOX) for r in runs]
        proposal = statistics.mean(r["proposal_s"] for r in runs)
        print(
            f"{sampler:<11} {len(runs):>5} {statistics.mean(at_trials):>12.4f} ± {_sd(at_trials):.4f}"
            f" {statistics.mean(at_cpu):>10.4f} ± {_sd(at_cpu):.4f} {proposal:>11.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samplers", default="nsga2,tpe,cost_aware,random")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--e2e", type=Path, default=ROOT / "results" / "supernet_e2e")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "supernet_samplers")
    ap.add_argument("--report", action="store_true", help="only report on --out's rows.json")
    args = ap.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "rows.json"
    rows: list[dict[str, Any]] = json.loads(store.read_text()) if store.exists() else []
    if not args.report:
        for seed in (int(s) for s in args.seeds.split(",")):
            for sampler in args.samplers.split(","):
                if any(r["sampler"] == sampler and r["seed"] == seed for r in rows):
                    continue
                rows.append(run(sampler, seed, args))
                store.write_text(json.dumps(rows))
                print(f"done {sampler} seed {seed}: {rows[-1]['cpu'][-1]:.0f} CPU s", flush=True)
    report(rows)


if __name__ == "__main__":
    main()
