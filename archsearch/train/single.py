"""Train the one network a config declares (``model=``) on one dataset (``data=``) and report it.

This is what ``python -m archsearch`` does when no sweep is given; from a notebook::

    from hydra import compose, initialize_config_dir
    from archsearch.resources import CONF_DIR
    from archsearch.train.single import train_single

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["model=fire_mnist", "data=fashion_mnist", "data.subset=10000"])
    summary = train_single(cfg)
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from archsearch.data.datasets import load_dataset
from archsearch.net.cost import HardwareProfile, analyze
from archsearch.net.model import build, count_params
from archsearch.net.spec import NetSpec
from archsearch.train.fit import fit

__all__ = ["train_single"]


def train_single(
    cfg: DictConfig, *, console: Console | None = None, evaluate_test: bool = True
) -> dict[str, Any]:
    """Build ``cfg.model`` for ``cfg.data``'s shape and classes, train it with ``cfg.trainer``, print it.

    The declared network is retargeted to the dataset (input shape and class count), so any
    model under conf/model/ runs on any dataset. A single run is not a search, so the test
    split is scored too unless ``evaluate_test=False``.

    Args:
        cfg: the composed root config (keys model, data, trainer, hardware, seed, cost).
        console: where the progress and summary go (a fresh rich Console by default).
        evaluate_test: score the trained network on the test split.

    Returns:
        A flat dict: model, spec_hash, data, val_acc, val_acc_best, test_acc, params, macs,
        latency_est_ms, images_per_s, seconds, epochs_done, steps_done, budget_exhausted,
        device, precision, memory_format.

    Raises:
        SpecError, ConfigError, DataError: a bad model, key or dataset (one sentence each).
        TrainingDiverged: the loss became NaN or infinite.
    """
    console = console or Console()
    seed = int(cfg.get("seed", 0))
    data = load_dataset(cfg.data, seed=seed)
    declared = NetSpec.from_dict(_plain(cfg.model), source=f"model {cfg.model.get('name', '')}")
    spec = declared.retarget(input=data.shape, num_classes=data.num_classes)
    hardware = HardwareProfile.from_dict(_plain(cfg.hardware)) if cfg.get("hardware") else None
    cost_cfg = cfg.get("cost") or {}
    cost = analyze(
        spec,
        hardware=hardware,
        batch_size=int(cost_cfg.get("batch_size", 1)),
        bytes_per_element=int(cost_cfg.get("bytes_per_element", 4)),
    )

    torch.manual_seed(seed)
    model = build(spec)
    console.print(f"[bold]{spec.name}[/] ({spec.hash}) on {data.summary()}", soft_wrap=True)

    def progress(epoch: int, metrics: dict[str, float]) -> None:
        console.print(
            f"  epoch {epoch}: train_loss {metrics['train_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
            f"{metrics['images_per_s']:.0f} images/s  {metrics['seconds']:.1f} s",
            soft_wrap=True,
        )

    result = fit(model, data, cfg.trainer, seed=seed, on_epoch_end=progress, evaluate_test=evaluate_test)
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


def _plain(node: Any) -> dict[str, Any]:
    value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


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
