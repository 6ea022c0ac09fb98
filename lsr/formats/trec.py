"""The one TREC SGML parser: `<DOC>` documents and `<top>` topics, tags on any line.

A block (`<DOC>…</DOC>`, `<top>…</top>`) is a sequence of text pieces, each under the
field tag last opened (`<DOCNO>`, `<num>`, `<title>`, `<desc>`, …; "" for none). TREC topics
leave their field tags open, so a field lasts to the next field tag or to its own closing
tag; other tags (`<b>`, `<P>`) are markup: dropped, their text kept in the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z]+)\s*>")
FIELDS = {"docno", "num", "title", "head", "headline", "desc", "narr", "text", "summary", "date", "dateline", "byline"}


@dataclass
class SgmlBlock:
    name: str  # the opening tag as written (`DOC`, `top`)
    line: int  # where it opens
    end: int = 0  # where it closes
    pieces: list[tuple[str, str]] = field(default_factory=list)  # (field tag, lower case; text) in order

    def text(self, fields: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> str:
        """The pieces of `fields` (all but `exclude` when None), whitespace collapsed."""
        keep = None if fields is None else set(fields)
        skip = set(exclude)
        chosen = [t for f, t in self.pieces if (keep is None or f in keep) and f not in skip]
        return " ".join(" ".join(chosen).split())


def sgml_blocks(
    lines: Iterable[tuple[int, str | None]],
    path: str | Path,
    bad: Callable[[str], None],
    blocks: tuple[str, ...],
    strict: bool = False,
) -> Iterator[SgmlBlock]:
    """The blocks opened by one of the tags `blocks` (lower case), from numbered lines (None: a
    line already reported). Malformed structure goes to `bad("PATH:LINE: what")`; reading goes
    on. `strict`: text or tags outside a block are errors too (else ignored)."""
    block: SgmlBlock | None = None
    current = ""
    for number, line in lines:
        if line is None:
            continue
        pos = 0
        for m in [*_TAG.finditer(line), None]:
            chunk = line[pos : m.start()] if m else line[pos:]
            if block is not None:
                block.pieces.append((current, chunk))
            elif strict and chunk.strip():
                bad(f"{path}:{number}: text outside a <{blocks[0]}> block: {chunk.strip()[:40]!r}")
            if m is None:
                break
            pos = m.end()
            closing, name = m.group(1) == "/", m.group(2)
            tag = name.lower()
            if tag in blocks:
                if not closing:
                    if block is not None:
                        bad(f"{path}:{number}: <{name}> opened inside the <{block.name}> begun at line {block.line} (missing </{block.name}>?)")
                    block, current = SgmlBlock(name, number), ""
                elif block is None or tag != block.name.lower():
                    bad(f"{path}:{number}: </{name}> without a matching opening tag")
                else:
                    block.end = number
                    yield block
                    block = None
            elif block is None:
                if strict:
                    bad(f"{path}:{number}: <{name}> outside a <{blocks[0]}> block")
            elif tag in FIELDS:
                current = "" if closing else tag
    if block is not None:
        bad(f"{path}:{block.line}: <{block.name}> is never closed")
