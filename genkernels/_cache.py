"""The on-disk cache folder every module that caches shares (encoded data, trained metric nets)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$GENKERNELS_CACHE, else $XDG_CACHE_HOME/genkernels, else ~/.cache/genkernels."""
    if os.environ.get("GENKERNELS_CACHE"):
        return Path(os.environ["GENKERNELS_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "genkernels"
    return Path.home() / ".cache" / "genkernels"
