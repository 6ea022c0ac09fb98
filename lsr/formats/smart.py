"""SMART records, the format of the classic collections (CISI, CRAN, MED, ADI, CACM, TIME...).

A file is a sequence of records. `.I ID` opens one; a line holding only `.X` (one capital
letter) opens field X of it, whose text runs to the next marker:

    .I 1
    .T
    A title
    .W
    The abstract, over
    several lines.
    .A
    An author

`.T` is the title and `.W` the text (abstract or query); other fields (`.A` authors, `.B`
publication, `.K` keywords, `.N`, `.X` citations...) are kept but not indexed. Numeric ids
lose their leading zeros (`.I 001` is `1`), as the collections' relevance files write them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

_OPEN = re.compile(r"^\.I(?:\s(.*))?$")
_FIELD = re.compile(r"^\.([A-Z])\s*$")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SmartRecord:
    id: str
    line: int  # where its `.I` is
    fields: dict[str, str]  # field letter -> text (whitespace collapsed)

    @property
    def title(self) -> str:
        return self.fields.get("T", "")

    @property
    def text(self) -> str:
        return self.fields.get("W", "")


def looks_like_smart(head: str) -> bool:
    """Whether text (a file's first bytes, decoded) starts as a SMART file does: `.I ID`."""
    first = head.lstrip().split("\n", 1)[0].rstrip()
    return _OPEN.match(first) is not None and len(first[2:].split()) == 1


def normalize_id(value: str) -> str:
    """`001` -> `1`: the SMART files of a collection disagree on leading zeros."""
    return str(int(value)) if value.isdigit() else value


def read_smart(lines: Iterable[tuple[int, str | None]], path: object, bad: Callable[[str], None]) -> Iterator[SmartRecord]:
    """The records of a SMART file from its `(line number, text)` pairs (text None: a line
    already reported as not UTF-8). A malformed line is passed to `bad("PATH:LINE: what")`,
    which raises or records it; reading then goes on with the next record."""
    record: dict[str, list[str]] | None = None
    rid, start, field = "", 0, ""
    skipping = False  # after a bad line outside a record: drop lines up to the next `.I`
    for number, line in lines:
        if line is None:
            continue
        line = line.rstrip("\r\n")
        opened = _OPEN.match(line)
        if opened:
            if record is not None:
                yield _finish(rid, start, record)
            record, skipping = None, True
            ids = (opened.group(1) or "").split()
            if len(ids) != 1:
                bad(f"{path}:{number}: expected '.I ID' (one record id), got {line.strip()[:40]!r}")
                continue
            record, rid, start, field, skipping = {}, normalize_id(ids[0]), number, "", False
            continue
        if record is None:
            if line.strip() and not skipping:
                bad(f"{path}:{number}: expected '.I ID' to open a SMART record, got {line.strip()[:40]!r}")
                skipping = True
            continue
        marker = _FIELD.match(line)
        if marker:
            field = marker.group(1)
            record.setdefault(field, [])
        elif line.strip():
            if not field:
                bad(f"{path}:{number}: text before the first field marker (.T, .W, ...) of record {rid!r}")
                continue
            record[field].append(line)
    if record is not None:
        yield _finish(rid, start, record)


def _finish(rid: str, start: int, record: dict[str, list[str]]) -> SmartRecord:
    return SmartRecord(rid, start, {f: _SPACE.sub(" ", " ".join(parts)).strip() for f, parts in record.items()})
