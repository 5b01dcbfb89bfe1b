"""The supernet's banks: one tensor per shared parameter, large enough for every candidate given.

:func:`plan_banks` takes the networks a supernet must hold (for a search space, the feasible
networks at the corners of its box: :func:`archsearch.search.supernet_space.corner_specs`) and
sizes each bank axis for the largest slice any of them takes. The plan is plain data, stored in
the supernet's checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from archsearch.net.spec import NetSpec
from archsearch.supernet.slots import Slot, candidate_slots

__all__ = ["BankPlan", "BankShape", "plan_banks"]


@dataclass(frozen=True)
class BankShape:
    """One bank: its role, each channel axis's segments in order with their largest size, its kernel."""

    role: str
    axes: tuple[tuple[tuple[str, int], ...], ...]
    kernel: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        channels = tuple(sum(n for _, n in axis) for axis in self.axes)
        return channels + ((self.kernel, self.kernel) if self.kernel else ())

    def offsets(self, axis: int) -> dict[str, int]:
        """Where each segment of channel axis ``axis`` starts in the bank."""
        out, at = {}, 0
        for segment, n in self.axes[axis]:
            out[segment] = at
            at += n
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "axes": [[list(s) for s in axis] for axis in self.axes],
            "kernel": self.kernel,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BankShape:
        axes = tuple(tuple((str(s), int(n)) for s, n in axis) for axis in raw["axes"])
        return cls(str(raw["role"]), axes, int(raw["kernel"]))


@dataclass
class BankPlan:
    """Every bank of a supernet, by name; made by :func:`plan_banks`, stored in its checkpoint."""

    banks: dict[str, BankShape] = field(default_factory=dict)

    def fits(self, slots: Mapping[str, Slot]) -> str | None:
        """None when every slot fits its bank; else one phrase saying which does not and why."""
        for name, slot in slots.items():
            bank = self.banks.get(slot.bank)
            if bank is None:
                return f"parameter {name} needs bank {slot.bank!r}, which no corner of the space had"
            for i, axis in enumerate(slot.axes):
                sizes = dict(bank.axes[i])
                for segment, n in axis:
                    if sizes.get(segment, 0) < n:
                        return (
                            f"parameter {name} takes {n} channels of {segment!r} on axis {i}, "
                            f"bank {slot.bank!r} holds {sizes.get(segment, 0)}"
                        )
            if slot.kernel > bank.kernel:
                return f"parameter {name} has kernel {slot.kernel}, bank {slot.bank!r} holds {bank.kernel}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {name: bank.to_dict() for name, bank in self.banks.items()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BankPlan:
        return cls({str(k): BankShape.from_dict(v) for k, v in raw.items()})


def plan_banks(specs: Sequence[NetSpec]) -> BankPlan:
    """Banks large enough for every one of ``specs``: per axis the largest of each segment.

    Segments keep the order they are first seen in, so a plan of the same specs is the same plan.
    """
    axes: dict[str, list[dict[str, int]]] = {}
    roles: dict[str, str] = {}
    kernels: dict[str, int] = {}
    for spec in specs:
        for slot in candidate_slots(spec).values():
            roles[slot.bank] = slot.role
            bank_axes = axes.setdefault(slot.bank, [{} for _ in slot.axes])
            for sizes, axis in zip(bank_axes, slot.axes, strict=True):
                for segment, n in axis:
                    sizes[segment] = max(sizes.get(segment, 0), n)
            kernels[slot.bank] = max(kernels.get(slot.bank, 0), slot.kernel)
    return BankPlan(
        {
            name: BankShape(roles[name], tuple(tuple(sizes.items()) for sizes in bank_axes), kernels[name])
            for name, bank_axes in axes.items()
        }
    )
