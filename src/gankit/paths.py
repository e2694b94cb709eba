"""Where gankit keeps what it fetches and caches: the data root."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    """$GANKIT_DATA if set, else $XDG_CACHE_HOME/gankit, else ~/.cache/gankit."""
    explicit = os.environ.get("GANKIT_DATA")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if cache and os.path.isabs(cache):
        return Path(cache) / "gankit"
    return Path.home() / ".cache" / "gankit"
