"""A front member as something to use: the best by a named objective, and its network, loaded.

:func:`best_trial` picks the member a user asks for by one objective (ties: the smaller network).
:func:`load_member` rebuilds a member's network from its stored spec, loads its trained weights
and wraps it with the training split's input normalisation
(:class:`~archsearch.results.mlflow_model.NormalisedNet`), so it takes images as they are read,
as the finalized MLflow Model does. ``SearchResult.best_member`` and ``SearchResult.load_member``
call these with what the search knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError
from archsearch.results.export import net_path
from archsearch.results.relocate import weights_file

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from torch import nn

__all__ = ["best_trial", "load_member", "member_records"]


def member_records(
    front: Sequence[FrozenTrial], names: Sequence[str], export_dir: str | Path
) -> list[dict[str, Any]]:
    """One plain record per member: trial number, values by objective name, the architecture
    params sampled, costs, spec and its hash, the exported net file, the weights file (absolute;
    None when not kept) and the MLflow run id."""
    records = []
    for t in front:
        weights = weights_file(t.user_attrs.get("weights"), export_dir)
        records.append(
            {
                "trial": t.number,
                "values": dict(zip(names, t.values or [], strict=False)),
                "params": dict(t.params),
                "costs": dict(t.user_attrs.get("costs") or {}),
                "spec": t.user_attrs.get("spec"),
                "spec_hash": t.user_attrs.get("spec_hash"),
                "net_file": str(net_path(export_dir, t)),
                "weights": None if weights is None else str(weights.resolve()),
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            }
        )
    return records


def best_trial(
    trials: Sequence[FrozenTrial], objective: str, names: Sequence[str], directions: Sequence[str]
) -> FrozenTrial:
    """The trial best on ``objective`` (one of ``names``, in the study's order), fewest params on a tie.

    Raises:
        ConfigError: ``objective`` is not one of the study's objectives, or there is no trial.
    """
    if objective not in names:
        raise ConfigError(
            f"objective must be one of the study's objectives {list(names)}, got {objective!r}."
        )
    if not trials:
        raise ConfigError("the study has no front member to choose from.")
    index = list(names).index(objective)
    sign = -1.0 if directions[index] == "maximize" else 1.0

    def key(t: FrozenTrial) -> tuple[float, float]:
        values = t.values or []
        return (sign * float(values[index]), float((t.user_attrs.get("costs") or {}).get("params", 0.0)))

    return min(trials, key=key)


def load_member(
    trial: FrozenTrial,
    export_dir: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """``trial``'s network with its trained weights, in eval mode, on the CPU.

    The weights are those ``trial`` names: a search trial's are the search's short training; a
    member of a finalized front (``export_study(...).front`` or ``FinalizeResult.front`` after
    finalize) names its finalized weights.

    Args:
        export_dir: the export directory its weights are stored relative to (``export.dir``).
        mean, std: the training split's per-channel statistics (``Dataset.mean``/``std``); given,
            the network is wrapped to normalise raw images itself; None returns the bare network,
            which expects normalised inputs as the trainer fed them.

    Raises:
        ConfigError: the trial has no stored network or no weights file (one sentence naming it).
    """
    import torch

    from archsearch.net.model import build
    from archsearch.net.spec import NetSpec
    from archsearch.results.mlflow_model import NormalisedNet

    spec = trial.user_attrs.get("spec")
    if not isinstance(spec, dict):
        raise ConfigError(f"trial {trial.number} stored no network: it was infeasible or failed.")
    path = weights_file(trial.user_attrs.get("weights"), export_dir)
    if path is None or not path.is_file():
        where = "none was kept (tracking.log_weights)" if path is None else f"{path} does not exist"
        raise ConfigError(
            f"trial {trial.number} has no weights file ({where}); "
            "python -m archsearch.export restores front members' weights from MLflow."
        )
    net = build(NetSpec.from_dict(spec, source=f"trial {trial.number}"))
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model: nn.Module = net if mean is None or std is None else NormalisedNet(net, mean, std)
    return model.eval()
