"""Put the user's config directories ahead of the packaged ``conf/`` in Hydra's search path.

Hydra 1.3 searches ``--config-dir`` and ``hydra.searchpath`` entries *after* the primary config
directory (``--config-dir`` is inserted just before the ``schema`` entry, ``hydra.searchpath``
entries are appended), so neither lets a user's ``model/fire_digits.yaml`` shadow the shipped one.
A ``SearchPathPlugin`` sees the path before the config repository is built and may insert
entries in front of the primary one, which is what this module registers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from archsearch.cli.errors import run_cli
from archsearch.resources import CONF_DIR, user_config_dirs
from archsearch.targets import check_user_configs

__all__ = ["UserConfigSearchPath", "use_user_config_dirs"]

PROVIDER = "archsearch-user"


class UserConfigSearchPath(SearchPathPlugin):
    """Insert each user config directory, in order, just before the packaged ``conf/``."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Prepend the user directories to a search path whose primary entry is ``CONF_DIR``.

        Any other Hydra app in the same process keeps its search path untouched.
        """
        ours = {str(CONF_DIR), f"file://{CONF_DIR}"}
        primary = next((e.path for e in search_path.get_path() if e.path in ours), None)
        if primary is None:
            return
        anchor = SearchPathQuery(path=primary)
        # Each insert lands just before the packaged entry, so the first user directory stays first.
        for d in user_config_dirs():
            search_path.prepend(PROVIDER, f"file://{d}", anchor=anchor)


def use_user_config_dirs() -> None:
    """Check the user config directories and have Hydra search them before the packaged ones.

    Call it before the ``@hydra.main`` function: Hydra builds its search path on that call. A
    bad ``ARCHSEARCH_CONFIG_DIR``, or a ``_target_`` in those files that its key may not name
    (archsearch.targets), prints one sentence and exits 2. Which directories are read is said
    on stderr, one line, whenever there are any: a folder in the working directory changes
    what the command does.
    """
    dirs = run_cli(user_config_dirs)
    run_cli(lambda: check_user_configs(dirs))
    if dirs:
        shown = ", ".join(_shown(d) for d in dirs)
        print(f"config folders read before the packaged ones: {shown}", file=sys.stderr)
    Plugins.instance().register(UserConfigSearchPath)


def _shown(path: Path) -> str:
    try:
        return f"./{path.relative_to(Path.cwd())}"
    except ValueError:
        return str(path)
