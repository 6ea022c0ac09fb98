"""Relevance judgments (TREC, BEIR TSV, SMART `.REL`, `qid docid` pairs) and BEIR folders."""

from __future__ import annotations

from pathlib import Path

from lsr.errors import LsrError
from lsr.formats.lines import FormatError, read_lines
from lsr.formats.queries import load_queries_jsonl
from lsr.formats.smart import normalize_id

Qrels = dict[str, dict[str, int]]


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
        raise FormatError(f"{path}:{line_no}: the relevance label must be a whole number, got {value!r}")
    return int(number)


def _is_smart_rel(rows: list[tuple[int, list[str]]]) -> bool:
    """SMART relevance files (CISI.REL, ADI.REL, CACM's qrels.text) write `qid docid 0 0.000000`:
    the document second and a zero label on every line, where TREC has `qid 0 docid label`."""
    four = [fields for _, fields in rows if len(fields) == 4]
    try:
        return bool(four) and all(f[2] == "0" and float(f[3]) == 0 for f in four)
    except ValueError:
        return False


def load_qrels(path: str | Path) -> Qrels:
    """Read relevance judgments as `{qid: {docid: label}}`.

    Accepts TREC qrels (`qid iteration docid label`, whitespace-separated), BEIR's
    three-column TSV (`query-id corpus-id score`, with or without its header line), and the
    classic collections' forms: SMART `.REL` (`qid docid 0 0.000000`, each line a relevant
    document: label 1, numeric ids without leading zeros, as `lsr.smart` reads the documents)
    and `qid docid` pairs (label 1). Labels may be written as floats (`1.000000`) when whole.
    A repeated (query, document) pair keeps its last label, as trec_eval does.
    """
    rows: list[tuple[int, list[str]]] = []
    for line_no, line in read_lines(path):
        fields = line.split()
        if not rows and len(fields) == 3 and fields[0].lower() in ("query-id", "query_id", "qid"):
            continue  # BEIR header
        if len(fields) not in (2, 3, 4):
            raise FormatError(
                f"{path}:{line_no}: expected a qrels line 'qid 0 docid label' "
                f"(or BEIR 'query-id corpus-id score', SMART 'qid docid 0 0.0', 'qid docid'), got {len(fields)} fields"
            )
        rows.append((line_no, fields))
    smart = _is_smart_rel(rows)
    qrels: Qrels = {}
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




def load_beir(folder: str | Path, split: str = "test") -> tuple[dict[str, str], Qrels]:
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
        raise FormatError(f"{qrels_path}: query {missing[0]!r} is judged but not in {queries_path}")
    return {q: all_queries[q] for q in qrels}, qrels
