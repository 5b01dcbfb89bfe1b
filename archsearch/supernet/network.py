"""The supernet: one tensor (bank) per shared parameter, and every candidate as slices of them.

A candidate runs as the ordinary module :func:`~archsearch.net.model.build` makes of its spec,
with its parameters replaced by views of the banks (``torch.func.functional_call``), so training
a candidate trains the banks and a candidate computes exactly what its stand-alone network
computes with the same weights. Its batch-norm statistics are its own module's buffers: banks
hold learnable parameters only, and statistics are recalibrated per candidate before scoring
(:mod:`archsearch.supernet.scoring`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from archsearch.net.model import GraphNet, build
from archsearch.net.spec import NetSpec
from archsearch.supernet.plan import BankPlan
from archsearch.supernet.slots import Layout, Slot, candidate_slots

__all__ = ["Candidate", "Supernet", "SupernetMismatch"]

#: Candidates kept built (module and slots) between steps; building one takes a few milliseconds.
CACHE_SIZE = 64


class SupernetMismatch(Exception):
    """A candidate takes more of a bank than the supernet holds (a space wider than its plan)."""


def _key(bank: str) -> str:
    # Module attribute names cannot hold dots; bank names are node paths, which do.
    return bank.replace(".", "__")


class Candidate:
    """One candidate of a supernet: its spec, its built module and where its parameters come from."""

    def __init__(self, spec: NetSpec, module: GraphNet, slots: Mapping[str, Slot]) -> None:
        self.spec = spec
        self.module = module
        self.slots = dict(slots)


class Supernet(nn.Module):
    """The banks of a :class:`~archsearch.supernet.plan.BankPlan`, initialised as torch would.

    Conv and linear banks are Kaiming-uniform over the bank's fan-in (``nn.Conv2d``'s default
    rule), biases uniform in +-1/sqrt(fan-in), batch-norm weights 1 and biases 0.

    Args:
        plan: the banks to hold.
        seed: seeds the initialisation.
    """

    def __init__(self, plan: BankPlan, seed: int = 0) -> None:
        super().__init__()
        self.plan = plan
        generator = torch.Generator().manual_seed(seed)
        self.banks = nn.ParameterDict()
        for name, bank in plan.banks.items():
            self.banks[_key(name)] = nn.Parameter(_initial(bank.shape, bank.role, generator))
        self._index: dict[tuple[str, int, Layout], torch.Tensor | None] = {}
        self._built: OrderedDict[str, Candidate] = OrderedDict()

    def bank(self, name: str) -> nn.Parameter:
        return self.banks[_key(name)]

    def candidate(self, spec: NetSpec) -> Candidate:
        """The candidate of ``spec`` (built once and cached by spec hash).

        Raises:
            SupernetMismatch: a parameter of the spec does not fit its bank.
        """
        found = self._built.get(spec.hash)
        if found is not None:
            self._built.move_to_end(spec.hash)
            return found
        slots = self.slots(spec)
        # Its own initial weights are never used; forking keeps their draws off the global generator,
        # so dropout masks do not depend on which candidates happen to be cached (resumes repeat).
        with torch.random.fork_rng(devices=[]):
            module = build(spec).to(next(iter(self.banks.values())).device)
        made = Candidate(spec, module, slots)
        self._built[spec.hash] = made
        if len(self._built) > CACHE_SIZE:
            self._built.popitem(last=False)
        return made

    def slots(self, spec: NetSpec) -> dict[str, Slot]:
        """Where each parameter of ``spec``'s network comes from, checked against the banks.

        Raises:
            SupernetMismatch: a parameter of the spec does not fit its bank.
        """
        slots = candidate_slots(spec)
        problem = self.plan.fits(slots)
        if problem is not None:
            raise SupernetMismatch(f"network {spec.hash} does not fit the supernet: {problem}")
        return slots

    def _take(self, slot: Slot) -> torch.Tensor:
        """The candidate's tensor of ``slot``: a view (plain leading slices) or a gather of the bank."""
        bank = self.plan.banks[slot.bank]
        t: torch.Tensor = self.bank(slot.bank)
        for axis, layout in enumerate(slot.axes):
            index = self._axis_index(slot.bank, axis, layout, t.device)
            n = sum(c for _, c in layout)
            t = t.narrow(axis, 0, n) if index is None else t.index_select(axis, index)
        if slot.kernel:
            start = (bank.kernel - slot.kernel) // 2
            t = t.narrow(-2, start, slot.kernel).narrow(-1, start, slot.kernel)
        return t

    def _axis_index(self, bank: str, axis: int, layout: Layout, device: torch.device) -> torch.Tensor | None:
        key = (bank, axis, layout)
        if key not in self._index:
            offsets = self.plan.banks[bank].offsets(axis)
            starts = [offsets[segment] for segment, _ in layout]
            if starts == [0] * len(starts) and len(layout) == 1:
                self._index[key] = None
            else:
                self._index[key] = torch.cat(
                    [torch.arange(s, s + n) for s, (_, n) in zip(starts, layout, strict=True)]
                ).to(device)
        return self._index[key]

    def parameters_of(self, slots: Mapping[str, Slot]) -> dict[str, torch.Tensor]:
        """A candidate's parameters, by their names in its module, as slices of the banks."""
        return {name: self._take(slot) for name, slot in slots.items()}

    def run(self, candidate: Candidate, x: torch.Tensor) -> torch.Tensor:
        """The candidate's forward pass on ``x`` with the banks' weights (gradients reach the banks)."""
        return torch.func.functional_call(
            candidate.module, self.parameters_of(candidate.slots), (x,), strict=False
        )

    def load_into(self, spec: NetSpec, module: nn.Module) -> None:
        """Copy the banks' slices for ``spec`` into ``module`` (a ``build(spec)``); its buffers are kept."""
        # Only the slots are needed: building the cached candidate's module here as well would
        # build every scored network twice.
        with torch.no_grad():
            params = self.parameters_of(self.slots(spec))
            own = dict(module.named_parameters())
            for name, value in params.items():
                own[name].copy_(value.to(own[name].device))


def _initial(shape: tuple[int, ...], role: str, generator: torch.Generator) -> torch.Tensor:
    if role == "bn_weight":
        return torch.ones(shape)
    if role == "bn_bias":
        return torch.zeros(shape)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    if role == "bias":
        bound = 1 / math.sqrt(max(1, fan_in))
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    weight = torch.empty(shape)
    # kaiming_uniform_ with a = sqrt(5), as nn.Conv2d and nn.Linear initialise their weights.
    bound = math.sqrt(6 / ((1 + 5) * max(1, fan_in)))
    return weight.uniform_(-bound, bound, generator=generator)
