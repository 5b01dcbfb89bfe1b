"""A stand-in trainer of fixed cost, for benchmarks and command-line tests of the search machinery.

Select it with ``+sweep.fit._target_=archsearch.testing.FixedCostFit +sweep.fit.seconds=1.0``:
every trial then waits ``seconds`` instead of training and reports an accuracy that is a fixed
function of the network's size, so what is measured or tested is storage, tracking, workers and
export, not the trainer. Never part of a real search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from archsearch.train.result import TrainResult
from archsearch.train.settings import TrainerSettings

__all__ = ["FixedCostFit"]


class FixedCostFit:
    """Called like :func:`archsearch.train.fit.fit`; sleeps ``seconds`` over ``epochs`` epochs.

    Args:
        seconds: wall time of one call (split evenly over the epochs).
        epochs: epochs reported through ``on_epoch_end`` (what multi-fidelity rules see).
    """

    def __init__(self, seconds: float = 1.0, epochs: int = 1) -> None:
        self.seconds = float(seconds)
        self.epochs = max(1, int(epochs))

    def __call__(
        self,
        model: Any,
        data: Any,
        settings: TrainerSettings,
        *,
        seed: int = 0,
        on_epoch_end: Callable[[int, dict[str, float]], bool | None] | None = None,
        evaluate_test: bool = False,
    ) -> TrainResult:
        started = time.perf_counter()
        params = sum(p.numel() for p in model.parameters())
        # Bigger nets score higher, with a little scatter, so a front trades accuracy off against size.
        acc = min(0.99, 0.1 * math.log10(max(params, 1)) + 0.003 * (params % 7))
        history: list[dict[str, float]] = []
        epochs_done = 0
        for epoch in range(1, self.epochs + 1):
            time.sleep(self.seconds / self.epochs)
            epochs_done = epoch
            metrics = {
                "epoch": float(epoch),
                "train_loss": 1.0 / epoch,
                "val_acc": acc * epoch / self.epochs,
                "val_acc_best": acc * epoch / self.epochs,
                "lr": 0.0,
                "seconds": time.perf_counter() - started,
                "images_per_s": 0.0,
            }
            history.append(metrics)
            if on_epoch_end is not None and on_epoch_end(epoch, metrics):
                break
        last = history[-1]["val_acc"]
        return TrainResult(
            val_acc_best=last,
            val_acc_last=last,
            test_acc=last if evaluate_test else None,
            history=history,
            images_per_s=0.0,
            epochs_done=epochs_done,
            steps_done=epochs_done,
            steps_total=self.epochs,
            budget_exhausted=False,
            stopped_early=epochs_done < self.epochs,
            seconds=time.perf_counter() - started,
        )
