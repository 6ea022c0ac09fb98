"""Small file helpers shared by readers and writers."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import IO

from lsr.errors import LsrError


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, transparently un-gzipping `.gz`; UTF-8, strict."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return open(path, encoding="utf-8")
    except OSError as err:
        raise LsrError(f"{path}: cannot open ({err.strerror or err})") from None
