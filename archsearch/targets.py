"""Which ``_target_`` a config may name: config files are data, and only some classes are built from them.

A config names Python objects in four places: ``sampler._target_`` (an Optuna sampler),
``trainer.optimizer._target_`` (a torch optimizer), ``sweep.fit._target_`` (a stand-in trainer
for tests and benchmarks) and ``hydra.callbacks.*._target_`` (Hydra callbacks). Importing and
calling whatever those name would let a config file run code: ``_target_:
pathlib.Path.write_text`` writes any file, and ``./archsearch_conf`` is read from the working
directory, so the normal command inside a cloned repository would run that repository's choice.

So each key takes targets from an allow-list of module prefixes (:data:`ALLOWED`), and every
``_target_`` in the user's config directories is checked against them before Hydra reads a file
(:func:`check_user_configs`; Hydra builds callbacks before archsearch sees the config). A user's
own sampler or optimizer is allowed by an environment variable, which a config file cannot set:
``ARCHSEARCH_ALLOW_TARGETS=mypkg.samplers,otherpkg`` adds those prefixes to every key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError

__all__ = ["ALLOWED", "ALLOW_ENV", "allowed_prefixes", "check_target", "check_user_configs"]

#: The environment variable that extends every allow-list (comma-separated module prefixes).
ALLOW_ENV = "ARCHSEARCH_ALLOW_TARGETS"

#: Module prefixes each key's ``_target_`` may come from.
ALLOWED: dict[str, tuple[str, ...]] = {
    "sampler": ("optuna.samplers.", "archsearch."),
    "trainer.optimizer": ("torch.optim.", "archsearch."),
    "sweep.fit": ("archsearch.",),
    "hydra.callbacks": ("archsearch.", "hydra."),
}


def allowed_prefixes(key: str) -> tuple[str, ...]:
    """The prefixes ``key``'s target may start with: its own, then the user's from :data:`ALLOW_ENV`."""
    extra = tuple(
        part if part.endswith(".") else f"{part}."
        for part in (p.strip() for p in os.environ.get(ALLOW_ENV, "").split(","))
        if part
    )
    return ALLOWED.get(key, ()) + extra


def check_target(key: str, target: Any, where: str = "", *, shown: str = "") -> None:
    """Raise a one-sentence ConfigError unless ``target`` is a dotted name ``key`` may instantiate.

    Args:
        key: one of :data:`ALLOWED`'s keys.
        target: the ``_target_`` value.
        where: the file it was read from, if any (for the message).
        shown: the key as the message names it (e.g. ``supernet.trainer.optimizer``); ``key`` if empty.
    """
    prefixes = allowed_prefixes(key)
    name = str(target)
    if isinstance(target, str) and any(name.startswith(p) or f"{name}." == p for p in prefixes):
        return
    source = f" in {where}" if where else ""
    own = ", ".join(p.rstrip(".") for p in ALLOWED.get(key, ()))
    raise ConfigError(
        f"{shown or key}._target_ {name!r}{source} is not allowed: {key} targets come from {own}; to use "
        f"your own, set the environment variable {ALLOW_ENV} to its module (a config file cannot)."
    )


def check_user_configs(dirs: list[Path]) -> None:
    """Check every ``_target_`` in the YAML files under ``dirs`` (the user's config directories).

    A target under a ``callbacks`` key is a Hydra callback, one under ``optimizer`` an optimizer,
    one under ``fit`` the trainer stand-in, and anything else a sampler (the only other group
    with targets). Files that are not valid YAML are left to Hydra's own report.
    """
    import yaml

    for root in dirs:
        for path in sorted(root.rglob("*.y*ml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            for keys, target in _targets(data, ()):
                check_target(_key_of(keys, path.relative_to(root)), target, str(path))


def _targets(node: Any, keys: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                yield keys, v
            else:
                yield from _targets(v, (*keys, str(k)))
    elif isinstance(node, list):
        for item in node:
            yield from _targets(item, keys)


def _key_of(keys: tuple[str, ...], relative: Path) -> str:
    path = (*relative.parts[:-1], *keys)
    if "callbacks" in path:
        return "hydra.callbacks"
    if "optimizer" in path:
        return "trainer.optimizer"
    if "fit" in path:
        return "sweep.fit"
    return "sampler"
