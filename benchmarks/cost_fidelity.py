"""How well do the analytic costs predict measured latency on this machine?

Samples random networks from a search space (default ``fire`` at 1x28x28), measures each one's
latency here as :func:`archsearch.hardware.latency.measure_latency` does at each batch size, and prints the
Spearman rank correlation of the measured latency with params, MACs, bytes and
``latency_est_ms`` (for the given hardware profile), plus the median absolute percentage error
of ``latency_est_ms``, against eager PyTorch and against ONNX Runtime (``--runtimes``). Targets:
rho >= 0.95 and median error <= 15% at every batch size. ``--hardware auto`` (the default) uses
this host's auto profile for ``--threads``, ``--clock`` and each runtime (the one
``latency.runtime`` selects with ``hardware=auto``), calibrating it first if it is missing.

Networks are timed in interleaved rounds (every network once per round, in a fresh random order)
and each latency is the least of its per-round medians: the network as this machine runs it when
nothing slows it. Each network is prepared once (converted; on ONNX Runtime exported and loaded
in a session: :func:`archsearch.hardware.latency.prepare_latency`) and timed as
:func:`~archsearch.hardware.latency.measure_latency` times it. Batch 1 takes 20 rounds
(``--rounds``), the larger batches 10 (``--large-rounds``): measured twice in a row, 80 networks'
batch-1 latencies rank alike at rho 0.935-0.982 with 5 rounds and 0.998 with 20, so with 5 the
measurement itself, not the estimate, set the batch-1 rho; at batch 64, with 5 rounds, four
measurements within an hour ranked alike at only 0.953-0.974. The least round median is the
stable figure: the same 80 networks timed twice 10 minutes apart ranked alike at rho
0.995-1.000 and agreed in level within 0-9% (both runtimes, both batches), while the median of
the round medians ran 1.05-1.7x the least, varying from network to network. The JSON keeps
every round's median. A virtual machine's speed drifts by up to 1.6x within seconds, even on the
thread's CPU clock (a neighbour on the sibling hyperthread, frequency changes); the calibration
takes its figures the same way (:func:`archsearch.hardware.timing.time_groups`), so both
describe the same machine. The load average is printed too;
``--clock cpu`` (with ``--threads 1``) times the thread's CPU time, which other jobs on a shared
machine do not inflate. Calibrate the profile with the same threads and clock.

    python benchmarks/cost_fidelity.py --hardware auto --threads 1
    python benchmarks/cost_fidelity.py --hardware this_machine --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import spearmanr

from archsearch.hardware.auto import auto_profile
from archsearch.hardware.latency import prepare_latency
from archsearch.hardware.profile import HardwareProfile, load_hardware
from archsearch.net.cost import analyze
from archsearch.net.model import build
from archsearch.net.spec import NetSpec
from archsearch.search.space import InfeasibleArchitecture, load_space

METRICS = ("params", "macs", "bytes", "latency_est_ms")


def sample_specs(space_name: str, count: int, seed: int, input_shape: tuple[int, int, int]) -> list[NetSpec]:
    """``count`` distinct networks drawn with Optuna's RandomSampler (ask-only, in memory)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs: dict[str, NetSpec] = {}
    for _ in range(50 * count):
        if len(specs) == count:
            break
        trial = study.ask()
        try:
            spec = space.sample(trial, input_shape, 10)
        except InfeasibleArchitecture:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        specs.setdefault(spec.hash, spec)
    return list(specs.values())


