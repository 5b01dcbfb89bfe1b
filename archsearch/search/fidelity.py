"""Multi-objective successive halving: stop candidates early once they are clearly dominated.

Optuna's pruners rank one intermediate value, and ``trial.report`` refuses multi-objective
studies, so the rule lives here, in the spirit of multi-objective ASHA (Schmucker et al. 2021):
training is cut into rungs (epoch counts, e.g. 1, 3, 9). When a trial finishes a rung's epoch,
its objective vector at that point (validation accuracy so far, costs as analysed) is written
to the study storage as the trial user attr ``rung_<epoch>``, then compared with every trial of
the study that reached the same rung, whichever worker ran it and whatever state it is in now.
It continues only if it is among the best ``n // eta`` of the ``n`` entries, ranked by
non-dominated sorting and, inside a front, by crowding distance (larger first; then the
earlier trial). Otherwise it is pruned: its partial results stay in its user attrs and MLflow
run, and ``optuna.TrialPruned`` ends it. Each decision is recorded as ``rung_<epoch>_decision``
(the trials it saw, whether the trial continued, how many were kept, which worker decided).

The early case: while fewer than ``eta`` trials have reached a rung, ``n // eta`` is zero, and a
stopping rule cannot wait for more trials the way ASHA's promotion queue does. Like Optuna's
single-objective SuccessiveHalvingPruner, which lets the best-so-far continue, a trial then
continues if it is non-dominated among the entries so far (the multi-objective best-so-far).

What the sampler learns from a pruned trial: Optuna's samplers learn from COMPLETE trials, and a
PRUNED trial of a multi-objective study has no values. TPE orders pruned trials by their
intermediate values, which ``trial.report`` cannot write there, so it ranks them all as equals;
while fewer than its "good" share of trials have completed, it fills that share with the
earliest pruned trials, whatever they measured. :class:`RungInformedSampler` shows the sampler
each pruned trial as measured at its last rung instead: complete, with that rung's objective
values (the exact costs, and validation accuracy after that epoch, which understates the
accuracy full training would have reached).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import socket
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch.checks import check_choice, check_flag, check_int, known_fields, plain_fields
from archsearch.errors import ConfigError
from archsearch.pareto import crowding_distances, pareto_ranks
from archsearch.storage import optuna_compat
from archsearch.supernet.settings import SupernetSettings

if TYPE_CHECKING:
    from archsearch.train.settings import TrainerSettings

#: How a candidate's accuracy is measured (``sweep.fidelity.kind``).
FIDELITY_KINDS = ("epochs", "supernet")

__all__ = [
    "FIDELITY_KINDS",
    "FidelitySettings",
    "RungInformedSampler",
    "SuccessiveHalving",
    "default_rungs",
    "observed_at_last_rung",
    "promote",
    "rung_key",
]


def rung_key(epoch: int) -> str:
    """The trial user attr holding a trial's objective values at the rung ``epoch``."""
    return f"rung_{epoch}"


_RUNG_KEY = re.compile(r"rung_(\d+)")


def default_rungs(epochs: int, eta: int, min_epochs: int = 1) -> tuple[int, ...]:
    """Epochs r, r*eta, r*eta**2, ... below ``epochs`` (the last epoch is full fidelity, not a rung).

    ``r`` = ``min_epochs`` is ASHA's minimum resource: the first point at which a partly trained
    candidate's accuracy says something about its final one.
    """
    rungs = []
    r = min_epochs
    while r < epochs:
        rungs.append(r)
        r *= eta
    return tuple(rungs)


