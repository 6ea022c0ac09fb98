"""Queries and topics as `{qid: text}`: `qid<TAB>text` TSV, JSONL, TREC SGML topics, SMART."""

from __future__ import annotations

import re
from pathlib import Path

from lsr.formats.lines import FormatError, first_field, read_json_lines, read_lines
from lsr.formats.smart import read_smart
from lsr.formats.trec import sgml_blocks

ID_KEYS = ("_id", "id", "qid")
TEXT_KEYS = ("text", "contents", "query", "title")


def load_queries_tsv(path: str | Path) -> dict[str, str]:
    """Read MS MARCO style topics, `qid<TAB>text` per line, as `{qid: text}`."""
    queries: dict[str, str] = {}
    for line_no, line in read_lines(path):
        qid, tab, text = line.partition("\t")
        if not tab or not qid.strip():
            raise FormatError(f"{path}:{line_no}: expected 'qid<TAB>query text'")
        queries[qid.strip()] = text
    return queries


def load_queries_jsonl(path: str | Path) -> dict[str, str]:
    """Read JSONL queries (BEIR `{"_id", "text"}`, or `{"id", "contents"}`) as `{qid: text}`."""
    queries: dict[str, str] = {}
    for line_no, record in read_json_lines(path):
        qid = first_field(record, ID_KEYS)
        if qid is None:
            raise FormatError(f"{path}:{line_no}: the record has no '_id' or 'id' field")
        text = next((record[k] for k in TEXT_KEYS if isinstance(record.get(k), str)), None)
        if text is None:
            raise FormatError(f"{path}:{line_no}: the record has no 'text' field")
        queries[str(qid)] = text
    return queries


def _raise(message: str) -> None:
    raise FormatError(message)


def load_queries_smart(path: str | Path) -> dict[str, str]:
    """Read SMART queries (CISI.QRY, MED.QRY, CACM's query.text: `.I ID` records) as `{qid: text}`:
    the `.T` title and `.W` text, whitespace collapsed; numeric ids without leading zeros."""
    queries: dict[str, str] = {}
    for record in read_smart(read_lines(path, blank=True), path, _raise):
        text = " ".join(part for part in (record.title, record.text) if part)
        if not text:
            raise FormatError(f"{path}:{record.line}: query {record.id!r} has no .W (or .T) text")
        queries[record.id] = text
    return queries


_NUMBER = re.compile(r"^\s*number\s*:", re.IGNORECASE)


def load_topics(path: str | Path) -> dict[str, str]:
    """Read TREC SGML topics as `{qid: query}`.

    Handles `<top> <num> Number: 301 <title> ... <desc> ... </top>` and the CACM style
    `<DOC> <DOCNO> 1 </DOCNO> text </DOC>`. The query is the `<title>` when there is one,
    else the untagged text of the topic (whitespace collapsed); `<desc>`, `<narr>` are set aside.
    """
    topics: dict[str, str] = {}
    for block in sgml_blocks(read_lines(path), path, _raise, blocks=("top", "doc"), strict=True):
        ids = _NUMBER.sub("", block.text(["num", "docno"])).split()
        if not ids:
            raise FormatError(f"{path}:{block.line}: topic has no <num> (or <DOCNO>) number")
        title = block.text(["title"])
        if title.lower().startswith("topic:"):
            title = title[6:].strip()
        text = title or block.text(["", "text"])
        if not text:
            raise FormatError(f"{path}:{block.end}: topic {ids[0]!r} has no text")
        topics[ids[0]] = text
    return topics


def _sniff(path: str | Path) -> str:
    for _, line in read_lines(path):
        s = line.lstrip()
        if s.startswith("{"):
            return "jsonl"
        if s.startswith("<"):
            return "trec"
        if s.startswith(".I ") or s.rstrip() == ".I":
            return "smart"
        return "tsv"
    return "tsv"


def load_queries(path: str | Path) -> dict[str, str]:
    """Read queries as `{qid: text}`, detecting the format from the first non-blank line:
    JSONL (`{...}`), TREC SGML topics (`<top>`/`<DOC>`), SMART (`.I ID`), else `qid<TAB>text`."""
    readers = {"smart": load_queries_smart, "jsonl": load_queries_jsonl, "trec": load_topics, "tsv": load_queries_tsv}
    return readers[_sniff(path)](path)
