"""Where lsr keeps what it can rebuild: evaluation indexes, mined negatives, compiled kernels.

`use_numba_cache()` runs before lsr's first Numba import: Numba's `cache=True` writes
compiled kernels next to the modules (`__pycache__`), which many installs cannot write; then
every process would compile the kernels again (tens of seconds for a Seismic build). So the
kernels go to `cache_root() / "numba"` when the package folder is read-only.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

def cache_root() -> Path:
    """`$LSR_CACHE`, else the platform's user cache folder for lsr (`~/.cache/lsr` on Linux,
    honouring `$XDG_CACHE_HOME`)."""
    if "LSR_CACHE" in os.environ:
        return Path(os.environ["LSR_CACHE"])
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lsr"
    return Path(user_cache_dir("lsr", appauthor=False))


def writable(directory: Path) -> bool:
    """Whether Numba could write its cache in `directory/__pycache__` (tried, as Numba does:
    permission bits say nothing for root or on read-only mounts)."""
    try:
        (directory / "__pycache__").mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=directory / "__pycache__"):
            return True
    except OSError:
        return False


def kernels_dir() -> Path:
    """The folder of `lsr.indexer` (where most of lsr's Numba kernels live), found without
    importing it (its source folder is `indexer/`, not `lsr/indexer/`)."""
    import importlib.util

    spec = importlib.util.find_spec("lsr.indexer")
    return Path(list(spec.submodule_search_locations)[0])


def numba_cache_dir(package_dir: Path | None = None) -> Path | None:
    """The folder Numba should cache lsr's kernels in, or None to leave Numba's default (next
    to the modules) when `$NUMBA_CACHE_DIR` is set (the user's choice) or Numba can write
    next to the modules of `package_dir` (default: `kernels_dir()`)."""
    if os.environ.get("NUMBA_CACHE_DIR") or writable(package_dir or kernels_dir()):
        return None
    return cache_root() / "numba"


@functools.cache  # once per process: both kernel packages call it, the probe writes a file
def use_numba_cache() -> None:
    """Point Numba's cache at `numba_cache_dir()` where that says so. Call before the first
    `@njit(cache=True)` decoration: Numba picks a function's cache folder when decorating it."""
    directory = numba_cache_dir()
    if directory is None:
        return
    os.environ["NUMBA_CACHE_DIR"] = str(directory)
    if "numba" in sys.modules:  # imported already (by the caller): its config was read then
        from numba.core import config

        config.CACHE_DIR = str(directory)
