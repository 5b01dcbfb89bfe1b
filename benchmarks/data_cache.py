"""Image-folder loading: decoding throughput, the memory-mapped cache, and training from it.

On a generated folder of small PNG and JPEG images (Pillow, in a temporary directory) it prints:

1. decoding throughput (images/s) with 1 process and with one per core (fresh caches);
2. the second, cached load (scan, fingerprint, memory-map) against the first (decode + write);
3. trainer images/s reading batches from the memory-mapped cache against the same images as
   in-memory tensors (same net, seed and settings).

Runs of each pair alternate so drift in machine load hits both alike; every figure is the mean
and standard deviation over ``--reps`` repetitions, and the ratios come from the same run.

    python benchmarks/data_cache.py                     # 10,000 images, 3 repetitions
    python benchmarks/data_cache.py --images 2000 --reps 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from archsearch.data.base import Dataset
from archsearch.data.image_folder import dataset_from_folder
from archsearch.net.model import build
from archsearch.net.spec import load_spec
from archsearch.resources import CONF_DIR
from archsearch.train.fit import fit
from archsearch.train.settings import TrainerSettings


def generate(root: Path, images: int, classes: int = 10) -> None:
    """``images`` files over ``classes`` folders: 24-40 px, alternately PNG and JPEG, class-tinted noise."""
    rng = np.random.default_rng(0)
    for i in range(images):
        c = i % classes
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(24, 41, size=2)
        pixels = (rng.random((h, w, 3)) * 128 + c * 12).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.{'png' if i % 2 else 'jpg'}")


def timed_load(root: Path, size: list[int], cache: Path, workers: int | None = None) -> float:
    """Seconds one ``dataset_from_folder`` call takes."""
    start = time.perf_counter()
    dataset_from_folder(root, size=size, workers=workers, cache_dir=cache)
    return time.perf_counter() - start


def mean_ratio(a: list[float], b: list[float]) -> float:
    return statistics.mean(a) / statistics.mean(b)


def stats(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):10.1f} ± {spread:.1f}"


def trainer_rate(data: Dataset, settings: TrainerSettings) -> float:
    spec = load_spec(CONF_DIR / "model" / "fire_mnist.yaml").retarget(
        input=data.shape, num_classes=data.num_classes
    )
    torch.manual_seed(0)
    return fit(build(spec), data, settings, seed=0).images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32, help="images are resized and cropped to size x size")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=2048, help="training images per trainer run")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    size = [args.size, args.size]
    with tempfile.TemporaryDirectory() as tmp:
        root, caches = Path(tmp) / "images", Path(tmp) / "caches"
        print(f"generating {args.images} PNG/JPEG images in {root} ...", flush=True)
        generate(root, args.images)

        rates: dict[int, list[float]] = {1: [], cores: []}
        for rep in range(args.reps):
            for workers in rates:
                seconds = timed_load(root, size, caches / f"w{workers}-r{rep}", workers)
                rates[workers].append(args.images / seconds)
        speedup = mean_ratio(rates[cores], rates[1])
        print(f"decode, 1 process      {stats(rates[1])} images/s")
        print(f"decode, {cores} processes    {stats(rates[cores])} images/s   x{speedup:.2f}")

        first, cached = [], []
        for rep in range(args.reps):
            first.append(1000 * timed_load(root, size, caches / f"load-r{rep}"))
            cached.append(1000 * timed_load(root, size, caches / f"load-r{rep}"))
        print(f"first load (decode)    {stats(first)} ms")
        print(f"cached load (mmap)     {stats(cached)} ms   x{mean_ratio(first, cached):.1f} faster")

        mapped = dataset_from_folder(
            root, size=size, cache_dir=caches / "load-r0", subset=args.train_images, val_fraction=0.02
        )
        in_memory = dataclasses.replace(
            mapped, train_x=mapped.train_x[:], val_x=mapped.val_x[:], test_x=mapped.test_x[:]
        )
        settings = TrainerSettings(epochs=1, threads=1)
        train: dict[str, list[float]] = {"mmap": [], "memory": []}
        for _ in range(args.reps):
            train["memory"].append(trainer_rate(in_memory, settings))
            train["mmap"].append(trainer_rate(mapped, settings))
        ratio = mean_ratio(train["mmap"], train["memory"])
        print(f"train, in-memory       {stats(train['memory'])} images/s")
        print(f"train, memory-mapped   {stats(train['mmap'])} images/s   x{ratio:.2f}")


if __name__ == "__main__":
    main()
