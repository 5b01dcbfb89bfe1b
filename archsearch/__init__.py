"""archsearch: declarative architecture search for small, fast Fire-module networks.

Networks are plain data (:class:`NetSpec`); :func:`analyze` costs them without a forward
pass; :func:`build` turns them into torch modules.
"""

from __future__ import annotations

from archsearch.errors import ArchsearchError, ConfigError, DataError, SpecError
from archsearch.net.spec import NetSpec, load_spec

__all__ = ["ArchsearchError", "ConfigError", "DataError", "NetSpec", "SpecError", "load_spec"]
__version__ = "0.1.0"