def measure_all(
    specs: list[NetSpec],
    batch_sizes: list[int],
    threads: int,
    rounds: dict[int, int],
    repeats: dict[int, int],
    seed: int,
    clock: str,
    runtime: str = "torch",
) -> dict[int, list[list[float]]]:
    """Every spec's median latency (ms) in each of ``rounds[batch]`` interleaved rounds, by batch
    size (:func:`archsearch.hardware.latency.prepare_latency`: each network converted, or on
    ONNX Runtime exported and loaded in a session, once)."""
    prepared = [
        prepare_latency(build(s), s.input, threads=threads, clock=clock, runtime=runtime) for s in specs
    ]
    medians: dict[tuple[int, int], list[float]] = {(i, b): [] for i in range(len(specs)) for b in batch_sizes}
    order = list(range(len(specs)))
    rng = random.Random(seed)
    total = max(rounds.values())
    for r in range(total):
        rng.shuffle(order)
        started = time.perf_counter()
        for i in order:
            for b in (b for b in batch_sizes if r < rounds[b]):
                result = prepared[i].measure(b, warmup=2 if r else 3, repeats=repeats[b])
                medians[(i, b)].append(result.median_ms)
        print(f"  round {r + 1}/{total}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return {b: [medians[(i, b)] for i in range(len(specs))] for b in batch_sizes}


def load_profile(name: str, threads: int, clock: str, runtime: str) -> HardwareProfile:
    """A profile by name or path; ``auto`` is this host's cached auto profile for ``runtime``
    (calibrated if missing), as ``latency.runtime=<runtime>`` with ``hardware=auto`` gets it."""
    if name == "auto":
        return auto_profile(threads, "auto", clock, device="cpu", runtime=runtime)
    return load_hardware(name)


def fidelity(specs: list[NetSpec], measured: list[float], hw: HardwareProfile, batch: int) -> dict[str, Any]:
    """Spearman rho of each metric with the measured latency, and the estimate's error."""
    reports = [analyze(s, hw, batch_size=batch) for s in specs]
    values = {m: [r.metrics()[m] for r in reports] for m in METRICS}
    est = np.array(values["latency_est_ms"])
    meas = np.array(measured)
    ape = np.abs(est - meas) / meas
    return {
        "rho": {m: float(spearmanr(meas, v).statistic) for m, v in values.items()},
        "median_ape": float(np.median(ape)),
        "p90_ape": float(np.quantile(ape, 0.9)),
        "median_ratio": float(np.median(est / meas)),
        "measured_ms": {"min": float(meas.min()), "median": float(np.median(meas)), "max": float(meas.max())},
    }


def print_results(
    runtime: str,
    results: dict[int, dict[str, Any]],
    batch_sizes: list[int],
    count: int,
    clock: str,
    rounds: dict[int, int],
) -> None:
    """The rank correlations and the estimate's errors against one runtime's measured latency."""
    print(
        f"\n[{runtime}] Spearman rho with measured latency ({count} networks, {clock} clock, "
        "least of " + ", ".join(f"{rounds[b]} rounds' medians at batch {b}" for b in batch_sizes) + "):"
    )
    print(f"{'metric':>16} " + " ".join(f"{'batch ' + str(b):>10}" for b in batch_sizes))
    for m in METRICS:
        print(f"{m:>16} " + " ".join(f"{results[b]['rho'][m]:>10.3f}" for b in batch_sizes))
    print(f"\n{'latency_est_ms':>16} " + " ".join(f"{'batch ' + str(b):>10}" for b in batch_sizes))
    for key, label in (("median_ape", "median |error|"), ("p90_ape", "p90 |error|")):
        print(f"{label:>16} " + " ".join(f"{100 * results[b][key]:>9.1f}%" for b in batch_sizes))
    print(f"{'est / measured':>16} " + " ".join(f"{results[b]['median_ratio']:>10.2f}" for b in batch_sizes))
    for b in batch_sizes:
        r = results[b]
        ok = r["rho"]["latency_est_ms"] >= 0.95 and r["median_ape"] <= 0.15
        ms = r["measured_ms"]
        print(
            f"batch {b}: measured {ms['min']:.2f} .. {ms['median']:.2f} .. {ms['max']:.2f} ms; "
            f"targets (rho >= 0.95, median error <= 15%) {'met' if ok else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="fire", help="search space name or YAML path")
    parser.add_argument(
        "--hardware",
        default="auto",
        help="hardware profile name or YAML path; auto: this host's auto profile",
    )
    parser.add_argument(
        "--runtimes", default="torch,onnxruntime", help="latency measured on: torch, onnxruntime or both"
    )
    parser.add_argument("--count", type=int, default=40, help="networks to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", default="1,28,28", help="C,H,W")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved measurement rounds, batch < 16")
    parser.add_argument("--large-rounds", type=int, default=10, help="interleaved rounds at batch >= 16")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: thread CPU time (needs --threads 1)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    input_shape = tuple(int(v) for v in args.input.split(","))
    if len(input_shape) != 3:
        parser.error(f"--input must be C,H,W, got {args.input!r}")
    batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    runtimes = args.runtimes.split(",")
    started = time.perf_counter()
    load_before = os.getloadavg()
    specs = sample_specs(args.space, args.count, args.seed, input_shape)
    print(
        f"{len(specs)} networks from space {args.space!r} at {args.input}, hardware {args.hardware!r}, "
        f"{args.threads} thread(s), {args.clock} clock, batch sizes {batch_sizes}",
        file=sys.stderr,
    )
    repeats = {b: 15 if b < 16 else 3 for b in batch_sizes}
    rounds = {b: args.rounds if b < 16 else args.large_rounds for b in batch_sizes}
    # Each runtime's profile is loaded (with --hardware auto: calibrated) just before its networks
    # are timed, so that the two describe the VM in as near the same phase as they can.
    profiles, per_round, measured = {}, {}, {}
    for rt in runtimes:
        profiles[rt] = load_profile(args.hardware, args.threads, args.clock, rt)
        per_round[rt] = measure_all(
            specs, batch_sizes, args.threads, rounds, repeats, args.seed, args.clock, rt
        )
        measured[rt] = {b: [min(m) for m in per_round[rt][b]] for b in batch_sizes}
    hw = profiles[runtimes[0]]
    results = {
        rt: {b: fidelity(specs, measured[rt][b], profiles[rt], b) for b in batch_sizes} for rt in runtimes
    }
    load_after = os.getloadavg()
    for rt in runtimes:
        print_results(rt, results[rt], batch_sizes, len(specs), args.clock, rounds)
    elapsed = time.perf_counter() - started
    print(
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; {elapsed:.0f} s in all "
        f"(this machine has {os.cpu_count()} logical CPUs; profile {hw.name}: {hw.provenance})"
    )
    for rt in runtimes:
        print(f"[{rt}] profile: {profiles[rt].description}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "specs": [s.to_dict() for s in specs],
                    "measured_ms": {rt: {str(b): measured[rt][b] for b in batch_sizes} for rt in runtimes},
                    "round_medians_ms": {
                        rt: {str(b): per_round[rt][b] for b in batch_sizes} for rt in runtimes
                    },
                    "results": {rt: {str(b): results[rt][b] for b in batch_sizes} for rt in runtimes},
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