@dataclass(frozen=True)
class FidelitySettings:
    """Multi-objective successive halving (the ``sweep.fidelity`` block); checked on construction.

    Attributes:
        enabled: stop trials outside the best 1/eta at each rung.
        eta: a trial continues past a rung if it is in the best 1/eta there.
        min_epochs: the first rung; on digits epoch-1 accuracy barely predicts the final
            (Spearman 0.2-0.3), epoch 3 does (0.6-0.9).
        rungs: epochs at which trials are compared, increasing, each below ``trainer.epochs``;
            None = ``min_epochs * eta**k`` below ``trainer.epochs``.
        learn_from_pruned: the sampler sees a pruned trial as observed at its last rung
            (:class:`RungInformedSampler`); false leaves the sampler as Optuna has it.
        kind: how a candidate's accuracy is measured: ``epochs`` trains it from scratch for
            ``trainer.epochs`` (halving may stop it at a rung); ``supernet`` trains one
            weight-sharing network once per study and scores each candidate on its slice
            (:mod:`archsearch.search.supernet_fidelity`, README "Weight sharing").
        supernet: the supernet's own settings (used when ``kind`` is ``supernet``).
    """

    enabled: bool = False
    eta: int = 3
    min_epochs: int = 3
    rungs: tuple[int, ...] | None = None
    learn_from_pruned: bool = True
    kind: str = "epochs"
    supernet: SupernetSettings = field(default_factory=SupernetSettings)

    def __post_init__(self) -> None:
        for key in ("enabled", "learn_from_pruned"):
            check_flag(f"sweep.fidelity.{key}", getattr(self, key))
        check_choice("sweep.fidelity.kind", self.kind, FIDELITY_KINDS)
        if self.kind == "supernet" and self.enabled:
            raise ConfigError(
                "sweep.fidelity.enabled (successive halving) stops trainings early, and "
                "sweep.fidelity.kind=supernet trains none per trial; set sweep.fidelity.enabled=false."
            )
        if not isinstance(self.supernet, SupernetSettings):
            raise ConfigError("sweep.fidelity.supernet must be a mapping of supernet settings.")
        for key, minimum in (("eta", 2), ("min_epochs", 1)):
            check_int(f"sweep.fidelity.{key}", getattr(self, key), minimum)
        rungs = self.rungs
        if rungs is not None:
            if (
                not isinstance(rungs, Sequence)
                or isinstance(rungs, str)
                or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rungs)
                or list(rungs) != sorted(set(rungs))
            ):
                raise ConfigError(
                    f"sweep.fidelity.rungs must be null or increasing epochs >= 1, got {rungs!r}."
                )
            object.__setattr__(self, "rungs", tuple(rungs))

    @classmethod
    def from_mapping(cls, raw: Any) -> FidelitySettings:
        """Read ``sweep.fidelity`` (a plain mapping, or None for the defaults)."""
        values = known_fields(raw, "sweep.fidelity", cls)
        if "supernet" in values:
            values["supernet"] = SupernetSettings.from_mapping(values["supernet"])
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The block in the config's layout (plain values), the supernet block nested."""
        return {**plain_fields(self, drop=("supernet",)), "supernet": plain_fields(self.supernet)}

    def rungs_in_warmup(self, trainer: TrainerSettings) -> list[int]:
        """Rungs at or before the end of the learning-rate warm-up (none when halving is off).

        A rung there compares networks whose learning rate is still rising: in a 24-network
        Fashion-MNIST check, epoch-1 accuracy (inside a 6-epoch one-cycle warm-up) ranked 6-epoch
        accuracy at Kendall tau 0.49 (0.08 in the larger half) and repeated across two seeds at
        0.17, where epoch 2 reached about 0.7.
        """
        if not self.enabled or self.kind != "epochs" or trainer.schedule.name == "constant":
            return []
        end = trainer.schedule.warmup * trainer.epochs
        return [r for r in self.rungs_for(trainer.epochs) if r <= end]

    def rungs_for(self, epochs: int) -> tuple[int, ...]:
        """The rungs of a trainer running ``epochs`` epochs; given rungs must all lie below it."""
        if self.rungs is None:
            return default_rungs(epochs, self.eta, self.min_epochs)
        if any(r >= epochs for r in self.rungs):
            raise ConfigError(
                f"sweep.fidelity.rungs must be null or increasing epochs in [1, {epochs}) "
                f"(trainer.epochs is {epochs}), got {list(self.rungs)!r}."
            )
        return self.rungs


# --------------------------------------------------------------------------- the promotion rule


def promote(entries: Mapping[int, Sequence[float]], directions: Sequence[str], eta: int) -> set[int]:
    """The trials that continue past a rung.

    Args:
        entries: trial number -> objective values at the rung, for every trial that reached it.
        directions: ``"minimize"`` / ``"maximize"`` per objective.
        eta: reduction factor; the best ``len(entries) // eta`` continue.

    Returns:
        The continuing trial numbers: the best ``n // eta`` by (Pareto rank, larger crowding
        distance, lower trial number); with fewer than ``eta`` entries, every non-dominated one.
    """
    numbers = sorted(entries)
    points = [list(entries[n]) for n in numbers]
    ranks = pareto_ranks(points, directions)
    keep = len(numbers) // eta
    if keep == 0:
        return {n for n, r in zip(numbers, ranks, strict=True) if r == 0}
    crowding = [0.0] * len(numbers)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, d in zip(members, crowding_distances([points[i] for i in members]), strict=True):
            crowding[i] = d
    order = sorted(range(len(numbers)), key=lambda i: (ranks[i], -crowding[i], numbers[i]))
    return {numbers[i] for i in order[:keep]}


# --------------------------------------------------------------------------- the search hook


