"""Train one declared network on one dataset and report it (``python -m archsearch`` without a sweep).

From a notebook::

    from archsearch.data.datasets import load_dataset
    from archsearch.net.spec import load_spec
    from archsearch.train.settings import TrainerSettings
    from archsearch.train.single import train_single

    data = load_dataset({"name": "digits"})
    summary = train_single(load_spec("net.yaml"), data, TrainerSettings(epochs=5))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.table import Table

from archsearch.data.base import describe
from archsearch.hardware.profile import HardwareProfile
from archsearch.net.cost import analyze
from archsearch.net.model import build, count_params
from archsearch.net.spec import NetSpec
from archsearch.train.fit import fit
from archsearch.train.settings import TrainerSettings

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike

__all__ = ["train_single"]


def train_single(
    declared: NetSpec,
    data: DatasetLike,
    trainer: TrainerSettings | None = None,
    *,
    seed: int = 0,
    hardware: HardwareProfile | None = None,
    cost_batch_size: int = 1,
    bytes_per_element: int = 4,
    console: Console | None = None,
    evaluate_test: bool = True,
) -> dict[str, Any]:
    """Build ``declared`` for ``data``'s shape and classes, train it, print and return a summary.

    The declared network is retargeted to the dataset (input shape and class count), so any
    model under conf/model/ runs on any dataset. A single run is not a search, so the test
    split is scored too unless ``evaluate_test=False``.

    Args:
        declared: the network (:func:`archsearch.net.spec.load_spec`).
        data: the dataset (:func:`archsearch.data.datasets.load_dataset`).
        trainer: the trainer settings (defaults when None).
        seed: seeds weight initialisation, shuffling and augmentation.
        hardware: the profile for ``latency_est_ms`` (left out when None).
        cost_batch_size: batch size at which bytes and the latency estimate are counted.
        bytes_per_element: element width for bytes (4 = fp32).
        console: where the progress and summary go (a quiet rich Console by default).
        evaluate_test: score the trained network on the test split.

    Returns:
        A flat dict: model, spec_hash, data, val_acc, val_acc_best, test_acc, params, macs,
        latency_est_ms, images_per_s, seconds, epochs_done, steps_done, budget_exhausted,
        device, precision, memory_format.

    Raises:
        SpecError, ConfigError, TrainingDiverged: a bad network or setting, or a diverged loss.
    """
    console = console or Console(quiet=True)
    trainer = trainer or TrainerSettings()
    spec = declared.retarget(input=data.shape, num_classes=data.num_classes)
    cost = analyze(spec, hardware=hardware, batch_size=cost_batch_size, bytes_per_element=bytes_per_element)

    torch.manual_seed(seed)
    model = build(spec)
    console.print(f"[bold]{spec.name}[/] ({spec.hash}) on {describe(data)}", soft_wrap=True)

    def progress(epoch: int, metrics: dict[str, float]) -> None:
        console.print(
            f"  epoch {epoch}: train_loss {metrics['train_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
            f"{metrics['images_per_s']:.0f} images/s  {metrics['seconds']:.1f} s",
            soft_wrap=True,
        )

    result = fit(model, data, trainer, seed=seed, on_epoch_end=progress, evaluate_test=evaluate_test)
    summary: dict[str, Any] = {
        "model": spec.name,
        "spec_hash": spec.hash,
        "data": data.name,
        "val_acc": result.val_acc_last,
        "val_acc_best": result.val_acc_best,
        "test_acc": result.test_acc,
        "params": count_params(model),
        "macs": cost.macs,
        "latency_est_ms": cost.latency_est_ms,
        "images_per_s": result.images_per_s,
        "seconds": result.seconds,
        "epochs_done": result.epochs_done,
        "steps_done": result.steps_done,
        "budget_exhausted": result.budget_exhausted,
        "device": result.device,
        "precision": result.precision,
        "memory_format": result.memory_format,
    }
    console.print(_table(summary, hardware.name if hardware else ""))
    if result.budget_exhausted:
        console.print(
            f"[yellow]time budget trainer.max_seconds ran out after {result.steps_done} of "
            f"{result.steps_total} steps ({result.epochs_done} full epochs).[/]"
        )
    return summary


def _table(summary: dict[str, Any], hardware: str) -> Table:
    table = Table(title=f"{summary['model']} on {summary['data']}", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_row("val accuracy", f"{summary['val_acc']:.4f} (best {summary['val_acc_best']:.4f})")
    if summary["test_acc"] is not None:
        table.add_row("test accuracy", f"{summary['test_acc']:.4f}")
    table.add_row("params", f"{summary['params']:,}")
    table.add_row("MACs", f"{summary['macs']:,}")
    if hardware:
        table.add_row(f"latency_est_ms ({hardware})", f"{summary['latency_est_ms']:.4f}")
    table.add_row("train images/s", f"{summary['images_per_s']:.0f}")
    table.add_row("seconds", f"{summary['seconds']:.1f}")
    table.add_row("run", f"{summary['device']}, {summary['precision']}, {summary['memory_format']}")
    return table
