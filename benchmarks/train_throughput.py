"""Training throughput: archsearch's trainer against a minimal hand-written PyTorch loop.

Both train the same Fire net (conf/model/fire_mnist.yaml) from the same initial weights on
the same images for the same number of steps, with the same optimiser (SGD, Nesterov), batch
size and loss. The baseline is what one writes by default: NCHW tensors, torch's default
thread count, a shuffling DataLoader over a TensorDataset. The archsearch runs use
``fit`` with the default trainer settings (augmentation off, so both do the same work), once
with ``memory_format: contiguous`` to separate the loop's gain from channels-last's.

On Fashion-MNIST nearly all of the gain is the loop's (a DataLoader indexes and collates
128 single images per batch); channels-last adds little for this net on these images
(see ``archsearch.hardware.runtime.resolve_memory_format`` for what it adds elsewhere).

Runs alternate (baseline, ours, ours-NCHW, baseline, ...) so drift in machine load hits all
alike; the medians and their ratio are printed. Training-step time only: the per-epoch
validation pass of ``fit`` is excluded by its own ``images_per_s``.

    python benchmarks/train_throughput.py            # Fashion-MNIST if installed, else synthetic
    python benchmarks/train_throughput.py --rounds 5 --steps 100 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from archsearch.data.datasets import Dataset, load_dataset
from archsearch.net.model import build
from archsearch.net.spec import load_spec
from archsearch.resources import CONF_DIR
from archsearch.train.fit import fit
from archsearch.train.settings import TrainerSettings

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def dataset(images: int) -> Dataset:
    augment_off = {"crop_padding": 0, "flip": False, "erase_p": 0.0}
    if FASHION_DIR.exists():
        cfg = {"name": "fashion_mnist", "dir": str(FASHION_DIR), "subset": images}
    else:
        cfg = {"name": "synthetic", "shape": [1, 28, 28], "num_classes": 10, "train_size": images + 200}
    # A small validation split: fit scores it every epoch and the benchmark is about training.
    return load_dataset({**cfg, "val_fraction": 0.02, "augment": augment_off}, seed=0)


def baseline(model: nn.Module, data: Dataset, steps: int, batch_size: int, trainer: TrainerSettings) -> float:
    """The minimal loop: DataLoader over a TensorDataset, NCHW, default threads. Returns images/s."""
    opt = dict(trainer.optimizer.kwargs)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=opt["lr"],
        momentum=opt["momentum"],
        nesterov=opt["nesterov"],
        weight_decay=opt["weight_decay"],
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=trainer.label_smoothing)
    loader = DataLoader(
        TensorDataset(torch.as_tensor(data.train_x), torch.as_tensor(data.train_y)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
    )
    model.train()
    done = 0
    start = time.perf_counter()
    while done < steps:
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def ours(model: nn.Module, data: Dataset, trainer: TrainerSettings, memory_format: str) -> float:
    result = fit(model, data, dataclasses.replace(trainer, memory_format=memory_format))
    return result.images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--steps", type=int, default=78, help="training steps per run (default 78)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both sides (default: torch's own); 1 keeps a shared, busy machine "
        "from distorting the figures, since waiting threads spin",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    data = dataset(args.steps * args.batch_size)
    trainer = TrainerSettings(epochs=1, batch_size=args.batch_size)
    spec = load_spec(CONF_DIR / "model" / "fire_mnist.yaml").retarget(
        input=data.shape, num_classes=data.num_classes
    )

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return build(spec)

    print(
        f"{spec.name} on {data.summary()}; {args.steps} steps of {args.batch_size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    # One untimed pass each, so kernel selection and allocator warm-up hit neither measurement.
    baseline(fresh(), data, 5, args.batch_size, trainer)
    ours(fresh(), dataset(5 * args.batch_size), trainer, "auto")

    runs: dict[str, list[float]] = {"baseline": [], "archsearch": [], "archsearch_nchw": []}
    for r in range(args.rounds):
        runs["baseline"].append(baseline(fresh(), data, args.steps, args.batch_size, trainer))
        runs["archsearch"].append(ours(fresh(), data, trainer, "auto"))
        runs["archsearch_nchw"].append(ours(fresh(), data, trainer, "contiguous"))
        print(
            f"round {r + 1}: baseline {runs['baseline'][-1]:7.0f}  archsearch {runs['archsearch'][-1]:7.0f}  "
            f"archsearch NCHW {runs['archsearch_nchw'][-1]:7.0f} images/s",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(
        f"median images/s: baseline {med['baseline']:.0f}, archsearch {med['archsearch']:.0f}, "
        f"archsearch NCHW {med['archsearch_nchw']:.0f}"
    )
    print(
        f"ratio archsearch / baseline: {med['archsearch'] / med['baseline']:.2f}x "
        f"(loop alone, NCHW: {med['archsearch_nchw'] / med['baseline']:.2f}x)"
    )


if __name__ == "__main__":
    main()
