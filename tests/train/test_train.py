"""The trainer: determinism, divergence, time budget, callbacks, schedules, augmentation, test-set policy."""

from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from archsearch.data.datasets import Augment, Dataset, DataSettings, load_dataset
from archsearch.errors import ArchsearchError, ConfigError
from archsearch.hardware.runtime import resolve_memory_format
from archsearch.net.model import build
from archsearch.net.spec import load_spec
from archsearch.resources import CONF_DIR
from archsearch.train.augment import augment_batch
from archsearch.train.evaluate import evaluate
from archsearch.train.fit import TrainingDiverged, fit
from archsearch.train.settings import OptimizerSettings, ScheduleSettings, TrainerSettings

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


def trainer_yaml(name: str = "default") -> dict[str, Any]:
    """The ``trainer=NAME`` block as the command line composes it (defaults included)."""
    from hydra import compose, initialize_config_dir

    from archsearch.cli.config import plain

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return plain(compose("config", overrides=[f"trainer={name}"]).trainer)


def raw_trainer(**overrides: Any) -> dict[str, Any]:
    """conf/trainer/default.yaml as a plain mapping, made fast, with ``overrides`` on top."""
    return {**trainer_yaml(), **FAST, **overrides}


def trainer(**overrides: Any) -> TrainerSettings:
    return TrainerSettings.from_mapping(raw_trainer(**overrides))


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
    # The same settings built in Python rather than read from a mapping train the same way.
    built = TrainerSettings(epochs=2, batch_size=32, threads=1)
    assert built == cfg
    second = fit(digits_net(seed=3), synthetic, built, seed=11)
    other = fit(digits_net(seed=3), synthetic, cfg, seed=12)
    assert first.val_acc_last == second.val_acc_last
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    assert [h["train_loss"] for h in first.history] != [h["train_loss"] for h in other.history]


def test_huge_learning_rate_raises_training_diverged_with_epoch_and_step(synthetic: Dataset) -> None:
    cfg = trainer(schedule={"name": "constant", "warmup": 0.0})
    cfg = dataclasses.replace(cfg, optimizer=cfg.optimizer.with_lr(1e10))
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


