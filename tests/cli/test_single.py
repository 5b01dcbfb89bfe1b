"""`python -m archsearch` without a sweep: a composed config in, one trained network's summary out."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from archsearch.cli.train import train as train_single
from archsearch.errors import DataError
from archsearch.net.cost import analyze
from archsearch.net.model import build, count_params
from archsearch.net.spec import NetSpec
from archsearch.resources import CONF_DIR

SMALL = ["data=synthetic", "trainer.epochs=1", "trainer.batch_size=32", "trainer.threads=1"]


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run(cfg: DictConfig) -> tuple[dict[str, object], str]:
    out = io.StringIO()
    summary = train_single(cfg, console=Console(file=out, width=120))
    return summary, out.getvalue()


def test_default_model_trains_on_synthetic_data_and_reports_its_costs() -> None:
    cfg = composed(*SMALL)
    summary, printed = run(cfg)
    spec = NetSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True)).retarget(  # type: ignore[arg-type]
        input=(1, 8, 8), num_classes=4
    )
    assert summary["model"] == "fire_digits" and summary["data"] == "synthetic"
    assert summary["params"] == count_params(build(spec))
    assert summary["macs"] == analyze(spec).macs
    assert summary["epochs_done"] == 1 and summary["budget_exhausted"] is False
    for key in ("val_acc", "test_acc"):
        value = summary[key]
        assert isinstance(value, float) and 0.0 <= value <= 1.0
    for label in ("val accuracy", "test accuracy", "params", "MACs", "train images/s", "seconds", "epoch 1:"):
        assert label in printed
    assert f"{summary['params']:,}" in printed


def test_any_declared_network_is_retargeted_to_the_dataset() -> None:
    cfg = composed(
        "model=fire_mnist",
        *SMALL,
        "data.shape=[3,16,16]",
        "data.num_classes=3",
        "data.train_size=96",
        "data.test_size=24",
    )
    summary, _ = run(cfg)
    declared = NetSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
    retargeted = declared.retarget(input=(3, 16, 16), num_classes=3)
    assert summary["params"] == count_params(build(retargeted)) != count_params(build(declared))
    assert summary["spec_hash"] == retargeted.hash


def test_same_config_gives_the_same_accuracy() -> None:
    first, _ = run(composed(*SMALL, "seed=4"))
    second, _ = run(composed(*SMALL, "seed=4"))
    assert first["val_acc"] == second["val_acc"] and first["test_acc"] == second["test_acc"]


def test_time_budget_is_reported(tmp_path: Path) -> None:
    summary, printed = run(composed(*SMALL, "trainer.epochs=100000", "trainer.max_seconds=0.3"))
    assert summary["budget_exhausted"] is True
    assert "trainer.max_seconds ran out after" in " ".join(printed.split())


def test_missing_dataset_is_a_data_error_before_any_training(tmp_path: Path) -> None:
    cfg = composed("data=fashion_mnist", f"data.dir={tmp_path}")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        train_single(cfg, console=Console(file=io.StringIO()))


def test_seed_fixes_the_initial_weights() -> None:
    torch.manual_seed(123)
    a, _ = run(composed(*SMALL, "seed=1"))
    torch.manual_seed(456)
    b, _ = run(composed(*SMALL, "seed=1"))
    assert a["val_acc"] == b["val_acc"]


def test_long_trainer_is_the_default_one_with_augmentation_and_more_epochs() -> None:
    long, default = composed("trainer=long").trainer, composed().trainer
    assert long.epochs == 30 and long.augment is True and default.augment is False
    assert long.optimizer == default.optimizer and long.schedule == default.schedule
