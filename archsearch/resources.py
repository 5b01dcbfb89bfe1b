"""Where configuration lives: the user's config directories first, then the package's own.

The project ships ``conf/`` (the Hydra config groups: ``model/``, ``data/``, ``hardware/``,
``sweep/``, ...) and ``search_spaces/``, at the top of the repository and inside the package of a
wheel (``CONF_DIR`` and ``SEARCH_SPACES_DIR`` are wherever the running install has them). A user
keeps their own files in a directory laid out the same way (``<dir>/model/mynet.yaml``,
``<dir>/search_spaces/myspace.yaml``) and names it in ``ARCHSEARCH_CONFIG_DIR`` (several joined
with ``os.pathsep``); when that is unset, ``./archsearch_conf`` is used if it exists. A user file
shadows a shipped one of the same name, both here and in Hydra's search path (see
``archsearch.cli.searchpath``).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from archsearch.errors import ConfigError

__all__ = [
    "CONFIG_DIR_ENV",
    "CONF_DIR",
    "LOCAL_CONFIG_DIR",
    "PACKAGE_DIR",
    "ROOT",
    "SEARCH_SPACES_DIR",
    "available",
    "config_dirs",
    "find_config",
    "group_dirs",
    "user_config_dirs",
]

PACKAGE_DIR = Path(str(files("archsearch")))


def _shipped_dir() -> Path:
    """The directory holding the shipped ``conf/`` and ``search_spaces/`` for the running install.

    A wheel (or any non-editable install) maps them into the package, as ``archsearch/conf`` and
    ``archsearch/search_spaces`` (``[tool.setuptools.package-dir]`` in pyproject.toml); a source
    checkout, run in place or installed editable, keeps them at the top of the repository.
    """
    return PACKAGE_DIR if (PACKAGE_DIR / "conf" / "config.yaml").is_file() else PACKAGE_DIR.parent


CONF_DIR = _shipped_dir() / "conf"
SEARCH_SPACES_DIR = _shipped_dir() / "search_spaces"
#: The source checkout (or site-packages) holding the package: what a subprocess needs on PYTHONPATH.
ROOT = PACKAGE_DIR.parent

#: Environment variable naming the user's config directories, joined with ``os.pathsep``.
CONFIG_DIR_ENV = "ARCHSEARCH_CONFIG_DIR"
#: The user config directory used, relative to the working directory, when the variable is unset.
LOCAL_CONFIG_DIR = "archsearch_conf"

#: The group whose packaged files live beside ``conf/`` rather than in it.
_SEARCH_SPACES = "search_spaces"
_YAML_SUFFIXES = (".yaml", ".yml")


def user_config_dirs() -> list[Path]:
    """The user's config directories, absolute, in search order (empty when there are none).

    Raises:
        ConfigError: ``ARCHSEARCH_CONFIG_DIR`` names something that is not a directory.
    """
    raw = os.environ.get(CONFIG_DIR_ENV, "")
    if not raw:
        local = Path.cwd() / LOCAL_CONFIG_DIR
        return [local] if local.is_dir() else []
    # Absolute, so a lookup gives the same answer after a change of working directory.
    dirs = [Path(part).expanduser().resolve() for part in raw.split(os.pathsep) if part]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"{CONFIG_DIR_ENV} names {d}, which is not a directory.")
    return dirs


def config_dirs() -> list[Path]:
    """Every config root in search order: the user's directories, then the packaged ``conf/``."""
    return [*user_config_dirs(), CONF_DIR]


def group_dirs(group: str) -> list[Path]:
    """The directories holding ``group``'s files, in search order (they need not exist).

    ``search_spaces`` sits at the top of a user directory, like ``model``, but beside ``conf/``
    in the package.
    """
    packaged = SEARCH_SPACES_DIR if group == _SEARCH_SPACES else CONF_DIR / group
    return [*(d / group for d in user_config_dirs()), packaged]


def available(group: str) -> list[str]:
    """The names ``group`` offers across all config directories, sorted, each once."""
    return sorted({p.stem for d in group_dirs(group) for p in d.glob("*.yaml")})


def find_config(group: str, name_or_path: str | Path) -> Path:
    """The file a name stands for in ``group``, or the given path.

    Args:
        group: a config group (``"model"``, ``"hardware"``, ``"search_spaces"``, ...).
        name_or_path: a name (``"mynet"`` is the first ``<dir>/model/mynet.yaml``), or a path to a
            YAML file: a ``Path``, or a string with a slash or a ``.yaml``/``.yml`` suffix.

    Raises:
        ConfigError: the path is not a file, or no directory holds the name (one sentence naming
            the group, the name and the available names).
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(_YAML_SUFFIXES):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{group} file {path} not found.")
        return path
    dirs = group_dirs(group)
    for d in dirs:
        path = d / f"{text}.yaml"
        if path.is_file():
            return path
    where = ", ".join(str(d) for d in dirs)
    raise ConfigError(
        f"{group} {text!r} not found in {where}; available: {', '.join(available(group)) or 'none'}."
    )


def user_cache_dir() -> Path:
    """archsearch's per-user cache: ``$XDG_CACHE_HOME/archsearch``, else ``~/.cache/archsearch``.

    Decoded image folders, ``hardware=auto`` profiles and the empty MLflow store live below it.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "archsearch"
