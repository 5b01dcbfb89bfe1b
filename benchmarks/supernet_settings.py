"""How the supernet's own settings move its scores, on digits (not the data the rank benchmark uses).

    .venv/bin/python benchmarks/supernet_settings.py --random-per-step 4 --epochs 15 [--distill]
        [--seed 0] [--params-max 120000]

Trains a supernet of the fire space on scikit-learn's digits (20% validation, batch 32, one
thread) and prints the validation accuracy of the largest and smallest pool members and of ten
members drawn by size, with their mean: the settings' defaults were chosen on these runs, so
that ``benchmarks/supernet.py`` scores candidates the defaults were not tuned on.
"""

from __future__ import annotations

import argparse
import random
import sys
import time


def main(argv: list[str] | None = None) -> int:
    import torch

    from archsearch.data.datasets import load_dataset
    from archsearch.net.cost import analyze
    from archsearch.search.space import load_space
    from archsearch.search.supernet_space import corner_specs, draw_pool
    from archsearch.supernet.plan import plan_banks
    from archsearch.supernet.scoring import Scorer
    from archsearch.supernet.settings import SupernetSettings
    from archsearch.supernet.training import train_supernet
    from archsearch.train.settings import TrainerSettings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-per-step", type=int, default=4)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--distill", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--params-max", type=float, default=120_000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset({"name": "digits", "val_fraction": 0.2}, args.seed)
    space = load_space("fire")
    corners = corner_specs(space, data.shape, data.num_classes)

    def feasible(spec: object) -> float | None:
        report = analyze(spec)  # type: ignore[arg-type]
        return float(report.macs) if report.params <= args.params_max else None

    pool = draw_pool(space, data.shape, data.num_classes, feasible, size=2000, extra=corners, seed=args.seed)
    settings = SupernetSettings(
        epochs=args.epochs, random_per_step=args.random_per_step, distill=args.distill
    )
    cpu = time.process_time()
    run = train_supernet(
        plan_banks(corners), pool, data, TrainerSettings(threads=1, batch_size=32), settings, seed=args.seed
    )
    cpu = time.process_time() - cpu
    scorer = Scorer(run.supernet, data, batch_size=32, bn_batches=20, eval_images=None)
    rng = random.Random(5)
    drawn = [round(scorer(pool.by_size(rng)), 3) for _ in range(10)]
    print(
        f"random_per_step {args.random_per_step}, epochs {args.epochs}, distill {args.distill}: "
        f"largest {scorer(pool.largest):.3f}, smallest {scorer(pool.smallest):.3f}, "
        f"ten by size {drawn} mean {sum(drawn) / len(drawn):.3f}; training {cpu:.0f} cpu s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
