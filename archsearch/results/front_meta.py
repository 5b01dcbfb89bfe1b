"""What pareto.json says beside the front: the units of its columns and how its hypervolume is measured.

:func:`column_units` gives each known column of pareto.csv/json its unit (``pareto.json``'s
``units`` block); :func:`hypervolume_box` is the normalisation box of ``hypervolume.csv``, of
the hypervolume plot and of ``pareto.json``'s ``hypervolume`` block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from archsearch.pareto import REFERENCE

__all__ = ["HypervolumeBox", "column_units", "hypervolume_box"]

#: Columns whose unit does not depend on the study's settings.
_FIXED_UNITS = {
    "val_acc": "fraction of the validation split classified correctly (0-1)",
    "test_acc": "fraction of the test split classified correctly (0-1)",
    "search_val_acc": "the search's val_acc, before finalize (0-1)",
    "val_acc_best": "best val_acc of any epoch (0-1)",
    "train_seconds": "seconds of training (wall clock)",
    "final_epochs": "epochs finalize trained (count)",
    "params": "learnable parameters (count)",
    "macs": "multiply-accumulates of convolutions and linear layers per image (count)",
    "flops": "floating-point operations per image, 2 x macs (count)",
    "activations": "output elements of every node per image (count)",
    "model_bytes": "bytes of the deployed weights (batch norm folded) plus graph overhead",
    "onnx_bytes": "bytes of the ONNX file",
    "onnx_max_abs_diff": "largest absolute logit difference, ONNX Runtime against PyTorch",
    "int8_bytes": "bytes of the int8 ONNX file",
    "int8_val_acc": "int8 model's val_acc (0-1)",
    "int8_test_acc": "int8 model's test_acc (0-1)",
}


def column_units(
    columns: Sequence[str], cost: Mapping[str, Any] | None, hardware: str | None = None
) -> dict[str, str]:
    """The unit of every column in ``columns`` that has one.

    Args:
        cost: the study's cost settings (``batch_size``, ``bytes_per_element``; the study's
            ``definition``), which ``bytes``, ``peak_activation_bytes`` and ``latency_est_ms``
            depend on; None: the defaults (1 image, 4 bytes).
        hardware: the profile ``latency_est_ms`` is estimated on.
    """
    batch = int((cost or {}).get("batch_size", 1))
    width = int((cost or {}).get("bytes_per_element", 4))
    images = f"{batch} image{'' if batch == 1 else 's'}"
    units = {
        **_FIXED_UNITS,
        "bytes": f"bytes moved by one inference batch of {images} ({width} bytes per element)",
        "peak_activation_bytes": f"bytes of the node outputs alive at once, per batch of {images}",
        "latency_est_ms": f"milliseconds per batch of {images}, estimated on hardware profile "
        f"{hardware or 'of the search'}",
        "latency_ms": "milliseconds per batch of latency.batch_size, measured (median)",
    }
    return {c: units[c] for c in columns if c in units}


@dataclass(frozen=True)
class HypervolumeBox:
    """Where a study's hypervolume is measured: per objective, its scale and the values mapped to 0 and 1.

    An accuracy-like objective (maximised, every value in [0, 1]) keeps its natural scale, 0
    to 1, whatever the study reached; every other objective whose values are all positive is
    taken as log10, and each such axis is min-max normalised over the study's completed,
    feasible trials. The reference point is :data:`~archsearch.pareto.REFERENCE` on every
    normalised axis, and the hypervolume is divided by ``REFERENCE ** k``, so 1 is the box.
    """

    names: tuple[str, ...]
    directions: tuple[str, ...]
    log: tuple[bool, ...]  # the axis is log10 of the objective
    natural: tuple[bool, ...]  # the axis is the objective's own [0, 1]
    lower: tuple[float, ...]  # normalised to 0 (log10 values on a log axis)
    upper: tuple[float, ...]  # normalised to 1
    trials: int

    def point(self, values: Sequence[float]) -> list[float]:
        """A trial's objective values on the box's axes (log10 where the axis is)."""
        return [math.log10(v) if log else v for v, log in zip(values, self.log, strict=True)]

    def describe(self) -> str:
        """One sentence: each axis's scale and range, the reference point and the division."""
        axes = []
        for name, log, natural in zip(self.names, self.log, self.natural, strict=True):
            if natural:
                axes.append(f"{name} on 0-1")
            else:
                axes.append(f"{'log10 ' if log else ''}{name} min-max over the {self.trials} feasible trials")
        k = len(self.names)
        reference = f"reference {REFERENCE:g} per axis, divided by {REFERENCE:g}^{k} (1 = the box)"
        return f"{', '.join(axes)}; {reference}"

    def to_dict(self) -> dict[str, Any]:
        """pareto.json's description: one entry per axis, and the reference point."""
        axes = [
            {
                "metric": name,
                "direction": direction,
                "scale": "log10" if log else "linear",
                "normalised": "natural 0-1" if natural else "min-max over the study",
                "lower": lo,
                "upper": hi,
            }
            for name, direction, log, natural, lo, hi in zip(
                self.names, self.directions, self.log, self.natural, self.lower, self.upper, strict=True
            )
        ]
        return {"axes": axes, "reference": REFERENCE, "divided_by": REFERENCE ** len(self.names)}


def hypervolume_box(
    trials: Sequence[FrozenTrial], names: Sequence[str], directions: Sequence[str], accuracy: str
) -> HypervolumeBox | None:
    """The box of ``trials`` (completed, feasible, with values); None when there are none.

    Args:
        accuracy: the accuracy-like objective (never taken as log10; the plots' y axis).
    """
    if not trials:
        return None
    log = tuple(n != accuracy and all(t.values[i] > 0 for t in trials) for i, n in enumerate(names))
    points = [[math.log10(v) if c else v for v, c in zip(t.values, log, strict=True)] for t in trials]
    cols = list(zip(*points, strict=True))
    lower = [min(c) for c in cols]
    upper = [max(c) for c in cols]
    natural = []
    for i, d in enumerate(directions):
        # Accuracy-like objectives are normalised on their natural [0, 1] scale.
        fits = d == "maximize" and not log[i] and lower[i] >= 0.0 and upper[i] <= 1.0
        if fits:
            lower[i], upper[i] = 0.0, 1.0
        natural.append(fits)
    return HypervolumeBox(
        tuple(names), tuple(directions), log, tuple(natural), tuple(lower), tuple(upper), len(trials)
    )
