"""Put the user's config directories ahead of the packaged ``conf/`` in Hydra's search path.

Hydra 1.3 searches ``--config-dir`` and ``hydra.searchpath`` entries *after* the primary config
directory (``--config-dir`` is inserted just before the ``schema`` entry, ``hydra.searchpath``
entries are appended), so neither lets a user's ``model/fire_digits.yaml`` shadow the shipped one.
A ``SearchPathPlugin`` sees the path before the config repository is built and may insert
entries in front of the primary one, which is what this module registers.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from archsearch.cli.errors import run_cli
from archsearch.resources import CONF_DIR, user_config_dirs

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
    bad ``ARCHSEARCH_CONFIG_DIR`` prints one sentence and exits 2.
    """
    run_cli(user_config_dirs)
    Plugins.instance().register(UserConfigSearchPath)