def test_adamw_with_cosine_warmup_comes_from_its_target(
    synthetic: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []
    real_step = torch.optim.AdamW.step

    def counting_step(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    cfg = TrainerSettings.from_mapping({**trainer_yaml("adamw"), **FAST})
    assert cfg.optimizer.target == "torch.optim.AdamW" and cfg.schedule == ScheduleSettings("cosine", 0.1)
    result = fit(digits_net(), synthetic, cfg)
    assert len(steps) == result.steps_done > 0
    assert result.val_acc_last > 0.9
    # Cosine decays towards zero: the last step runs at under 2% of the peak.
    assert cfg.optimizer.lr is not None
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


SGD = {"_target_": "torch.optim.SGD", "_partial_": True}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"epochs": 0}, "trainer.epochs must be an integer >= 1, got 0."),
        ({"batch_size": 2.5}, "trainer.batch_size must be an integer >= 1, got 2.5."),
        ({"eval_batch_size": True}, "trainer.eval_batch_size must be an integer >= 1, got True."),
        ({"threads": 0}, "trainer.threads must be an integer >= 1 or null, got 0."),
        ({"max_seconds": -1}, "trainer.max_seconds must be a number of seconds > 0 or null, got -1."),
        ({"device": "gpu"}, "trainer.device is 'gpu'; allowed: auto, cpu, cuda, cuda:N, mps."),
        ({"device": "cuda:one"}, "trainer.device is 'cuda:one'; allowed: auto, cpu, cuda, cuda:N, mps."),
        ({"precision": "fp8"}, "trainer.precision is 'fp8'; allowed: auto, fp32, bf16, fp16."),
        (
            {"memory_format": "nhwc"},
            "trainer.memory_format is 'nhwc'; allowed: auto, channels_last, contiguous.",
        ),
        ({"augment": "yes"}, "trainer.augment must be true or false, got 'yes'."),
        ({"label_smoothing": 1}, "trainer.label_smoothing must be a number in [0, 1), got 1."),
        ({"epoch": 3}, "trainer has unknown key(s) epoch; allowed: epochs, batch_size,"),
        (
            {"schedule": {"name": "step"}},
            "trainer.schedule.name is 'step'; allowed: onecycle, cosine, constant.",
        ),
        ({"schedule": {"warmup": "half"}}, "trainer.schedule.warmup must be a number in [0, 1), got 'half'."),
        ({"schedule": {"steps": 3}}, "trainer.schedule has unknown key(s) steps; allowed: name, warmup."),
        ({"schedule": "cosine"}, "trainer.schedule must be a mapping with keys name, warmup, got 'cosine'."),
        ({"optimizer": {**SGD, "lr": "fast"}}, "trainer.optimizer.lr must be a number > 0, got 'fast'."),
        ({"optimizer": {**SGD, "lr": 0}}, "trainer.optimizer.lr must be a number > 0, got 0."),
        (
            {"optimizer": {**SGD, "momentum": "high"}},
            "trainer.optimizer.momentum must be a number, got 'high'.",
        ),
        (
            {"optimizer": {**SGD, "nesterov": "yes"}},
            "trainer.optimizer.nesterov must be true or false, got 'yes'.",
        ),
        (
            {"optimizer": {"_target_": "torch.optim.AdamW", "betas": [0.9]}},
            "trainer.optimizer.betas must be a list of 2 numbers, got [0.9].",
        ),
        (
            {"optimizer": {"_target_": "torch.optim.AdamW", "eps": "tiny"}},
            "trainer.optimizer.eps must be a number, got 'tiny'.",
        ),
        (
            {"optimizer": {**SGD, "lr": 0.1, "betas": [0.9, 0.99]}},
            "trainer.optimizer.betas is not an argument of torch.optim.SGD; accepted: lr, momentum,",
        ),
        (
            {"optimizer": {**SGD, "lr": 0.1, "nesterov": True}},
            "trainer.optimizer is refused by torch.optim.SGD: Nesterov momentum requires a momentum",
        ),
        ({"optimizer": "sgd"}, "trainer.optimizer must be a mapping with a _target_ such as torch.optim.SGD"),
        ({"optimizer": {"lr": 0.1}}, "trainer.optimizer must be a mapping with a _target_ such as"),
        (
            {"dsd": {"enabled": True, "sparsity": -0.3}},
            "trainer.dsd.sparsity must be a number in (0, 1), got -0.3.",
        ),
        ({"dsd": {"enabled": True}, "epochs": 2}, "trainer.epochs=2 split by trainer.dsd.sparse=0.25"),
        (
            {"dsd": {"enabled": True}, "epochs": 8, "optimizer": SGD},
            "trainer.dsd needs trainer.optimizer.lr to scale each phase's learning rate.",
        ),
    ],
)
def test_every_bad_trainer_key_is_one_sentence_naming_it(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainerSettings.from_mapping(raw_trainer(**override))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value) and str(info.value).endswith(".")


@pytest.mark.parametrize(
    "target", ["torch.optim.Nope", "torch.optim.lr_scheduler.StepLR", "archsearch.errors.ConfigError"]
)
def test_an_optimizer_target_that_is_no_torch_optimizer_class_is_refused(target: Any) -> None:
    with pytest.raises(ConfigError) as info:
        TrainerSettings.from_mapping({"optimizer": {"_target_": target, "_partial_": True}})
    assert str(info.value) == (
        "trainer.optimizer._target_ must name a torch.optim.Optimizer subclass such as "
        f"torch.optim.SGD or torch.optim.AdamW, got {target!r}."
    )


@pytest.mark.parametrize("target", ["os.system", "torch.nn.Linear", "collections.OrderedDict", "SGD", 3])
def test_an_optimizer_target_outside_torch_optim_is_not_even_imported(target: Any) -> None:
    with pytest.raises(ConfigError) as info:
        TrainerSettings.from_mapping({"optimizer": {"_target_": target, "_partial_": True}})
    assert str(info.value).startswith(f"trainer.optimizer._target_ {str(target)!r} is not allowed: ")


def test_messages_name_keys_under_the_given_prefix() -> None:
    with pytest.raises(ConfigError, match=r"^sweep\.trainer\.optimizer\.lr must be a number > 0"):
        TrainerSettings.from_mapping({"optimizer": {**SGD, "lr": "fast"}}, key="sweep.trainer")


def test_precision_unavailable_on_the_device_is_a_config_error_at_fit(synthetic: Dataset) -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.precision fp16 needs a CUDA device"):
        fit(digits_net(), synthetic, trainer(precision="fp16", device="cpu"))


