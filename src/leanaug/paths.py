"""Default locations for downloaded data and caches (overridable by env vars)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LEANAUG_CACHE`` or ``~/.cache/leanaug``: decoded arrays, trained featurizers."""
    return Path(os.environ.get("LEANAUG_CACHE", Path.home() / ".cache" / "leanaug"))


def data_root() -> Path:
    """``$LEANAUG_DATA`` or ``<cache_root>/data``: where downloads land."""
    return Path(os.environ.get("LEANAUG_DATA", cache_root() / "data"))
