"""What a training run returns (shared by the plain loop and Dense-Sparse-Dense)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    """What a training run achieved and how fast.

    Attributes:
        val_acc_best: best validation accuracy over the evaluated epochs.
        val_acc_last: validation accuracy of the final weights.
        test_acc: test accuracy of the final weights, or None unless ``evaluate_test=True``.
        history: one dict per evaluated epoch: epoch, steps, train_loss, val_acc, lr, seconds
            (since the start of ``fit``); a budget stop mid-epoch adds a last, partial entry.
        images_per_s: training images per second of training-step time (evaluation excluded).
        epochs_done: fully completed epochs.
        steps_done: optimizer steps taken (out of ``steps_total`` planned).
        steps_total: optimizer steps the schedule was planned for.
        budget_exhausted: training stopped because ``max_seconds`` ran out.
        stopped_early: ``on_epoch_end`` returned True.
        seconds: wall time of the whole call, evaluation included.
        device, precision, memory_format: what was actually used.
    """

    val_acc_best: float
    val_acc_last: float
    test_acc: float | None
    history: list[dict[str, float]]
    images_per_s: float
    epochs_done: int
    steps_done: int
    steps_total: int
    budget_exhausted: bool
    stopped_early: bool
    seconds: float
    device: str = "cpu"
    precision: str = "fp32"
    memory_format: str = "contiguous"
