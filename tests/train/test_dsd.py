"""Dense-Sparse-Dense: exact per-layer sparsity held through optimizer steps, then released."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from archsearch.data.datasets import load_dataset
from archsearch.errors import ConfigError
from archsearch.net.model import build
from archsearch.net.spec import load_spec
from archsearch.resources import CONF_DIR
from archsearch.train.dsd import hold_masks, magnitude_masks, prunable_weights
from archsearch.train.fit import fit
from archsearch.train.settings import DsdSettings, ScheduleSettings, TrainerSettings


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny nets on a busy 2-core machine run many times slower on two threads than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset({"name": "synthetic", "train_size": 256, "test_size": 64}, seed=0)


def fresh_model(data: Any) -> nn.Module:
    spec = load_spec(CONF_DIR / "model" / "fire_digits.yaml").retarget(
        input=data.shape, num_classes=data.num_classes
    )
    torch.manual_seed(0)
    return build(spec)


def zeros(model: nn.Module) -> dict[str, int]:
    return {name: int((w == 0).sum()) for name, w in prunable_weights(model).items()}


def requested(model: nn.Module, sparsity: float) -> dict[str, int]:
    return {name: round(sparsity * w.numel()) for name, w in prunable_weights(model).items()}


def test_masks_zero_exactly_the_smallest_share_of_every_conv_and_linear_layer(data: Any) -> None:
    model = fresh_model(data)
    masks = magnitude_masks(model, 0.3)
    weights = prunable_weights(model)
    assert set(masks) == set(weights) and len(masks) >= 5
    for name, mask in masks.items():
        w = weights[name].detach().abs()
        assert int((mask == 0).sum()) == round(0.3 * w.numel())
        assert w[mask == 0].max() <= w[mask == 1].min()


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
    ],
    ids=["sgd_momentum_weight_decay", "adamw"],
)
def test_held_mask_survives_optimizer_steps_with_stale_momentum(data: Any, make_optimizer: Any) -> None:
    model = fresh_model(data)
    optimizer = make_optimizer(model.parameters())
    x, y = data.train_x[:16], data.train_y[:16]

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # dense: momentum / Adam moments now hold every weight's history
    masks = magnitude_masks(model, 0.5)
    with hold_masks(model, masks):
        for _ in range(3):
            step()
            assert zeros(model) == requested(model, 0.5)
            for name, w in prunable_weights(model).items():
                assert torch.equal(w == 0, masks[name] == 0)
    step()  # released: the stale momentum moves the pruned weights again
    assert sum(zeros(model).values()) < sum(requested(model, 0.5).values()) // 10


def test_fit_trains_dense_then_sparse_then_dense_at_a_lower_rate(data: Any) -> None:
    model = fresh_model(data)
    seen: list[tuple[int, float, float, dict[str, int]]] = []
    settings = TrainerSettings(
        epochs=8,
        batch_size=32,
        threads=1,
        schedule=ScheduleSettings("constant", warmup=0.0),
        dsd=DsdSettings(enabled=True, sparsity=0.4, sparse=0.25, redense=0.25, redense_lr=0.1),
    )
    result = fit(
        model,
        data,
        settings,
        seed=0,
        on_epoch_end=lambda e, m: seen.append((e, m["phase"], m["lr"], zeros(model))),
        evaluate_test=True,
    )
    assert [e for e, *_ in seen] == list(range(1, 9))
    assert [p for _, p, *_ in seen] == [0, 0, 0, 0, 1, 1, 2, 2]
    assert [lr for _, _, lr, _ in seen] == pytest.approx([0.1] * 6 + [0.01] * 2)
    target = requested(model, 0.4)
    for _, phase, _, z in seen:
        if phase == 1:
            assert z == target
        else:  # nothing is forced to zero in the dense phases
            assert all(z[name] < target[name] // 10 for name in target)
    assert (
        result.epochs_done == 8 and result.steps_done == result.steps_total == 8 * result.history[0]["steps"]
    )
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert result.test_acc is not None and 0.0 <= result.test_acc <= 1.0


@pytest.mark.parametrize(
    ("dsd", "epochs", "message"),
    [
        ({"enabled": True, "sparsity": 1.0}, 8, r"trainer.dsd.sparsity must be a number in \(0, 1\)"),
        ({"enabled": True, "sparse": 0.5, "redense": 0.5}, 8, "keep it below 1"),
        ({"enabled": True}, 2, r"trainer.epochs=2 split .* leaves a phase without epochs \(2/0/0\)"),
        ({"enabled": True, "rate": 0.1}, 8, "trainer.dsd has unknown key"),
        ({"enabled": "on"}, 8, "trainer.dsd.enabled must be true or false"),
    ],
)
def test_bad_dsd_settings_are_one_sentence(dsd: dict[str, Any], epochs: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DsdSettings.from_mapping(dsd).phase_epochs(epochs)
    # The whole trainer block is refused the same way, before anything trains.
    with pytest.raises(ConfigError, match=message):
        TrainerSettings.from_mapping({"epochs": epochs, "dsd": dsd})


def test_dsd_block_of_the_default_config_is_the_default_and_absent_means_off() -> None:
    from hydra import compose, initialize_config_dir

    from archsearch.cli.config import plain

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        raw = plain(compose("config").trainer)
    assert DsdSettings.from_mapping(raw["dsd"]) == DsdSettings()
    assert DsdSettings.from_mapping(None) == DsdSettings() and not DsdSettings().enabled
