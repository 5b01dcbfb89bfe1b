"""The trainer: determinism, divergence, time budget, callbacks, schedules, augmentation, test-set policy."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from archsearch.data.datasets import Augment, Dataset, load_dataset
from archsearch.errors import ArchsearchError, ConfigError
from archsearch.net.model import build
from archsearch.net.spec import load_spec
from archsearch.resources import CONF_DIR
from archsearch.train.fit import (
    TrainerSettings,
    TrainingDiverged,
    augment_batch,
    evaluate,
    fit,
    resolve_memory_format,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

FAST = {"epochs": 3, "batch_size": 32, "threads": 1}


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset(
        {"name": "synthetic", "shape": [1, 8, 8], "num_classes": 4, "train_size": 384, "test_size": 96},
        seed=0,
    )


def digits_net(seed: int = 0, num_classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return build(load_spec(CONF_DIR / "model" / "fire_digits.yaml").retarget(num_classes=num_classes))


def trainer(**overrides: Any) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "trainer" / "default.yaml"))
    assert isinstance(cfg, dict)
    cfg.update(FAST)
    cfg.update(overrides)
    return cfg


def test_synthetic_data_is_learnt(synthetic: Dataset) -> None:
    result = fit(digits_net(), synthetic, trainer())
    assert result.val_acc_last > 0.9
    assert result.epochs_done == 3 and result.steps_done == result.steps_total == 3 * (346 // 32)
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]
    assert result.images_per_s > 0 and not result.budget_exhausted and not result.stopped_early


def test_same_seed_and_config_give_the_same_accuracy_on_cpu(synthetic: Dataset) -> None:
    cfg = trainer(epochs=2)
    first = fit(digits_net(seed=3), synthetic, cfg, seed=11)
    second = fit(digits_net(seed=3), synthetic, OmegaConf.create(cfg), seed=11)
    other = fit(digits_net(seed=3), synthetic, cfg, seed=12)
    assert first.val_acc_last == second.val_acc_last
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    assert [h["train_loss"] for h in first.history] != [h["train_loss"] for h in other.history]


def test_huge_learning_rate_raises_training_diverged_with_epoch_and_step(synthetic: Dataset) -> None:
    cfg = trainer(schedule={"name": "constant", "warmup": 0.0})
    cfg["optimizer"] = {**cfg["optimizer"], "lr": 1e10}
    with pytest.raises(TrainingDiverged) as info:
        fit(digits_net(), synthetic, cfg)
    err = info.value
    assert isinstance(err, RuntimeError) and not isinstance(err, ArchsearchError)
    assert err.epoch == 1 and 1 <= err.step <= 9
    assert not math.isfinite(err.loss)
    assert f"epoch 1, step {err.step}" in str(err)


class EmitsNaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


def test_model_emitting_nan_diverges_at_the_first_step(synthetic: Dataset) -> None:
    with pytest.raises(TrainingDiverged) as info:
        fit(EmitsNaN(), synthetic, trainer())
    assert (info.value.epoch, info.value.step) == (1, 1)


def test_time_budget_stops_cleanly_and_reports_how_far_it_got(synthetic: Dataset) -> None:
    result = fit(digits_net(), synthetic, trainer(epochs=10_000, max_seconds=0.5))
    assert result.budget_exhausted
    assert result.steps_done < result.steps_total
    assert result.epochs_done < 10_000 and len(result.history) >= 1
    assert result.history[-1]["steps"] == result.steps_done
    assert 0.0 <= result.val_acc_last <= 1.0


def test_callback_gets_metrics_and_returning_true_stops(synthetic: Dataset) -> None:
    seen: list[tuple[int, dict[str, float]]] = []

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append((epoch, metrics))
        return epoch == 2

    result = fit(digits_net(), synthetic, trainer(epochs=5), on_epoch_end=on_epoch_end)
    assert [e for e, _ in seen] == [1, 2]
    assert {"train_loss", "val_acc", "seconds", "lr", "images_per_s"} <= set(seen[0][1])
    assert seen[1][1]["val_acc"] == result.val_acc_last
    assert result.stopped_early and result.epochs_done == 2


def test_exceptions_from_the_callback_propagate(synthetic: Dataset) -> None:
    class Pruned(Exception):
        pass

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        raise Pruned(epoch)

    with pytest.raises(Pruned):
        fit(digits_net(), synthetic, trainer(), on_epoch_end=prune)


def test_test_set_is_scored_only_when_asked_and_never_steers(synthetic: Dataset) -> None:
    plain = fit(digits_net(), synthetic, trainer(epochs=1))
    assert plain.test_acc is None
    # Poisoning the test images changes nothing about training or validation.
    poisoned = dataclasses.replace(synthetic, test_x=torch.full_like(synthetic.test_x, float("nan")))
    again = fit(digits_net(), poisoned, trainer(epochs=1))
    assert again.history == [
        {**h, "seconds": again.history[i]["seconds"], "images_per_s": again.history[i]["images_per_s"]}
        for i, h in enumerate(plain.history)
    ]
    scored = fit(digits_net(), synthetic, trainer(epochs=1), evaluate_test=True)
    assert scored.test_acc is not None and 0.0 <= scored.test_acc <= 1.0


def test_adamw_with_cosine_warmup_comes_from_its_hydra_target(
    synthetic: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []
    real_step = torch.optim.AdamW.step

    def counting_step(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    cfg = OmegaConf.load(CONF_DIR / "trainer" / "adamw.yaml")
    cfg.merge_with(FAST)
    result = fit(digits_net(), synthetic, cfg)
    assert len(steps) == result.steps_done > 0
    assert result.val_acc_last > 0.9
    # Cosine decays towards zero: the last step runs at under 2% of the peak.
    assert 0 < result.history[-1]["lr"] < 0.02 * cfg.optimizer.lr


def test_schedules_peak_at_the_configured_learning_rate(synthetic: Dataset) -> None:
    constant = fit(digits_net(), synthetic, trainer(schedule={"name": "constant", "warmup": 0.0}))
    assert [h["lr"] for h in constant.history] == [0.1, 0.1, 0.1]
    # Warm-up over the first half of two epochs: the learning rate peaks as epoch 1 ends.
    cosine = fit(digits_net(), synthetic, trainer(epochs=2, schedule={"name": "cosine", "warmup": 0.5}))
    assert cosine.history[0]["lr"] == pytest.approx(0.1)
    onecycle = fit(digits_net(), synthetic, trainer(epochs=2))
    assert onecycle.history[-1]["lr"] < 1e-5


def test_augmentation_applies_only_when_the_trainer_asks(synthetic: Dataset) -> None:
    allowed = dataclasses.replace(synthetic, augment=Augment(crop_padding=1, flip=True, erase_p=0.5))
    plain = fit(digits_net(), synthetic, trainer(epochs=1))
    off = fit(digits_net(), allowed, trainer(epochs=1))
    on = fit(digits_net(), allowed, trainer(epochs=1, augment=True))
    assert off.history[0]["train_loss"] == plain.history[0]["train_loss"]
    assert on.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_bad_trainer_values_are_one_sentence_config_errors(synthetic: Dataset) -> None:
    cases = [
        ({"epochs": 0}, "trainer.epochs must be an integer >= 1"),
        (
            {"schedule": {"name": "step"}},
            "trainer.schedule.name is 'step'; allowed: onecycle, cosine, constant",
        ),
        (
            {"optimizer": {"_target_": "torch.optim.Nope", "_partial_": True}},
            "trainer.optimizer cannot be built",
        ),
        ({"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "betas": 1}}, "SGD"),
        ({"precision": "fp16"}, "needs a CUDA device"),
        ({"max_seconds": -1}, "trainer.max_seconds must be a number of seconds > 0"),
        ({"augment": "yes"}, "trainer.augment must be true or false"),
    ]
    for override, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
            fit(digits_net(), synthetic, trainer(**override))
        assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_device_without_a_gpu_is_a_config_error(synthetic: Dataset) -> None:
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        fit(digits_net(), synthetic, trainer(device="cuda"))


def test_bf16_autocast_trains_on_the_cpu(synthetic: Dataset) -> None:
    result = fit(digits_net(), synthetic, trainer(precision="bf16"))
    assert result.precision == "bf16" and result.val_acc_last > 0.8


def test_auto_memory_format_is_channels_last_for_conv_nets_only(synthetic: Dataset) -> None:
    assert resolve_memory_format("auto", digits_net()) == torch.channels_last
    assert (
        resolve_memory_format("auto", nn.Sequential(nn.Flatten(), nn.Linear(64, 4)))
        == torch.contiguous_format
    )
    assert fit(digits_net(), synthetic, trainer(epochs=1)).memory_format == "channels_last"
    nchw = fit(digits_net(), synthetic, trainer(epochs=1, memory_format="contiguous"))
    assert nchw.memory_format == "contiguous"


def test_threads_setting_is_restored_after_training(synthetic: Dataset) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    fit(
        digits_net(),
        synthetic,
        trainer(epochs=1, threads=1),
        on_epoch_end=lambda e, m: seen.append(torch.get_num_threads()),
    )
    assert seen == [1] and torch.get_num_threads() == before


def test_evaluate_returns_the_fraction_classified_correctly() -> None:
    x = torch.randn(10, 1, 2, 2)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 1, 1])
    always_one = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        always_one[1].weight.zero_()
        always_one[1].bias.copy_(torch.tensor([0.0, 1.0]))
    always_one.train()
    assert evaluate(always_one, x, y, batch_size=3, device="cpu") == 0.6
    assert always_one.training


def test_evaluate_gives_the_same_accuracy_in_either_memory_format(synthetic: Dataset) -> None:
    nchw = digits_net(seed=5).eval()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x, y = synthetic.val_x, synthetic.val_y
    assert evaluate(nchw, x, y, 16, "cpu") == evaluate(nhwc, x, y, 16, "cpu") > 0


def test_crop_shifts_each_image_within_its_padding() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    out = augment_batch(x, Augment(crop_padding=1), torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)
    again = augment_batch(x, Augment(crop_padding=1), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_flip_mirrors_about_half_the_batch_and_erasing_zeroes_a_rectangle() -> None:
    x = torch.randn(200, 2, 6, 7) + 10
    flipped = augment_batch(x, Augment(flip=True), torch.Generator().manual_seed(1))
    mirrored = [bool(torch.equal(flipped[i], x[i].flip(2))) for i in range(200)]
    kept = [bool(torch.equal(flipped[i], x[i])) for i in range(200)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 70 < sum(mirrored) < 130
    erased = augment_batch(x, Augment(erase_p=1.0), torch.Generator().manual_seed(2))
    for i in range(200):
        zero = (erased[i] == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert len(rows) > 0
        # The erased pixels form one full rectangle across every channel.
        assert zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert int(zero.sum()) == len(rows) * len(cols)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.exists(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fire_mnist_reaches_80_percent_on_10k_fashion_mnist_images_in_two_epochs() -> None:
    data = load_dataset(
        OmegaConf.merge(OmegaConf.load(CONF_DIR / "data" / "fashion_mnist.yaml"), {"subset": 10_000}), seed=0
    )
    torch.manual_seed(0)
    model = build(load_spec(CONF_DIR / "model" / "fire_mnist.yaml"))
    cfg = OmegaConf.load(CONF_DIR / "trainer" / "default.yaml")
    cfg.epochs = 2
    # One thread: two would slow down many-fold if the CI machine is busy with anything else.
    cfg.threads = 1
    result = fit(model, data, cfg)
    assert len(data.train_y) == 10_000 and len(data.val_y) == 6_000
    assert result.val_acc_last >= 0.80


def test_settings_defaults_are_those_of_the_default_trainer_config() -> None:
    assert (
        TrainerSettings.from_cfg(OmegaConf.load(CONF_DIR / "trainer" / "default.yaml")) == TrainerSettings()
    )