class SuccessiveHalving:
    """Applies :func:`promote` at the end of every rung epoch of a trial, through the study storage.

    Args:
        settings: the validated ``sweep.fidelity`` block.
        objectives: (metric, direction) per study objective, in study order.
    """

    def __init__(self, settings: FidelitySettings, objectives: Sequence[tuple[str, str]]) -> None:
        self.settings = settings
        self.metrics = [m for m, _ in objectives]
        self.directions = [d for _, d in objectives]

    @classmethod
    def from_settings(
        cls, settings: FidelitySettings, epochs: int, objectives: Sequence[tuple[str, str]]
    ) -> SuccessiveHalving | None:
        """The hook for a trainer running ``epochs`` epochs, or None when halving is off or has no rung."""
        rungs = settings.rungs_for(epochs)
        if not settings.enabled or not rungs or settings.kind != "epochs":
            return None
        return cls(dataclasses.replace(settings, rungs=rungs), objectives)

    def rung_values(self, known: Mapping[str, float], val_acc: float) -> list[float]:
        """Objective values at a rung: validation accuracy so far, everything else as already known."""
        return [float(val_acc) if m == "val_acc" else float(known[m]) for m in self.metrics]

    def entries(self, study: optuna.Study, epoch: int) -> dict[int, list[float]]:
        """Every trial of the study, from any worker and in any state, that reached rung ``epoch``."""
        key = rung_key(epoch)
        return {
            t.number: [float(v) for v in t.user_attrs[key]]
            for t in study.get_trials(deepcopy=False)
            if key in t.user_attrs
        }

    def after_epoch(self, trial: optuna.Trial, epoch: int, val_acc: float) -> RungDecision | None:
        """Enter the trial at rung ``epoch`` and decide whether it continues (None off a rung).

        The trial's rung entry is written before the others are read, so two workers at the same
        rung always see each other; the decision itself is :meth:`decide`'s. The caller records
        the decision (:meth:`RungDecision.user_attrs`), tags the trial's run and prunes.
        """
        if epoch not in (self.settings.rungs or ()):
            return None
        values = self.rung_values(trial.user_attrs.get("costs") or {}, val_acc)
        trial.set_user_attr(rung_key(epoch), values)
        entries = self.entries(trial.study, epoch)
        entries[trial.number] = values
        return self.decide(trial.number, epoch, entries)

    def decide(self, number: int, epoch: int, entries: Mapping[int, Sequence[float]]) -> RungDecision:
        """Whether trial ``number`` continues past rung ``epoch`` given every entry at that rung."""
        promoted = promote(entries, self.directions, self.settings.eta)
        keep = len(entries) // self.settings.eta
        if number in promoted:
            reason = ""
        elif keep:
            reason = f"not among the best {keep} of {len(entries)} trials at this rung"
        else:
            reason = f"dominated by one of the {len(entries) - 1} trials at this rung"
        reason = reason and f"pruned after epoch {epoch}: {reason}"
        return RungDecision(epoch, tuple(sorted(entries)), len(promoted), reason)


@dataclasses.dataclass(frozen=True)
class RungDecision:
    """The halving rule's verdict on one trial at one rung."""

    epoch: int
    seen: tuple[int, ...]  # the trials entered at the rung when it was decided
    kept: int  # how many of them continue
    reason: str  # why the trial stops; "" when it continues

    @property
    def continues(self) -> bool:
        return not self.reason

    def user_attrs(self) -> dict[str, Any]:
        """The decision as stored on the trial (``rung_<epoch>_decision``), with the deciding worker."""
        return {
            f"{rung_key(self.epoch)}_decision": {
                "seen": list(self.seen),
                "continues": self.continues,
                "kept": self.kept,
                "worker": f"{socket.gethostname()}:{os.getpid()}",
            }
        }


# --------------------------------------------------------------------------- what the sampler sees


def observed_at_last_rung(trial: FrozenTrial) -> FrozenTrial | None:
    """A pruned trial as a sampler should see it: complete, valued as at its last rung.

    Returns:
        A copy of ``trial`` in state COMPLETE whose values are its ``rung_<epoch>`` entry for the
        highest epoch it reached (everything else as stored), or None when ``trial`` is not a
        pruned trial with a rung entry.
    """
    if trial.state != TrialState.PRUNED:
        return None
    reached = [int(m.group(1)) for k in trial.user_attrs if (m := _RUNG_KEY.fullmatch(k))]
    if not reached:
        return None
    observed = copy.copy(trial)
    observed.state = TrialState.COMPLETE
    observed.values = [float(v) for v in trial.user_attrs[rung_key(max(reached))]]
    return observed


class _RungView:
    """The study as :class:`RungInformedSampler` shows it to the sampler it wraps.

    Trial listings present every pruned trial that has a rung entry as
    :func:`observed_at_last_rung` makes it (so a listing of COMPLETE trials includes it); all
    else is the study itself.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=True)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    # Optuna's samplers list trials through this private name (with use_cache=True), so the view
    # answers it too; tests/test_optuna_compat.py pins that they still do.
    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        fetch = None if states is None else (*(s for s in TrialState if s in states), TrialState.PRUNED)
        shown = []
        listed = optuna_compat.study_trials(self._study, deepcopy=deepcopy, states=fetch, use_cache=use_cache)
        for trial in listed:
            trial = observed_at_last_rung(trial) or trial
            if states is None or trial.state in states:
                shown.append(trial)
        return shown


class RungInformedSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler so that it learns from trials successive halving pruned.

    Every call reaches the wrapped sampler with a view of the study in which a pruned trial
    that reached a rung counts as completed with its values at its last rung (the module
    docstring says why). A trial cut short before its first rung stays pruned. The study, its
    storage and the export are unchanged: only the sampler's picture of them differs.
    """

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler = sampler

    def _view(self, study: optuna.Study) -> optuna.Study:
        return cast(optuna.Study, _RungView(study))

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self._view(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(self._view(study), trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.sampler.after_trial(self._view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
