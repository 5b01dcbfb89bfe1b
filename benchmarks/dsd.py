"""Dense-Sparse-Dense against plain training at equal total epochs, on Fashion-MNIST test accuracy.

    .venv/bin/python benchmarks/dsd.py [--epochs 12] [--subset 10000] [--seeds 1] [--threads 1]

Two Fire nets of the kind a fire search puts on its front (drawn from search_spaces/fire.yaml
with fixed metaparameters: a small one and a mid-sized one) are each trained twice from the
same initialisation with conf/trainer/default.yaml: plainly for ``--epochs`` epochs, and with
``trainer.dsd.enabled=true`` (the same epochs split dense / sparse / re-dense as configured
there). Training uses ``--subset`` images of the training split (the validation split is left
out as always) and every net is scored once on the 10,000 official test images. Prints test
accuracy with and without DSD and the difference, per net and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any

import optuna
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import archsearch.cli  # noqa: F401  (registers the typed settings' defaults with Hydra)
from archsearch.data.datasets import load_dataset
from archsearch.net.model import build, count_params
from archsearch.resources import CONF_DIR
from archsearch.search.space import load_space
from archsearch.train.fit import fit
from archsearch.train.settings import TrainerSettings

NETS: dict[str, dict[str, Any]] = {
    "small": {
        "stem_width": 16,
        "stem_kernel": 3,
        "depth": 3,
        "base_e": 32,
        "incr_e": 16,
        "freq": 2,
        "sr": 0.25,
        "pct3x3": 0.5,
        "pct5x5": 0.0,
        "pools": 2,
        "pool_layout": "even",
        "bypass": "simple",
        "dropout": 0.1,
    },
    "mid": {
        "stem_width": 32,
        "stem_kernel": 3,
        "depth": 4,
        "base_e": 48,
        "incr_e": 32,
        "freq": 2,
        "sr": 0.25,
        "pct3x3": 0.5,
        "pct5x5": 0.0,
        "pools": 2,
        "pool_layout": "even",
        "bypass": "simple",
        "dropout": 0.2,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--subset", type=int, default=10000, help="training images (0 = all 54,000)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    overrides = ["data=fashion_mnist", f"trainer.epochs={args.epochs}", f"trainer.threads={args.threads}"]
    if args.subset:
        overrides.append(f"data.subset={args.subset}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    raw = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(raw, dict)
    plain = TrainerSettings.from_mapping({str(k): v for k, v in raw.items()})
    with_dsd = dataclasses.replace(plain, dsd=dataclasses.replace(plain.dsd, enabled=True))
    space = load_space("fire")
    print(
        f"trainer: {args.epochs} epochs, DSD {with_dsd.dsd} (dense / sparse / re-dense share the epochs); "
        f"{args.subset or 'all'} training images"
    )

    started = time.perf_counter()
    gains: list[float] = []
    for seed in range(args.seeds):
        data = load_dataset(OmegaConf.to_container(cfg.data, resolve=True), seed=seed)  # type: ignore[arg-type]
        for name, params in NETS.items():
            spec = space.sample(optuna.trial.FixedTrial(params), data.shape, data.num_classes)
            accs = {}
            for label, trainer in (("plain", plain), ("dsd", with_dsd)):
                torch.manual_seed(seed)
                model = build(spec)
                result = fit(model, data, trainer, seed=seed, evaluate_test=True)
                assert result.test_acc is not None
                accs[label] = result.test_acc
                print(
                    f"  seed {seed} {name:<5} ({count_params(model) / 1e3:.1f}k params) {label:<5} "
                    f"test_acc {result.test_acc:.4f}  val_acc {result.val_acc_last:.4f}  "
                    f"{result.seconds:.0f}s",
                    flush=True,
                )
            gain = accs["dsd"] - accs["plain"]
            gains.append(gain)
            print(
                f"seed {seed} {name}: test accuracy {accs['plain']:.4f} plain, {accs['dsd']:.4f} DSD, "
                f"difference {100 * gain:+.2f} points",
                flush=True,
            )
    print(
        f"\nDSD minus plain over {len(gains)} net/seed pairs: "
        f"mean {100 * statistics.mean(gains):+.2f} points "
        f"(min {100 * min(gains):+.2f}, max {100 * max(gains):+.2f}); {time.perf_counter() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
