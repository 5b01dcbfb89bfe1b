"""What defines a study, recorded with it, so that a study is never continued as something else.

A study name reused with another search space, other data, other objectives, constraints,
fidelity or training settings used to resume silently: trials of two different searches were
mixed in one front (or every new trial failed on a changed distribution). The first worker of a
study records :func:`study_definition` in the study (user attr ``definition``); every later
start compares its own with it and refuses a difference in one sentence naming what changed,
unless ``study.allow_changes=true`` asks to continue anyway (the difference is then printed).
Worker-local settings (threads, device), the budget (``n_trials``, ``timeout``) and the warm
start do not define a study.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna

from archsearch.checks import plain_fields
from archsearch.errors import ConfigError
from archsearch.search.settings import SearchSettings
from archsearch.search.space_core import SearchSpace

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike

__all__ = ["DEFINITION_ATTR", "check_definition", "study_definition"]

DEFINITION_ATTR = "definition"
#: Readable names of the definition's parts, for the refusal.
PARTS = {
    "space": "search space",
    "data": "data",
    "objectives": "objectives",
    "constraints": "constraints",
    "fidelity": "fidelity (sweep.fidelity)",
    "trainer": "trainer settings",
    "cost": "cost settings",
}


def study_definition(settings: SearchSettings, space: SearchSpace, data: DatasetLike) -> dict[str, Any]:
    """The settings that make two searches the same search, as plain JSON-able values."""
    labels = getattr(data, "train_y", None)
    described: dict[str, Any] = {
        "name": str(getattr(data, "name", "")),
        "shape": [int(x) for x in getattr(data, "shape", ())],
        "classes": int(getattr(data, "num_classes", 0)),
    }
    if labels is not None:
        val = getattr(data, "val_y", None)
        described.update(
            train=len(labels),
            val=0 if val is None else len(val),
            labels=hashlib.sha256(json.dumps([int(v) for v in labels[:100_000]]).encode()).hexdigest()[:12],
        )
    trainer = {k: v for k, v in settings.trainer.to_mapping().items() if k not in ("threads", "device")}
    return json.loads(
        json.dumps(
            {
                "space": space.hash,
                "data": described,
                "objectives": [list(o) for o in settings.objectives],
                "constraints": sorted([c.metric, c.max, c.min] for c in settings.constraints),
                "fidelity": settings.fidelity.to_mapping(),
                "trainer": trainer,
                "cost": plain_fields(settings.cost),
            },
            default=str,
        )
    )


def check_definition(
    study: optuna.Study, definition: Mapping[str, Any], allow: bool, log: Callable[[str], Any]
) -> None:
    """Record the definition on a new study; refuse (or, if ``allow``, report) a different one.

    Raises:
        ConfigError: the study was run with other settings, naming the first that changed.
    """
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        study.set_user_attr(DEFINITION_ATTR, dict(definition))
        return
    changed = [part for part in PARTS if stored.get(part) != definition.get(part)]
    if not changed:
        return
    detail = _first_difference(stored[changed[0]], definition[changed[0]])
    what = ", ".join(PARTS[p] for p in changed)
    sentence = (
        f"study {study.study_name!r} was run with other {what} ({changed[0]}{detail}); "
        "use another study.name for another search, or set study.allow_changes=true to continue it anyway"
    )
    if not allow:
        raise ConfigError(sentence + ".")
    log(f"[yellow]warning[/yellow]: {sentence.split(';')[0]}; continuing (study.allow_changes=true)")


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    """`` .key: old -> new`` for the first leaf that differs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in [*old, *(k for k in new if k not in old)]:  # the definition's own order
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}")
    return f"{path}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"
