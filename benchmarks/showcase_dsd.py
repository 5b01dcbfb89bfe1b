"""Dense-Sparse-Dense on the showcase's best member, at the plain finalize's total epochs.

    .venv/bin/python benchmarks/showcase_dsd.py OUT [--epochs N] [--seed 0] [--threads 2]

OUT is a finished ``benchmarks/showcase_fashion_mnist.sh OUT`` run. The member of its
``showcase_final`` study with the best finalized *validation* accuracy (test is never looked at
to choose) is copied into a study ``showcase_dsd`` and finalized again exactly as the showcase
finalized it (same data, seed, trainer, epochs), but with ``trainer.dsd.enabled=true``: the same
total epochs split dense / sparse / re-dense (conf/trainer/default.yaml's ``dsd`` block). Both
runs start from the same initialisation. Prints and writes ``OUT/dsd.md``: validation and test
accuracy of the plain and the DSD finalize of that member, and the test difference (one seed:
about +-0.3 points of noise on Fashion-MNIST's test set).

``--epochs`` defaults to the plain finalize's epochs (equal total epochs). DSD needs at least one
epoch per phase: after ``SCALE=small`` (1-epoch finalize), check the pipeline with ``--epochs 4``,
and read the result as a check only. A failed finalize exits with its own code (2: bad settings).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from archsearch.results.export import FINALIZED_PREFIX, SELECTION_ATTR, finalized_results, load_stored_study


def copy_best(db: Path, source: str, into: str) -> tuple[int, int, dict[str, Any]]:
    """Copy the source study's member with the best finalized val_acc into a new study ``into``."""
    url = f"sqlite:///{db.resolve()}"
    study = load_stored_study(source, url)
    results = {n: r for n, r in finalized_results(study).items() if not r.get("failed")}
    if not results:
        sys.exit(f"study {source} in {db} has no finalized member")
    number = max(results, key=lambda n: (results[n]["val_acc"], -n))
    trial = study.trials[number]
    if into in optuna.get_all_study_names(storage=url):
        optuna.delete_study(study_name=into, storage=url)
    copy = optuna.create_study(storage=url, study_name=into, directions=study.directions)
    for key, value in study.user_attrs.items():
        if not key.startswith(FINALIZED_PREFIX) and key != SELECTION_ATTR:
            copy.set_user_attr(key, value)
    copy.add_trial(
        optuna.trial.create_trial(
            params=trial.params,
            distributions=trial.distributions,
            values=trial.values,
            user_attrs=dict(trial.user_attrs),
            system_attrs=trial.system_attrs,
            state=optuna.trial.TrialState.COMPLETE,
        )
    )
    return number, int(trial.user_attrs.get("search_trial", number)), results[number]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="a finished showcase run's OUT directory")
    ap.add_argument("--epochs", type=int, help="the DSD finalize's total epochs (default: the plain one's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    out = args.out.resolve()
    db = out / "optuna.db"
    number, trial, plain = copy_best(db, "showcase_final", "showcase_dsd")
    epochs = args.epochs if args.epochs is not None else int(plain["epochs"])
    print(f"best finalized val_acc: trial {number} ({plain['val_acc']:.4f} val); finalizing it with DSD")
    common = [
        "data=fashion_mnist",
        f"seed={args.seed}",
        f"study.storage=sqlite:///{db}",
        f"tracking.dir={out / 'mlruns'}",
        f"hydra.run.dir={out / 'hydra'}",
    ]
    started = time.process_time(), time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "archsearch.finalize",
        *common,
        "study.name=showcase_dsd",
        f"finalize.epochs={epochs}",
        f"trainer.threads={args.threads}",
        "trainer.dsd.enabled=true",
        f"export.dir={out / 'dsd'}",
    ]
    code = subprocess.run(command, env=os.environ.copy()).returncode
    if code:
        sys.exit(code)  # the finalize said why, in one sentence
    wall = time.perf_counter() - started[1]
    dsd = finalized_results(load_stored_study("showcase_dsd", f"sqlite:///{db}"))[0]
    diff = 100 * (float(dsd["test_acc"]) - float(plain["test_acc"]))
    text = (
        f"| finalize of trial {number} (search trial {trial}) | val_acc | test_acc | epochs |\n"
        "|---|---|---|---|\n"
        f"| plain (the showcase's) | {plain['val_acc']:.4f} | {plain['test_acc']:.4f} | {plain['epochs']} |\n"
        f"| Dense-Sparse-Dense | {dsd['val_acc']:.4f} | {dsd['test_acc']:.4f} | {dsd['epochs']} |\n\n"
        f"DSD - plain on test: {diff:+.2f} points (one seed; about +-0.3 points of noise). "
        f"DSD finalize took {wall:.0f} s wall.\n"
    )
    if epochs != int(plain["epochs"]):
        text += "Not at equal epochs: a check of the pipeline, not a result.\n"
    (out / "dsd.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
