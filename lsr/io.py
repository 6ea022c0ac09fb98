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


def json_error(err: ValueError) -> str:
    """A JSON decoding error as a whole phrase with its column, for a one-line `FILE:LINE:` message
    (`JSONDecodeError.msg` alone can end mid-sentence: "Invalid control character at")."""
    msg = getattr(err, "msg", None)
    if msg is None or getattr(err, "colno", None) is None:
        return str(err)
    msg = msg[: -len(" at")] if msg.endswith(" at") else msg
    return f"{msg} at column {err.colno}"
