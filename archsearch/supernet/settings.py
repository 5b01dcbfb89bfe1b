"""The supernet's own settings (the ``sweep.fidelity.supernet`` block); checked on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archsearch.checks import check_flag, check_int, known_fields
from archsearch.errors import ConfigError

__all__ = ["SupernetSettings"]


@dataclass(frozen=True)
class SupernetSettings:
    """How the supernet is trained and how a candidate is scored on it.

    Optimiser, schedule, batch size, label smoothing, augmentation, device and precision are the
    sweep's ``trainer`` block; these are what weight sharing adds.

    Attributes:
        epochs: passes over the training split, each step training the sandwich below.
        random_per_step: candidates drawn per step besides the largest and the smallest.
        distill: the other candidates learn the largest one's soft predictions (in-place
            distillation, BigNAS); false trains them all on the labels.
        pool: random feasible networks drawn to sample the sandwich from (by size).
        bn_batches: training batches a candidate's batch-norm statistics are recalibrated on.
        eval_images: validation images a candidate is scored on (None: the whole split).
    """

    epochs: int = 12
    random_per_step: int = 4
    distill: bool = False
    pool: int = 2000
    bn_batches: int = 20
    eval_images: int | None = 5000

    def __post_init__(self) -> None:
        key = "sweep.fidelity.supernet"
        check_int(f"{key}.epochs", self.epochs, 1)
        check_int(f"{key}.random_per_step", self.random_per_step, 0)
        check_flag(f"{key}.distill", self.distill)
        check_int(f"{key}.pool", self.pool, 1)
        check_int(f"{key}.bn_batches", self.bn_batches, 1)
        if self.eval_images is not None:
            check_int(f"{key}.eval_images", self.eval_images, 1, " or null")

    @classmethod
    def from_mapping(cls, raw: Any) -> SupernetSettings:
        """Read ``sweep.fidelity.supernet`` (a plain mapping, or None for the defaults)."""
        if raw is not None and not hasattr(raw, "items"):
            raise ConfigError(f"sweep.fidelity.supernet must be a mapping, got {raw!r}.")
        return cls(**known_fields(raw, "sweep.fidelity.supernet", cls))
