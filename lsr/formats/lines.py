"""The one line reader: plain or `.gz` text files as numbered lines or JSON records.

Every malformed line becomes one message `FILE:LINE: what was expected`, handed to a
`BadLines` that raises it as `FormatError` or, with `skip=True`, collects it and goes on.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from lsr.errors import LsrError

READ_ERRORS = (OSError, EOFError, zlib.error)  # unreadable file, truncated or corrupt .gz


class FormatError(LsrError):
    """A file (or one line of it) is not in the expected format; the message names both."""


class BadLines:
    """Where malformed lines go: raised as `FormatError` or, with `skip=True`, kept in `skipped`."""

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.skipped: list[str] = []

    def __call__(self, message: str) -> None:
        if not self.skip:
            raise FormatError(message)
        self.skipped.append(message)


RAISE = BadLines()


class LineFile:
    """A text file read as bytes (`.gz` un-gzipped); `position()` is the raw offset, compressed
    for `.gz`: the progress measure of a streaming read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.raw = open(self.path, "rb")
        except OSError as err:
            raise FormatError(f"{self.path}: cannot open ({err.strerror or err})") from None
        self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw) if self.path.suffix == ".gz" else self.raw

    def position(self) -> int:
        return self.raw.tell()

    def lines(self, bad: Callable[[str], None] = RAISE) -> Iterator[tuple[int, str | None]]:
        """(line number, text with its newline); text is None for a line that is not UTF-8,
        after `bad` was told."""
        for number, line in enumerate(self.stream, 1):
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError:
                bad(f"{self.path}:{number}: not valid UTF-8 text")
                yield number, None

    def read_text(self, bad: Callable[[str], None] = RAISE) -> str | None:
        """The whole file as text (None, after `bad` was told, when it is not UTF-8)."""
        data = self.stream.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            bad(f"{self.path}:{line}: not valid UTF-8 text")
            return None

    def close(self) -> None:
        self.stream.close()
        self.raw.close()

    def __enter__(self) -> "LineFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_lines(path: str | Path, bad: Callable[[str], None] = RAISE, blank: bool = False) -> Iterator[tuple[int, str]]:
    """The lines of `path` with their numbers, newline removed; blank ones only with `blank`.
    Lines that are not UTF-8 go to `bad`; a file that cannot be read raises `FormatError`."""
    with LineFile(path) as file:
        try:
            for number, line in file.lines(bad):
                if line is not None and (blank or line.strip()):
                    yield number, line.rstrip("\r\n")
        except READ_ERRORS as err:
            raise FormatError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None


def json_records(
    lines: Iterable[tuple[int, str | None]], path: str | Path, bad: Callable[[str], None] = RAISE
) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line; other lines go to `bad`."""
    for number, line in lines:
        if line is None or not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            bad(f"{path}:{number}: invalid JSON ({json_error(err)})")
            continue
        if not isinstance(record, dict):
            bad(f"{path}:{number}: expected a JSON object")
            continue
        yield number, record


def read_json_lines(path: str | Path, bad: Callable[[str], None] = RAISE) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line of a JSONL file (`.gz` or not)."""
    return json_records(read_lines(path, bad), path, bad)


def first_field(record: dict, keys: Iterable[str]) -> object | None:
    """The value of the first of `keys` that `record` holds, not None nor empty; else None."""
    return next((record[k] for k in keys if record.get(k) not in (None, "")), None)


def json_error(err: ValueError) -> str:
    """A JSON decoding error as a whole phrase with its column, for a one-line `FILE:LINE:` message
    (`JSONDecodeError.msg` alone can end mid-sentence: "Invalid control character at")."""
    msg = getattr(err, "msg", None)
    if msg is None or getattr(err, "colno", None) is None:
        return str(err)
    msg = msg[: -len(" at")] if msg.endswith(" at") else msg
    return f"{msg} at column {err.colno}"
