"""Framework overhead per trial: a sweep whose training is a fixed fake result, against the
same sampling loop on a bare in-memory Optuna study (no storage, tracking, costs or export).

    .venv/bin/python benchmarks/overhead.py [n_trials]

Prints ms/trial of each and the difference (the overhead archsearch adds), in wall-clock time
and, steadier on a shared machine, in this process's CPU time. Target: the wall-clock
difference stays under 150 ms/trial on the default SQLite storage and MLflow backend.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import optuna
from hydra import compose, initialize_config_dir

import archsearch.results.export
from archsearch.cli.config import plain
from archsearch.cli.main import run_sweep
from archsearch.data.datasets import load_dataset
from archsearch.resources import CONF_DIR
from archsearch.results.export import export_study
from archsearch.search.space import InfeasibleArchitecture, load_space


class _Result:
    val_acc_last = val_acc_best = 0.9
    test_acc = None
    epochs_done = 1
    seconds = 0.0
    images_per_s = 0.0
    history: ClassVar[list[dict[str, float]]] = []


def fake_fit(model: Any, data: Any, cfg: Any, *, seed: int = 0, on_epoch_end: Any = None) -> _Result:
    if on_epoch_end is not None:
        on_epoch_end(1, {"train_loss": 0.5, "val_acc": 0.9, "seconds": 0.0})
    return _Result()


def bare_loop(n: int, shape: tuple[int, int, int], classes: int) -> tuple[float, float]:
    """Same sampler and space, in-memory study, no costs / tracking / export: (wall, CPU) s/trial."""
    space = load_space("fire")
    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, constant_liar=True),
    )

    def objective(trial: optuna.Trial) -> list[float]:
        with contextlib.suppress(InfeasibleArchitecture):
            space.sample(trial, shape, classes)
        return [0.9, float(trial.number), float(trial.number)]

    start, cpu = time.perf_counter(), time.process_time()
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


def archsearch_loop(n: int, workdir: Path) -> tuple[float, float, float]:
    """(wall and CPU seconds per trial of the whole sweep, seconds of its end-of-sweep export)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+sweep=fire",
                "sampler=tpe",  # the framework's overhead, not a sampler's model fits
                "data=digits",
                f"tracking.dir={workdir / 'mlruns'}",
                f"export.dir={workdir / 'results'}",
                f"study.n_trials={n}",
                "study.name=overhead",
                "tracking.log_weights=none",
            ],
        )
    # Create the storage and MLflow schemas first: a one-off cost, not a per-trial one.
    warm = cfg.copy()
    warm.study.n_trials = 1
    warm.study.name = "warm-up"
    run_sweep(warm, fit_fn=fake_fit)
    # The sweep's own end-of-sweep export, timed where it runs (run_sweep imports it at call time).
    spent: list[float] = []

    def timed_export(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return export_study(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    start, cpu = time.perf_counter(), time.process_time()
    with mock.patch.object(archsearch.results.export, "export_study", timed_export):
        run_sweep(cfg, fit_fn=fake_fit)
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n, sum(spent)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        data_cfg = plain(compose("config").data)
    data = load_dataset(data_cfg)
    c, h, w = data.shape
    shape, classes = (int(c), int(h), int(w)), int(data.num_classes)
    bare, full, export, bare_cpu, full_cpu = [], [], [], [], []
    for rep in range(3):
        wall, cpu = bare_loop(n, shape, classes)
        bare.append(wall)
        bare_cpu.append(cpu)
        with tempfile.TemporaryDirectory() as tmp:
            per_trial, cpu, export_s = archsearch_loop(n, Path(tmp))
        full.append(per_trial)
        full_cpu.append(cpu)
        export.append(export_s)
        ms_bare, ms_full = 1e3 * bare[-1], 1e3 * full[-1]
        print(f"round {rep + 1}: bare optuna {ms_bare:.1f} ms/trial, archsearch {ms_full:.1f} ms/trial")
    b, f, e = statistics.median(bare), statistics.median(full), statistics.median(export)
    print(f"\n{n} trials, fake training, SQLite storage + SQLite MLflow + export (plots included)")
    print(f"bare in-memory Optuna loop : {1e3 * b:8.1f} ms/trial")
    print(f"archsearch sweep           : {1e3 * f:8.1f} ms/trial")
    print(f"framework overhead         : {1e3 * (f - b):8.1f} ms/trial (target < 150)")
    print(
        f"  of which the export      : {1e3 * e / n:8.1f} ms/trial ({e:.2f} s once per sweep, plots included)"
    )
    print(f"  per trial without it     : {1e3 * (f - b - e / n):8.1f} ms/trial")
    cpu = statistics.median(full_cpu) - statistics.median(bare_cpu)
    # The work is CPU-bound Python in this process (SQLite runs in it too), so its CPU time is
    # what the overhead costs without the waits a busy shared machine adds to the wall clock.
    print(f"the same in CPU time       : {1e3 * cpu:8.1f} ms/trial (this process; steadier under load)")


if __name__ == "__main__":
    main()
