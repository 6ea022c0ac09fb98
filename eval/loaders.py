"""Readers for evaluation data: qrels, runs, queries and topics, pre-encoded query vectors.

Every reader streams its file line by line (`.gz` is read transparently) and reports a
malformed line as `LsrError("FILE:LINE: what was wrong")`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, Mapping

from lsr.errors import LsrError
from lsr.io import json_error, open_text
from lsr.smart import normalize_id, read_smart

__all__ = [
    "load_qrels",
    "load_run",
    "load_queries",
    "load_queries_tsv",
    "load_queries_jsonl",
    "load_queries_smart",
    "load_topics",
    "load_query_vectors",
    "load_beir",
]


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) for each non-blank line."""
    with open_text(path) as f:
        try:
            for line_no, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line_no, line
        except UnicodeDecodeError as err:
            raise LsrError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        except (OSError, EOFError) as err:  # e.g. a truncated or corrupt .gz
            raise LsrError(f"{path}: cannot read ({err})") from None


def _label(value: str, path, line_no: int) -> int:
    """A relevance label: an integer, or a float with nothing after the point (`1.000000`)."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise LsrError(f"{path}:{line_no}: the relevance label must be a whole number, got {value!r}")
    return int(number)


def _is_smart_rel(rows: list[tuple[int, list[str]]]) -> bool:
    """SMART relevance files (CISI.REL, ADI.REL, CACM's qrels.text) write `qid docid 0 0.000000`:
    the document second and a zero label on every line, where TREC has `qid 0 docid label`."""
    four = [fields for _, fields in rows if len(fields) == 4]
    try:
        return bool(four) and all(f[2] == "0" and float(f[3]) == 0 for f in four)
    except ValueError:
        return False


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read relevance judgments as `{qid: {docid: label}}`.

    Accepts TREC qrels (`qid iteration docid label`, whitespace-separated), BEIR's
    three-column TSV (`query-id corpus-id score`, with or without its header line), and the
    classic collections' forms: SMART `.REL` (`qid docid 0 0.000000`, each line a relevant
    document: label 1, numeric ids without leading zeros, as `lsr.smart` reads the documents)
    and `qid docid` pairs (label 1). Labels may be written as floats (`1.000000`) when whole.
    A repeated (query, document) pair keeps its last label, as trec_eval does.
    """
    rows: list[tuple[int, list[str]]] = []
    for line_no, line in _lines(path):
        fields = line.split()
        if not rows and len(fields) == 3 and fields[0].lower() in ("query-id", "query_id", "qid"):
            continue  # BEIR header
        if len(fields) not in (2, 3, 4):
            raise LsrError(
                f"{path}:{line_no}: expected a qrels line 'qid 0 docid label' "
                f"(or BEIR 'query-id corpus-id score', SMART 'qid docid 0 0.0', 'qid docid'), got {len(fields)} fields"
            )
        rows.append((line_no, fields))
    smart = _is_smart_rel(rows)
    qrels: dict[str, dict[str, int]] = {}
    for line_no, fields in rows:
        if len(fields) == 2:
            qid, docid, label = fields[0], fields[1], 1
        elif len(fields) == 3:
            qid, docid, label = fields[0], fields[1], _label(fields[2], path, line_no)
        elif smart:
            qid, docid, label = normalize_id(fields[0]), normalize_id(fields[1]), 1
        else:
            qid, _, docid, value = fields
            label = _label(value, path, line_no)
        qrels.setdefault(qid, {})[docid] = label
    return qrels


def load_run(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TREC run (`qid Q0 docid rank score tag`) as `{qid: {docid: score}}`.

    The rank column is ignored (trec_eval ranks by score); a document listed twice for the
    same query is an error, as in trec_eval.
    """
    run: dict[str, dict[str, float]] = {}
    for line_no, line in _lines(path):
        fields = line.split()
        if len(fields) != 6:
            raise LsrError(
                f"{path}:{line_no}: expected a run line 'qid Q0 docid rank score tag', "
                f"got {len(fields)} fields"
            )
        qid, _, docid, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise LsrError(f"{path}:{line_no}: the score must be a number, got {score!r}") from None
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise LsrError(f"{path}:{line_no}: document {docid!r} appears twice for query {qid!r}")
        hits[docid] = value
    return run


# ---- queries ------------------------------------------------------------------------------


def load_queries_tsv(path: str | Path) -> dict[str, str]:
    """Read MS MARCO style topics, `qid<TAB>text` per line, as `{qid: text}`."""
    queries: dict[str, str] = {}
    for line_no, line in _lines(path):
        qid, tab, text = line.partition("\t")
        if not tab or not qid.strip():
            raise LsrError(f"{path}:{line_no}: expected 'qid<TAB>query text'")
        queries[qid.strip()] = text
    return queries


def _json_records(path) -> Iterator[tuple[int, dict]]:
    for line_no, line in _lines(path):
        try:
            record = json.loads(line)
        except ValueError as err:
            raise LsrError(f"{path}:{line_no}: not valid JSON ({json_error(err)})") from None
        if not isinstance(record, dict):
            raise LsrError(f"{path}:{line_no}: expected a JSON object")
        yield line_no, record


def _record_id(record: dict, path, line_no: int) -> str:
    for key in ("_id", "id", "qid"):
        if key in record:
            return str(record[key])
    raise LsrError(f"{path}:{line_no}: the record has no '_id' or 'id' field")


def load_queries_jsonl(path: str | Path) -> dict[str, str]:
    """Read JSONL queries (BEIR `{"_id", "text"}`, or `{"id", "contents"}`) as `{qid: text}`."""
    queries: dict[str, str] = {}
    for line_no, record in _json_records(path):
        qid = _record_id(record, path, line_no)
        for key in ("text", "contents", "query", "title"):
            if isinstance(record.get(key), str):
                queries[qid] = record[key]
                break
        else:
            raise LsrError(f"{path}:{line_no}: the record has no 'text' field")
    return queries


def load_queries_smart(path: str | Path) -> dict[str, str]:
    """Read SMART queries (CISI.QRY, MED.QRY, CACM's query.text: `.I ID` records) as `{qid: text}`:
    the `.T` title and `.W` text, whitespace collapsed; numeric ids without leading zeros."""

    def bad(message: str) -> None:
        raise LsrError(message)

    queries: dict[str, str] = {}
    for record in read_smart(_numbered(path), path, bad):
        text = " ".join(part for part in (record.title, record.text) if part)
        if not text:
            raise LsrError(f"{path}:{record.line}: query {record.id!r} has no .W (or .T) text")
        queries[record.id] = text
    return queries


def _numbered(path) -> Iterator[tuple[int, str]]:
    """Every line (blank ones too: SMART fields may contain them) with its number."""
    with open_text(path) as f:
        try:
            yield from enumerate(f, 1)
        except UnicodeDecodeError as err:
            raise LsrError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z]+)\s*>")
_BLOCKS = {"top", "doc"}
_ID_TAGS = {"num", "docno"}


def load_topics(path: str | Path) -> dict[str, str]:
    """Read TREC SGML topics as `{qid: query}`.

    Handles `<top> <num> Number: 301 <title> ... <desc> ... </top>` and the CACM style
    `<DOC> <DOCNO> 1 </DOCNO> text </DOC>`. The query is the `<title>` when there is one,
    else the untagged text of the topic (whitespace collapsed).
    """
    topics: dict[str, str] = {}
    block_line = None  # line where the open block started
    block_tag = ""
    fields: dict[str, list[str]] = {}
    current = ""

    def close(line_no: int) -> None:
        number = " ".join(fields.get("num", []) + fields.get("docno", []))
        ids = re.sub(r"^\s*number\s*:", "", number, flags=re.IGNORECASE).split()
        if not ids:
            raise LsrError(f"{path}:{block_line}: topic has no <num> (or <DOCNO>) number")
        title = " ".join(" ".join(fields.get("title", [])).split())
        if title.lower().startswith("topic:"):
            title = title[6:].strip()
        text = title or " ".join(" ".join(fields.get("", [])).split())
        if not text:
            raise LsrError(f"{path}:{line_no}: topic {ids[0]!r} has no text")
        topics[ids[0]] = text

    for line_no, line in _lines(path):
        pos = 0
        for m in list(_TAG.finditer(line)) + [None]:
            chunk = line[pos : m.start()] if m else line[pos:]
            if chunk.strip():
                if block_line is None:
                    raise LsrError(f"{path}:{line_no}: text outside a <top> block: {chunk.strip()[:40]!r}")
                fields.setdefault(current, []).append(chunk)
            if m is None:
                break
            pos = m.end()
            closing, tag = m.group(1) == "/", m.group(2).lower()
            if tag in _BLOCKS:
                if closing:
                    if block_line is None or tag != block_tag:
                        raise LsrError(f"{path}:{line_no}: </{m.group(2)}> without a matching opening tag")
                    close(line_no)
                    block_line, fields, current = None, {}, ""
                else:
                    if block_line is not None:
                        raise LsrError(
                            f"{path}:{line_no}: <{m.group(2)}> opened inside the topic "
                            f"begun at line {block_line} (missing </{block_tag}>?)"
                        )
                    block_line, block_tag, fields, current = line_no, tag, {}, ""
            elif block_line is None:
                raise LsrError(f"{path}:{line_no}: <{m.group(2)}> outside a <top> block")
            elif closing:
                current = ""  # back to free text
            else:
                # <num>/<docno>/<title> are kept; <desc>, <narr>, … set aside
                current = tag if tag in _ID_TAGS or tag == "title" else "" if tag == "text" else "_other"
    if block_line is not None:
        raise LsrError(f"{path}:{block_line}: <{block_tag}> is never closed")
    return topics


def _sniff(path) -> str:
    for _, line in _lines(path):
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
    kind = _sniff(path)
    if kind == "smart":
        return load_queries_smart(path)
    if kind == "jsonl":
        return load_queries_jsonl(path)
    if kind == "trec":
        return load_topics(path)
    return load_queries_tsv(path)


def load_query_vectors(path: str | Path, vocab: Mapping[str, int] | None = None):
    """Read pre-encoded queries, one `{"id", "vector": {token: weight}}` per line (.gz or not).

    Returns `(ids, rows)` with `rows` a list of `{token: weight}` dicts or, given `vocab`
    (token -> column id), `(ids, SparseVectors)`; a token missing from `vocab` is an error.
    """
    ids: list[str] = []
    rows: list[dict[str, float]] = []
    for line_no, record in _json_records(path):
        qid = _record_id(record, path, line_no)
        vector = record.get("vector")
        if not isinstance(vector, dict):
            raise LsrError(f"{path}:{line_no}: expected a 'vector' object {{token: weight}}")
        try:
            row = {str(t): float(w) for t, w in vector.items()}
        except (TypeError, ValueError):
            raise LsrError(f"{path}:{line_no}: vector weights must be numbers") from None
        if vocab is not None:
            for t in row:
                if t not in vocab:
                    raise LsrError(f"{path}:{line_no}: token {t!r} is not in the vocabulary")
        ids.append(qid)
        rows.append(row)
    if vocab is None:
        return ids, rows
    from lsr.sparse import SparseVectors

    dim = max(vocab.values(), default=-1) + 1
    return ids, SparseVectors.from_dicts(rows, vocab, dim=max(dim, len(vocab)))


def load_beir(folder: str | Path, split: str = "test") -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Read a BEIR dataset's `queries.jsonl` and `qrels/{split}.tsv` as (queries, qrels).

    Only the queries judged in that split are returned, as BEIR's loader does.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise LsrError(f"{qrels_path}: no such file (is {folder} a BEIR folder, with split {split!r}?)")
    queries_path = folder / "queries.jsonl"
    if not queries_path.exists():
        raise LsrError(f"{queries_path}: no such file (is {folder} a BEIR folder?)")
    qrels = load_qrels(qrels_path)
    all_queries = load_queries_jsonl(queries_path)
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise LsrError(f"{qrels_path}: query {missing[0]!r} is judged but not in {queries_path}")
    return {q: all_queries[q] for q in qrels}, qrels