def test_settings_round_trip_through_the_yaml_layout() -> None:
    for name in ("default", "adamw"):
        settings = TrainerSettings.from_mapping(trainer_yaml(name))
        assert TrainerSettings.from_mapping(settings.to_mapping()) == settings
    custom = dataclasses.replace(
        TrainerSettings(),
        max_seconds=30.0,
        threads=2,
        device="cuda:1",
        optimizer=OptimizerSettings("torch.optim.AdamW", (("lr", 0.01), ("betas", (0.8, 0.9)))),
    )
    layout = custom.to_mapping()
    assert layout["optimizer"] == {
        "_target_": "torch.optim.AdamW",
        "_partial_": True,
        "betas": [0.8, 0.9],
        "lr": 0.01,
    }
    assert yaml.safe_load(yaml.safe_dump(layout)) == layout
    assert TrainerSettings.from_mapping(layout) == custom
    assert hash(custom) == hash(TrainerSettings.from_mapping(layout))


def test_optimizer_builds_its_target_with_its_arguments() -> None:
    params = [nn.Parameter(torch.zeros(3))]
    sgd = TrainerSettings().optimizer.build(params)
    assert type(sgd) is torch.optim.SGD
    assert {k: sgd.defaults[k] for k in ("lr", "momentum", "nesterov", "weight_decay")} == {
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
    }
    with pytest.raises(ConfigError, match=r"^trainer.optimizer._target_ must name"):
        OptimizerSettings("torch.optim.Nope").build(params)


def test_importing_the_trainer_loads_neither_hydra_nor_omegaconf() -> None:
    code = (
        "import sys, archsearch.train.fit, archsearch.train.dsd, archsearch.train.settings; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


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
    data = load_dataset(dataclasses.replace(DataSettings.from_config("fashion_mnist"), subset=10_000), seed=0)
    torch.manual_seed(0)
    model = build(load_spec(CONF_DIR / "model" / "fire_mnist.yaml"))
    # One thread: two would slow down many-fold if the CI machine is busy with anything else.
    cfg = TrainerSettings.from_mapping({**trainer_yaml(), "epochs": 2, "threads": 1})
    result = fit(model, data, cfg)
    assert len(data.train_y) == 10_000 and len(data.val_y) == 6_000
    assert result.val_acc_last >= 0.80


def test_the_composed_default_trainer_is_the_settings_defaults() -> None:
    # conf/trainer/default.yaml holds no values: Hydra gets them from TrainerSettings itself.
    assert "epochs" not in yaml.safe_load((CONF_DIR / "trainer" / "default.yaml").read_text())
    assert TrainerSettings.from_mapping(trainer_yaml()) == TrainerSettings()


def test_the_other_shipped_trainer_configs_parse() -> None:
    adamw = TrainerSettings.from_mapping(trainer_yaml("adamw"))
    assert adamw == dataclasses.replace(
        TrainerSettings(),
        optimizer=OptimizerSettings(
            target="torch.optim.AdamW", kwargs=(("lr", 1e-2), ("betas", (0.9, 0.999)), ("weight_decay", 0.05))
        ),
        schedule=ScheduleSettings(name="cosine", warmup=0.1),
    )
    # adamw.yaml states only its optimizer and schedule: every other key is TrainerSettings'.
    stated = yaml.safe_load((CONF_DIR / "trainer" / "adamw.yaml").read_text())
    assert set(stated) == {"defaults", "optimizer", "schedule"}
    # long.yaml is a Hydra defaults list on top of default.yaml; its own keys lie over the defaults.
    assert TrainerSettings.from_mapping(trainer_yaml("long")) == dataclasses.replace(
        TrainerSettings(), epochs=30, augment=True
    )


def test_training_diverged_crosses_a_process_boundary_intact() -> None:
    # Raised in a worker process (a process pool, joblib), it is pickled back to the parent.
    import pickle

    from archsearch.train.fit import TrainingDiverged

    again = pickle.loads(pickle.dumps(TrainingDiverged(3, 41, float("nan"))))
    assert isinstance(again, TrainingDiverged)
    assert (again.epoch, again.step) == (3, 41) and str(
        again
    ) == "training diverged: loss is nan at epoch 3, step 41"
